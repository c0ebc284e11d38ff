//! Is the container starved? Limits, throttling and pressure beside its processes: the real
//! binary against real cgroups with real limits, checked against the kernel's own files.
//!
//! - A busy loop capped at 0.2 cores is throttled in most periods (~0.8 s per second) and shows
//!   its limit; an uncapped busy loop shows neither.
//! - A 64 MiB memory limit with 40 MiB in use: usage and limit right within a sample; an OOM
//!   kill moves the kill and failure counters.
//! - Pressure (PSI) for a cgroup in the unified hierarchy, `null` for one only in v1, and
//!   `null` again (no error) once its unified directory is removed under the service.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, cpu_heavy, openmetrics, proc,
    service::companion_bin, spawn, unique_id, wait_for,
};

const MIB: u64 = 1 << 20;

/// Writes a cgroup control file and checks the kernel kept the value.
fn write_knob(dir: &Path, file: &str, value: &str) {
    let path = dir.join(file);
    fs::write(&path, value)
        .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    let kept = fs::read_to_string(&path).unwrap();
    assert_eq!(kept.trim(), value, "{} kept another value", path.display());
}

/// A `key value` figure of a cgroup file (`cpu.stat`, `memory.oom_control`).
fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
    let text = fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}: {text}"))
}

fn number(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The `total=` microseconds of the `some` (or `full`) line of a pressure file.
fn psi_total_us(dir: &Path, file: &str, kind: &str) -> u64 {
    let text = fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find(|l| l.starts_with(kind))
        .and_then(|l| l.rsplit_once("total=")?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {kind} total in {file}: {text}"))
}

/// A Docker-style container `/docker/<unique id>` in `hierarchies`; its id.
fn docker(cg: &TestCgroup, hierarchies: &[Hierarchy]) -> (Container, String) {
    let id = unique_id();
    (cg.container_at(&format!("/docker/{id}"), hierarchies), id)
}

/// `/api/v2/containers/{id}?interval=N`, once the container is listed.
fn summary(service: &Service, id: &str, interval: usize) -> Value {
    let path = format!("/api/v2/containers/{id}?interval={interval}");
    service.wait_until(&format!("{path} to answer"), service.patience(), |s| {
        let r = s.get(&path);
        if r.status == 200 {
            Ok(r.json())
        } else {
            Err(format!("{}: {}", r.status, r.text()))
        }
    })
}

/// Samples in about `seconds`.
fn samples_in(service: &Service, seconds: f64) -> usize {
    ((seconds / service.period.as_secs_f64()).round() as usize).clamp(1, service.history - 1)
}

fn f(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The summary line of `companion ps <id>` against the service (plus `extra` flags).
fn ps_summary(service: &Service, id: &str, extra: &[&str]) -> String {
    let url = format!("http://{}", service.addr);
    let out = Command::new(companion_bin())
        .args(["ps", id, "--url", &url])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running companion ps");
    assert!(
        out.status.success(),
        "companion ps {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().next().unwrap_or_default().to_owned()
}

/// The number before `suffix` in `text` (`"throttled 93% of periods"`, `"%"` … ).
fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let head = &text[..text.find(suffix)?];
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

fn metric(service: &Service, sample: &str, container: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let text = service.get("/metrics").text();
    let exposition = openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut labels = vec![("path", container)];
    labels.extend_from_slice(extra);
    exposition.value(sample, &labels)
}

/// The family `name` on /metrics has this type and unit, and its counters' samples are
/// `<name>_total`.
fn assert_family(service: &Service, name: &str, kind: &str, unit: &str) {
    let text = service.get("/metrics").text();
    let exposition = openmetrics::parse(&text).unwrap();
    let family = exposition.expect(name);
    assert_eq!(
        (family.kind.as_str(), family.unit.as_str()),
        (kind, unit),
        "type and unit of {name}"
    );
    assert!(!family.help.is_empty(), "{name} has no HELP");
    if kind == "counter" {
        let total = format!("{name}_total");
        assert!(
            family.samples.iter().all(|s| s.name == total),
            "{:?}",
            family.samples
        );
    }
}

/// A busy loop capped at 0.2 cores (`cpu.cfs_quota_us` 20000 of 100000) is throttled in most
/// periods, ~0.8 s per second, and its limit is 0.2 cores, in the API, /metrics and `ps`; an
/// uncapped busy loop has no limit and is never throttled.
#[test]
fn cpu_quota_throttles_a_busy_loop() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    // A systemd-style name under the test's own prefix, so that the prefix can get the largest
    // weight: on a shared, overloaded machine the loop must still get its 0.2 cores to be
    // throttled at all.
    let capped_id = unique_id();
    let capped = cg.container_named(
        &format!("docker-{capped_id}.scope"),
        &[Hierarchy::Cpu, Hierarchy::Cpuacct],
    );
    write_knob(
        &Hierarchy::Cpu.mount().join(cg.prefix()),
        "cpu.shares",
        "262144",
    );
    let (free, free_id) = docker(&cg, &[Hierarchy::Cpu]);
    let cpu_dir = capped.dir(Hierarchy::Cpu);
    write_knob(cpu_dir, "cpu.cfs_period_us", "100000");
    write_knob(cpu_dir, "cpu.cfs_quota_us", "20000");
    cg.spawn(&[&capped], spawn::busy_loop());
    cg.spawn(&[&free], spawn::busy_loop());
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    let interval = samples_in(&service, 2.0);
    service.wait_history(interval + 2);

    // The kernel's view over about the same window, around the API's.
    let truth = |dir: &Path| {
        (
            keyed(dir, "cpu.stat", "nr_periods"),
            keyed(dir, "cpu.stat", "nr_throttled"),
            keyed(dir, "cpu.stat", "throttled_time"),
        )
    };
    let began = Instant::now();
    let before = truth(cpu_dir);
    std::thread::sleep(Duration::from_secs(2));
    let c = summary(&service, &capped_id, interval);
    let after = truth(cpu_dir);
    let seconds = began.elapsed().as_secs_f64();
    let kernel_rate = (after.2 - before.2) as f64 / 1e9 / seconds;
    eprintln!("capped: {c:#}\nkernel: {kernel_rate:.2} s throttled per s");
    assert!(
        (0.5..=1.2).contains(&kernel_rate),
        "the kernel throttled {kernel_rate:.2} s per s (expected ~0.8)"
    );

    assert_eq!(c["limits"]["cpu_cores"], 0.2, "{c:#}");
    assert_eq!(c["limits"]["cpu_shares"], 1024, "{c:#}");
    assert_eq!(c["id"], capped_id.as_str(), "{c:#}");
    let t = &c["throttling"];
    let window = f(&t["interval_seconds"]);
    // N samples apart: at least N periods (more when a loaded machine made samples slip).
    assert!(
        window >= 0.9 * interval as f64 * service.period.as_secs_f64(),
        "{t}"
    );
    assert!(f(&t["periods"]) >= 5.0, "{t}");
    assert!(
        f(&t["throttled_percent"]) > 50.0,
        "throttled in most periods: {t}"
    );
    let rate = f(&t["throttled_seconds"]) / window;
    assert!(
        (rate - kernel_rate).abs() < 0.3 && (0.5..=1.2).contains(&rate),
        "API: {rate:.2} s throttled per s, kernel {kernel_rate:.2}: {t}"
    );
    assert!(
        (5.0..=35.0).contains(&f(&c["cpu_percent"])),
        "0.2 cores are ~20 % of a core: {c:#}"
    );
    assert!(c["memory"].is_null() || c["memory"].is_object());

    let u = summary(&service, &free_id, interval);
    assert_eq!(u["limits"]["cpu_cores"], Value::Null, "{u:#}");
    assert_eq!(u["throttling"]["throttled_periods"], 0, "{u:#}");
    assert_eq!(u["throttling"]["throttled_seconds"], 0.0, "{u:#}");
    // It runs (how much depends on the machine's other load), unthrottled.
    assert!(f(&u["cpu_percent"]) > 1.0, "uncapped busy loop: {u:#}");

    // /metrics: counters between the kernel's figures read before and after the scrape.
    let throttled = |s: &Service| {
        metric(
            s,
            "companion_container_cpu_throttled_seconds_total",
            &capped.path,
            &[],
        )
    };
    let low = keyed(cpu_dir, "cpu.stat", "throttled_time") as f64 / 1e9;
    service.wait_samples(2);
    let scraped = throttled(&service).expect("throttled seconds of the capped container");
    let high = keyed(cpu_dir, "cpu.stat", "throttled_time") as f64 / 1e9;
    assert!(
        low <= scraped && scraped <= high,
        "metric {scraped} outside the kernel's {low}..{high}"
    );
    let periods = metric(
        &service,
        "companion_container_cpu_throttled_periods_total",
        &capped.path,
        &[],
    )
    .unwrap();
    assert!(periods >= after.1 as f64, "{periods} < {}", after.1);
    assert_eq!(
        metric(
            &service,
            "companion_container_cpu_limit_cores",
            &capped.path,
            &[]
        ),
        Some(0.2)
    );
    assert_eq!(
        metric(
            &service,
            "companion_container_cpu_limit_cores",
            &free.path,
            &[]
        ),
        None,
        "no limit, no series"
    );
    assert_eq!(
        metric(
            &service,
            "companion_container_cpu_throttled_seconds_total",
            &free.path,
            &[]
        ),
        Some(0.0)
    );

    for (name, kind, unit) in [
        ("companion_container_cpu_limit_cores", "gauge", ""),
        ("companion_container_cpu_periods", "counter", ""),
        ("companion_container_cpu_throttled_periods", "counter", ""),
        (
            "companion_container_cpu_throttled_seconds",
            "counter",
            "seconds",
        ),
    ] {
        assert_family(&service, name, kind, unit);
    }

    // companion ps: the limit and the throttling of the last interval in the summary line.
    let line = ps_summary(&service, &capped_id, &["--interval", "2s"]);
    assert!(line.contains("limit 0.20 cores"), "{line}");
    let shown = number_before(&line, "% of periods").unwrap_or_else(|| panic!("{line}"));
    assert!(shown > 50.0, "{line}");
    let free_line = ps_summary(&service, &free_id, &[]);
    assert!(
        !free_line.contains("throttled") && !free_line.contains("cores"),
        "{free_line}"
    );
    // --cpu-of limit: the busy loop uses about all of its 0.2 cores.
    let table = {
        let url = format!("http://{}", service.addr);
        let out = Command::new(companion_bin())
            .args([
                "ps",
                &capped_id,
                "--url",
                &url,
                "--cpu-of",
                "limit",
                "--interval",
                "2s",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let row = table
        .lines()
        .nth(2)
        .unwrap_or_else(|| panic!("no process row:\n{table}"));
    let cpu: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        (50.0..=130.0).contains(&cpu),
        "%CPU of the limit {cpu}:\n{table}"
    );
}

/// Starts python in `container` holding `mib` MiB of written memory; waits until it has them.
fn spawn_hog(cg: &TestCgroup, container: &Container, mib: u64) -> Pid {
    let ready = cg.temp_dir().join(format!("allocated-{mib}"));
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

/// A 64 MiB memory limit with a process holding 40 MiB: usage and limit are right within a
/// sample of the allocation; after an OOM kill the kill and failure counters follow the kernel.
/// The /proc-scan tracker here (the CPU test runs the eBPF one): cgroup figures are the same.
#[test]
fn memory_limit_usage_and_oom_kill() {
    let cg = TestCgroup::new();
    let (c, id) = docker(&cg, &[Hierarchy::Cpu, Hierarchy::Memory]);
    let memory_dir = c.dir(Hierarchy::Memory);
    write_knob(memory_dir, "memory.limit_in_bytes", &(64 * MIB).to_string());
    // Without swap in the limit the kernel would swap rather than kill.
    if memory_dir.join("memory.memsw.limit_in_bytes").exists() {
        write_knob(
            memory_dir,
            "memory.memsw.limit_in_bytes",
            &(64 * MIB).to_string(),
        );
    }
    cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    summary(&service, &id, 1);

    spawn_hog(&cg, &c, 40);
    // Two more samples: the second began after the allocation.
    service.wait_samples(2);
    let usage = number(memory_dir, "memory.usage_in_bytes");
    let s = summary(&service, &id, 1);
    eprintln!("{s:#}");
    assert_eq!(s["limits"]["memory_bytes"], 64 * MIB, "{s:#}");
    assert_eq!(
        s["limits"]["memory_high_bytes"],
        Value::Null,
        "v1 has no memory.high"
    );
    let m = &s["memory"];
    let shown = f(&m["usage_bytes"]);
    assert!(
        shown >= (40 * MIB) as f64 && (shown - usage as f64).abs() <= 0.1 * usage as f64,
        "usage {shown}, kernel {usage}: {m}"
    );
    assert!(
        (f(&m["percent_of_limit"]) - 100.0 * shown / (64 * MIB) as f64).abs() < 0.01,
        "{m}"
    );
    let failcnt_before = number(memory_dir, "memory.failcnt");
    let kills_before = keyed(memory_dir, "memory.oom_control", "oom_kill");
    assert_eq!(m["oom_kills"], kills_before, "{m}");

    let line = ps_summary(&service, &id, &[]);
    assert!(line.ends_with("of 64 MiB (limit)"), "{line}");
    let percent = number_before(&line, "%) of 64 MiB").unwrap_or_else(|| panic!("{line}"));
    assert!((60.0..=100.0).contains(&percent), "{line}");

    // Allocate past the limit: the kernel kills the largest process of the cgroup.
    let greedy = cg.spawn(&[&c], spawn::python_code("b = b'x' * (200 << 20)\n"));
    assert!(
        cg.wait_exit(greedy, Duration::from_secs(30)),
        "the allocation past the limit was not killed"
    );
    let kills = keyed(memory_dir, "memory.oom_control", "oom_kill");
    assert!(kills > kills_before, "no OOM kill counted by the kernel");
    // memory.failcnt may stay put (this kernel counts the kill in oom_control only): the API
    // must show whatever the kernel counts.
    let failcnt = number(memory_dir, "memory.failcnt");
    assert!(failcnt >= failcnt_before);
    let after = service.wait_until("the API to count the OOM kill", service.patience(), |s| {
        let v = s.get(&format!("/api/v2/containers/{id}")).json();
        let m = &v["memory"];
        if m["oom_kills"] == kills && m["failcnt"] == failcnt {
            Ok(v)
        } else {
            Err(format!("{m} (kernel: {kills} kills, failcnt {failcnt})"))
        }
    });
    eprintln!("after the kill: {:#}", after["memory"]);
    assert_eq!(
        metric(
            &service,
            "companion_container_memory_oom_kills_total",
            &c.path,
            &[]
        ),
        Some(kills as f64)
    );
    assert!(
        metric(
            &service,
            "companion_container_memory_usage_bytes",
            &c.path,
            &[]
        )
        .unwrap()
            > 0.0
    );
    for (name, kind, unit) in [
        ("companion_container_memory_usage_bytes", "gauge", "bytes"),
        ("companion_container_memory_oom_kills", "counter", ""),
        ("companion_container_memory_failcnt", "counter", ""),
    ] {
        assert_family(&service, name, kind, unit);
    }
}

/// On this hybrid host: pressure for a cgroup in the unified hierarchy (its totals within the
/// kernel's, over the interval too), `null` for one only in v1, and `null` once the unified
/// directory is removed while the service reads it; never an error.
#[test]
fn pressure_in_the_unified_hierarchy_only() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let (unified, unified_id) = docker(&cg, &[Hierarchy::Cpu, Hierarchy::Unified]);
    let (v1_only, v1_id) = docker(&cg, &[Hierarchy::Cpu]);
    // Three busy loops in 0.2 cores: they wait for the CPU most of the time.
    write_knob(unified.dir(Hierarchy::Cpu), "cpu.cfs_quota_us", "20000");
    let busy: Vec<Pid> = (0..3)
        .map(|_| cg.spawn(&[&unified], spawn::busy_loop()))
        .collect();
    cg.spawn(&[&v1_only], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    let interval = samples_in(&service, 2.0);
    service.wait_history(interval + 2);

    let dir = unified.dir(Hierarchy::Unified);
    let low = psi_total_us(dir, "cpu.pressure", "some") as f64 / 1e6;
    service.wait_samples(2);
    let s = summary(&service, &unified_id, interval);
    let high = psi_total_us(dir, "cpu.pressure", "some") as f64 / 1e6;
    eprintln!("{:#}", s["pressure"]);
    let cpu = &s["pressure"]["cpu"]["some"];
    let total = f(&cpu["total_seconds"]);
    assert!(
        low <= total && total <= high,
        "{total} outside {low}..{high}"
    );
    assert!(
        f(&cpu["interval_percent"]) > 20.0,
        "three loops in 0.2 cores stall: {cpu}"
    );
    for resource in ["cpu", "memory", "io"] {
        let p = &s["pressure"][resource];
        for key in [
            "avg10",
            "avg60",
            "avg300",
            "total_seconds",
            "interval_seconds",
        ] {
            assert!(p["some"][key].is_number(), "{resource} some {key}: {p}");
        }
        assert!(
            p["full"].is_object(),
            "this kernel writes `full` for {resource}: {p}"
        );
    }
    assert_eq!(
        metric(
            &service,
            "companion_container_pressure_stalled_seconds_total",
            &unified.path,
            &[("resource", "memory"), ("kind", "full")]
        )
        .map(|v| v >= 0.0),
        Some(true)
    );

    assert_family(
        &service,
        "companion_container_pressure_stalled_seconds",
        "counter",
        "seconds",
    );

    let v = summary(&service, &v1_id, interval);
    assert_eq!(v["pressure"], Value::Null, "{v:#}");
    assert!(v["throttling"].is_object(), "v1 cpu.stat still read: {v:#}");
    assert_eq!(
        metric(
            &service,
            "companion_container_pressure_stalled_seconds_total",
            &v1_only.path,
            &[("resource", "cpu"), ("kind", "some")]
        ),
        None
    );

    // Remove the unified directory under the service: the container stays, pressure goes.
    let root = Hierarchy::Unified.mount().join("cgroup.procs");
    for pid in &busy {
        fs::write(&root, pid.to_string()).unwrap();
    }
    fs::remove_dir(dir).unwrap();
    service.wait_until("pressure to become null", service.patience(), |s| {
        let r = s.get(&format!("/api/v2/containers/{unified_id}"));
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, r.text()));
        }
        let v = r.json();
        if v["pressure"].is_null() && v["limits"]["cpu_cores"] == 0.2 {
            Ok(())
        } else {
            Err(format!("{v:#}"))
        }
    });
    let all = service.get("/api/v2/containers");
    assert_eq!(all.status, 200);
    let log = service.log_text();
    // Nothing went wrong but, on a loaded machine, samples that overran their period.
    assert!(
        !log.lines()
            .any(|l| (l.contains("WARN") || l.contains("ERROR"))
                && !l.contains("overran its period")),
        "{log}"
    );
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The cost of the cgroup reads: a release service over N Docker-like containers (one `sleep`
/// each, in the cpu, cpuacct and memory v1 hierarchies and the unified one, as Docker makes
/// them here), alternately with `--cgroup-stats true` and `false`, several rounds; the mean
/// sample duration and the service's CPU per sample of each run, medians compared.
///
/// `COMPANION_COST_CONTAINERS` (default 250: their files all fit the descriptor budget
/// of a 20,000-descriptor limit), `COMPANION_COST_ROUNDS` (default 3),
/// `COMPANION_COST_SECONDS` per run (default 15). Run it alone on a quiet machine:
/// `cargo test --release -p companion --test limits -- --ignored --nocapture cost`.
#[test]
#[ignore = "a measurement, not a check: run it explicitly"]
fn cost_of_the_cgroup_reads() {
    let _quiet = cpu_heavy();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("COMPANION_COST_CONTAINERS", 250);
    let rounds = env("COMPANION_COST_ROUNDS", 3);
    let seconds = env("COMPANION_COST_SECONDS", 15) as u64;
    let cg = TestCgroup::new();
    for _ in 0..n {
        let (c, _) = docker(
            &cg,
            &[
                Hierarchy::Cpu,
                Hierarchy::Cpuacct,
                Hierarchy::Memory,
                Hierarchy::Unified,
            ],
        );
        cg.spawn(&[&c], spawn::sleeper());
    }
    let tps = proc::ticks_per_second() as f64;
    let histogram = |s: &Service| {
        let text = s.get("/metrics").text();
        let e = openmetrics::parse(&text).unwrap();
        (
            e.value("companion_sample_duration_seconds_sum", &[])
                .unwrap(),
            e.value("companion_sample_duration_seconds_count", &[])
                .unwrap(),
        )
    };
    let mut runs: Vec<(bool, f64, f64)> = Vec::new();
    for round in 0..rounds {
        for stats in [true, false] {
            let flag = stats.to_string();
            let service = Service::start(&[
                "--tracker",
                "ebpf",
                "--sample-period",
                "1s",
                "--cgroup-stats",
                &flag,
            ]);
            service.wait_until("every container listed", Duration::from_secs(60), |s| {
                let listed = s.health()["containers"].as_u64().unwrap_or(0) as usize;
                if listed >= n {
                    Ok(())
                } else {
                    Err(format!("{listed} of {n}"))
                }
            });
            service.wait_samples(3);
            let (sum0, count0) = histogram(&service);
            let cpu0 = proc::cpu_ticks(service.pid()).unwrap();
            std::thread::sleep(Duration::from_secs(seconds));
            let (sum1, count1) = histogram(&service);
            let cpu1 = proc::cpu_ticks(service.pid()).unwrap();
            let samples = count1 - count0;
            let duration = (sum1 - sum0) / samples;
            let cpu = (cpu1 - cpu0) as f64 / tps / samples;
            eprintln!(
                "round {round}, --cgroup-stats {flag}: {samples} samples, {:.2} ms per sample, {:.2} ms CPU per sample",
                duration * 1e3,
                cpu * 1e3
            );
            runs.push((stats, duration, cpu));
        }
    }
    let pick = |stats: bool, what: fn(&(bool, f64, f64)) -> f64| {
        median(runs.iter().filter(|r| r.0 == stats).map(what).collect())
    };
    let (with, without) = (pick(true, |r| r.1), pick(false, |r| r.1));
    let (cpu_with, cpu_without) = (pick(true, |r| r.2), pick(false, |r| r.2));
    eprintln!(
        "{n} containers, medians of {rounds} runs of {seconds} s: sample {:.2} ms with the cgroup reads, \
         {:.2} ms without: +{:.1} µs per container per sample; CPU per sample {:.2} ms vs {:.2} ms: \
         +{:.1} µs per container per sample",
        with * 1e3,
        without * 1e3,
        (with - without) / n as f64 * 1e6,
        cpu_with * 1e3,
        cpu_without * 1e3,
        (cpu_with - cpu_without) / n as f64 * 1e6,
    );
    assert!(with > 0.0 && without > 0.0);
}
