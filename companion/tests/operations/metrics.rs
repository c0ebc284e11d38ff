//! /metrics: families, types and the OpenMetrics exposition.

use super::*;

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
        ("companion_sampler_threads", "gauge", ""),
        ("companion_open_descriptors", "gauge", ""),
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
        ("companion_sampler_threads", "sampler_threads"),
        ("companion_open_descriptors", "open_descriptors"),
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
    let labels = [("path", c.path.as_str())];
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
