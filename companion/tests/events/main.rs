//! The event stream (`GET /api/v2/events`), end to end: process events of real processes in
//! real cgroups, told by the eBPF tracker in the order they happened and before the `sample`
//! event of their sample; the container filter; a client that stops reading is dropped while
//! the service's memory stays bounded; the bearer token; `companion top` driven by it.
//!
//! Each test says in a `Without the feature:` line what would fail if the feature were absent.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker,
    http::{self, Response},
    service::companion_bin,
    spawn, unique_id, wait_for,
};

// --- an SSE client ----------------------------------------------------------------------------

/// One Server-Sent Event.
#[derive(Clone, Debug)]
struct Sse {
    kind: String,
    id: Option<u64>,
    data: Value,
}

/// A stream of events over a raw HTTP/1.0 connection (the body then ends with the connection,
/// no chunked framing to undo).
struct EventStream {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Whether the server closed the connection.
    ended: bool,
}

impl EventStream {
    /// Opens `/api/v2/events?query` with `extra` header lines; `Err` with the answer when it is
    /// not 200.
    fn open(service: &Service, query: &str, extra: &str) -> Result<EventStream, Response> {
        let stream = TcpStream::connect(service.addr).expect("connecting");
        EventStream::start(stream, service, query, extra)
    }

    fn start(
        mut stream: TcpStream,
        service: &Service,
        query: &str,
        extra: &str,
    ) -> Result<EventStream, Response> {
        let path = if query.is_empty() {
            "/api/v2/events".to_owned()
        } else {
            format!("/api/v2/events?{query}")
        };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\n{extra}\r\n",
            service.addr
        );
        stream.write_all(request.as_bytes()).expect("sending");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).expect("reading the head");
            assert!(
                n > 0,
                "closed before the head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            let _ = stream.read_to_end(&mut buf);
            return Err(http::parse_response(&buf).expect("a response"));
        }
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/event-stream"),
            "an event stream: {head}"
        );
        Ok(EventStream {
            stream,
            buf: buf[head_end..].to_vec(),
            ended: false,
        })
    }

    /// The next event, waiting up to `timeout`; `None` on timeout or when the stream ended.
    fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(end) = find(&self.buf, b"\n\n") {
                let block = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
            }
            if self.ended {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.ended = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => self.ended = true,
                Err(err) => panic!("reading the event stream: {err}"),
            }
        }
    }

    /// Events until `done` says so, for at most `timeout` (panics then, with what came).
    fn until(&mut self, timeout: Duration, mut done: impl FnMut(&[Sse]) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(event) => seen.push(event),
                None => panic!(
                    "{} after {timeout:?}; events so far: {}",
                    if self.ended {
                        "stream ended"
                    } else {
                        "timed out"
                    },
                    describe(&seen)
                ),
            }
        }
        seen
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An event block (`event:`, `id:`, `data:` lines); comments alone make none.
fn parse_block(block: &str) -> Option<Sse> {
    let mut kind = "message".to_owned();
    let mut id = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_owned(),
            "id" => id = Some(value.parse().expect("a numeric id")),
            "data" => data.push(value.to_owned()),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n"))
        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {block:?}"));
    Some(Sse { kind, id, data })
}

fn describe(events: &[Sse]) -> String {
    let shown: Vec<String> = events
        .iter()
        .map(|e| format!("{}:{}", e.kind, e.data.get("pid").unwrap_or(&e.data["seq"])))
        .collect();
    shown.join(" ")
}

fn pid_of(event: &Sse) -> Option<Pid> {
    event.data["pid"].as_u64().map(|p| p as Pid)
}

fn position(events: &[Sse], kind: &str, pid: Pid) -> Option<usize> {
    events
        .iter()
        .position(|e| e.kind == kind && pid_of(e) == Some(pid))
}

// --- processes under the test's control -------------------------------------------------------

/// A Python parent in the container that, once `dir/go` exists, runs `/bin/true` `count`
/// times one after the other (a fork and an exec each: the children are followed from the
/// fork, as any process a container starts), writes the children's pids to `dir/pids`, then
/// sleeps. Returns the parent's pid.
fn trigger_parent(cg: &TestCgroup, container: &Container, dir: &Path, count: u32) -> Pid {
    let code = "import os, subprocess, sys, time\n\
                go, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
                while not os.path.exists(go): time.sleep(0.01)\n\
                pids = []\n\
                for _ in range(n):\n    p = subprocess.Popen(['/bin/true']); p.wait(); pids.append(p.pid)\n\
                open(out + '.tmp', 'w').write(' '.join(map(str, pids)))\n\
                os.rename(out + '.tmp', out)\n\
                time.sleep(1000)\n";
    let mut command = spawn::python_code(code);
    command
        .arg(dir.join("go"))
        .arg(dir.join("pids"))
        .arg(count.to_string());
    cg.spawn(&[container], command)
}

/// Creates `dir/go`, then waits for the parent to write its children's pids.
fn pull_trigger(dir: &Path) -> Vec<Pid> {
    fs::write(dir.join("go"), "").unwrap();
    let file = dir.join("pids");
    wait_for("the children's pids", Duration::from_secs(60), || {
        fs::read_to_string(&file).map_err(|e| e.to_string())
    })
    .split_whitespace()
    .map(|p| p.parse().unwrap())
    .collect()
}

/// A Docker-style container `/docker/<unique id>` (its id is a reference the API takes).
fn docker_container(cg: &TestCgroup) -> (Container, String) {
    let id = unique_id();
    (
        cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]),
        id,
    )
}

fn scratch(cg: &TestCgroup) -> PathBuf {
    cg.temp_dir()
}

fn wait_listed(service: &Service, container: &Container, pids: &[Pid]) {
    let expected: BTreeSet<Pid> = pids.iter().copied().collect();
    service.wait_pids(&container.path, Some(&expected), service.patience());
    // The v2 routes answer from the inventory, published with the same sample.
    service.wait_until("the container in /api/v2", service.patience(), |s| {
        let r = s.get("/api/v2/containers");
        let listed = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == container.path.as_str() && c["processes"] == expected.len());
        if listed { Ok(()) } else { Err(r.text()) }
    });
}

// --- tests -------------------------------------------------------------------------------------

/// A process started and ended between two samples is told: its exec, then its exit, then the
/// `sample` event of the sample that saw them; a longer-lived process's exec and exit carry the
/// command line a sample read; ids grow; sample events count on.
/// Without the feature: no stream (404), or no exec/exit events, or in another order.
#[test]
fn process_events_arrive_in_order_within_a_sample() {
    let cg = TestCgroup::new();
    let dir = scratch(&cg);
    let (c, id) = docker_container(&cg);
    let parent = trigger_parent(&cg, &c, &dir, 3);
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &[parent]);
    let mut stream = EventStream::open(&service, &format!("container={}", &id[..24]), "")
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    stream.until(service.patience(), |seen| {
        seen.iter().any(|e| e.kind == "sample")
    });

    let children = pull_trigger(&dir);
    let sleeper = cg.spawn(&[&c], spawn::sleeper());
    let events = stream.until(service.patience(), |seen| {
        let last = children.last().copied().unwrap();
        position(seen, "exit", last).is_some_and(|at| seen[at..].iter().any(|e| e.kind == "sample"))
            && position(seen, "exec", sleeper)
                .is_some_and(|at| seen[at..].iter().any(|e| e.kind == "sample"))
    });
    for &child in &children {
        let exec = position(&events, "exec", child)
            .unwrap_or_else(|| panic!("exec of {child}: {}", describe(&events)));
        let exit = position(&events, "exit", child)
            .unwrap_or_else(|| panic!("exit of {child}: {}", describe(&events)));
        assert!(
            exec < exit,
            "exec before exit of {child}: {}",
            describe(&events)
        );
        let samples_between = events[exec..exit]
            .iter()
            .filter(|e| e.kind == "sample")
            .count();
        assert!(
            samples_between <= 1,
            "{child} lived a moment, its events span {samples_between} samples: {}",
            describe(&events)
        );
        assert_eq!(events[exit].data["container"], c.path.as_str());
    }
    // The children ran one after the other: their events come in that order.
    let execs: Vec<usize> = children
        .iter()
        .map(|&p| position(&events, "exec", p).unwrap())
        .collect();
    assert!(
        execs.windows(2).all(|w| w[0] < w[1]),
        "{}",
        describe(&events)
    );
    let exec = &events[position(&events, "exec", sleeper).unwrap()];
    assert_eq!(
        exec.data["command"],
        spawn::SLEEPER_CMDLINE,
        "{:?}",
        exec.data
    );
    assert!(exec.data["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    cg.kill(sleeper);
    let more = stream.until(service.patience(), |seen| {
        position(seen, "exit", sleeper).is_some()
    });
    let exit = &more[position(&more, "exit", sleeper).unwrap()];
    assert_eq!(
        exit.data["command"],
        spawn::SLEEPER_CMDLINE,
        "{:?}",
        exit.data
    );

    let all: Vec<&Sse> = events.iter().chain(&more).collect();
    let ids: Vec<u64> = all
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let seqs: Vec<u64> = all
        .iter()
        .filter(|e| e.kind == "sample")
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one sample event per sample: {seqs:?}"
    );
    let sample = all.iter().rfind(|e| e.kind == "sample").unwrap();
    assert!(sample.data["containers"].as_u64().unwrap() >= 1);
    assert!(sample.data["processes"].as_u64().unwrap() >= 1);
    assert_eq!(sample.data["process_events_dropped"], 0);
}

/// `?container=REF` keeps the process events of that container only (samples still come);
/// REF is an id prefix or the path; unknown ones are refused like elsewhere in the API.
/// Without the feature: the other container's events arrive too, or a bad REF streams anyway.
#[test]
fn the_container_filter() {
    let cg = TestCgroup::new();
    let (dir_a, dir_b) = (scratch(&cg), scratch(&cg));
    let (a, _) = docker_container(&cg);
    let (b, id_b) = docker_container(&cg);
    let parent_a = trigger_parent(&cg, &a, &dir_a, 2);
    let parent_b = trigger_parent(&cg, &b, &dir_b, 2);
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &a, &[parent_a]);
    wait_listed(&service, &b, &[parent_b]);

    let encoded_a = http::encode_path(&a.path).replace('/', "%2F");
    let mut only_a = EventStream::open(&service, &format!("container={encoded_a}"), "")
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    let mut everything = EventStream::open(&service, "", "").unwrap();
    for stream in [&mut only_a, &mut everything] {
        stream.until(service.patience(), |seen| {
            seen.iter().any(|e| e.kind == "sample")
        });
    }
    let from_b = pull_trigger(&dir_b);
    let from_a = pull_trigger(&dir_a);
    let last_a = *from_a.last().unwrap();
    let seen_a = only_a.until(service.patience(), |seen| {
        position(seen, "exit", last_a)
            .is_some_and(|at| seen[at..].iter().any(|e| e.kind == "sample"))
    });
    let seen_all = everything.until(service.patience(), |seen| {
        from_a
            .iter()
            .chain(&from_b)
            .all(|&p| position(seen, "exit", p).is_some())
    });
    for &p in &from_b {
        assert!(
            position(&seen_a, "exec", p).is_none(),
            "{p} of B: {}",
            describe(&seen_a)
        );
        assert!(
            position(&seen_all, "exec", p).is_some(),
            "unfiltered: {}",
            describe(&seen_all)
        );
    }
    for event in seen_a.iter().filter(|e| e.kind != "sample") {
        assert_eq!(event.data["container"], a.path.as_str(), "{event:?}");
    }
    assert!(seen_a.iter().any(|e| e.kind == "sample"));

    // By id prefix too; refusals as the other routes give them.
    let by_id = EventStream::open(&service, &format!("container={}", &id_b[..24]), "");
    assert!(by_id.is_ok(), "an id prefix is a reference");
    let unknown = EventStream::open(&service, "container=0123456789abcdef", "")
        .err()
        .unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let bogus = EventStream::open(&service, "kind=exec", "").err().unwrap();
    assert_eq!(bogus.status, 400, "{}", bogus.text());
}

/// A client that stops reading falls behind; it is dropped, with a last `dropped` event when it
/// reads again, and meanwhile the service's memory does not grow with what it missed. A client
/// that keeps reading the same burst is not dropped.
/// Without the feature: the stalled client gets everything late (memory grows with the
/// backlog), or no last word.
#[test]
fn a_client_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    let cg = TestCgroup::new();
    let dir = scratch(&cg);
    let (c, _) = docker_container(&cg);
    // A burst of process events: `/bin/true` in a loop, started from inside the container.
    let go = dir.join("go");
    let done = dir.join("done");
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.1; done; \
         i=0; while [ $i -lt 40000 ] && [ ! -e {done} ]; do /bin/true; i=$((i+1)); done; \
         touch {done}; exec sleep 1000",
        go = go.display(),
        done = done.display()
    );
    let parent = cg.spawn(&[&c], spawn::shell(&script));
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    // The shell's waiting loop forks `sleep 0.1` children: the parent is listed, and maybe one.
    service.wait_until("the shell listed", service.patience(), |s| {
        match s.pids(&c.path) {
            Some(pids) if pids.contains(&parent) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    let mut stalled = EventStream::open(&service, "", "").unwrap();
    stalled.until(service.patience(), |seen| {
        seen.iter().any(|e| e.kind == "sample")
    });
    let mut reading = EventStream::open(&service, "", "").unwrap();
    let reader = thread::spawn(move || {
        let mut events = Vec::new();
        // Until the service stops (the stream then ends).
        while let Some(event) = reading.next(Duration::from_secs(60)) {
            events.push(event);
        }
        events
    });

    // The kernel holds a few MB for a client that does not read (the server's send buffer
    // grows to 4 MB on loopback): the burst must outrun that and the ring.
    let told = |s: &Service| {
        let text = s.get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix("companion_event_stream_events_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the event counter on /metrics")
    };
    let rss_before = service.vm_rss_kb();
    let told_before = told(&service);
    let began = Instant::now();
    fs::write(&go, "").unwrap();
    let mut rss_peak = rss_before;
    wait_for("60,000 events told", Duration::from_secs(240), || {
        rss_peak = rss_peak.max(service.vm_rss_kb());
        let n = told(&service) - told_before;
        if n >= 60_000 || done.exists() {
            Ok(())
        } else {
            Err(format!("{n} after {:?}", began.elapsed()))
        }
    });
    let _ = fs::write(&done, "");
    service.wait_samples(3);
    rss_peak = rss_peak.max(service.vm_rss_kb());
    eprintln!(
        "burst: {:?}, {} events told; RSS {rss_before} → peak {rss_peak} kB",
        began.elapsed(),
        told(&service) - told_before
    );

    // The stalled client reads again: what the kernel buffered, then the last word, then EOF.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(event) = stalled.next(Duration::from_secs(10)) {
        let last = event.kind == "dropped";
        rest.push(event);
        if last || Instant::now() > deadline {
            break;
        }
    }
    let last = rest.last().expect("events after the stall");
    if last.kind == "dropped" {
        // Dropped by the hub while the kernel still had room for the last word.
        assert!(last.data["missed"].as_u64().unwrap() > 0, "{:?}", last.data);
        assert!(last.data["reason"].as_str().unwrap().contains("behind"));
        assert!(
            stalled.next(Duration::from_secs(10)).is_none() && stalled.ended,
            "the stream ends after it"
        );
    } else {
        // The connection made no progress for --request-timeout: the watchdog closed it.
        assert!(
            stalled.ended,
            "a stalled client without a last word is disconnected: {last:?}"
        );
    }

    // Memory: the backlog (tens of thousands of events, several MB encoded) was not kept.
    let growth_kb = rss_peak.saturating_sub(rss_before);
    assert!(
        growth_kb < 16 * 1024,
        "RSS grew by {growth_kb} kB while a client stalled through the burst"
    );

    drop(service);
    let events = reader.join().unwrap();
    assert!(
        !events.iter().any(|e| e.kind == "dropped"),
        "the reading client kept up: {}",
        describe(&events[events.len().saturating_sub(5)..])
    );
    assert!(events.len() > rest.len());
}

/// With `--auth-token-file` the stream needs the token like every API route; the page itself
/// (no data) does not.
/// Without the feature: the stream answers without the token.
#[test]
fn the_token_applies_to_the_stream() {
    let cg = TestCgroup::new();
    let dir = scratch(&cg);
    let token = format!("{:032x}", rand_u128());
    let file = dir.join("token");
    fs::write(&file, &token).unwrap();
    let service = Service::start_with(
        &[
            "--tracker",
            "procfs",
            "--auth-token-file",
            file.to_str().unwrap(),
        ],
        &Default::default(),
    );
    let refused = EventStream::open(&service, "", "").err().expect("refused");
    assert_eq!(refused.status, 401);
    let wrong = EventStream::open(&service, "", "Authorization: Bearer nope\r\n")
        .err()
        .expect("refused");
    assert_eq!(wrong.status, 401);
    let mut stream = EventStream::open(&service, "", &format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    let events = stream.until(service.patience(), |seen| {
        seen.iter().any(|e| e.kind == "sample")
    });
    assert!(events.iter().all(|e| e.kind == "sample"));
    for path in ["/api/v2/history", "/api/v2/containers/%2Fx/history"] {
        assert_eq!(service.get(path).status, 401, "{path}");
    }
    let page = service.get("/");
    assert_eq!(page.status, 200, "the page holds no data: open");
    assert!(!page.text().contains(&token));
}

/// `companion top` redraws when the stream announces a sample: with a 1 s sample period and a
/// 10 ms `--refresh`, three screens take about two periods, not 20 ms of polling.
/// Without the feature: top polls every 10 ms and is done at once.
#[test]
fn top_follows_the_stream() {
    let cg = TestCgroup::new();
    let (c, id) = docker_container(&cg);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Procfs, &["--sample-period", "1s"]);
    wait_listed(&service, &c, &[pid]);
    let url = format!("http://{}", service.addr);
    let began = Instant::now();
    let out = Command::new(companion_bin())
        .args([
            "top",
            &id[..24],
            "--iterations",
            "3",
            "--refresh",
            "10ms",
            "--url",
            &url,
        ])
        .env_remove("COMPANION_URL")
        .stdin(Stdio::null())
        .output()
        .expect("running companion top");
    let took = began.elapsed();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("\x1b[H\x1b[2J").count(), 3);
    assert!(stdout.contains(&pid.to_string()));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(15),
        "three screens a sample apart took {took:?}"
    );
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    u128::from_ne_bytes(bytes)
}
