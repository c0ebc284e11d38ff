//! /healthz and shutting down on SIGTERM and SIGINT.

use super::*;

both_trackers!(
    healthz_reports_the_service,
    shutdown_on_sigterm,
    shutdown_on_sigint,
    shutdown_with_a_stalled_client
);

/// /healthz: status, tracker, counts and freshness.
fn healthz_reports_the_service(tracker: Tracker) {
    let cg = TestCgroup::new();
    let a = cg.container(&[Hierarchy::Cpu]);
    let b = cg.container(&[Hierarchy::Cpu]);
    let pa = cg.spawn(&[&a], spawn::sleeper());
    let pb1 = cg.spawn(&[&b], spawn::sleeper());
    let pb2 = cg.spawn(&[&b], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&a, &[pa]);
    service.wait_listed(&b, &[pb1, pb2]);

    let r = service.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    let h = r.json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["tracker"], tracker.name(), "{h}");
    assert!(h["tracked_processes"].as_u64().unwrap() >= 3, "{h}");
    assert!(h["containers"].as_u64().unwrap() >= 2, "{h}");
    let period = service.period.as_secs_f64();
    let age = h["newest_sample_age_seconds"].as_f64().unwrap();
    assert!(
        (0.0..2.0 * period + 0.5).contains(&age),
        "newest sample {age}s old with a {period}s period: {h}"
    );
    assert_eq!(h["sample_period_seconds"].as_f64(), Some(period), "{h}");
    let in_history = h["samples_in_history"].as_u64().unwrap();
    assert!(in_history >= 1 && in_history <= h["history_capacity"].as_u64().unwrap());
    for key in [
        "samples_taken",
        "events_received",
        "events_lost",
        "reconciliations",
        "repairs",
    ] {
        assert!(h[key].is_u64(), "{key} in {h}");
    }
    assert!(h["degraded"].is_null(), "{h}");
    // It keeps sampling.
    let taken = h["samples_taken"].as_u64().unwrap();
    service.wait_samples(2);
    assert!(service.health()["samples_taken"].as_u64().unwrap() >= taken + 2);
}

fn assert_prompt_exit(service: &mut Service, signal: Signal) {
    let (status, took) = service
        .stop_with(signal, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5s of {signal}"));
    assert!(
        status.success(),
        "exit status after {signal}: {status}; log:\n{}",
        service.log_text()
    );
    assert!(
        took < Duration::from_secs(3),
        "{signal}: exit took {took:?}"
    );
}

/// SIGTERM: graceful shutdown, exit 0, promptly, with an idle keep-alive connection open.
fn shutdown_on_sigterm(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    service.wait_samples(1);
    // An idle keep-alive connection that already got its answer.
    let mut idle = TcpStream::connect(service.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_prompt_exit(&mut service, Signal::SIGTERM);
}

/// SIGINT (Ctrl-C): the same.
fn shutdown_on_sigint(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    service.wait_samples(1);
    assert_prompt_exit(&mut service, Signal::SIGINT);
}

/// A client that sent half a request and went quiet must not hold the shutdown.
fn shutdown_with_a_stalled_client(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    let mut stalled = TcpStream::connect(service.addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Let the service read what was sent.
    std::thread::sleep(Duration::from_millis(200));
    assert_prompt_exit(&mut service, Signal::SIGTERM);
    drop(stalled);
}
