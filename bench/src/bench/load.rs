//! The API load generator: N concurrent clients, each with its own keep-alive HTTP/1.1
//! connection, sending requests back to back for a fixed time. A mix of monitoring-check queries
//! (`sort=cpu&limit=5&interval=30`) and history queries (`count=10`) for random containers.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};

use crate::kit::{http::Conn, stats::percentile};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub clients: usize,
    pub duration: Duration,
    /// Fraction of monitoring-check queries; the rest are history queries.
    pub check_fraction: f64,
    /// Total requests per second, spread evenly over the clients (each keeps one request in
    /// flight; latency counts from the scheduled send, so a late answer also delays and
    /// charges the next ones). None: every client sends back to back (saturation).
    pub rate: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub clients: usize,
    /// The paced rate, if any.
    pub rate: Option<f64>,
    pub secs: f64,
    pub requests: u64,
    /// Responses other than 200, and transport errors (each followed by a reconnect).
    pub bad_status: u64,
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// Response bytes received.
    pub bytes: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// p99 of each kind separately.
    pub check_p99_ms: f64,
    pub history_p99_ms: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }
    pub fn errors(&self) -> u64 {
        self.bad_status + self.transport_errors
    }
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    check_us: Vec<u32>,
    history_us: Vec<u32>,
    ok: u64,
    bad_status: u64,
    transport_errors: u64,
    first_error: Option<String>,
    bytes: u64,
}

/// Runs the load against `addr`; `containers` are the API paths' container parts (no leading
/// slash). Call inside a tokio runtime.
pub async fn run(
    addr: SocketAddr,
    containers: Arc<Vec<String>>,
    options: &LoadOptions,
) -> LoadResult {
    let start = Instant::now();
    let deadline = start + options.duration;
    let mut tasks = Vec::with_capacity(options.clients);
    let interval = options
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(options.clients as f64 / r));
    for _ in 0..options.clients {
        let containers = containers.clone();
        let fraction = options.check_fraction;
        tasks.push(tokio::spawn(async move {
            client(addr, &containers, fraction, deadline, interval).await
        }));
    }
    let mut all = ClientResult::default();
    for task in tasks {
        let Ok(r) = task.await else { continue };
        all.latencies_us.extend(r.latencies_us);
        all.check_us.extend(r.check_us);
        all.history_us.extend(r.history_us);
        all.ok += r.ok;
        all.bad_status += r.bad_status;
        all.transport_errors += r.transport_errors;
        all.bytes += r.bytes;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ms = |v: &mut Vec<u32>, q: f64| percentile(v, q) / 1000.0;
    LoadResult {
        clients: options.clients,
        rate: interval.and(options.rate),
        secs,
        requests: all.latencies_us.len() as u64 + all.transport_errors,
        bad_status: all.bad_status,
        transport_errors: all.transport_errors,
        first_error: all.first_error,
        bytes: all.bytes,
        p50_ms: ms(&mut all.latencies_us, 0.50),
        p90_ms: ms(&mut all.latencies_us, 0.90),
        p99_ms: ms(&mut all.latencies_us, 0.99),
        max_ms: ms(&mut all.latencies_us, 1.0),
        check_p99_ms: ms(&mut all.check_us, 0.99),
        history_p99_ms: ms(&mut all.history_us, 0.99),
    }
}

async fn client(
    addr: SocketAddr,
    containers: &[String],
    check_fraction: f64,
    deadline: Instant,
    interval: Option<Duration>,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut conn = Conn::new(addr);
    let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
    let mut path = String::with_capacity(200);
    // Paced clients start at random phases of their interval.
    let mut next = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.random()));
    loop {
        if interval.is_none() {
            next = Instant::now();
        }
        if next >= deadline {
            break;
        }
        let began = next;
        if let Some(interval) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
        }
        let container = &containers[rng.random_range(0..containers.len())];
        let check = rng.random_bool(check_fraction.clamp(0.0, 1.0));
        path.clear();
        path.push_str("/api/v1.0/");
        path.push_str(container);
        path.push_str(if check {
            "/processes?sort=cpu&limit=5&interval=30"
        } else {
            "/processes?count=10"
        });
        match conn.get_within(&path, Duration::from_secs(10)).await {
            Ok((status, body)) => {
                let us = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                result.latencies_us.push(us);
                if check {
                    result.check_us.push(us);
                } else {
                    result.history_us.push(us);
                }
                result.bytes += body.len() as u64;
                if status.is_success() {
                    result.ok += 1;
                } else {
                    result.bad_status += 1;
                    result.first_error.get_or_insert_with(|| {
                        format!(
                            "{status} for {path}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )
                    });
                }
            }
            Err(err) => {
                result.transport_errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("{path}: {err:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    result
}
