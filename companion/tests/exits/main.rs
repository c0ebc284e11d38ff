//! The exit ledger end to end: real processes ending in real cgroups — exit codes, signals,
//! core dumps, a real OOM kill under a cgroup v1 memory limit, a burst of short-lived processes,
//! forked children and threads — as `GET /api/v2/containers/{ref}/exits`, `GET /api/v2/exits`,
//! the container listing and /metrics show them, with both trackers.

use std::{
    collections::BTreeSet,
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid as NixPid};
use serde_json::Value;
use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, both_trackers, cpu_heavy,
    http::encode_path, openmetrics, spawn, unique_id, wait_children, wait_threads,
};

/// No scheduled reconciliation during a test: what is recorded comes from the events.
fn service(tracker: Tracker, extra: &[&str]) -> Service {
    let mut args = vec!["--reconcile-every", "1h"];
    args.extend_from_slice(extra);
    Service::with_tracker(tracker, &args)
}

/// `GET /api/v2/containers/{path}/exits?query`, by the container's path.
fn container_exits(service: &Service, container: &Container, query: &str) -> Value {
    let path = format!(
        "/api/v2/containers/{}/exits{query}",
        encode_path(&container.path).replace('/', "%2F")
    );
    let response = service.get(&path);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

/// The ledger's entry for `pid` in `container`, once there.
fn entry(service: &Service, container: &Container, pid: Pid) -> Option<Value> {
    container_exits(service, container, "?limit=100000")["exits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == pid)
        .cloned()
}

/// Waits for `pid`'s entry; returns it with the samples published meanwhile.
fn wait_entry(service: &Service, container: &Container, pid: Pid) -> (Value, u64) {
    let start = service.samples_taken();
    // An OOM victim first has to allocate up to its limit: on a loaded host that takes a while.
    let found = service.wait_until(&format!("the exit of {pid}"), service.patience() * 2, |s| {
        entry(s, container, pid).ok_or_else(|| "not yet".to_owned())
    });
    (found, service.samples_taken() - start)
}

fn signal(pid: Pid, signal: Signal) {
    nix::sys::signal::kill(NixPid::from_raw(pid as i32), signal).expect("signalling a child");
}

/// Waits until the service lists `pid` in `container`.
fn wait_listed(service: &Service, container: &Container, pid: Pid) {
    service.wait_until(&format!("{pid} listed"), service.patience(), |s| {
        let pids = s.pids(&container.path).unwrap_or_default();
        if pids.contains(&pid) {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    });
}

/// Spawns `command` in `container` and waits until the service lists it (sampled once).
fn spawn_listed(
    cg: &TestCgroup,
    service: &Service,
    container: &Container,
    command: std::process::Command,
) -> Pid {
    let pid = cg.spawn(&[container], command);
    wait_listed(service, container, pid);
    pid
}

/// By the next sample, plus one for the polling race.
const MAX_SAMPLES: u64 = 2;

/// Exit codes and signals, each recorded by the next sample: with the kernel's figures under
/// eBPF, as disappearances (code and signal unknown) under the /proc scan.
fn codes_and_signals(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(tracker, &[]);
    wait_listed(&service, &c, anchor);
    let ebpf = tracker == Tracker::Ebpf;

    // (pid, expected exit code, expected signal)
    let mut cases: Vec<(Pid, Option<i64>, Option<i64>, &str)> = Vec::new();
    for (sig, number) in [
        (Signal::SIGTERM, 15),
        (Signal::SIGKILL, 9),
        (Signal::SIGSEGV, 11),
    ] {
        let pid = spawn_listed(&cg, &service, &c, spawn::sleeper());
        let began = Instant::now();
        signal(pid, sig);
        assert!(cg.wait_exit(pid, Duration::from_secs(10)));
        let (found, samples) = wait_entry(&service, &c, pid);
        eprintln!("{sig}: visible {:?} after the signal", began.elapsed());
        assert!(
            samples <= MAX_SAMPLES,
            "{sig}: recorded after {samples} samples"
        );
        cases.push((pid, None, Some(number), spawn::SLEEPER_CMDLINE));
        check(&found, ebpf, None, Some(number));
    }
    // Exits by themselves, after a sample read them: code 3 and 0.
    for code in [3, 0] {
        let mut command = spawn::python_code(&format!(
            "import sys, time\ntime.sleep(float(sys.argv[1]))\nsys.exit({code})\n"
        ));
        command.arg("0.6");
        let pid = spawn_listed(&cg, &service, &c, command);
        assert!(cg.wait_exit(pid, Duration::from_secs(10)));
        let (found, samples) = wait_entry(&service, &c, pid);
        assert!(
            samples <= MAX_SAMPLES,
            "exit {code}: recorded after {samples} samples"
        );
        check(&found, ebpf, Some(code), None);
        assert!(
            found["cmdline"].as_str().unwrap().ends_with("0.6"),
            "{found}"
        );
    }
    if ebpf {
        // Gone before any sample: only the kernel saw it, the command comes from its exec.
        let pid = cg.spawn(&[&c], spawn::shell("exit 3"));
        assert!(cg.wait_exit(pid, Duration::from_secs(10)));
        let (found, samples) = wait_entry(&service, &c, pid);
        assert!(
            samples <= MAX_SAMPLES,
            "sh -c 'exit 3': recorded after {samples} samples"
        );
        check(&found, true, Some(3), None);
        assert_eq!(found["cmdline"], "/bin/sh -c exit 3");
        assert_eq!(found["comm"], "sh");
        assert_eq!(found["ppid"], std::process::id());
        assert!(found["lifetime_seconds"].as_f64().unwrap() < 5.0);
    }

    let listing = container_exits(&service, &c, "");
    let expected_total = if ebpf { 6 } else { 5 };
    assert_eq!(listing["exits_total"], expected_total, "{listing}");
    assert_eq!(listing["present"], true);
    if ebpf {
        assert_eq!(listing["nonzero_exits_total"], 2);
        assert_eq!(listing["signaled_total"], 3);
    }
    // Newest first, and `since` and `limit` cut the list.
    let times: Vec<String> = listing["exits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ended_at"].as_str().unwrap().to_owned())
        .collect();
    let parsed: Vec<jiff::Timestamp> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let limited = container_exits(&service, &c, "?limit=2");
    assert_eq!(limited["exits"].as_array().unwrap().len(), 2);
    let since = container_exits(&service, &c, &format!("?since={}", times[1]));
    assert_eq!(since["exits"].as_array().unwrap().len(), 2, "{since}");
    let all = service.get("/api/v2/exits?limit=1000").json();
    assert!(
        all["exits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["container"] == c.path.as_str())
            .count()
            == expected_total as usize
    );
    for bad in ["?since=yesterday", "?limit=0", "?limit=x"] {
        let path = format!("/api/v2/exits{bad}");
        assert_eq!(service.get(&path).status, 400, "{path}");
    }

    // The container listing and /metrics agree with the ledger.
    let containers = service.get("/api/v2/containers").json();
    let listed = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == c.path.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["exits_total"], expected_total);
    assert_eq!(listed["oom_kills_total"], 0);
    let metrics = openmetrics::parse(&service.get("/metrics").text()).unwrap();
    let by_reason = |reason| {
        metrics
            .value(
                "companion_container_exits_total",
                &[("path", &c.path), ("reason", reason)],
            )
            .unwrap_or(0.0)
    };
    if ebpf {
        assert_eq!(
            (by_reason("exit"), by_reason("signal"), by_reason("oom")),
            (3.0, 3.0, 0.0)
        );
    } else {
        assert_eq!(by_reason("unknown"), 5.0);
    }

    // The CLI prints the same.
    let out = std::process::Command::new(testbed::service::companion_bin())
        .args([
            "exits",
            &c.path,
            "--url",
            &format!("http://{}", service.addr),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{expected_total} ended")), "{text}");
    if ebpf {
        for how in ["SIGTERM", "SIGKILL", "SIGSEGV", "exit 3", "exit 0"] {
            assert!(text.contains(how), "{how} in:\n{text}");
        }
    }
}

fn check(found: &Value, ebpf: bool, code: Option<i64>, signal: Option<i64>) {
    if ebpf {
        assert_eq!(found["seen"], "exit_event", "{found}");
        assert_eq!(found["exit_code"].as_i64(), code, "{found}");
        assert_eq!(found["signal"].as_i64(), signal, "{found}");
        assert_eq!(found["oom_killed"], false, "{found}");
        assert!(found["core_dumped"].is_boolean(), "{found}");
        assert!(found["user_cpu_seconds"].is_number(), "{found}");
        assert!(found["peak_rss_bytes"].as_u64().unwrap() > 0, "{found}");
    } else {
        assert_eq!(found["seen"], "disappearance", "{found}");
        assert!(
            found["exit_code"].is_null() && found["signal"].is_null(),
            "{found}"
        );
        assert!(found["oom_killed"].is_null(), "{found}");
    }
    let started: jiff::Timestamp = found["started_at"].as_str().unwrap().parse().unwrap();
    let ended: jiff::Timestamp = found["ended_at"].as_str().unwrap().parse().unwrap();
    assert!(started <= ended, "{found}");
    let age = jiff::Timestamp::now().duration_since(ended).as_secs_f64();
    assert!((-1.0..60.0).contains(&age), "ended {age}s ago: {found}");
    assert!(found["ppid"].as_u64().unwrap() > 0, "{found}");
}

/// A process allocating past its cgroup's memory limit (v1 `memory.limit_in_bytes`) is killed
/// by the OOM killer: recorded as such (eBPF), and counted in both modes from the cgroup's own
/// counter; the listing and /metrics agree. Its container keeps its entries after removal.
fn oom_kill(tracker: Tracker) {
    let cg = TestCgroup::new();
    // Docker-style, so the removed container is found by its id as well.
    let c = cg.container_at(
        &format!("/docker/{}", unique_id()),
        &[Hierarchy::Cpu, Hierarchy::Memory],
    );
    let memory = c.dir(Hierarchy::Memory);
    std::fs::write(memory.join("memory.limit_in_bytes"), "48M").unwrap();
    let _ = std::fs::write(memory.join("memory.memsw.limit_in_bytes"), "48M");
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(tracker, &[]);
    wait_listed(&service, &c, anchor);

    // Sampled once, then allocates (and touches) 1 MiB after 1 MiB.
    let hog = spawn_listed(
        &cg,
        &service,
        &c,
        spawn::python_code(
            "import time\ntime.sleep(0.5)\na = []\nwhile True:\n    a.append(b'x' * (1 << 20))\n",
        ),
    );
    assert!(
        cg.wait_exit(hog, Duration::from_secs(30)),
        "the hog was not killed"
    );
    let (found, _) = wait_entry(&service, &c, hog);
    let control = std::fs::read_to_string(memory.join("memory.oom_control")).unwrap();
    assert!(control.contains("oom_kill 1"), "{control}");
    if tracker == Tracker::Ebpf {
        assert_eq!(found["oom_killed"], true, "{found}");
        assert_eq!(found["signal"], 9, "{found}");
        let anon = found["oom"]["anon_rss_bytes"].as_u64().unwrap();
        assert!(anon > 16 << 20, "anon RSS at the kill {anon}: {found}");
    } else {
        assert!(found["oom_killed"].is_null(), "{found}");
    }
    let listing = service.wait_until("the OOM kill counted", service.patience(), |s| {
        let listing = container_exits(s, &c, "");
        if listing["oom_kills_total"] == 1 {
            Ok(listing)
        } else {
            Err(listing.to_string())
        }
    });
    assert_eq!(listing["exits_total"], 1);
    let metrics = openmetrics::parse(&service.get("/metrics").text()).unwrap();
    assert_eq!(
        metrics.value("companion_container_oom_kills_total", &[("path", &c.path)]),
        Some(1.0)
    );
    if tracker == Tracker::Ebpf {
        assert_eq!(
            metrics.value(
                "companion_container_exits_total",
                &[("path", &c.path), ("reason", "oom")]
            ),
            Some(1.0)
        );
    }
    let containers = service.get("/api/v2/containers").json();
    let listed = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == c.path.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["oom_kills_total"], 1);

    // The container goes (its cgroups removed): its entries stay, listed with its path.
    let path = c.path.clone();
    drop(cg);
    service.wait_until("the container gone", service.patience(), |s| {
        let listing = s.get("/api/v2/containers").json();
        if listing
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == path.as_str())
        {
            Err("still listed".into())
        } else {
            Ok(())
        }
    });
    let encoded = path.replace('/', "%2F");
    let after = service
        .get(&format!("/api/v2/containers/{encoded}/exits"))
        .json();
    assert_eq!(after["present"], false, "{after}");
    assert_eq!(after["oom_kills_total"], 1, "{after}");
    assert!(
        after["exits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pid"] == hog)
    );
    let id = path.rsplit('/').next().unwrap();
    let by_id = service.get(&format!("/api/v2/containers/{id}/exits"));
    assert_eq!(by_id.status, 200, "{}", by_id.text());
    assert_eq!(by_id.json()["container"], path.as_str());
}

both_trackers!(codes_and_signals, oom_kill);

/// 1,000 processes that each live 5 ms, in one container: every one recorded with its command
/// (no sample saw most of them), the bound holds, memory is back after.
#[test]
fn burst_of_short_lived_processes() {
    let _heavy = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(Tracker::Ebpf, &["--exits-per-container", "1000"]);
    wait_listed(&service, &c, anchor);
    let rss_before = service.vm_rss_kb();

    let burst = |n: u32| {
        let began = Instant::now();
        let shell = cg.spawn(
            &[&c],
            spawn::shell(&format!(
                "i=0; while [ $i -lt {n} ]; do /bin/sleep 0.005; i=$((i+1)); done"
            )),
        );
        assert!(cg.wait_exit(shell, Duration::from_secs(120)));
        eprintln!("burst of {n}: {:?}", began.elapsed());
        shell
    };
    let shell = burst(1000);
    let listing = service.wait_until("1,001 ends", service.patience(), |s| {
        let listing = container_exits(s, &c, "?limit=100000");
        if listing["exits_total"] == 1001 {
            Ok(listing)
        } else {
            Err(format!("{} so far", listing["exits_total"]))
        }
    });
    let exits = listing["exits"].as_array().unwrap();
    let sleeps: Vec<&Value> = exits
        .iter()
        .filter(|e| e["cmdline"] == "/bin/sleep 0.005")
        .collect();
    assert_eq!(exits.len(), 1000, "the bound: the last 1000 of 1001");
    assert!(
        sleeps.len() >= 999,
        "{} sleeps with their command",
        sleeps.len()
    );
    assert!(
        sleeps
            .iter()
            .all(|e| e["exit_code"] == 0 && e["ppid"] == shell && e["comm"] == "sleep")
    );
    let pids: BTreeSet<u64> = sleeps.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), sleeps.len(), "one entry per process");
    let health = service.health();
    let lost = health["events_lost"].as_u64().unwrap();
    let rss_full = service.vm_rss_kb();
    eprintln!(
        "ledger of 1000 entries: RSS {rss_before} kB → {rss_full} kB; BPF events lost: {lost}"
    );
    assert_eq!(lost, 0, "events lost during the burst: {health}");

    // Another 1000: the ledger stays at its bound, and so does memory.
    burst(1000);
    let listing = service.wait_until("2,002 ends", service.patience(), |s| {
        let listing = container_exits(s, &c, "?limit=100000");
        if listing["exits_total"] == 2002 {
            Ok(listing)
        } else {
            Err(format!("{} so far", listing["exits_total"]))
        }
    });
    assert_eq!(listing["exits"].as_array().unwrap().len(), 1000);
    let rss_after = service.vm_rss_kb();
    eprintln!("after a second burst: RSS {rss_after} kB");
    assert!(
        rss_after <= rss_full + 4096,
        "RSS grew from {rss_full} kB to {rss_after} kB with the ledger at its bound"
    );
}

/// A child forked and never exec'd, a process whose threads end before it, and one that ends
/// from a thread: one record each, for the process only.
#[test]
fn forks_and_threads_make_one_record_per_process() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, anchor);

    let parent = cg.spawn(&[&c], spawn::forking_parent());
    let child = wait_children(parent, 1)[0];
    signal(child, Signal::SIGTERM);
    let (found, _) = wait_entry(&service, &c, child);
    assert_eq!(found["signal"], 15);
    assert_eq!(found["ppid"], parent);
    assert!(
        found["cmdline"].as_str().unwrap().contains("os.fork()"),
        "{found}"
    );

    // Three threads that end, then the process exits 5.
    let threads_first = cg.spawn(
        &[&c],
        spawn::python_code(
            "import sys, threading, time\n\
             ts = [threading.Thread(target=time.sleep, args=(0.3,)) for _ in range(3)]\n\
             [t.start() for t in ts]\n[t.join() for t in ts]\n\
             time.sleep(0.3)\nsys.exit(5)\n",
        ),
    );
    let tids = wait_threads(threads_first, 4);
    assert!(cg.wait_exit(threads_first, Duration::from_secs(10)));
    let (found, _) = wait_entry(&service, &c, threads_first);
    assert_eq!(found["exit_code"], 5, "{found}");

    // A thread other than the leader ends the whole process with os._exit(7).
    let from_thread = cg.spawn(
        &[&c],
        spawn::python_code(
            "import os, threading, time\n\
             threading.Thread(target=lambda: (time.sleep(0.5), os._exit(7))).start()\n\
             time.sleep(1000)\n",
        ),
    );
    let more_tids = wait_threads(from_thread, 2);
    assert!(cg.wait_exit(from_thread, Duration::from_secs(10)));
    let (found, _) = wait_entry(&service, &c, from_thread);
    assert_eq!(found["exit_code"], 7, "{found}");

    // A threaded process killed: one record.
    let threaded = cg.spawn(&[&c], spawn::threaded(3));
    let threaded_tids = wait_threads(threaded, 4);
    cg.kill(threaded);
    let (found, _) = wait_entry(&service, &c, threaded);
    assert_eq!(found["signal"], 9);

    let listing = container_exits(&service, &c, "");
    let recorded: Vec<u64> = listing["exits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    let expected: BTreeSet<u64> = [child, threads_first, from_thread, threaded]
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(recorded.iter().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(recorded.len(), 4, "one record per process: {recorded:?}");
    for tid in tids.iter().chain(&more_tids).chain(&threaded_tids) {
        assert!(
            expected.contains(&u64::from(*tid)) || !recorded.contains(&u64::from(*tid)),
            "thread {tid} recorded"
        );
    }
}

/// The eBPF side fails mid-run: what was recorded stays, and the /proc scan keeps recording.
#[test]
fn the_ledger_survives_a_bpf_failure() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(Tracker::Ebpf, &["--test-fail-ebpf-after", "15"]);
    wait_listed(&service, &c, anchor);
    let before = cg.spawn(&[&c], spawn::shell("exit 4"));
    assert!(cg.wait_exit(before, Duration::from_secs(10)));
    let (found, _) = wait_entry(&service, &c, before);
    assert_eq!(found["exit_code"], 4);
    service.wait_until("degraded", service.patience(), |s| {
        let health = s.health();
        if health["degraded"].is_string() || health["status"] == "degraded" {
            Ok(())
        } else {
            Err(health.to_string())
        }
    });
    let after = spawn_listed(&cg, &service, &c, spawn::sleeper());
    signal(after, Signal::SIGTERM);
    let (found, _) = wait_entry(&service, &c, after);
    assert_eq!(found["seen"], "disappearance");
    assert_eq!(entry(&service, &c, before).unwrap()["exit_code"], 4);
}

/// Exit → visible in the API, with the default 1 s sample period: the figure in the README.
#[test]
fn exit_to_visible_latency() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = service(Tracker::Ebpf, &["--sample-period", "1s"]);
    wait_listed(&service, &c, anchor);
    let mut latencies = Vec::new();
    for _ in 0..12 {
        let pid = cg.spawn(&[&c], spawn::sleeper());
        // Exits at a random point of the sample period.
        thread::sleep(Duration::from_millis(rand::random::<u64>() % 1000));
        let began = Instant::now();
        signal(pid, Signal::SIGKILL);
        service.wait_until("visible", service.patience(), |s| {
            entry(s, &c, pid).ok_or_else(|| "not yet".to_owned())
        });
        latencies.push(began.elapsed());
        assert!(cg.wait_exit(pid, Duration::from_secs(5)));
    }
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    eprintln!("exit → visible (1 s period): median {median:?}, max {max:?}");
    assert!(max < Duration::from_millis(2500), "{latencies:?}");
}
