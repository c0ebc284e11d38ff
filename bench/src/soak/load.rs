//! The soak's API load: concurrent clients, each on its own keep-alive connection, asking for
//! the v1.0 processes of live and recently removed containers (random `sort`, `limit`,
//! `interval`, `count`), the container list, /healthz and /metrics, for as long as the soak
//! runs. Every answer is classified against the API's specified errors.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::host::SharedDirectory;
use crate::kit::{http::Conn, stats::percentile};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub clients: usize,
    /// Total requests per second over all clients; None: back to back.
    pub rate: Option<f64>,
    /// The service's --history: `count × interval` is kept within it.
    pub history: u32,
    /// How long after its process joined a new container may still be unknown to the
    /// service (a 500 "not found" within it is expected).
    pub grace: Duration,
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    V1Live,
    V1Removed,
    V2Containers,
    Healthz,
    Metrics,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::V1Live => "v1.0 live container",
            Kind::V1Removed => "v1.0 removed container",
            Kind::V2Containers => "/api/v2/containers",
            Kind::Healthz => "/healthz",
            Kind::Metrics => "/metrics",
        }
    }

    const ALL: [Kind; 5] = [
        Kind::V1Live,
        Kind::V1Removed,
        Kind::V2Containers,
        Kind::Healthz,
        Kind::Metrics,
    ];
    /// Share of each kind in the mix (percent).
    const WEIGHTS: [u32; 5] = [60, 15, 10, 10, 5];
}

/// Why a v1.0 "Container … not found" was what the specification asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotFound {
    /// The container had been removed when it was asked for.
    Removed,
    /// It was removed while the request was in flight.
    RemovedMeanwhile,
    /// Its first process had joined it less than the grace period before the request.
    New,
}

impl NotFound {
    pub fn label(self) -> &'static str {
        match self {
            NotFound::Removed => "removed before the request",
            NotFound::RemovedMeanwhile => "removed while the request was in flight",
            NotFound::New => "created within the grace period",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub secs: f64,
    /// Answers by kind and status.
    pub statuses: BTreeMap<(Kind, u16), u64>,
    /// v1.0 500 "Container … not found" answers that were expected, by reason.
    pub not_found: BTreeMap<NotFound, u64>,
    /// Answers outside the specification, and transport errors (no answer within 15 s,
    /// refused or broken connections).
    pub unexpected: u64,
    pub transport_errors: u64,
    /// The first few unexpected answers, one line each.
    pub examples: Vec<String>,
    /// Latencies by kind, µs.
    pub latencies_us: BTreeMap<Kind, Vec<u32>>,
    pub bytes: u64,
}

impl LoadResult {
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    pub fn expected_not_found(&self) -> u64 {
        self.not_found.values().sum()
    }

    fn merge(&mut self, other: LoadResult) {
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.not_found {
            *self.not_found.entry(k).or_default() += v;
        }
        self.unexpected += other.unexpected;
        self.transport_errors += other.transport_errors;
        for e in other.examples {
            if self.examples.len() < 10 {
                self.examples.push(e);
            }
        }
        for (k, v) in other.latencies_us {
            self.latencies_us.entry(k).or_default().extend(v);
        }
        self.bytes += other.bytes;
    }

    /// (p50, p99, max) latency of a kind, ms.
    pub fn latency_ms(&self, kind: Kind) -> Option<(f64, f64, f64)> {
        let mut v = self.latencies_us.get(&kind)?.clone();
        if v.is_empty() {
            return None;
        }
        Some((
            percentile(&mut v, 0.5) / 1000.0,
            percentile(&mut v, 0.99) / 1000.0,
            percentile(&mut v, 1.0) / 1000.0,
        ))
    }

    fn unexpected(&mut self, what: String) {
        self.unexpected += 1;
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }
}

/// Runs the clients until `stop` is raised. Call inside a tokio runtime.
pub async fn run(
    addr: SocketAddr,
    directory: SharedDirectory,
    options: LoadOptions,
    stop: Arc<AtomicBool>,
) -> LoadResult {
    let start = Instant::now();
    let interval = options
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(options.clients as f64 / r));
    let mut tasks = Vec::with_capacity(options.clients);
    for _ in 0..options.clients {
        let (directory, options, stop) = (directory.clone(), options.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            client(addr, &directory, &options, interval, &stop).await
        }));
    }
    let mut all = LoadResult::default();
    for task in tasks {
        match task.await {
            Ok(r) => all.merge(r),
            Err(err) => all.unexpected(format!("a load client failed: {err}")),
        }
    }
    all.secs = start.elapsed().as_secs_f64();
    all
}

async fn client(
    addr: SocketAddr,
    directory: &SharedDirectory,
    options: &LoadOptions,
    interval: Option<Duration>,
    stop: &AtomicBool,
) -> LoadResult {
    let mut result = LoadResult::default();
    let mut conn = Conn::new(addr);
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let total: u32 = Kind::WEIGHTS.iter().sum();
    let mut next = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.random()));
    while !stop.load(Ordering::Relaxed) {
        if let Some(interval) = interval {
            // Never more than 100 ms asleep, so a stop is noticed.
            let now = Instant::now();
            if next > now {
                tokio::time::sleep((next - now).min(Duration::from_millis(100))).await;
                continue;
            }
            next += interval;
            if now > next + Duration::from_secs(1) {
                next = now; // fell behind: do not burst
            }
        }
        let mut pick = rng.random_range(0..total);
        let mut kind = Kind::V1Live;
        for (k, w) in Kind::ALL.iter().zip(Kind::WEIGHTS) {
            if pick < w {
                kind = *k;
                break;
            }
            pick -= w;
        }
        // The container (for v1.0), and the path.
        let target = {
            let dir = directory.read().unwrap_or_else(|e| e.into_inner());
            let removed = (kind == Kind::V1Removed && !dir.removed.is_empty()).then(|| {
                dir.removed[rng.random_range(0..dir.removed.len())]
                    .name
                    .clone()
            });
            match (kind, removed) {
                (Kind::V1Removed, Some(name)) => Some(name),
                (Kind::V1Live | Kind::V1Removed, _) if !dir.live.is_empty() => {
                    kind = Kind::V1Live;
                    Some(dir.live[rng.random_range(0..dir.live.len())].name.clone())
                }
                (Kind::V1Live | Kind::V1Removed, _) => {
                    kind = Kind::V2Containers;
                    None
                }
                _ => None,
            }
        };
        let path = match (&target, kind) {
            (Some(name), _) => v1_path(name, &mut rng, options.history),
            (None, Kind::V2Containers) => "/api/v2/containers".to_string(),
            (None, Kind::Healthz) => "/healthz".to_string(),
            (None, _) => "/metrics".to_string(),
        };
        let sent = Instant::now();
        let answer = conn.get_within(&path, Duration::from_secs(15)).await;
        let received = Instant::now();
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                result.transport_errors += 1;
                result.unexpected(format!("{} {path}: {err:#}", kind.label()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let us = (received - sent).as_micros().min(u128::from(u32::MAX)) as u32;
        result.latencies_us.entry(kind).or_default().push(us);
        result.bytes += body.len() as u64;
        *result.statuses.entry((kind, status.as_u16())).or_default() += 1;
        if status.as_u16() == 200 {
            continue;
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let Some(name) = target.filter(|_| status.as_u16() == 500) else {
            result.unexpected(format!("{status} for {path}: {text:?}"));
            continue;
        };
        if text != format!("Container {name} not found") {
            result.unexpected(format!("{status} for {path}: {text:?}"));
            continue;
        }
        let why = if kind == Kind::V1Removed {
            Some(NotFound::Removed)
        } else {
            let dir = directory.read().unwrap_or_else(|e| e.into_inner());
            match dir.live_since(&name) {
                None => Some(NotFound::RemovedMeanwhile),
                Some(since) if since + options.grace > sent => Some(NotFound::New),
                Some(since) => {
                    result.unexpected(format!(
                        "500 {text:?} for {path}: the container's long-lived process had been \
                         in it for {:.2} s when the request was sent",
                        sent.duration_since(since).as_secs_f64()
                    ));
                    None
                }
            }
        };
        if let Some(why) = why {
            *result.not_found.entry(why).or_default() += 1;
        }
    }
    result
}

/// A v1.0 processes path with random parameters, `count × interval` within the history.
fn v1_path(name: &str, rng: &mut SmallRng, history: u32) -> String {
    let max = history.saturating_sub(1).max(1) as usize;
    let mut query: Vec<String> = Vec::new();
    let sort = ["", "cpu", "mem"][rng.random_range(0..3)];
    if !sort.is_empty() {
        query.push(format!("sort={sort}"));
        if rng.random_bool(0.6) {
            query.push(format!("limit={}", [1, 3, 5, 10][rng.random_range(0..4)]));
        }
    }
    let intervals: Vec<usize> = [1, 2, 5, 10, 30]
        .into_iter()
        .filter(|i| *i <= max)
        .collect();
    let interval = if rng.random_bool(0.5) {
        let i = intervals[rng.random_range(0..intervals.len())];
        query.push(format!("interval={i}"));
        i
    } else {
        1
    };
    if rng.random_bool(0.4) {
        let counts: Vec<usize> = [1, 2, 3, 5, 10]
            .into_iter()
            .filter(|c| c * interval <= max)
            .collect();
        if !counts.is_empty() {
            query.push(format!(
                "count={}",
                counts[rng.random_range(0..counts.len())]
            ));
        }
    }
    let mut path = format!("/api/v1.0/{}/processes", name.trim_start_matches('/'));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_stay_within_the_history() {
        let mut rng = SmallRng::seed_from_u64(7);
        for history in [2, 3, 20, 60] {
            for _ in 0..2000 {
                let path = v1_path("/a/b", &mut rng, history);
                assert!(path.starts_with("/api/v1.0/a/b/processes"), "{path}");
                let param = |key: &str| -> usize {
                    path.split(['?', '&'])
                        .find_map(|p| p.strip_prefix(key))
                        .map_or(1, |v| v.parse().unwrap())
                };
                assert!(
                    param("count=") * param("interval=") < history as usize,
                    "{path} with history {history}"
                );
            }
        }
    }
}
