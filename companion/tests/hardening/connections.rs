//! Hostile clients, end to end: silent connections (plain TCP, a partial HTTP/2 preface, a
//! finished TLS handshake, an idle HTTP/2 connection), HTTP/2 streams that never open their
//! window (memory, in-flight slots, stalled streams), rapid-reset reconnects (the log).
//!
//! Each test says in a `Without the fix:` line what fails without it.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use bytes::Bytes;
use testbed::{
    Hierarchy, Pid, Service, TestCgroup, Tracker, cpu_heavy, http, proc,
    service::{StartOptions, test_period},
    spawn, tls, wait_for,
};

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
    // One deadline for all answers: streams the client queued beyond the server's limit never
    // get one, and waiting for each in turn would outlast the server's stall timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut statuses = Vec::new();
    for response in pending {
        if let Ok(Ok(response)) = tokio::time::timeout_at(deadline, response).await {
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
