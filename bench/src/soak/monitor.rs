//! Watches the service for the whole soak: that its process is alive (checked every poll
//! without reaping anything but a dead service), its /healthz answers (200, status), every
//! sample's duration (each poll sees the newest; polls come several times per period), and its
//! resident memory.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use crate::kit::{
    cleanup,
    http::Conn,
    service::{self, Health},
    stats,
};

/// The soak's phases, for attributing observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Baseline = 0,
    Churn = 1,
    Drain = 2,
    Final = 3,
    /// The warm-up churn and its drain, before the baseline window.
    Warmup = 4,
}

impl Phase {
    pub const COUNT: usize = 5;

    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Baseline,
            1 => Phase::Churn,
            2 => Phase::Drain,
            4 => Phase::Warmup,
            _ => Phase::Final,
        }
    }
}

/// The phase, set by the soak, read by the monitor.
#[derive(Default)]
pub struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// When the service was found dead, and its wait status.
    pub died: Option<(Instant, i32)>,
    pub polls: u64,
    /// /healthz answers other than 200, or none at all.
    pub health_failures: u64,
    pub health_examples: Vec<String>,
    /// Polls whose status was not `ok` (`degraded`; `stale` also fails above), with the first.
    pub not_ok: u64,
    pub first_not_ok: Option<String>,
    pub last: Option<Health>,
    /// Samples whose duration a poll saw, and the longest, per phase.
    pub samples_seen: [u64; Phase::COUNT],
    pub max_sample_secs: [f64; Phase::COUNT],
    /// The service's memory, read at every poll.
    pub rss: Vec<Reading>,
    pub max_tracked: u64,
    pub max_containers: u64,
}

impl Observed {
    /// Median of one figure (kB) over the readings within [from, to].
    pub fn median(&self, from: Instant, to: Instant, figure: fn(&Reading) -> u64) -> Option<u64> {
        let mut v: Vec<f64> = self
            .rss
            .iter()
            .filter(|r| r.at >= from && r.at <= to)
            .map(|r| figure(r) as f64)
            .collect();
        (!v.is_empty()).then(|| stats::median(&mut v).round() as u64)
    }

    /// Highest VmRSS (kB) read in a phase.
    pub fn rss_max(&self, phase: Phase) -> Option<u64> {
        self.rss
            .iter()
            .filter(|r| r.phase == phase)
            .map(|r| r.rss_kb)
            .max()
    }
}

/// The service's memory at one poll, from /proc/PID/status (kB).
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub at: Instant,
    pub phase: Phase,
    /// VmRSS: anonymous + file-backed + shared memory.
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
    pub threads: u64,
}

impl Reading {
    fn read(pid: u32, phase: Phase) -> Option<Reading> {
        let m = service::memory(pid).ok()?;
        (m.rss_kb > 0).then(|| Reading {
            at: Instant::now(),
            phase,
            rss_kb: m.rss_kb,
            anon_kb: m.anon_kb,
            file_kb: m.file_kb,
            threads: m.threads,
        })
    }
}

pub type SharedObserved = Arc<Mutex<Observed>>;

pub fn lock(o: &SharedObserved) -> std::sync::MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls every `poll` until `stop`, or until the service is found dead.
pub async fn run(
    pid: u32,
    addr: SocketAddr,
    poll: Duration,
    observed: SharedObserved,
    phase: Arc<PhaseCell>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = Conn::new(addr);
    let mut previous_taken: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        // Reaps the service only if it has exited (it stays registered otherwise).
        if let Some(status) = cleanup::try_reap(pid) {
            lock(&observed).died = Some((Instant::now(), status));
            return;
        }
        let reading = Reading::read(pid, phase.get());
        let answer = conn.get_within("/healthz", Duration::from_secs(5)).await;
        let phase_now = phase.get();
        record(&observed, &mut previous_taken, phase_now, reading, answer);
        let spent = began.elapsed();
        tokio::time::sleep(poll.saturating_sub(spent)).await;
    }
}

/// Notes one poll's findings.
fn record(
    observed: &SharedObserved,
    previous_taken: &mut Option<u64>,
    phase_now: Phase,
    reading: Option<Reading>,
    answer: anyhow::Result<(hyper::StatusCode, bytes::Bytes)>,
) {
    let mut o = lock(observed);
    o.polls += 1;
    o.rss.extend(reading);
    match answer {
        Ok((status, body)) if status.as_u16() == 200 => {
            match serde_json::from_slice::<Health>(&body) {
                Ok(h) => {
                    if h.status != "ok" {
                        o.not_ok += 1;
                        if o.first_not_ok.is_none() {
                            o.first_not_ok = Some(format!(
                                "{} ({})",
                                h.status,
                                h.degraded.as_deref().unwrap_or("no reason given")
                            ));
                        }
                    }
                    // A poll right after the previous one's sample sees every duration.
                    if previous_taken.is_some_and(|p| h.samples_taken == p + 1) {
                        let i = phase_now as usize;
                        o.samples_seen[i] += 1;
                        o.max_sample_secs[i] = o.max_sample_secs[i].max(h.last_sample_seconds);
                    }
                    *previous_taken = Some(h.samples_taken);
                    o.max_tracked = o.max_tracked.max(h.tracked_processes);
                    o.max_containers = o.max_containers.max(h.containers);
                    o.last = Some(h);
                }
                Err(err) => {
                    o.health_failures += 1;
                    if o.health_examples.len() < 5 {
                        o.health_examples
                            .push(format!("/healthz: unparsable body: {err}"));
                    }
                }
            }
        }
        Ok((status, body)) => {
            o.health_failures += 1;
            if o.health_examples.len() < 5 {
                o.health_examples.push(format!(
                    "/healthz: {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
            }
        }
        Err(err) => {
            o.health_failures += 1;
            if o.health_examples.len() < 5 {
                o.health_examples.push(format!("/healthz: {err:#}"));
            }
        }
    }
}
