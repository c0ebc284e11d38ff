//! The server under hostile clients and a compromised process, end to end: silent connections
//! (plain TCP, a partial HTTP/2 preface, a finished TLS handshake, an idle HTTP/2 connection),
//! HTTP/2 streams that never open their window (memory, in-flight slots, stalled streams),
//! rapid-reset reconnects (the log), `//` paths and bad escapes, token files, the system call
//! filter and running without CAP_SYS_PTRACE.
//!
//! Each test says in a `Without the fix:` line what fails without it.

use std::{
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use bytes::Bytes;
use companion_tests::{
    Hierarchy, Pid, Service, TestCgroup, Tracker, api, cpu_heavy, http,
    oneshot::run_to_exit,
    proc,
    service::{StartOptions, test_period},
    spawn, tls, wait_for,
};
use serde_json::Value;

/// Reads until the peer closes (EOF or reset) or `limit` passes; `Some(elapsed)` when closed.
fn closed_within(stream: &mut (impl Read + ?Sized), limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    let mut buf = [0u8; 4096];
    while began.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(began.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(began.elapsed()),
        }
    }
    None
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP/2 cleartext (prior knowledge) connection whose streams open with a receive window of
/// `window` bytes; the connection is driven by a task that ends when the server closes it.
async fn h2c(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

fn get(addr: SocketAddr, path: &str) -> ::http::Request<()> {
    ::http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

/// Opens `n` streams asking `path` and returns their answers' heads (status) as they come;
/// the bodies are kept unread in `held` (with a window of 0 the server cannot send them).
async fn open_streams(
    send: &h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    n: usize,
    held: &mut Vec<::http::Response<h2::RecvStream>>,
) -> Vec<u16> {
    let mut pending = Vec::new();
    for _ in 0..n {
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(1), send.clone().ready()).await
        else {
            // The server's stream limit is reached and no stream finishes: stop asking.
            break;
        };
        let Ok(mut ready) = ready else { break };
        match ready.send_request(get(addr, path), true) {
            Ok((response, _)) => pending.push(response),
            Err(_) => break,
        }
    }
    let mut statuses = Vec::new();
    for response in pending {
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(10), response).await {
            statuses.push(response.status().as_u16());
            held.push(response);
        }
    }
    statuses
}

// --- 1. silent connections ---------------------------------------------------------------------

/// `--header-timeout 1s --max-connections 8`: eight connections that send nothing, or half an
/// HTTP/2 preface, or an HTTP/2 connection that went idle after one request, are all closed
/// within about a second, and a healthy client is served again.
/// Without the fix: the silent and partial-preface connections stay open (every slot held, the
/// healthy client refused); the idle HTTP/2 connection stays open (its pings are answered).
#[test]
fn silent_connections_are_closed_after_the_header_timeout() {
    let service = Service::with_tracker(
        Tracker::Procfs,
        &["--header-timeout", "1s", "--max-connections", "8"],
    );
    let began = Instant::now();
    let mut silent: Vec<TcpStream> = (0..6).map(|_| connect(service.addr)).collect();
    for _ in 0..2 {
        let mut partial = connect(service.addr);
        partial.write_all(b"PRI * HTTP").unwrap();
        silent.push(partial);
    }
    for (i, stream) in silent.iter_mut().enumerate() {
        let closed = closed_within(
            stream,
            Duration::from_secs(6) - began.elapsed().min(Duration::from_secs(5)),
        );
        let after = began.elapsed();
        assert!(
            closed.is_some(),
            "silent connection {i} is still open after {after:?} (--header-timeout 1s)"
        );
        assert!(
            after >= Duration::from_millis(700),
            "silent connection {i} closed after only {after:?}"
        );
    }
    // Every slot is free again.
    assert_eq!(service.get("/healthz").status, 200);

    runtime().block_on(async {
        let (send, connection) = h2c(service.addr, 65_535).await;
        let mut held = Vec::new();
        let statuses = open_streams(&send, service.addr, "/api/v2/host", 1, &mut held).await;
        assert_eq!(statuses, [200]);
        let mut body = held.pop().unwrap().into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        // `send` stays: without a handle and streams the client would close by itself.
        let idle = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(
            ended.is_ok(),
            "an idle HTTP/2 connection is still open after {:?}",
            idle.elapsed()
        );
        assert!(idle.elapsed() >= Duration::from_millis(700));
        drop(send);
    });
}

/// A TLS service with `--header-timeout 1s`: a client that finishes the handshake and sends
/// nothing, and one that sends no ClientHello, are closed within about a second.
/// Without the fix: the first stays open (the handshake is over, nothing else is timed); the
/// second until a fixed 10 s handshake timeout.
#[test]
fn silent_tls_connections_are_closed_after_the_header_timeout() {
    let cg = TestCgroup::new();
    let pki = tls::Pki::new(&cg.temp_dir());
    let config = tls::client_config(&[pki.ca.cert()], None);
    let probe = {
        let config = config.clone();
        move |addr: SocketAddr| tls::get(addr, config.clone(), "/healthz", "")
    };
    let period = format!("{}ms", test_period().as_millis());
    let service = Service::start_with(
        &[
            "--tracker",
            "procfs",
            "--sample-period",
            &period,
            "--header-timeout",
            "1s",
            "--tls-cert",
            pki.cert_file.to_str().unwrap(),
            "--tls-key",
            pki.key_file.to_str().unwrap(),
        ],
        &StartOptions {
            probe: Some(&probe),
            ..StartOptions::default()
        },
    );

    let began = Instant::now();
    let mut no_hello = connect(service.addr);
    let name = rustls_pki_types::ServerName::IpAddress(service.addr.ip().into());
    let mut client = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut socket = connect(service.addr);
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while client.is_handshaking() {
        client.complete_io(&mut socket).expect("a TLS handshake");
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut handshaken = rustls::StreamOwned::new(client, socket);
    for (what, stream) in [
        ("a finished handshake", &mut handshaken as &mut dyn Read),
        ("no ClientHello", &mut no_hello),
    ] {
        let closed = closed_within(stream, Duration::from_secs(5));
        assert!(
            closed.is_some(),
            "a TLS connection with {what} and no request is still open after {:?}",
            began.elapsed()
        );
    }
    assert!(began.elapsed() >= Duration::from_millis(700));
    assert_eq!(
        tls::get(service.addr, config, "/healthz", "")
            .unwrap()
            .status,
        200
    );
}

// --- 2. HTTP/2 streams that never open their window --------------------------------------------

/// A container of 32 processes and a full 60-sample history; three HTTP/2 connections that set
/// a stream window of 0 and each ask 64 times `count=59` (3 MB answers) hold the service's
/// memory within its stated bound (the default 64 MiB budget of waiting answers) while a
/// healthy client is served; at `--request-timeout` the stalled connections are closed and the
/// memory comes back.
/// Without the fix: every stream's answer is built and held (RSS grows by some 600 MB) until the
/// client goes away.
#[test]
fn h2_window_zero_streams_cannot_pin_memory() {
    let _heavy = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pids: Vec<Pid> = (0..32).map(|_| cg.spawn(&[&c], spawn::sleeper())).collect();
    let service = Service::with_tracker(
        Tracker::Procfs,
        &["--sample-period", "100ms", "--request-timeout", "4s"],
    );
    service.wait_pids(
        &c.path,
        Some(&pids.iter().copied().collect()),
        service.patience(),
    );
    service.wait_history(60);
    let path = format!("{}?count=59", c.api_path());
    let size = service.get(&path).body.len();
    assert!(size > 2_500_000, "a count=59 answer is only {size} bytes");
    std::thread::sleep(Duration::from_secs(2));
    let before = service.vm_rss_kb();

    let rt = runtime();
    let (statuses, connections, peak, healthy, held) = rt.block_on(async {
        let mut held = Vec::new();
        let mut connections = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let (send, connection) = h2c(service.addr, 0).await;
            statuses.extend(open_streams(&send, service.addr, &path, 64, &mut held).await);
            connections.push((send, connection));
        }
        let mut peak = 0;
        let mut healthy = Vec::new();
        for _ in 0..10 {
            peak = peak.max(proc::vm_rss_kb(service.pid()).unwrap());
            healthy
                .push(http::request(service.addr, "GET", "/healthz", "").map_or(0, |r| r.status));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (statuses, connections, peak, healthy, held)
    });
    let grown_mb = peak.saturating_sub(before) / 1024;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    eprintln!(
        "RSS {} MB before, peak {} MB (+{grown_mb} MB); {ok} streams answered 200, {} refused \
         ({statuses:?}); healthy /healthz: {healthy:?}",
        before / 1024,
        peak / 1024,
        statuses.len() - ok
    );
    assert!(
        grown_mb < 120,
        "three window-0 HTTP/2 clients grew the service by {grown_mb} MB ({ok} answers of {size} \
         bytes held)"
    );
    assert!(ok >= 1, "no stream was answered");
    assert!(
        healthy.iter().all(|&s| s == 200),
        "a healthy client was not served meanwhile: {healthy:?}"
    );

    // Stalled: closed at --request-timeout (4 s), their answers freed.
    rt.block_on(async {
        for (_send, connection) in connections {
            let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
            assert!(ended.is_ok(), "a stalled HTTP/2 connection is still open");
        }
    });
    drop(held);
    wait_for(
        "the memory of the stalled answers back",
        Duration::from_secs(15),
        || {
            let now = service.vm_rss_kb();
            if now < before + 20 * 1024 {
                Ok(())
            } else {
                Err(format!(
                    "RSS {} MB, {} MB before",
                    now / 1024,
                    before / 1024
                ))
            }
        },
    );
    drop(pids);
}

/// `--max-in-flight 8`: eight HTTP/2 streams whose answers wait for a window update hold the
/// eight slots, so a ninth request (HTTP/1.1) gets 503 "overloaded"; a connection may open at
/// most 8 streams at once. Once the stalled client leaves, requests are served again.
/// Without the fix: the slot is given back when the answer is built, not sent, so the ninth
/// request gets 200 (and one connection opens 64 streams).
#[test]
fn h2_streams_count_against_the_in_flight_limit() {
    let service = Service::with_tracker(Tracker::Procfs, &["--max-in-flight", "8"]);
    runtime().block_on(async {
        let (send, connection) = h2c(service.addr, 0).await;
        let mut held = Vec::new();
        let statuses = open_streams(&send, service.addr, "/api/v2/host", 64, &mut held).await;
        assert_eq!(
            statuses,
            [200; 8],
            "a connection opened {} streams at once",
            statuses.len()
        );
        let r = http::request(service.addr, "GET", "/api/v2/host", "").unwrap();
        assert_eq!(
            r.status, 503,
            "a request beyond --max-in-flight got {} while 8 answers wait to be sent",
            r.status
        );
        assert!(r.text().contains("overloaded"), "{}", r.text());
        drop((held, send));
        connection.abort();
    });
    wait_for(
        "slots given back",
        Duration::from_secs(5),
        || match http::request(service.addr, "GET", "/api/v2/host", "") {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        },
    );
}

// --- 3. the log under rapid resets -------------------------------------------------------------

/// A client that reconnects in a loop, opening and at once resetting HTTP/2 streams, for 3 s:
/// the service stays healthy and writes at most a few warning lines, not one per connection.
/// Without the fix: one WARN line per connection (hundreds in 3 s).
#[test]
fn rapid_reset_reconnects_do_not_flood_the_log() {
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    let connections = runtime().block_on(async {
        let began = Instant::now();
        let mut connections = 0;
        while began.elapsed() < Duration::from_secs(3) {
            let Ok(tcp) = tokio::net::TcpStream::connect(service.addr).await else {
                continue;
            };
            let Ok((mut send, connection)) = h2::client::handshake(tcp).await else {
                continue;
            };
            let task = tokio::spawn(connection);
            connections += 1;
            for _ in 0..100 {
                send = match send.ready().await {
                    Ok(send) => send,
                    Err(_) => break,
                };
                // Dropping the answer's future at once resets the stream.
                if send
                    .send_request(get(service.addr, "/api/v2/host"), true)
                    .is_err()
                {
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), task).await;
        }
        connections
    });
    assert_eq!(service.get("/healthz").status, 200);
    let log = service.log_text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "{connections} connections, {} warning lines",
        warnings.len()
    );
    assert!(connections >= 10, "only {connections} connections in 3 s");
    assert!(
        warnings.len() <= 3,
        "{} warning lines for {connections} connections:\n{}",
        warnings.len(),
        warnings[..warnings.len().min(10)].join("\n")
    );
}

// --- 8. `//` paths and bad escapes -------------------------------------------------------------

/// `//api/v1.0/…` (a base URL ending in `/`) is redirected with 301 to the cleaned path, query
/// kept, and the redirect leads to the answer; a malformed percent-escape gets 400.
/// Without the fix: 404 for the `//` path, 500 ("not found") for `%zz`.
#[test]
fn double_slash_redirects_and_bad_escapes_are_refused() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    service.wait_pids(&c.path, Some(&[pid].into()), service.patience());

    let path = c.api_path();
    let r = service.get(&format!("/{path}?count=1&sort=cpu"));
    assert_eq!(r.status, 301, "{}", r.text());
    let location = r.header("location").expect("a Location").to_owned();
    assert_eq!(location, format!("{path}?count=1&sort=cpu"));
    let followed = service.get(&location);
    assert_eq!(followed.status, 200);
    let snapshots = api::check_answer(&followed, &c.path, "count=1&sort=cpu");
    assert!(api::pids(&snapshots[0]).contains(&pid));
    let r = service.get("///healthz");
    assert_eq!((r.status, r.header("location")), (301, Some("/healthz")));

    for bad in [
        "/api/v1.0/docker/%zz/processes",
        "/api/v1.0/docker/abc%/processes",
        "/api/v2/containers/%g1",
    ] {
        let r = service.get(bad);
        assert_eq!(r.status, 400, "{bad}: {} {}", r.status, r.text());
        assert!(r.text().contains("percent-escape"), "{bad}: {}", r.text());
    }
    // A well-formed escape is still decoded.
    let at = "/api/v1.0/".len();
    let encoded = format!(
        "{}%{:02X}{}",
        &path[..at],
        path.as_bytes()[at],
        &path[at + 1..]
    );
    assert_eq!(service.get(&encoded).status, 200, "{encoded}");
}

// --- 10. token files ---------------------------------------------------------------------------

/// A token file of several lines refuses the start; a short token, a file others can read, and
/// listening beyond loopback with a token but without TLS each start with a warning.
/// Without the fix: all start silently (the two-line file's whole text is the token).
#[test]
fn token_file_checks() {
    let cg = TestCgroup::new();
    let dir = cg.temp_dir();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let good = "6c1b1f0e5a6d4e1f9a3b2c7d";

    let lines = write("lines", &format!("{good}\n{good}\n"), 0o600);
    let exited = run_to_exit(
        &[
            "--tracker",
            "procfs",
            "--auth-token-file",
            lines.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_ne!(exited.code(), Some(0));
    assert!(exited.stderr.contains("several lines"), "{}", exited.stderr);

    let with_token = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--auth-token-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let service = Service::with_tracker(Tracker::Procfs, &args);
        let log = service.log_text();
        log.lines()
            .filter(|l| l.contains("WARN"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let warnings = with_token(&write("short", "s3cret\n", 0o600), &[]);
    assert!(
        warnings.iter().any(|w| w.contains("6 bytes")),
        "{warnings:?}"
    );
    let warnings = with_token(&write("open", good, 0o644), &[]);
    assert!(
        warnings.iter().any(|w| w.contains("mode 644")),
        "{warnings:?}"
    );
    let fine = write("fine", good, 0o600);
    let warnings = with_token(&fine, &[]);
    assert!(
        !warnings.iter().any(|w| w.contains("token")),
        "{warnings:?}"
    );
    let warnings = with_token(&fine, &["--listen-ip", "0.0.0.0"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without TLS") && w.contains("clear text")),
        "{warnings:?}"
    );
}

// --- 11. system call filter, no CAP_SYS_PTRACE -------------------------------------------------

fn status_field(pid: Pid, key: &str) -> String {
    proc::status_field(pid, key).unwrap_or_else(|| panic!("{key} of {pid}"))
}

/// The service installs its own seccomp filter (one, in filter mode) and keeps working under it
/// in both trackers, through the eBPF tracker's fall-back to the /proc scan, with TLS and
/// HTTP/2, compressed answers and /metrics.
/// Without the fix: `Seccomp: 0` (no filter of its own).
#[test]
fn the_service_runs_under_its_system_call_filter() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let pki = tls::Pki::new(&cg.temp_dir());
    let config = tls::client_config(&[pki.ca.cert()], None);
    let probe = {
        let config = config.clone();
        move |addr: SocketAddr| tls::get(addr, config.clone(), "/healthz", "")
    };
    let period = format!("{}ms", test_period().as_millis());
    for (tracker, extra) in [
        ("procfs", &[][..]),
        ("ebpf", &["--test-fail-ebpf-after", "5"][..]),
    ] {
        let mut args = vec![
            "--tracker",
            tracker,
            "--sample-period",
            &period,
            "--tls-cert",
            pki.cert_file.to_str().unwrap(),
            "--tls-key",
            pki.key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let service = Service::start_with(
            &args,
            &StartOptions {
                probe: Some(&probe),
                ..StartOptions::default()
            },
        );
        // One filter more than this test process runs under (a CI runner may have its own).
        let own: u32 = status_field(std::process::id(), "Seccomp_filters")
            .parse()
            .unwrap();
        assert_eq!(status_field(service.pid(), "Seccomp"), "2", "{tracker}");
        assert_eq!(
            status_field(service.pid(), "Seccomp_filters"),
            (own + 1).to_string(),
            "{tracker}"
        );
        let path = format!("{}?count=2", c.api_path());
        wait_for(
            &format!("{tracker}: the process listed over TLS"),
            service.patience(),
            || {
                let r = tls::get(
                    service.addr,
                    config.clone(),
                    &path,
                    "Accept-Encoding: gzip\r\n",
                )
                .map_err(|e| e.to_string())?;
                if r.status == 200 && r.header("content-encoding") == Some("gzip") {
                    Ok(())
                } else {
                    Err(format!("{} {:?}", r.status, r.header("content-encoding")))
                }
            },
        );
        let r = tls::get(service.addr, config.clone(), "/metrics", "").unwrap();
        assert_eq!(r.status, 200);
        if tracker == "ebpf" {
            wait_for(
                "the fall-back to the /proc scan",
                service.patience(),
                || {
                    let r = tls::get(service.addr, config.clone(), "/healthz", "")
                        .map_err(|e| e.to_string())?;
                    let health: Value =
                        serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                    (health["tracker"] == "procfs")
                        .then_some(())
                        .ok_or(health.to_string())
                },
            );
        }
        // Still sampling under the filter (the fall-back included): a new process shows.
        let late = cg.spawn(&[&c], spawn::sleeper());
        wait_for(
            &format!("{tracker}: a new process listed"),
            service.patience(),
            || {
                let r = tls::get(service.addr, config.clone(), &c.api_path(), "")
                    .map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("{}", r.status));
                }
                let snapshots: Vec<Value> = r.json().as_array().cloned().unwrap_or_default();
                let pids = snapshots.last().map(api::pids).unwrap_or_default();
                (pids.contains(&pid) && pids.contains(&late))
                    .then_some(())
                    .ok_or(format!("{pids:?}"))
            },
        );
        cg.kill(late);
        let log = service.log_text();
        assert!(log.contains("system call filter installed"), "{log}");
        assert!(
            !log.contains("os error 1)") && !log.contains("not permitted"),
            "{tracker}: something was refused:\n{log}"
        );
    }
}

/// `--ptrace false`: CAP_SYS_PTRACE is gone after start-up, and the stat fields the kernel
/// guards with it read as 0 (`startcode`, `endcode` as 1, the kernel's mark of a hidden value)
/// for another user's process; with the default they do not.
/// Without the fix: the flag does not exist (the service refuses to start).
#[test]
fn without_ptrace_the_guarded_stat_fields_read_zero() {
    const CAP_SYS_PTRACE: u32 = 19;
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let mut other_user = spawn::command("setpriv");
    other_user.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/bin/sleep",
        "1000",
    ]);
    let pid = cg.spawn(&[&c], other_user);
    wait_for("the other user's sleep", Duration::from_secs(5), || {
        (proc::status_field(pid, "Uid").is_some_and(|u| u.starts_with("65534"))
            && proc::cmdline(pid).is_some_and(|c| c.starts_with("/bin/sleep")))
        .then_some(())
        .ok_or("not yet".to_owned())
    });
    let guarded = [
        "startcode",
        "endcode",
        "startstack",
        "start_data",
        "arg_start",
        "env_start",
    ];
    for ptrace in ["true", "false"] {
        let service = Service::with_tracker(Tracker::Procfs, &["--ptrace", ptrace]);
        let caps = u64::from_str_radix(&status_field(service.pid(), "CapEff"), 16).unwrap();
        assert_eq!(
            caps & (1 << CAP_SYS_PTRACE) != 0,
            ptrace == "true",
            "--ptrace {ptrace}: CapEff {caps:x}"
        );
        service.wait_pids(&c.path, Some(&[pid].into()), service.patience());
        let snapshots = service.snapshots(&c.path, "");
        let process = api::find(snapshots.last().unwrap(), pid).expect("listed");
        for field in guarded {
            let value = process["stat"][field].as_u64().unwrap();
            let hidden = if field.ends_with("code") { 1 } else { 0 };
            if ptrace == "true" {
                assert!(value > 1, "--ptrace true: {field} is {value}");
            } else {
                assert_eq!(value, hidden, "--ptrace false: {field} is {value}");
            }
        }
        assert!(process["status"]["VmRSS"].as_u64().unwrap() > 0);
    }
}
