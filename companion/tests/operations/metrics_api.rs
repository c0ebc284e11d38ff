//! /metrics against the API: the same figures from one sample, and the top processes.

use super::*;

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
        let labels = [("path", c.path.as_str())];
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
    let truth = rss_bytes_of(&pid_set(&[busy, idle, hog]));
    let limited_rss = one.summaries[0]["rss_bytes"].as_u64().unwrap();
    assert!(
        limited_rss.abs_diff(truth) <= truth / 20,
        "RSS {limited_rss} vs /proc {truth}"
    );
    assert_eq!(one.summaries[0]["runtime"], "docker");
    assert_eq!(one.summaries[0]["id"], id.as_str());
    let labels = [("path", limited.path.as_str())];
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
            &[("path", unlimited.path.as_str())]
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
            assert_eq!(labels, ["comm", "path", "pid"], "{name} labels");
            assert!(keys.insert(sample.label("pid").unwrap().to_owned()));
        }
        let mine = family
            .samples
            .iter()
            .find(|s| s.label("pid") == Some(&busy_label))
            .unwrap_or_else(|| panic!("busy {busy} not in {name}"));
        assert_eq!(mine.label("path"), Some(c.path.as_str()));
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
