//! The soak's adversarial phase: hostile clients against the running service while healthy
//! clients keep asking, and what that cost: the service's memory peak, the healthy clients'
//! latency and errors, and what the hostile clients managed to hold.
//!
//! The hostile clients, each reconnecting as soon as the service closes it:
//! - silent connections (plain TCP sending nothing, or half an HTTP/2 preface);
//! - slowloris (a request head trickled a byte every 500 ms);
//! - HTTP/2 connections whose streams never open their window, each asking for the largest
//!   answer the service has (`count` = history − 1 of its biggest container) on every stream;
//! - a client reconnecting in a loop that opens and at once resets HTTP/2 streams.
//!
//! Entry point: [`run`]; it fails when the service stops answering healthy clients or its
//! memory grows past the bound given.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

/// How many hostile clients of each kind run at once.
#[derive(Clone, Copy, Debug)]
pub struct Adversaries {
    pub silent: usize,
    pub slowloris: usize,
    pub window_zero: usize,
    pub resetters: usize,
    /// Healthy clients, each one request at a time on a new connection, 20 per second.
    pub healthy: usize,
}

impl Default for Adversaries {
    fn default() -> Self {
        Adversaries {
            silent: 400,
            slowloris: 100,
            window_zero: 6,
            resetters: 2,
            healthy: 4,
        }
    }
}

/// What the phase measured.
#[derive(Clone, Debug, Default)]
pub struct AdversaryFigures {
    pub secs: f64,
    pub rss_before_kb: u64,
    pub rss_peak_kb: u64,
    pub rss_after_kb: u64,
    pub healthy_requests: u64,
    pub healthy_errors: u64,
    pub healthy_p50_ms: f64,
    pub healthy_p99_ms: f64,
    pub healthy_max_ms: f64,
    /// Silent and slowloris connections opened, and how many the service closed.
    pub idle_opened: u64,
    pub idle_closed: u64,
    /// Window-0 streams opened, answered (their bodies then wait), refused (503), and window-0
    /// connections the service closed.
    pub h2_streams: u64,
    pub h2_answered: u64,
    pub h2_refused: u64,
    pub h2_closed: u64,
    /// Rapid-reset connections made and streams reset.
    pub reset_connections: u64,
    pub reset_streams: u64,
}

impl fmt::Display for AdversaryFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |kb: u64| kb as f64 / 1024.0;
        writeln!(f, "adversarial phase, {:.0} s:", self.secs)?;
        writeln!(
            f,
            "  service RSS {:.1} MiB before, peak {:.1} MiB (+{:.1}), {:.1} MiB after",
            mb(self.rss_before_kb),
            mb(self.rss_peak_kb),
            mb(self.rss_peak_kb.saturating_sub(self.rss_before_kb)),
            mb(self.rss_after_kb)
        )?;
        writeln!(
            f,
            "  healthy clients: {} requests, {} errors, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.healthy_requests,
            self.healthy_errors,
            self.healthy_p50_ms,
            self.healthy_p99_ms,
            self.healthy_max_ms
        )?;
        writeln!(
            f,
            "  silent/slowloris connections: {} opened, {} closed by the service",
            self.idle_opened, self.idle_closed
        )?;
        writeln!(
            f,
            "  HTTP/2 window-0: {} streams, {} answered (held unread), {} refused, {} connections \
             closed by the service",
            self.h2_streams, self.h2_answered, self.h2_refused, self.h2_closed
        )?;
        write!(
            f,
            "  rapid resets: {} connections, {} streams reset",
            self.reset_connections, self.reset_streams
        )
    }
}

#[derive(Default)]
struct Counters {
    idle_opened: AtomicU64,
    idle_closed: AtomicU64,
    h2_streams: AtomicU64,
    h2_answered: AtomicU64,
    h2_refused: AtomicU64,
    h2_closed: AtomicU64,
    reset_connections: AtomicU64,
    reset_streams: AtomicU64,
    healthy_errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs the hostile and healthy clients against the service at `addr` (process `pid`) for
/// `duration`. Fails when a healthy request fails more than 1 % of the time, or the service's
/// RSS grows by more than `memory_bound_mib` over its level before.
pub async fn run(
    addr: SocketAddr,
    pid: u32,
    duration: Duration,
    clients: Adversaries,
    memory_bound_mib: u64,
) -> anyhow::Result<AdversaryFigures> {
    let big = largest_answer(addr).await?;
    let rss_before_kb = rss_kb(pid).context("the service is gone")?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for i in 0..clients.silent {
        let partial: &'static [u8] = if i % 4 == 0 { b"PRI * HTTP" } else { b"" };
        tasks.spawn(idle(addr, partial, None, counters.clone(), stop.clone()));
    }
    for _ in 0..clients.slowloris {
        let trickle = Some(Duration::from_millis(500));
        tasks.spawn(idle(
            addr,
            b"GET /healthz HTTP/1.1\r\nX-Slow: ",
            trickle,
            counters.clone(),
            stop.clone(),
        ));
    }
    for _ in 0..clients.window_zero {
        tasks.spawn(window_zero(
            addr,
            big.clone(),
            counters.clone(),
            stop.clone(),
        ));
    }
    for _ in 0..clients.resetters {
        tasks.spawn(resetter(addr, counters.clone(), stop.clone()));
    }
    for _ in 0..clients.healthy {
        tasks.spawn(healthy(addr, counters.clone(), stop.clone()));
    }

    let began = Instant::now();
    let mut rss_peak_kb = rss_before_kb;
    while began.elapsed() < duration {
        match rss_kb(pid) {
            Some(kb) => rss_peak_kb = rss_peak_kb.max(kb),
            None => {
                stop.store(true, Ordering::SeqCst);
                bail!("the service died during the adversarial phase");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    // The hostile clients are stuck in reads by design: end them.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let secs = began.elapsed().as_secs_f64();
    // Their connections are closed now; the service gives the memory back within seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after_kb = rss_kb(pid).unwrap_or(0);

    let mut latencies = std::mem::take(&mut *counters.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[at] as f64 / 1000.0
    };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let figures = AdversaryFigures {
        secs,
        rss_before_kb,
        rss_peak_kb,
        rss_after_kb,
        healthy_requests: latencies.len() as u64 + load(&counters.healthy_errors),
        healthy_errors: load(&counters.healthy_errors),
        healthy_p50_ms: quantile(0.5),
        healthy_p99_ms: quantile(0.99),
        healthy_max_ms: quantile(1.0),
        idle_opened: load(&counters.idle_opened),
        idle_closed: load(&counters.idle_closed),
        h2_streams: load(&counters.h2_streams),
        h2_answered: load(&counters.h2_answered),
        h2_refused: load(&counters.h2_refused),
        h2_closed: load(&counters.h2_closed),
        reset_connections: load(&counters.reset_connections),
        reset_streams: load(&counters.reset_streams),
    };
    let grown_mib = figures.rss_peak_kb.saturating_sub(rss_before_kb) / 1024;
    if grown_mib > memory_bound_mib {
        bail!(
            "{figures}\nthe service grew by {grown_mib} MiB, over the bound of {memory_bound_mib} MiB"
        );
    }
    if figures.healthy_requests == 0 || figures.healthy_errors * 100 > figures.healthy_requests {
        bail!("{figures}\nhealthy clients were not served");
    }
    Ok(figures)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The processes path of the container with the most processes, asking every sample the
/// history holds: the largest answer a client can ask for.
async fn largest_answer(addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = get(addr, "/api/v2/containers").await?;
    anyhow::ensure!(status == 200, "/api/v2/containers answered {status}");
    let containers: serde_json::Value = serde_json::from_slice(&body)?;
    let biggest = containers
        .as_array()
        .and_then(|all| {
            all.iter()
                .max_by_key(|c| c["processes"].as_u64().unwrap_or(0))
        })
        .and_then(|c| c["path"].as_str())
        .context("no container to ask for")?
        .to_owned();
    let (_, body) = get(addr, "/healthz").await?;
    let health: serde_json::Value = serde_json::from_slice(&body)?;
    let samples = health["history_capacity"].as_u64().unwrap_or(60).max(2) - 1;
    Ok(format!("/api/v1.0{biggest}/processes?count={samples}"))
}

/// One HTTP/1.1 request on a new connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let status = std::str::from_utf8(&raw[..end])?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// A connection that sends `first` and then nothing (or a byte per `trickle`), reopened when
/// the service closes it.
async fn idle(
    addr: SocketAddr,
    first: &'static [u8],
    trickle: Option<Duration>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        add(&counters.idle_opened);
        let _ = stream.write_all(first).await;
        let mut buf = [0u8; 1024];
        loop {
            let read = match trickle {
                Some(every) => match tokio::time::timeout(every, stream.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => match stream.write_all(b"a").await {
                        Ok(()) => continue,
                        Err(_) => Ok(0),
                    },
                },
                None => stream.read(&mut buf).await,
            };
            if matches!(read, Ok(0) | Err(_)) {
                add(&counters.idle_closed);
                break;
            }
        }
    }
}

/// An HTTP/2 connection with a stream window of 0, asking `path` on as many streams as the
/// service lets it open and never reading; reopened when the service closes it.
async fn window_zero(
    addr: SocketAddr,
    path: String,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok((mut send, connection)) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
        else {
            continue;
        };
        let mut connection = tokio::spawn(connection);
        let mut held = Vec::new();
        for _ in 0..64 {
            let ready = tokio::select! {
                ready = send.ready() => ready,
                _ = &mut connection => break,
            };
            let Ok(ready) = ready else { break };
            send = ready;
            let request = http::Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap();
            let Ok((response, _)) = send.send_request(request, true) else {
                break;
            };
            add(&counters.h2_streams);
            let counters = counters.clone();
            held.push(tokio::spawn(async move {
                match response.await {
                    Ok(r) if r.status() == 200 => {
                        add(&counters.h2_answered);
                        // Hold the body unread until the connection ends.
                        std::future::pending::<()>().await;
                    }
                    Ok(_) => add(&counters.h2_refused),
                    Err(_) => {}
                }
            }));
        }
        let _ = connection.await;
        add(&counters.h2_closed);
        for task in held {
            task.abort();
        }
    }
}

/// Reconnects in a loop, opening HTTP/2 streams and resetting each at once.
async fn resetter(addr: SocketAddr, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        let Ok((mut send, connection)) = h2::client::handshake(tcp).await else {
            continue;
        };
        let connection = tokio::spawn(connection);
        add(&counters.reset_connections);
        for _ in 0..100 {
            send = match send.ready().await {
                Ok(send) => send,
                Err(_) => break,
            };
            let request = http::Request::get(format!("http://{addr}/api/v2/host"))
                .body(())
                .unwrap();
            // Dropping the answer's future resets the stream.
            if send.send_request(request, true).is_err() {
                break;
            }
            add(&counters.reset_streams);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), connection).await;
    }
}

/// A well-behaved client: `/healthz` and `/api/v2/containers` alternately, 20 a second, each
/// on a new connection (so it also needs a free connection slot).
async fn healthy(addr: SocketAddr, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let path = if n.is_multiple_of(2) {
            "/healthz"
        } else {
            "/api/v2/containers"
        };
        let began = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), get(addr, path)).await;
        // `stale` (503) is a true answer of a loaded host's /healthz, not a refusal.
        let served = |status: u16, body: &[u8]| {
            status == 200 || (status == 503 && String::from_utf8_lossy(body).contains("stale"))
        };
        match answer {
            Ok(Ok((status, body))) if served(status, &body) => counters
                .latencies_us
                .lock()
                .unwrap()
                .push(began.elapsed().as_micros() as u64),
            _ if stop.load(Ordering::Relaxed) => {}
            _ => add(&counters.healthy_errors),
        }
    }
}
