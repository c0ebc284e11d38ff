//! Errors, unlisted processes, empty answers, paths, methods and encodings, malformed requests.

use super::*;

both_trackers!(
    errors_and_unlisted_processes,
    empty_snapshots_are_arrays,
    paths_methods_and_encoding,
    original_service_cases,
    malformed_requests_do_not_hurt
);

/// 500s: unknown containers and containers with only unlisted processes (a zombie).
fn errors_and_unlisted_processes(tracker: Tracker) {
    let cg = TestCgroup::new();
    let zombie_only = cg.container(&[Hierarchy::Cpu]);
    let mixed = cg.container(&[Hierarchy::Cpu]);
    let zombie = cg.spawn(&[&zombie_only], spawn::command("/bin/true"));
    let zombie2 = cg.spawn(&[&mixed], spawn::command("/bin/true"));
    let alive = cg.spawn(&[&mixed], spawn::sleeper());
    for z in [zombie, zombie2] {
        wait_for("a zombie", Duration::from_secs(5), || {
            match proc::state(z) {
                Some(s) if s == "Z" => Ok(()),
                s => Err(format!("state {s:?}")),
            }
        });
    }
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&mixed, &[alive]);
    service.wait_samples(2);
    assert_eq!(proc::state(zombie).as_deref(), Some("Z"), "still a zombie");
    for query in [
        "",
        "sort=cpu&count=2",
        "count=2&interval=2&sort=mem&limit=1",
    ] {
        let r = service.processes(&zombie_only.path, query).unwrap_err();
        assert_eq!(
            r.status,
            500,
            "a container with only a zombie: {}",
            r.text()
        );
        assert_eq!(
            r.text(),
            format!("Container {} not found", zombie_only.path)
        );
        assert_plain_text(&r, "not found");
    }
    assert_eq!(
        service.pids(&mixed.path),
        Some(pid_set(&[alive])),
        "the zombie is not listed"
    );

    let unknown = format!("/docker/{}", unique_id());
    let r = service.processes(&unknown, "").unwrap_err();
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), format!("Container {unknown} not found"));
    // A parent of a container is another container (exact match only).
    let parent = format!("/{}", cg.prefix());
    let r = service.processes(&parent, "").unwrap_err();
    assert_eq!(
        (r.status, r.text()),
        (500, format!("Container {parent} not found"))
    );
}

/// `processes` is always an array: `[]` in snapshots before a container's first process;
/// 500 once every process exited.
fn empty_snapshots_are_arrays(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = Service::with_tracker(tracker, &[]);
    service.wait_history(8);
    let before_spawn = SystemTime::now();
    let pid = cg.spawn(&[&c], spawn::sleeper());
    service.wait_listed(&c, &[pid]);

    let r = service.get(&format!("{}?count=30", c.api_path()));
    assert_eq!(r.status, 200, "{}", r.text());
    // Raw check: never `null`.
    assert!(
        !r.text().contains("\"processes\":null"),
        "processes must be [] not null: {}",
        r.text()
    );
    let snapshots = api::check_answer(&r, &c.path, "count=30");
    assert!(snapshots.len() >= 9, "{} snapshots", snapshots.len());
    let mut empty = 0;
    for pair in snapshots.windows(2) {
        // A sample's pass ends before the next one begins: if the next began before the spawn,
        // this one cannot have seen the process.
        if api::timestamp(&pair[1]) < before_spawn {
            assert_eq!(
                pair[0]["processes"],
                serde_json::json!([]),
                "a snapshot before the first process"
            );
            empty += 1;
        }
    }
    assert!(empty >= 3, "only {empty} snapshots before the spawn");
    assert_eq!(
        api::pids(snapshots.last().unwrap()),
        pid_set(&[pid]),
        "the newest lists it"
    );

    // All processes gone: the newest sample has none, so 500, whatever the count.
    cg.kill(pid);
    service.wait_pids(&c.path, None, service.patience());
    let r = service.processes(&c.path, "count=8").unwrap_err();
    assert_eq!(
        (r.status, r.text()),
        (500, format!("Container {} not found", c.path))
    );
}

/// Path validation, 404 and 405, HEAD, percent-encoding and `sort` errors.
fn paths_methods_and_encoding(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[pid]);

    for path in [
        "/api/v1.0/docker/../x/processes",
        "/api/v1.0/docker//x/processes",
        "/api/v1.0//processes",
        "/api/v1.0/./processes",
        "/api/v1.0/docker/./x/processes",
        "/api/v1.0/docker/x//processes",
        "/api/v1.0/docker/%2e%2e/processes",
        "/api/v1.0/docker%2F%2Fx/processes",
        "/api/v1.0/../../etc/processes",
    ] {
        let r = service.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_plain_text(&r, path);
        assert!(!r.text().trim().is_empty(), "{path}: 400 needs a reason");
    }

    // `/` is the web page (the web tests).
    for path in [
        "/api",
        "/api/v1.0",
        "/api/v1.0/",
        "/api/v1.0/processes",
        "/api/v1.1/docker/x/processes",
        "/api/v1.0/docker/x",
        "/api/v1.0/docker/x/processes/",
        "/api/v1.0/docker/x/stats",
        "/nonexistent",
        "/favicon.ico",
    ] {
        let r = service.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_plain_text(&r, path);
    }

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = service.request(method, &c.api_path(), "Content-Length: 0\r\n");
        assert_eq!(r.status, 405, "{method}: {}", r.text());
    }

    // HEAD: 200 and no body at all.
    let raw = http::exchange_raw(
        service.addr,
        format!(
            "HEAD {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            c.api_path()
        )
        .as_bytes(),
    )
    .unwrap();
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let r = http::parse_response(&raw).unwrap();
    assert_eq!(r.status, 200, "HEAD");
    assert_eq!(
        raw.len(),
        head_end + 4,
        "HEAD sent a body: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // %2F and other percent-encoded bytes are decoded before matching.
    let relative = &c.path[1..];
    for encoded in [
        relative.replace('/', "%2F"),
        relative.replace('/', "%2f"),
        relative.replacen('c', "%63", 1),
        http::encode_path(relative).replace('-', "%2D"),
    ] {
        let path = format!("/api/v1.0/{encoded}/processes");
        let r = service.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let snapshots = api::check_answer(&r, &c.path, "");
        assert_eq!(
            api::pids(snapshots.last().unwrap()),
            pid_set(&[pid]),
            "{path}"
        );
    }

    for sort in ["bogus", "CPU", "pid", "cpu%20", "rss"] {
        let r = service
            .processes(&c.path, &format!("sort={sort}"))
            .unwrap_err();
        assert_eq!(r.status, 400, "sort={sort}: {}", r.text());
        assert!(
            r.text().contains("cpu") && r.text().contains("mem"),
            "sort={sort}: the error names cpu and mem: {:?}",
            r.text()
        );
        assert_plain_text(&r, "bad sort");
    }
}

/// The four API cases the original service's own tests check.
fn original_service_cases(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[pid]);

    assert_eq!(service.get("/api/v1.0/unknown").status, 404);
    let r = service.get("/api/v1.0/docker/unknown-container/processes");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "Container /docker/unknown-container not found");
    for query in ["interval=100", "count=100"] {
        let r = service.processes(&c.path, query).unwrap_err();
        assert_eq!(r.status, 500, "{query}");
        assert_eq!(r.text(), "Wrong offset and interval combination");
    }
    for query in ["", "sort=mem", "sort=cpu"] {
        let snapshots = service.snapshots(&c.path, query);
        assert_eq!(
            api::pids(snapshots.last().unwrap()),
            pid_set(&[pid]),
            "{query}"
        );
    }
}

/// Malformed and hostile requests: none crashes the service, hangs it, or makes it serve wrong
/// data afterwards.
fn malformed_requests_do_not_hurt(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[pid]);

    // A client that sends half a request and waits: others are still served meanwhile.
    let mut stalled = TcpStream::connect(service.addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    let long_path = format!("/api/v1.0/{}/processes", "a/".repeat(40_000));
    let long_query = format!("{}?{}", c.api_path(), "count=1&".repeat(20_000));
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(1 << 20)
    );
    let raws: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x00\x01\x02\xff\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /api/v1.0/%zz/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /api/v1.0/%ff%fe/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        b"GET /api/v1.0/a%00b/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        b"GET /api/v1.0/%/processes?count=%&sort=% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        format!(
            "GET {}?count=%ff&interval=%00&sort=&limit=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            c.api_path()
        )
        .into_bytes(),
        format!("GET {long_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET {long_query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        big_header.into_bytes(),
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\nabc"
            .to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            .to_vec(),
    ];
    for raw in &raws {
        let began = Instant::now();
        // Any answer, or a closed connection, is fine; a hang or a crash is not.
        let _ = service.exchange(raw);
        assert!(
            began.elapsed() < Duration::from_secs(12),
            "a malformed request took {:?}: {:?}",
            began.elapsed(),
            http::truncate(&String::from_utf8_lossy(raw), 200)
        );
        let r = service.get("/healthz");
        assert_eq!(
            r.status,
            200,
            "after {:?}",
            http::truncate(&String::from_utf8_lossy(raw), 200)
        );
    }
    // A connection closed half-way through a request.
    {
        let mut s = TcpStream::connect(service.addr).unwrap();
        s.write_all(b"GET /api/v1.0/docker/x/proc").unwrap();
    }
    // HTTP/1.0 without Host still works.
    let r = service
        .exchange(format!("GET {} HTTP/1.0\r\n\r\n", c.api_path()).as_bytes())
        .unwrap();
    assert_eq!(r.status, 200, "HTTP/1.0: {}", r.text());
    // Invalid parameters fall back to defaults.
    let r = service
        .exchange(
            format!(
                "GET {}?count=%ff&interval=%00&limit=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                c.api_path()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "invalid numbers are defaults: {}", r.text());
    let snapshots = api::check_answer(&r, &c.path, "");
    assert_eq!(snapshots.len(), 1);

    // Still alive and right.
    assert_eq!(service.pids(&c.path), Some(pid_set(&[pid])));
    assert_eq!(service.healthz()["status"], "ok");
    // The stalled client got nothing wrong either: finish its request.
    stalled.write_all(b"Connection: close\r\n\r\n").unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    if !answer.is_empty() {
        let r = http::parse_response(&answer).unwrap();
        assert!(
            r.status == 200 || r.status == 408,
            "stalled client: {}",
            r.status
        );
    }
}
