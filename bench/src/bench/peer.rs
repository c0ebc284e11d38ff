//! The peer: Debian's `prometheus-process-exporter` over the same host, configured with one
//! group per process (the name template `{{.PID}}`, every command line), scraped once per
//! sample period like the service samples. Its CPU (utime+stime of its process) per scrape is
//! its cost of the same job: reading every process's /proc files once a period.
//!
//! The exporter reads /proc when scraped (not on its own schedule), so the scrapes are its
//! samples. It is started and ended by the benchmark (not through its packaged unit), on a free
//! port, and registered for clean-up like every other child.

use std::{
    ffi::OsString,
    fs,
    net::{SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::runtime::Runtime;

use crate::kit::{cleanup, http::Conn, process, service};

/// One group per process: the PID names it; `.*` matches every command line, empty included.
const CONFIG: &str = "process_names:\n  - name: \"{{.PID}}\"\n    cmdline:\n    - '.*'\n";

/// What the peer cost over its measurement.
#[derive(Clone, Debug, Default)]
pub struct PeerResult {
    /// Scrapes measured.
    pub scrapes: u64,
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub mean_scrape_ms: f64,
    pub max_scrape_ms: f64,
    /// Groups (processes) the last scrape listed: `namedprocess_namegroup_num_procs` series.
    pub groups: usize,
    pub body_kib: f64,
    pub rss_kb: u64,
}

impl PeerResult {
    pub fn us_per_scrape(&self) -> f64 {
        1e6 * self.cpu_secs / self.scrapes.max(1) as f64
    }
    /// µs per process it listed, per scrape.
    pub fn us_per_process(&self) -> f64 {
        self.us_per_scrape() / self.groups.max(1) as f64
    }
}

/// Starts the peer, scrapes it once per `period` for `duration`, ends it.
pub fn measure(
    rt: &Runtime,
    bin: &Path,
    work_dir: &Path,
    duration: Duration,
    period: Duration,
) -> anyhow::Result<PeerResult> {
    let config = work_dir.join("peer.yaml");
    fs::write(&config, CONFIG).with_context(|| format!("writing {}", config.display()))?;
    let addr = free_port()?;
    let bin = process::which(&bin.to_string_lossy())?;
    let args = [
        OsString::from("-config.path"),
        config.into_os_string(),
        OsString::from("-web.listen-address"),
        OsString::from(addr.to_string()),
    ];
    let pid = process::spawn(&bin, &args, None)?;
    let result = rt.block_on(scrape(pid, addr, duration, period));
    cleanup::end(&[pid]);
    result
}

async fn scrape(
    pid: u32,
    addr: SocketAddr,
    duration: Duration,
    period: Duration,
) -> anyhow::Result<PeerResult> {
    // Until it listens (it reads /proc once before, so the first scrape is not a cold one; that
    // takes it about a minute at 50,000 processes).
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Err(err) = tokio::net::TcpStream::connect(addr).await {
        cleanup::check()?;
        if Instant::now() > deadline {
            return Err(anyhow::Error::new(err).context("the peer did not listen"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut conn = Conn::new(addr);
    let cpu0 = service::cpu_seconds(pid)?;
    let began = Instant::now();
    let mut result = PeerResult::default();
    let mut total_ms = 0.0;
    let mut bytes = 0usize;
    let mut next = began;
    // At least one scrape, however long it takes (most of a minute at 50,000 processes; its
    // cost per scrape varies little).
    while result.scrapes < 1 || began.elapsed() < duration {
        cleanup::check()?;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        next = Instant::now() + period;
        let t = Instant::now();
        let (status, body) = conn
            .get_within("/metrics", Duration::from_secs(120))
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "the peer answered /metrics with {status}"
        );
        let ms = t.elapsed().as_secs_f64() * 1e3;
        result.scrapes += 1;
        total_ms += ms;
        result.max_scrape_ms = result.max_scrape_ms.max(ms);
        bytes += body.len();
        result.groups = groups(&body);
    }
    result.cpu_secs = service::cpu_seconds(pid)? - cpu0;
    result.wall_secs = began.elapsed().as_secs_f64();
    result.mean_scrape_ms = total_ms / result.scrapes as f64;
    result.body_kib = bytes as f64 / 1024.0 / result.scrapes as f64;
    result.rss_kb = service::memory(pid).map_or(0, |m| m.rss_kb);
    Ok(result)
}

/// The groups a scrape lists (one per process with our configuration).
fn groups(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"namedprocess_namegroup_num_procs{"))
        .count()
}

/// A port nobody listens on now (bound and released; the peer binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_groups() {
        let body = b"# HELP namedprocess_namegroup_num_procs number of processes in this group\n\
# TYPE namedprocess_namegroup_num_procs gauge\n\
namedprocess_namegroup_num_procs{groupname=\"1\"} 1\n\
namedprocess_namegroup_num_procs{groupname=\"42\"} 1\n\
namedprocess_namegroup_cpu_seconds_total{groupname=\"1\",mode=\"user\"} 0.5\n";
        assert_eq!(groups(body), 2);
    }
}
