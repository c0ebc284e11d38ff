//! What operators use beside the v1.0 API, end to end on real cgroups: /metrics read by a real
//! OpenMetrics parser and checked against the API, container discovery for each runtime's cgroup
//! naming (with v1 memory limits), `companion ps`/`top`/`health` run as a client, response
//! compression, and the served OpenAPI document.

use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use companion_tests::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, cpu_heavy,
    http::{self, Response},
    openmetrics::{self, Exposition},
    proc,
    service::{companion_bin, free_port},
    spawn, unique_id, wait_for,
};
use nix::{sys::signal::Signal, unistd::Pid as NixPid};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

// --- helpers ----------------------------------------------------------------------------------

fn set(pids: &[Pid]) -> BTreeSet<Pid> {
    pids.iter().copied().collect()
}

/// Waits until the service lists exactly these processes in the newest sample of `container`,
/// and /api/v2/containers (computed in the background after each sample) lists it with as many.
fn wait_listed(service: &Service, container: &Container, pids: &[Pid]) {
    service.wait_pids(&container.path, Some(&set(pids)), service.patience());
    let began = Instant::now();
    service.wait_until(
        &format!("{} in /api/v2/containers", container.path),
        service.patience(),
        |s| {
            let containers = v2_containers(s);
            match entry(&containers, &container.path) {
                Some(e) if e["processes"] == json!(pids.len()) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let lag = began.elapsed();
    if lag > service.period {
        eprintln!(
            "{} reached /api/v2/containers {lag:?} after the v1.0 route (period {:?})",
            container.path, service.period
        );
    }
}

/// `n` random hex digits.
fn random_hex(n: usize) -> String {
    assert!(n <= 32);
    let r: u128 = rand::random();
    format!("{r:032x}")[..n].to_owned()
}

/// A 64-hex container id starting with `head`, then [`unique_id`] (so leftovers of a crashed run
/// are recognised and removed by the harness). A random `head` makes its first 12 digits a
/// unique prefix, as `docker ps` shows it.
fn fresh_id(head: &str) -> String {
    format!("{head}{}", unique_id())[..64].to_owned()
}

/// A Kubernetes pod UID (a UUID).
fn pod_uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Sets the v1 memory limit of a container created in [`Hierarchy::Memory`].
fn set_memory_limit(container: &Container, bytes: u64) {
    let file = container
        .dir(Hierarchy::Memory)
        .join("memory.limit_in_bytes");
    fs::write(&file, bytes.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let read: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    assert_eq!(read, bytes, "the kernel kept another limit");
}

/// Starts `python3` in `container`, holding `mib` MiB of written (resident) memory, and waits
/// until it has allocated them and sleeps (it creates a file then): its memory stays put.
fn spawn_memory_hog(cg: &TestCgroup, container: &Container, mib: u64) -> Pid {
    let ready = cg.temp_dir().join("allocated");
    let mut command = spawn::python_code(&format!(
        "import sys, time\nb = b'x' * ({mib} << 20)\nopen(sys.argv[1], 'w').close()\ntime.sleep(1000)\n"
    ));
    command.arg(&ready);
    let pid = cg.spawn(&[container], command);
    wait_for(
        &format!("python {pid} to allocate {mib} MiB"),
        Duration::from_secs(30),
        || match proc::vm_rss_kb(pid) {
            Some(rss) if ready.exists() && rss >= mib * 1024 => Ok(()),
            other => Err(format!("VmRSS {other:?} kB, ready {}", ready.exists())),
        },
    );
    pid
}

/// The resident memory of these processes now, in bytes (as the API adds it: VmRSS × 1024).
fn rss_bytes_of(pids: &BTreeSet<Pid>) -> u64 {
    pids.iter()
        .map(|&p| proc::vm_rss_kb(p).unwrap_or(0) * 1024)
        .sum()
}

/// MemTotal of /proc/meminfo in bytes.
fn mem_total_bytes() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    kb * 1024
}

/// GET with an `Accept-Encoding` header (none when `None`).
fn get_encoded(service: &Service, path: &str, encoding: Option<&str>) -> Response {
    let extra = encoding.map_or(String::new(), |e| format!("Accept-Encoding: {e}\r\n"));
    service.request("GET", path, &extra)
}

fn scrape(service: &Service) -> (Response, Exposition) {
    let r = service.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    let exposition = openmetrics::parse(&r.text()).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- exposition ---\n{}",
            http::truncate(&r.text(), 6000)
        )
    });
    (r, exposition)
}

/// `/api/v2/containers`, as an array.
fn v2_containers(service: &Service) -> Vec<Value> {
    let r = service.get("/api/v2/containers");
    assert_eq!(r.status, 200, "/api/v2/containers: {}", r.text());
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    r.json().as_array().expect("an array").clone()
}

fn entry<'a>(containers: &'a [Value], path: &str) -> Option<&'a Value> {
    containers.iter().find(|c| c["path"] == path)
}

/// How a finished client command ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary as a client (`ps`, `top`, `health`) without `COMPANION_*` variables; kills it
/// (by pid) when it has not ended within 30 s.
fn companion(args: &[&str]) -> Ran {
    let mut command = Command::new(companion_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMPANION_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the companion binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => {
            let out = out.expect("waiting for the client");
            Ran {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("companion {args:?} did not end within 30 s");
        }
    }
}

fn url(service: &Service) -> String {
    format!("http://{}", service.addr)
}

/// One row of the `ps` table.
#[derive(Clone, Debug)]
struct Row {
    uid: u64,
    pid: Pid,
    cpu: f64,
    mem: f64,
    vsz: u64,
    rss_kb: u64,
    stat: String,
    time: String,
    command: String,
}

/// A `ps` table: the summary line, the header columns, the rows.
#[derive(Debug)]
struct Table {
    summary: String,
    header: Vec<String>,
    rows: Vec<Row>,
}

const HEADER: [&str; 10] = [
    "UID", "PID", "%CPU", "%MEM", "VSZ", "RSS", "STAT", "START", "TIME", "COMMAND",
];

fn parse_table(text: &str) -> Table {
    let mut lines = text.lines();
    let summary = lines.next().expect("a summary line").to_owned();
    let header: Vec<String> = lines
        .next()
        .expect("a header line")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = Vec::new();
            let mut rest = line;
            for _ in 0..9 {
                rest = rest.trim_start();
                let end = rest
                    .find(' ')
                    .unwrap_or_else(|| panic!("short row {line:?}"));
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let number = |i: usize| -> f64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("column {} of {line:?}", HEADER[i]))
            };
            Row {
                uid: number(0) as u64,
                pid: number(1) as Pid,
                cpu: number(2),
                mem: number(3),
                vsz: number(4) as u64,
                rss_kb: number(5) as u64,
                stat: fields[6].to_owned(),
                time: fields[8].to_owned(),
                command: rest.trim_start().to_owned(),
            }
        })
        .collect();
    Table {
        summary,
        header,
        rows,
    }
}

/// `companion ps ARGS --url URL`, which must succeed; its table.
fn ps(service: &Service, args: &[&str]) -> Table {
    let url = url(service);
    let mut all = vec!["ps"];
    all.extend_from_slice(args);
    all.extend(["--url", &url]);
    let ran = companion(&all);
    assert_eq!(ran.code, Some(0), "companion {all:?}: {ran:?}");
    let table = parse_table(&ran.stdout);
    assert_eq!(table.header, HEADER, "header of {all:?}:\n{}", ran.stdout);
    table
}

fn pids_of(table: &Table) -> Vec<Pid> {
    table.rows.iter().map(|r| r.pid).collect()
}

/// `%MEM` printed with one decimal: within rounding of `rss_kb × 1024 / memory`.
fn assert_mem_percent(row: &Row, memory: u64, what: &str) {
    let expected = 100.0 * (row.rss_kb * 1024) as f64 / memory as f64;
    assert!(
        (row.mem - expected).abs() <= 0.05 + 1e-9,
        "{what}: pid {} %MEM {} but RSS {} kB of {memory} bytes is {expected:.3} %",
        row.pid,
        row.mem,
        row.rss_kb
    );
}

// --- /metrics ---------------------------------------------------------------------------------

/// /metrics is OpenMetrics a strict parser accepts: each family with its type and unit, the
/// histogram consistent, the tracker named, and the HTTP counter counting this test's own
/// requests by route and status. No per-process series without `--metrics-top-processes`.
#[test]
fn metrics_families_and_types() {
    let cg = TestCgroup::new();
    // A label value with what OpenMetrics must escape: a quote and a backslash (systemd writes
    // `\x2d` for `-` in unit names).
    let c = cg.container_named(r#"odd "quoted" my\x2dbox.scope"#, &[Hierarchy::Cpu]);
    let pids = [
        cg.spawn(&[&c], spawn::sleeper()),
        cg.spawn(&[&c], spawn::sleeper()),
    ];
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &pids);
    // Known requests, nothing else asks this service for these routes.
    for _ in 0..3 {
        assert_eq!(service.get("/api/v2/host").status, 200);
    }
    let unknown = format!("/api/v2/containers/{}", random_hex(20));
    for _ in 0..2 {
        assert_eq!(service.get(&unknown).status, 404);
    }
    assert_eq!(service.get("/no/such/route").status, 404);

    let (first, e1) = scrape(&service);
    // A second scrape between two /healthz answers about the sample it was rendered from.
    let mut scrapes = 1;
    let (second, health) = service.wait_until(
        "a scrape and /healthz from one sample",
        service.patience(),
        |s| {
            let before = s.health();
            let r = s.get("/metrics");
            scrapes += 1;
            let after = s.health();
            let rendered = r.text().lines().find_map(|l| {
                l.strip_prefix("companion_samples_total ")?
                    .parse::<u64>()
                    .ok()
            });
            let (b, a) = (
                before["samples_taken"].as_u64(),
                after["samples_taken"].as_u64(),
            );
            if b == a && rendered == a {
                Ok((r, after))
            } else {
                Err(format!("samples {b:?} → {a:?}, /metrics from {rendered:?}"))
            }
        },
    );
    assert_eq!(second.status, 200);
    let e2 = openmetrics::parse(&second.text()).unwrap_or_else(|e| panic!("{e}"));
    for r in [&first, &second] {
        assert_eq!(
            r.media_type().as_deref(),
            Some("application/openmetrics-text"),
            "Content-Type {:?}",
            r.header("content-type")
        );
        assert!(
            r.header("content-type").unwrap().contains("version=1.0.0"),
            "{:?}",
            r.header("content-type")
        );
        assert!(r.text().trim_end().ends_with("# EOF"));
    }

    for family in &e2.families {
        assert!(
            family.name.starts_with("companion_"),
            "family {} lacks the companion_ prefix",
            family.name
        );
        assert!(!family.help.is_empty(), "{} has no HELP", family.name);
    }
    for (name, kind, unit) in [
        ("companion_sample_duration_seconds", "histogram", "seconds"),
        ("companion_samples", "counter", ""),
        ("companion_samples_slipped", "counter", ""),
        ("companion_tracked_processes", "gauge", ""),
        ("companion_containers", "gauge", ""),
        ("companion_tracker", "gauge", ""),
        ("companion_degraded", "gauge", ""),
        ("companion_bpf_events_received", "counter", ""),
        ("companion_bpf_events_lost", "counter", ""),
        ("companion_reconciliations", "counter", ""),
        ("companion_reconciliation_repairs", "counter", ""),
        ("companion_container_processes", "gauge", ""),
        ("companion_container_cpu_seconds", "counter", "seconds"),
        ("companion_container_memory_rss_bytes", "gauge", "bytes"),
        ("companion_http_requests", "counter", ""),
        ("companion_heap_allocated_bytes", "gauge", "bytes"),
        ("companion_heap_resident_bytes", "gauge", "bytes"),
    ] {
        let family = e2.expect(name);
        assert_eq!(
            (family.kind.as_str(), family.unit.as_str()),
            (kind, unit),
            "type and unit of {name}"
        );
        assert!(!family.samples.is_empty(), "{name} has no sample");
        if kind == "counter" {
            assert!(
                family
                    .samples
                    .iter()
                    .all(|s| s.name == format!("{name}_total")
                        || s.name == format!("{name}_created")),
                "counter samples of {name} are {name}_total: {:?}",
                family.samples
            );
        }
    }
    for family in [
        "companion_process_cpu_cores",
        "companion_process_memory_rss_bytes",
    ] {
        assert!(
            e2.family(family).is_none(),
            "{family} without --metrics-top-processes"
        );
    }

    // The histogram: cumulative buckets, +Inf = count, at most one observation per sample.
    let histogram = e2.expect("companion_sample_duration_seconds");
    let mut buckets: Vec<(f64, f64)> = histogram
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .map(|s| (s.label("le").unwrap().parse::<f64>().unwrap(), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 2 && buckets.last().unwrap().0.is_infinite());
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    let count = e2
        .value("companion_sample_duration_seconds_count", &[])
        .unwrap();
    assert_eq!(buckets.last().unwrap().1, count, "+Inf bucket = count");
    let samples = e2.value("companion_samples_total", &[]).unwrap();
    assert!(
        count >= 1.0 && count <= samples,
        "{count} observations, {samples} samples"
    );
    assert!(
        e2.value("companion_sample_duration_seconds_sum", &[])
            .unwrap()
            >= 0.0
    );

    // The same figures as /healthz about the same sample.
    for (sample, key) in [
        ("companion_samples_total", "samples_taken"),
        ("companion_samples_slipped_total", "samples_slipped"),
        ("companion_bpf_events_received_total", "events_received"),
        ("companion_bpf_events_lost_total", "events_lost"),
        ("companion_reconciliations_total", "reconciliations"),
        ("companion_reconciliation_repairs_total", "repairs"),
        ("companion_tracked_processes", "tracked_processes"),
        ("companion_containers", "containers"),
    ] {
        assert_eq!(
            e2.value(sample, &[]),
            health[key].as_f64(),
            "{sample} vs /healthz {key}"
        );
    }
    assert!(
        e1.value("companion_samples_total", &[]).unwrap() <= samples,
        "the samples counter went down"
    );
    assert!(e2.value("companion_tracked_processes", &[]).unwrap() >= 2.0);
    assert!(e2.value("companion_containers", &[]).unwrap() >= 1.0);
    assert_eq!(e2.value("companion_degraded", &[]), Some(0.0));
    // The allocator's figures: live bytes are some, and never more than the resident pages.
    let allocated = e2.value("companion_heap_allocated_bytes", &[]).unwrap();
    let resident = e2.value("companion_heap_resident_bytes", &[]).unwrap();
    assert!(
        allocated > 0.0 && allocated <= resident,
        "heap allocated {allocated}, resident {resident}"
    );
    let tracker = e2.expect("companion_tracker");
    assert_eq!(tracker.samples.len(), 1, "{:?}", tracker.samples);
    assert_eq!(
        tracker.samples[0].label("tracker"),
        health["tracker"].as_str()
    );
    assert_eq!(tracker.samples[0].value, 1.0);

    // The HTTP counter, by route template and status: this test's requests.
    let requests = |e: &Exposition, route: &str, status: &str| {
        e.value(
            "companion_http_requests_total",
            &[("route", route), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(requests(&e2, "/api/v2/host", "200"), 3.0);
    assert_eq!(requests(&e2, "/api/v2/containers/{id}", "404"), 2.0);
    assert!(requests(&e2, "/healthz", "200") >= 1.0);
    // A scrape is counted once answered: the second scrape sees the first.
    assert_eq!(requests(&e1, "/metrics", "200"), 0.0);
    assert_eq!(requests(&e2, "/metrics", "200"), f64::from(scrapes - 1));
    let unmatched: f64 = e2
        .expect("companion_http_requests")
        .samples
        .iter()
        .filter(|s| {
            s.label("status") == Some("404") && s.label("route") != Some("/api/v2/containers/{id}")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(
        unmatched, 1.0,
        "the request for an unknown route is counted"
    );

    // This container's series, labelled with its path exactly (escaped and unescaped).
    let labels = [("container", c.path.as_str())];
    assert_eq!(
        e2.value("companion_container_processes", &labels),
        Some(2.0)
    );
    assert!(
        e2.expect("companion_container_processes")
            .matching(&labels)
            .all(|s| s.label("runtime") == Some("") && s.label("id") == Some("")),
        "a path of no known runtime has empty runtime and id labels"
    );
}

/// Per-container series agree with the API on the same containers: process counts, resident
/// memory (the sum of VmRSS), the memory limit of the v1 memory cgroup (absent without one), and
/// a busy container's CPU counter grows by the CPU its process gets (~1 s per s).
#[test]
fn metrics_agree_with_the_api() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let limited = cg.container_at(
        &format!("/docker/{id}"),
        &[Hierarchy::Cpu, Hierarchy::Memory],
    );
    set_memory_limit(&limited, 256 * MIB);
    let unlimited = cg.container(&[Hierarchy::Cpu]);
    let busy = cg.spawn(&[&limited], spawn::busy_loop());
    let idle = cg.spawn(&[&limited], spawn::sleeper());
    let hog = spawn_memory_hog(&cg, &limited, 16);
    let other = cg.spawn(&[&unlimited], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &limited, &[busy, idle, hog]);
    wait_listed(&service, &unlimited, &[other]);

    // Compared on one sample: /metrics, the v1.0 answers and /api/v2/containers read while
    // /healthz names the sample /metrics was rendered from.
    let one = from_one_sample(&service, &[&limited, &unlimited]);
    let e = &one.metrics;
    for ((c, snapshot), summary) in [&limited, &unlimited]
        .iter()
        .zip(&one.snapshots)
        .zip(&one.summaries)
    {
        let listed = api::processes(snapshot);
        let rss: u64 = listed.iter().map(|p| api::vm_rss(p) * 1024).sum();
        let labels = [("container", c.path.as_str())];
        assert_eq!(
            e.value("companion_container_processes", &labels),
            Some(listed.len() as f64),
            "{}: processes, metrics vs the v1.0 answer of sample {}",
            c.path,
            one.sample
        );
        assert_eq!(
            e.value("companion_container_memory_rss_bytes", &labels),
            Some(rss as f64),
            "{}: the sum of VmRSS × 1024 of the v1.0 answer of sample {}",
            c.path,
            one.sample
        );
        assert_eq!(summary["processes"], json!(listed.len()), "{}", c.path);
        assert_eq!(summary["rss_bytes"], json!(rss), "{}", c.path);
    }
    // And against /proc.
    let truth = rss_bytes_of(&set(&[busy, idle, hog]));
    let limited_rss = one.summaries[0]["rss_bytes"].as_u64().unwrap();
    assert!(
        limited_rss.abs_diff(truth) <= truth / 20,
        "RSS {limited_rss} vs /proc {truth}"
    );
    assert_eq!(one.summaries[0]["runtime"], "docker");
    assert_eq!(one.summaries[0]["id"], id.as_str());
    let labels = [("container", limited.path.as_str())];
    for family in [
        "companion_container_processes",
        "companion_container_cpu_seconds",
        "companion_container_memory_rss_bytes",
        "companion_container_memory_limit_bytes",
    ] {
        let series: Vec<_> = e.expect(family).matching(&labels).collect();
        assert_eq!(series.len(), 1, "{family}");
        assert_eq!(series[0].label("runtime"), Some("docker"));
        assert_eq!(series[0].label("id"), Some(id.as_str()));
    }
    assert_eq!(
        e.value("companion_container_memory_limit_bytes", &labels),
        Some((256 * MIB) as f64),
        "the limit written to memory.limit_in_bytes"
    );
    assert_eq!(one.summaries[0]["limits"]["memory_bytes"], json!(256 * MIB));
    assert_eq!(
        e.value(
            "companion_container_memory_limit_bytes",
            &[("container", unlimited.path.as_str())]
        ),
        None,
        "no limit series without a limit"
    );
    assert_eq!(one.summaries[1]["limits"]["memory_bytes"], Value::Null);
    let family = e.expect("companion_container_memory_limit_bytes");
    assert_eq!(
        (family.kind.as_str(), family.unit.as_str()),
        ("gauge", "bytes")
    );

    // CPU: between two samples the counter grows by the CPU time (utime + stime) the API shows
    // the container's processes gained, and that is what /proc says the busy loop got: about
    // one second per second when the machine lets it have a core.
    let cpu_of = |one: &OneSample| {
        let counter = one
            .metrics
            .value("companion_container_cpu_seconds_total", &labels)
            .expect("a cpu series");
        let ticks: u64 = api::processes(&one.snapshots[0])
            .iter()
            .map(|p| p["stat"]["utime"].as_u64().unwrap() + p["stat"]["stime"].as_u64().unwrap())
            .sum();
        (counter, ticks, api::timestamp(&one.snapshots[0]))
    };
    let proc_ticks = || proc::cpu_ticks(busy).unwrap();
    let tps = proc::ticks_per_second() as f64;
    let (k0, w0) = (proc_ticks(), Instant::now());
    let (c0, t0, ts0) = cpu_of(&from_one_sample(&service, &[&limited]));
    thread::sleep(Duration::from_secs(2).max(service.period * 3));
    let (c1, t1, ts1) = cpu_of(&from_one_sample(&service, &[&limited]));
    let (k1, w1) = (proc_ticks(), Instant::now());
    let counted = c1 - c0;
    let gained = (t1 - t0) as f64 / tps;
    assert!(
        (counted - gained).abs() <= 0.011,
        "the cpu counter grew {counted:.3} s; the API's utime + stime grew {gained:.3} s"
    );
    let between_samples = ts1.duration_since(ts0).unwrap().as_secs_f64();
    let rate = counted / between_samples;
    let got = (k1 - k0) as f64 / tps / (w1 - w0).as_secs_f64();
    eprintln!("busy container: counter {rate:.2} s per s; /proc: the loop got {got:.2} of a core");
    assert!(
        (rate - got).abs() <= 0.25 && rate <= 1.1,
        "the cpu counter grew {rate:.2} s per s while the busy loop got {got:.2} of a core"
    );
}

/// /metrics, the newest v1.0 snapshot of each container and /api/v2/containers' entry for each,
/// all from one sample.
struct OneSample {
    sample: u64,
    metrics: Exposition,
    snapshots: Vec<Value>,
    summaries: Vec<Value>,
}

/// Reads /metrics, then the API, between two /healthz reads; retried until both name the sample
/// /metrics was rendered from (no sample was published meanwhile).
fn from_one_sample(service: &Service, containers: &[&Container]) -> OneSample {
    service.wait_until(
        "/metrics and the API from one sample",
        service.patience(),
        |s| {
            // Only requests between the two /healthz reads (a loaded host samples often);
            // parsing comes after.
            let before = s.samples_taken();
            let metrics = s.get("/metrics");
            let answers: Vec<Response> = containers.iter().map(|c| s.get(&c.api_path())).collect();
            let all = s.get("/api/v2/containers");
            let after = s.samples_taken();
            let rendered = metrics.text().lines().find_map(|l| {
                l.strip_prefix("companion_samples_total ")?
                    .parse::<f64>()
                    .ok()
            });
            if before != after || rendered != Some(before as f64) {
                return Err(format!(
                    "samples {before} → {after}, /metrics rendered from {rendered:?}"
                ));
            }
            let metrics = openmetrics::parse(&metrics.text()).unwrap_or_else(|e| panic!("{e}"));
            let snapshots = containers
                .iter()
                .zip(&answers)
                .map(|(c, r)| {
                    assert_eq!(r.status, 200, "{}: {}", c.path, r.text());
                    api::check_answer(r, &c.path, "").pop().unwrap()
                })
                .collect();
            assert_eq!(all.status, 200);
            let all = all.json().as_array().expect("an array").clone();
            let summaries = containers
                .iter()
                .map(|c| {
                    entry(&all, &c.path)
                        .cloned()
                        .ok_or(format!("{} not in v2", c.path))
                })
                .collect::<Result<_, _>>()?;
            Ok(OneSample {
                sample: before,
                metrics,
                snapshots,
                summaries,
            })
        },
    )
}

/// `--metrics-top-processes 3`: at most three per-process series, the busy process among them
/// with its container, pid and name.
#[test]
fn metrics_top_processes() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let mut pids = vec![busy];
    for _ in 0..4 {
        pids.push(cg.spawn(&[&c], spawn::sleeper()));
    }
    let service = Service::with_tracker(Tracker::Ebpf, &["--metrics-top-processes", "3"]);
    wait_listed(&service, &c, &pids);
    let busy_label = busy.to_string();
    let e = service.wait_until(
        "the busy process in the top series",
        service.patience() * 2,
        |s| {
            let (_, e) = scrape(s);
            let cores = e
                .family("companion_process_cpu_cores")
                .ok_or("no companion_process_cpu_cores")?;
            match cores
                .samples
                .iter()
                .find(|s| s.label("pid") == Some(&busy_label))
            {
                Some(sample) if sample.value > 0.3 => Ok(e),
                found => Err(format!(
                    "busy {busy}: {found:?}; series {:?}",
                    cores.samples
                )),
            }
        },
    );
    for (name, unit) in [
        ("companion_process_cpu_cores", ""),
        ("companion_process_memory_rss_bytes", "bytes"),
    ] {
        let family = e.expect(name);
        assert_eq!(
            (family.kind.as_str(), family.unit.as_str()),
            ("gauge", unit)
        );
        assert!(
            !family.samples.is_empty() && family.samples.len() <= 3,
            "{name}: {} series with --metrics-top-processes 3",
            family.samples.len()
        );
        let mut keys = BTreeSet::new();
        for sample in &family.samples {
            let labels: Vec<&str> = sample.labels.keys().map(String::as_str).collect();
            assert_eq!(labels, ["comm", "container", "pid"], "{name} labels");
            assert!(keys.insert(sample.label("pid").unwrap().to_owned()));
        }
        let mine = family
            .samples
            .iter()
            .find(|s| s.label("pid") == Some(&busy_label))
            .unwrap_or_else(|| panic!("busy {busy} not in {name}"));
        assert_eq!(mine.label("container"), Some(c.path.as_str()));
        assert_eq!(mine.label("comm"), Some("sh"));
    }
    let rss = e
        .value(
            "companion_process_memory_rss_bytes",
            &[("pid", &busy_label)],
        )
        .unwrap();
    let truth = (proc::vm_rss_kb(busy).unwrap() * 1024) as f64;
    assert!(
        (rss - truth).abs() <= truth * 0.05,
        "busy RSS {rss} vs /proc {truth}"
    );
    let cores = e
        .value("companion_process_cpu_cores", &[("pid", &busy_label)])
        .unwrap();
    assert!(cores <= 1.1, "one busy loop uses {cores} cores");
}

// --- discovery --------------------------------------------------------------------------------

/// A container named in one runtime's style, and what /api/v2/containers must say about it.
struct Case {
    container: Container,
    runtime: &'static str,
    id: String,
    /// A unique prefix of the id to look it up by.
    prefix: String,
    pod_uid: Option<String>,
    qos_class: Option<&'static str>,
    memory_limit: Option<u64>,
    pids: Vec<Pid>,
}

/// Containers named as Docker (cgroupfs and systemd drivers), containerd and CRI-O under
/// Kubernetes (each QoS class), Podman, LXC and systemd-nspawn name them, at their real paths
/// (unique ids, no test prefix: Kubernetes is recognised by a first segment `kubepods*`): each
/// is listed with its runtime, id, pod UID, QoS class, processes, resident memory and v1 memory
/// limit; found by a unique id prefix, 409 for an ambiguous one, 404 for an unknown one; and
/// its v2 processes route answers as the v1.0 route does.
#[test]
fn discovery_by_runtime_naming() {
    let cg = TestCgroup::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |path: String,
                   hierarchies: &[Hierarchy],
                   runtime: &'static str,
                   id: &str,
                   pod: Option<(&str, &'static str)>,
                   memory_limit: Option<u64>| {
        let container = cg.container_at(&path, hierarchies);
        if let Some(limit) = memory_limit {
            set_memory_limit(&container, limit);
        }
        let prefix = if id.bytes().all(|b| b.is_ascii_hexdigit()) {
            id[..12].to_owned()
        } else {
            id.to_owned()
        };
        cases.push(Case {
            container,
            runtime,
            id: id.to_owned(),
            prefix,
            pod_uid: pod.map(|(uid, _)| uid.to_owned()),
            qos_class: pod.map(|(_, qos)| qos),
            memory_limit,
            pids: Vec::new(),
        });
    };
    let cpu = &[Hierarchy::Cpu][..];
    let cpu_memory = &[Hierarchy::Cpu, Hierarchy::Memory][..];

    let id = fresh_id(&random_hex(12));
    add(
        format!("/docker/{id}"),
        cpu_memory,
        "docker",
        &id,
        None,
        Some(128 * MIB),
    );
    let id = fresh_id(&random_hex(12));
    // In the memory hierarchy, without a limit: none reported.
    add(
        format!("/system.slice/docker-{id}.scope"),
        cpu_memory,
        "docker",
        &id,
        None,
        None,
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu_memory,
        "containerd",
        &id,
        Some((&uid, "burstable")),
        Some(64 * MIB),
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu,
        "cri-o",
        &id,
        Some((&uid, "besteffort")),
        None,
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu,
        "containerd",
        &id,
        Some((&uid, "guaranteed")),
        None,
    );
    let id = fresh_id(&random_hex(12));
    add(
        format!("/machine.slice/libpod-{id}.scope"),
        cpu,
        "podman",
        &id,
        None,
        None,
    );
    let name = format!("web-{}", &unique_id()[..24]);
    add(
        format!("/lxc.payload.{name}"),
        cpu,
        "lxc",
        &name,
        None,
        None,
    );
    // systemd escapes `-` in unit names as `\x2d`.
    let name = format!("box-{}", &unique_id()[..24]);
    add(
        format!(
            "/machine.slice/systemd-nspawn@{}.service",
            name.replace('-', "\\x2d")
        ),
        cpu,
        "systemd-nspawn",
        &name,
        None,
        None,
    );
    // Two containers whose ids share a prefix (but not a 13th digit).
    let shared = random_hex(12);
    let twin_a = cg.container_at(&format!("/docker/{}", fresh_id(&format!("{shared}a"))), cpu);
    let twin_b = cg.container_at(
        &format!(
            "/system.slice/docker-{}.scope",
            fresh_id(&format!("{shared}b"))
        ),
        cpu,
    );

    for (i, case) in cases.iter_mut().enumerate() {
        case.pids
            .push(cg.spawn(&[&case.container], spawn::sleeper()));
        if i == 0 {
            case.pids
                .push(cg.spawn(&[&case.container], spawn::sleeper()));
        }
    }
    let twin_pids = [
        cg.spawn(&[&twin_a], spawn::sleeper()),
        cg.spawn(&[&twin_b], spawn::sleeper()),
    ];
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    for case in &cases {
        wait_listed(&service, &case.container, &case.pids);
    }
    wait_listed(&service, &twin_a, &twin_pids[..1]);
    wait_listed(&service, &twin_b, &twin_pids[1..]);

    let listed = service.wait_until(
        "every container in /api/v2/containers with its processes and memory",
        service.patience(),
        |s| {
            let containers = v2_containers(s);
            let mut found = Vec::new();
            for case in &cases {
                let path = &case.container.path;
                let e = entry(&containers, path).ok_or(format!("{path} not listed"))?;
                let rss = rss_bytes_of(&set(&case.pids));
                if e["processes"] != json!(case.pids.len()) || e["rss_bytes"] != json!(rss) {
                    return Err(format!(
                        "{path}: {e}; expected {} processes, {rss} bytes",
                        case.pids.len()
                    ));
                }
                found.push(e.clone());
            }
            Ok(found)
        },
    );
    for (case, e) in cases.iter().zip(&listed) {
        let path = &case.container.path;
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "path",
                "runtime",
                "id",
                "pod_uid",
                "qos_class",
                "processes",
                "cpu_percent",
                "cpu_seconds_total",
                "rss_bytes",
                "limits",
                "throttling",
                "memory",
                "pressure"
            ],
            "{path}"
        );
        assert_eq!(e["runtime"], case.runtime, "runtime of {path}");
        assert_eq!(e["id"], case.id.as_str(), "id of {path}");
        assert_eq!(e["pod_uid"], json!(case.pod_uid), "pod_uid of {path}");
        assert_eq!(e["qos_class"], json!(case.qos_class), "qos_class of {path}");
        assert_eq!(
            e["limits"]["memory_bytes"],
            json!(case.memory_limit),
            "memory limit of {path}"
        );
        assert!(
            e["cpu_percent"]
                .as_f64()
                .is_some_and(|v| (0.0..5.0).contains(&v))
        );
        assert!(e["cpu_seconds_total"].as_f64().is_some_and(|v| v >= 0.0));

        // By a unique prefix of its id.
        let r = service.get(&format!(
            "/api/v2/containers/{}",
            http::encode_path(&case.prefix)
        ));
        assert_eq!(r.status, 200, "{}: {}", case.prefix, r.text());
        assert_eq!(r.media_type().as_deref(), Some("application/json"));
        let one = r.json();
        for key in [
            "path",
            "runtime",
            "id",
            "pod_uid",
            "qos_class",
            "processes",
            "limits",
        ] {
            assert_eq!(
                one[key], e[key],
                "/api/v2/containers/{}: {key}",
                case.prefix
            );
        }
    }

    // An ambiguous prefix: 409, naming both; an unknown one: 404.
    let r = service.get(&format!("/api/v2/containers/{shared}"));
    assert_eq!(r.status, 409, "{}", r.text());
    let body = r.text();
    assert!(
        body.contains(&twin_a.path) && body.contains(&twin_b.path) && body.starts_with("2 "),
        "409 lists the matching paths: {body}"
    );
    for prefix in [format!("{shared}a"), format!("{shared}b")] {
        assert_eq!(
            service.get(&format!("/api/v2/containers/{prefix}")).status,
            200
        );
    }
    let unknown = random_hex(20);
    let r = service.get(&format!("/api/v2/containers/{unknown}"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains(&unknown), "{}", r.text());
    let r = service.get(&format!("/api/v2/containers/{unknown}/processes"));
    assert_eq!(r.status, 404, "{}", r.text());

    // The v2 processes route answers as v1.0 for the same container and parameters.
    let first = &cases[0];
    let v2_path = |query: &str| format!("/api/v2/containers/{}/processes?{query}", first.prefix);
    let stable = |snapshot: &Value| -> Vec<Value> {
        api::processes(snapshot)
            .iter()
            .map(|p| {
                json!([
                    p["stat"]["pid"],
                    p["cmdline"],
                    p["cgroup"],
                    p["status"]["Name"],
                    p["stat"]["starttime"],
                    p["status"]["VmRSS"]
                ])
            })
            .collect()
    };
    service.wait_history(5);
    for query in ["", "sort=mem&limit=1", "sort=cpu&count=2&interval=2"] {
        service.wait_until(
            &format!("v2 = v1.0 for ?{query}"),
            service.patience(),
            |s| {
                let r = s.get(&v2_path(query));
                if r.status != 200 {
                    return Err(format!("v2 ?{query}: {} {}", r.status, r.text()));
                }
                let v2 = api::check_answer(&r, &first.container.path, query);
                let v1 = s.snapshots(&first.container.path, query);
                if v2.len() != v1.len() {
                    return Err(format!("{} snapshots vs {}", v2.len(), v1.len()));
                }
                let (a, b) = (stable(v2.last().unwrap()), stable(v1.last().unwrap()));
                if a == b {
                    Ok(())
                } else {
                    Err(format!("v2 {a:?}\nv1.0 {b:?}"))
                }
            },
        );
    }
    for query in ["sort=bogus", "count=1000&interval=1000"] {
        let v2 = service.get(&v2_path(query));
        let v1 = service.get(&format!("{}?{query}", first.container.api_path()));
        assert_eq!(
            (v2.status, v2.text()),
            (v1.status, v1.text()),
            "the same error for ?{query}"
        );
        assert!(v2.status >= 400);
    }
}

// --- companion ps / top / health --------------------------------------------------------------

/// `companion ps` on a container with a memory limit: the columns, the busy process first with
/// --sort cpu at ~100 %, %MEM of the limit, --sort mem, --limit, a cgroup path as the container.
#[test]
fn ps_table_of_a_limited_container() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(
        &format!("/docker/{id}"),
        &[Hierarchy::Cpu, Hierarchy::Memory],
    );
    let limit = 512 * MIB;
    set_memory_limit(&c, limit);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let hog = spawn_memory_hog(&cg, &c, 48);
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &[busy, idle, hog]);
    service.wait_samples(6);
    let prefix = &id[..12];

    let table = service.wait_until(
        "ps --sort cpu to show the busy process first near 100 %",
        service.patience() * 2,
        |s| {
            let table = ps(s, &[prefix, "--sort", "cpu"]);
            match table.rows.first() {
                Some(row) if row.pid == busy && row.cpu > 90.0 => Ok(table),
                _ => Err(format!("{table:#?}")),
            }
        },
    );
    assert!(
        table
            .summary
            .starts_with(&format!("{} ({}): 3 processes", c.path, &id[..12])),
        "summary: {}",
        table.summary
    );
    assert!(
        table
            .summary
            .ends_with(&format!("of {} MiB (limit)", limit >> 20)),
        "summary: {}",
        table.summary
    );
    assert_eq!(set(&pids_of(&table)), set(&[busy, idle, hog]));
    for row in &table.rows[1..] {
        assert!(row.cpu < 5.0, "idle pid {} at {} %CPU", row.pid, row.cpu);
    }
    for row in &table.rows {
        assert_mem_percent(row, limit, "of the limit");
        assert_eq!(row.uid, 0);
        let truth = proc::vm_rss_kb(row.pid).unwrap();
        assert!(
            row.rss_kb.abs_diff(truth) <= truth / 20,
            "pid {} RSS {} kB, /proc {truth} kB",
            row.pid,
            row.rss_kb
        );
        let vsz: u64 = proc::status_field(row.pid, "VmSize")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(row.vsz, vsz, "VSZ of {}", row.pid);
        assert_eq!(
            Some(row.command.clone()),
            proc::cmdline(row.pid).map(|c| c.replace('\n', "\\n"))
        );
        let (minutes, seconds) = row.time.split_once(':').expect("TIME m:ss");
        assert!(minutes.parse::<u64>().is_ok() && seconds.len() == 2);
    }
    let row = |pid: Pid| table.rows.iter().find(|r| r.pid == pid).unwrap();
    assert!(
        row(busy).stat.starts_with('R'),
        "busy STAT {}",
        row(busy).stat
    );
    assert!(
        row(idle).stat.starts_with('S'),
        "idle STAT {}",
        row(idle).stat
    );
    assert!(row(hog).mem > 5.0, "48 MiB of 512 MiB: {}", row(hog).mem);

    // --sort mem: descending RSS; --limit.
    let by_mem = ps(&service, &[prefix, "--sort", "mem"]);
    assert_eq!(by_mem.rows[0].pid, hog);
    assert!(
        by_mem.rows.windows(2).all(|w| w[0].rss_kb >= w[1].rss_kb),
        "{by_mem:#?}"
    );
    let limited = ps(&service, &[prefix, "--sort", "mem", "--limit", "2"]);
    assert_eq!(limited.rows.len(), 2, "{limited:#?}");
    assert_eq!(limited.rows[0].pid, hog);
    let one = ps(
        &service,
        &[prefix, "--sort", "cpu", "--limit", "1", "--interval", "1s"],
    );
    assert_eq!(pids_of(&one), [busy]);

    // The cgroup path as the container.
    let by_path = ps(&service, &[&c.path]);
    assert!(by_path.summary.starts_with(&c.path));
    let mut pids = pids_of(&by_path);
    assert!(pids.is_sorted(), "by pid without --sort: {pids:?}");
    pids.sort_unstable();
    assert_eq!(set(&pids), set(&[busy, idle, hog]));
}

/// Without a memory limit, %MEM is of the host's memory (MemTotal).
#[test]
fn ps_memory_of_the_host_without_a_limit() {
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]);
    let hog = spawn_memory_hog(&cg, &c, 64);
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &[hog, idle]);
    let host = service.get("/api/v2/host").json();
    let total = mem_total_bytes();
    assert_eq!(host["memory_total_bytes"], total, "/api/v2/host memory");

    let table = ps(&service, &[&id[..12], "--sort", "mem"]);
    assert!(
        table
            .summary
            .ends_with(&format!("of {} MiB (host)", total >> 20)),
        "summary: {}",
        table.summary
    );
    assert_eq!(pids_of(&table), [hog, idle]);
    for row in &table.rows {
        assert_mem_percent(row, total, "of the host");
    }
    assert!(table.rows[0].mem >= 0.1, "{:?}", table.rows[0]);
}

/// Unknown containers fail clearly; `top` prints one table per refresh; `health` is 0 against
/// a healthy service and non-zero against a closed port.
#[test]
fn ps_errors_top_and_health() {
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]);
    let pids = [
        cg.spawn(&[&c], spawn::sleeper()),
        cg.spawn(&[&c], spawn::sleeper()),
    ];
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &pids);
    let url = url(&service);

    let unknown = random_hex(16);
    let ran = companion(&["ps", &unknown, "--url", &url]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(
        ran.stderr.contains("no container") && ran.stderr.contains(&unknown),
        "a clear message: {ran:?}"
    );
    assert!(ran.stdout.is_empty(), "{ran:?}");
    let path = format!("/docker/{}", fresh_id(&random_hex(12)));
    let ran = companion(&["ps", &path, "--url", &url]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(
        ran.stderr.contains("no container") && ran.stderr.contains(&path),
        "a clear message: {ran:?}"
    );

    let ran = companion(&[
        "top",
        &id[..12],
        "--iterations",
        "2",
        "--refresh",
        "200ms",
        "--url",
        &url,
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let screens: Vec<&str> = ran.stdout.split("\x1b[H\x1b[2J").skip(1).collect();
    assert_eq!(screens.len(), 2, "two refreshes: {:?}", ran.stdout);
    for screen in screens {
        let table = parse_table(screen);
        assert_eq!(table.header, HEADER);
        assert_eq!(set(&pids_of(&table)), set(&pids));
    }

    // A loaded machine can make the service stale (503) for a moment: then the client must say
    // so and fail; it must succeed once the service is healthy.
    let ran = service.wait_until("companion health to pass", service.patience() * 2, |s| {
        let ran = companion(&["health", "--url", &url]);
        let health: Value = serde_json::from_str(ran.stdout.trim())
            .unwrap_or_else(|e| panic!("health prints the /healthz JSON ({e}): {ran:?}"));
        match (ran.code, health["status"].as_str()) {
            (Some(0), Some("ok")) => Ok(ran),
            (Some(code), Some("stale")) if code != 0 => {
                assert!(ran.stderr.contains("503"), "{ran:?}");
                Err(format!("stale: {ran:?} ({})", s.period.as_secs_f64()))
            }
            _ => panic!("exit status and /healthz disagree: {ran:?}"),
        }
    });
    assert!(ran.stderr.is_empty(), "{ran:?}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let ran = companion(&["health", "--url", &closed]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(!ran.stderr.trim().is_empty(), "says why: {ran:?}");
}

// --- compression ------------------------------------------------------------------------------

fn decode(r: &Response, encoding: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let result = match encoding {
        "gzip" => flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut out),
        // HTTP's "deflate" is the zlib format (RFC 9110, 8.4.1.2).
        "deflate" => flate2::read::ZlibDecoder::new(&r.body[..]).read_to_end(&mut out),
        other => panic!("no decoder for {other}"),
    };
    result.unwrap_or_else(|e| panic!("the {encoding} body does not decode: {e}"));
    out
}

/// The structure of a JSON value: keys, array lengths and types, not values.
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// `Accept-Encoding: gzip` or `deflate` gets a compressed answer that decodes to the same
/// document; without the header (or with `identity`) nothing is compressed. For the v1.0
/// answer, /api/v2/containers, /metrics, /api/v2/host and /openapi.json.
#[test]
fn compression() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pids: Vec<Pid> = (0..3).map(|_| cg.spawn(&[&c], spawn::sleeper())).collect();
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &pids);
    service.wait_history(4);

    let processes = format!("{}?count=3", c.api_path());
    for path in [
        processes.as_str(),
        "/api/v2/containers",
        "/metrics",
        "/api/v2/host",
        "/openapi.json",
    ] {
        let plain = get_encoded(&service, path, None);
        assert_eq!(plain.status, 200, "{path}: {}", plain.text());
        assert_eq!(
            plain.header("content-encoding"),
            None,
            "{path} without Accept-Encoding"
        );
        let identity = get_encoded(&service, path, Some("identity"));
        assert_eq!(
            identity.header("content-encoding"),
            None,
            "{path} with identity"
        );
        for encoding in ["gzip", "deflate"] {
            let r = get_encoded(&service, path, Some(encoding));
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("content-encoding"),
                Some(encoding),
                "{path} with Accept-Encoding: {encoding}"
            );
            assert!(
                r.header("vary")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
                "{path}: Vary {:?}",
                r.header("vary")
            );
            assert_eq!(
                r.header("content-type"),
                plain.header("content-type"),
                "{path}"
            );
            let body = decode(&r, encoding);
            assert!(
                body.len() > r.body.len() || body.len() < 200,
                "{path}: {} bytes sent for {} decoded",
                r.body.len(),
                body.len()
            );
            let what = format!("{path} ({encoding})");
            if path == "/metrics" {
                let families = |e: Exposition| -> BTreeSet<(String, String)> {
                    e.families.into_iter().map(|f| (f.name, f.kind)).collect()
                };
                let decoded = openmetrics::parse(&String::from_utf8(body).unwrap())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let plain = openmetrics::parse(&plain.text()).unwrap();
                assert_eq!(families(decoded), families(plain), "{what}");
                continue;
            }
            let decoded: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{what} is not JSON once decoded: {e}"));
            let plain_json = plain.json();
            match path {
                "/api/v2/host" | "/openapi.json" => assert_eq!(decoded, plain_json, "{what}"),
                "/api/v2/containers" => {
                    // Other containers of the host may come and go between the two answers.
                    let keys = |v: &Value| -> BTreeSet<Vec<String>> {
                        v.as_array()
                            .unwrap()
                            .iter()
                            .map(|c| c.as_object().unwrap().keys().cloned().collect())
                            .collect()
                    };
                    assert_eq!(keys(&decoded), keys(&plain_json), "{what}");
                    let ours = |v: &Value| shape(entry(v.as_array().unwrap(), &c.path).unwrap());
                    assert_eq!(ours(&decoded), ours(&plain_json), "{what}");
                }
                _ => {
                    assert_eq!(shape(&decoded), shape(&plain_json), "{what}");
                    let listed = |v: &Value| -> Vec<BTreeSet<Pid>> {
                        v.as_array().unwrap().iter().map(api::pids).collect()
                    };
                    assert_eq!(listed(&decoded), vec![set(&pids); 3], "{what}");
                }
            }
        }
    }
}

// --- OpenAPI ----------------------------------------------------------------------------------

/// The routes of the service, from the `ROUTES` constant of its source.
fn routes_in_source() -> Vec<String> {
    let source = include_str!("../../companion/src/api/mod.rs");
    let start = source
        .find("pub const ROUTES")
        .expect("ROUTES in companion/src/api/mod.rs");
    let body = &source[start..];
    let body = &body[body.find("= [").expect("ROUTES = [")..body.find("];").unwrap()];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// /openapi.json is served: OpenAPI 3.0.x, the document in the source tree, and every route of
/// the service (ROUTES) among its paths, each with a GET answering 200.
#[test]
fn openapi_is_served() {
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    let r = service.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    let doc = r.json();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.0."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let routes = routes_in_source();
    assert!(routes.len() >= 8, "ROUTES parsed as {routes:?}");
    let paths = doc["paths"].as_object().expect("paths");
    for route in &routes {
        let item = paths
            .get(route)
            .unwrap_or_else(|| panic!("{route} is not in the served document"));
        assert!(
            item["get"]["responses"]["200"].is_object(),
            "{route}: GET with a 200 response"
        );
    }
    let documented: BTreeSet<&String> = paths.keys().collect();
    let served: BTreeSet<&String> = routes.iter().collect();
    assert_eq!(documented, served, "documented paths = routes");
    let file: Value = serde_json::from_str(include_str!("../../companion/src/api/openapi.json"))
        .expect("the source document is JSON");
    assert_eq!(
        doc, file,
        "the served document is the one in the source tree"
    );
    // Every $ref resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {reference}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {reference} resolves");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                collect_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
