//! The HTTP limits: slow, idle and flooding clients, long URLs, bodies, memory under bad requests.

use super::*;

/// Reads one response (head and `Content-Length` body) from a kept-alive connection.
fn read_one_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = http::parse_response(&raw[..end + 4])?;
            let length: usize = head
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| io::Error::other("no content-length"))?;
            if raw.len() >= end + 4 + length {
                return http::parse_response(&raw[..end + 4 + length]);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A kept-alive `GET /api/v2/host` (always 200 when served) on `stream`.
fn keep_alive_request(stream: &mut TcpStream) -> io::Result<Response> {
    stream.write_all(b"GET /api/v2/host HTTP/1.1\r\nHost: x\r\n\r\n")?;
    read_one_response(stream)
}

/// Reads until the peer closes (EOF or reset) or `limit` passes; returns what was received and
/// whether it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let began = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while began.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

/// `--header-timeout 1s`: a client trickling its headers (a byte every 300 ms) and an idle
/// kept-alive connection are both closed after about a second.
/// Without the feature: both stay open for the default 10 s (the 4 s bound fails).
#[test]
fn slow_and_idle_clients_are_dropped() {
    let service = Service::with_tracker(Tracker::Procfs, &["--header-timeout", "1s"]);

    // Slowloris.
    let began = Instant::now();
    let mut slow = TcpStream::connect(service.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let closed_after = loop {
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "a client sending a header byte every 300 ms is still connected after 8 s"
        );
        // Errors once closed (EPIPE, reset): then the read says so.
        let _ = slow.write_all(b"a");
        match slow.read(&mut buf) {
            Ok(0) => break began.elapsed(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break began.elapsed(),
        }
    };
    assert!(
        closed_after >= Duration::from_millis(700) && closed_after < Duration::from_secs(4),
        "the slow client was dropped after {closed_after:?}, expected about 1 s"
    );
    if !received.is_empty() {
        let r = http::parse_response(&received).expect("an HTTP answer");
        assert!(
            r.status >= 400,
            "the slow client got {} {}",
            r.status,
            r.text()
        );
    }

    // Idle keep-alive.
    let mut idle = TcpStream::connect(service.addr).unwrap();
    let r = keep_alive_request(&mut idle).expect("a kept-alive request");
    assert_eq!(r.status, 200);
    let began = Instant::now();
    let (after, closed) = read_until_closed(&mut idle, Duration::from_secs(8));
    let idle_for = began.elapsed();
    assert!(
        closed,
        "an idle kept-alive connection is still open after {idle_for:?}"
    );
    assert!(
        after.is_empty() || after.starts_with(b"HTTP/1.1 408"),
        "the idle connection received {:?}",
        String::from_utf8_lossy(&after)
    );
    assert!(
        idle_for >= Duration::from_millis(700) && idle_for < Duration::from_secs(4),
        "the idle connection was closed after {idle_for:?}, expected about 1 s"
    );
    // A client that sends its request in time is served meanwhile.
    assert_alive_and_sampling(&service);
}

/// `--max-connections 2`: a third simultaneous connection gets a quick 503 (or is closed)
/// while the first two still work; once they close, new connections are served.
/// Without the feature: the third connection is served (nothing arrives before its request).
#[test]
fn connection_cap_refuses_the_third_connection() {
    let service = Service::with_tracker(Tracker::Procfs, &["--max-connections", "2"]);
    // The harness's own Connection: close probes may hold a slot a moment longer.
    let open = || {
        wait_for("a served connection", Duration::from_secs(5), || {
            let mut stream = TcpStream::connect(service.addr).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            match keep_alive_request(&mut stream) {
                Ok(r) if r.status == 200 => Ok(stream),
                Ok(r) => Err(format!("{} {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        })
    };
    let mut first = open();
    let mut second = open();

    for _ in 0..3 {
        let began = Instant::now();
        let mut third = TcpStream::connect(service.addr).unwrap();
        // It sends nothing: whatever arrives is the refusal.
        let (received, closed) = read_until_closed(&mut third, Duration::from_secs(3));
        let took = began.elapsed();
        assert!(
            closed,
            "a third connection was neither refused nor closed within {took:?}"
        );
        assert!(took < Duration::from_secs(2), "refused after {took:?}");
        if !received.is_empty() {
            let r = http::parse_response(&received).expect("an HTTP refusal");
            assert_eq!(r.status, 503, "{}", r.text());
        }
    }

    for stream in [&mut first, &mut second] {
        let r = keep_alive_request(stream).expect("the first two connections still work");
        assert_eq!(r.status, 200);
    }
    drop(first);
    drop(second);
    wait_for(
        "new connections served once the two closed",
        Duration::from_secs(5),
        || match http::request(service.addr, "GET", "/api/v2/host", "") {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        },
    );
    let third = open();
    let fourth = open();
    drop((third, fourth));
}

/// `--max-in-flight 1`: a burst of 64 concurrent heavy requests gets quick 503 "overloaded"
/// answers besides its 200s, never anything else, and the service is healthy afterwards.
/// Without the feature: all 64 get 200 (the "some 503" assertion fails).
///
/// Not flaky: each 200 here serializes some 750 processes (milliseconds of work) while 63
/// other requests arrive; one slot cannot serve 64 such requests at the same instant.
#[test]
fn in_flight_cap_sheds_load() {
    let _heavy = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pids: Vec<Pid> = (0..50).map(|_| cg.spawn(&[&c], spawn::sleeper())).collect();
    let service = Service::with_tracker(Tracker::Procfs, &["--max-in-flight", "1"]);
    service.wait_listed(&c, &pids);
    service.wait_history(15);

    let query = "count=50&interval=1";
    let path = format!("{}?{query}", c.api_path());
    let clients = 64;
    let barrier = Arc::new(Barrier::new(clients));
    let answers: Vec<(Response, Duration)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, path, addr) = (barrier.clone(), path.clone(), service.addr);
                scope.spawn(move || {
                    barrier.wait();
                    let began = Instant::now();
                    let r = http::request(addr, "GET", &path, "").expect("an answer");
                    (r, began.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut ok, mut shed) = (0, 0);
    let (mut slowest_ok, mut slowest_shed) = (Duration::ZERO, Duration::ZERO);
    for (r, took) in &answers {
        match r.status {
            200 => {
                ok += 1;
                slowest_ok = slowest_ok.max(*took);
                let snapshots = api::check_answer(r, &c.path, query);
                assert!(snapshots.len() >= 15);
                assert_eq!(api::pids(snapshots.last().unwrap()), pid_set(&pids));
            }
            503 => {
                shed += 1;
                slowest_shed = slowest_shed.max(*took);
                assert!(r.text().contains("overloaded"), "503 body {:?}", r.text());
                assert!(*took < Duration::from_secs(2), "a 503 took {took:?}");
            }
            other => panic!("status {other}: {}", r.text()),
        }
    }
    assert!(ok >= 1, "no request was served ({shed} shed)");
    assert!(shed >= 1, "no request was shed: {ok} served at once");
    eprintln!("{ok} served (slowest {slowest_ok:?}), {shed} shed (slowest {slowest_shed:?})");
    assert_alive_and_sampling(&service);
    assert_eq!(service.snapshots(&c.path, "").len(), 1);
}

/// URLs over 8 KiB get 414, requests with a body 413; at the limits, requests are served.
/// Without the feature: the long URL and the bodies get 200.
#[test]
fn long_urls_and_request_bodies_are_refused() {
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    let padded = |len: usize| {
        let base = "/api/v2/host?pad=";
        format!("{base}{}", "a".repeat(len - base.len()))
    };
    let r = service.get(&padded(8192));
    assert_eq!(r.status, 200, "an 8 KiB URL: {}", r.text());
    for len in [8193, 9000, 60_000] {
        let r = service.get(&padded(len));
        assert_eq!(r.status, 414, "a URL of {len} bytes: {}", r.text());
    }
    let long_container = format!("/api/v1.0/docker/{}/processes", "a".repeat(9000));
    assert_eq!(service.get(&long_container).status, 414);

    let host = service.addr;
    let with_body = [
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        ),
        format!(
            "GET /api/v2/containers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
        format!(
            "POST /api/v2/containers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        ),
        // Announced, never sent: refused without waiting for it.
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 100000000\r\n\r\n"
        ),
    ];
    for raw in &with_body {
        let began = Instant::now();
        let r = service.exchange(raw.as_bytes()).expect("an answer");
        assert_eq!(r.status, 413, "{raw:?}: {}", r.text());
        assert!(began.elapsed() < Duration::from_secs(2), "{raw:?}");
    }
    let empty = format!(
        "GET /api/v2/host HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(service.exchange(empty.as_bytes()).unwrap().status, 200);
    assert_alive_and_sampling(&service);
}

/// A flood of requests with long URLs and bodies leaves the service's memory where it was.
/// Without the feature (bad requests buffered or kept): VmRSS grows by far more than the margin.
#[test]
fn memory_stays_bounded_under_bad_requests() {
    // --history 2: the service's memory does not follow other tests' processes.
    let service = Service::with_tracker(Tracker::Procfs, &["--history", "2"]);
    let addr = service.addr;
    let long_url = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "q".repeat(60_000)
    );
    let big_body = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 16000\r\n\r\n{}",
        "b".repeat(16_000)
    );
    let announced = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000000000\r\n\r\n".to_owned();
    let flood = |requests: usize| {
        thread::scope(|scope| {
            for t in 0..8 {
                let raws = [&long_url, &big_body, &announced];
                scope.spawn(move || {
                    for i in 0..requests / 8 {
                        let raw = raws[(i + t) % 3];
                        match http::exchange(addr, raw.as_bytes()) {
                            Ok(r) => assert!(
                                r.status == 414 || r.status == 413,
                                "status {} {}",
                                r.status,
                                r.text()
                            ),
                            // A refusal sent before the whole body was read may end in a reset.
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        })
    };
    flood(400);
    let before = service.vm_rss_kb();
    flood(4000);
    let after = service.vm_rss_kb();
    eprintln!("VmRSS {before} kB before, {after} kB after 4000 bad requests");
    // 4000 requests carry ~100 MB: a leak of even a tenth of them shows.
    assert!(
        after <= before + 16 * 1024,
        "VmRSS grew from {before} kB to {after} kB"
    );
    assert_alive_and_sampling(&service);
}
