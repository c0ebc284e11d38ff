//! Exec-to-visible latency: start a process inside a container (it joins the cgroup before it
//! execs) and poll the API for that container until the process is listed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use rand::Rng;
use tokio::runtime::Runtime;

use super::host::{Container, Host};
use crate::kit::{cleanup, http::Conn, stats::median};

#[derive(Clone, Debug, Default)]
pub struct ProbeResult {
    pub trials: usize,
    /// Latencies of the trials where the process appeared, ms.
    pub latencies_ms: Vec<f64>,
    /// Trials where it did not appear within the timeout.
    pub missed: usize,
}

impl ProbeResult {
    pub fn median_ms(&self) -> f64 {
        median(&mut self.latencies_ms.clone())
    }
    pub fn max_ms(&self) -> f64 {
        self.latencies_ms.iter().copied().fold(0.0, f64::max)
    }
}

pub struct ProbeOptions {
    pub trials: usize,
    pub poll: Duration,
    pub period: Duration,
}

/// Runs the trials. Spawns from the calling (main) thread; polls on `rt`.
pub fn run(
    rt: &Runtime,
    host: &Host,
    container: &Container,
    addr: SocketAddr,
    options: &ProbeOptions,
) -> anyhow::Result<ProbeResult> {
    let mut result = ProbeResult {
        trials: options.trials,
        ..ProbeResult::default()
    };
    let path = format!(
        "/api/v1.0/{}/processes",
        container.name.trim_start_matches('/')
    );
    let timeout = options.period * 3 + Duration::from_secs(2);
    let mut rng = rand::rng();
    let mut conn = Conn::new(addr);
    for _ in 0..options.trials {
        // A random phase against the sampling schedule.
        cleanup::sleep(options.period.mul_f64(rng.random_range(0.0..1.0)))?;
        let began = Instant::now();
        let pid = host.spawn_in(container, &["1000000"])?;
        let seen = rt.block_on(poll_for(&mut conn, &path, pid, options.poll, timeout));
        cleanup::end(&[pid]);
        match seen.with_context(|| format!("probing {path}"))? {
            true => result
                .latencies_ms
                .push(began.elapsed().as_secs_f64() * 1e3),
            false => result.missed += 1,
        }
    }
    Ok(result)
}

/// Polls until `pid` is listed in the newest snapshot (true) or `timeout` passes (false).
async fn poll_for(
    conn: &mut Conn,
    path: &str,
    pid: u32,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        cleanup::check()?;
        let (status, body) = conn.get_within(path, Duration::from_secs(5)).await?;
        if status.is_success() && lists(&body, pid) {
            return Ok(true);
        }
        tokio::time::sleep(poll).await;
    }
    Ok(false)
}

fn lists(body: &[u8], pid: u32) -> bool {
    let Ok(serde_json::Value::Array(snapshots)) = serde_json::from_slice(body) else {
        return false;
    };
    snapshots
        .last()
        .and_then(|s| s["processes"].as_array())
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p["stat"]["pid"].as_u64() == Some(u64::from(pid)))
        })
}

#[cfg(test)]
mod tests {
    use super::lists;

    #[test]
    fn finds_the_pid_in_the_newest_snapshot() {
        let body = br#"[{"timestamp":"t","processes":[{"stat":{"pid":7}}]},
                        {"timestamp":"u","processes":[{"stat":{"pid":8}}]}]"#;
        assert!(lists(body, 8));
        assert!(!lists(body, 7));
        assert!(!lists(b"Container /x not found", 8));
    }
}
