//! Runs the service as a child process and measures it: CPU from /proc/PID/stat, memory from
//! /proc/PID/status, the sampling schedule from /healthz.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Deserialize;

use testbed::{proc, spawn::join_before_exec};

use super::{cleanup, http::Conn};

pub use testbed::proc::Memory;

/// The /healthz fields the benchmark uses (others are ignored; missing ones read as 0).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Health {
    pub status: String,
    pub tracker: String,
    pub newest_sample_age_seconds: f64,
    pub sample_period_seconds: f64,
    pub samples_in_history: u64,
    pub history_capacity: u64,
    pub samples_taken: u64,
    pub samples_slipped: u64,
    pub last_sample_seconds: f64,
    pub tracked_processes: u64,
    pub containers: u64,
    pub open_descriptors: u64,
    pub events_received: u64,
    pub events_lost: u64,
    pub reconciliations: u64,
    pub repairs: u64,
    pub degraded: Option<String>,
    /// Threads the newest sample's reads were split over (0: a service without the field).
    pub sampler_threads: u64,
}

pub async fn health(conn: &mut Conn) -> anyhow::Result<Health> {
    let (_, body) = conn
        .get_within("/healthz", Duration::from_secs(10))
        .await
        .context("GET /healthz")?;
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "parsing /healthz: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })
}

/// What the service's log showed.
#[derive(Clone, Debug, Default)]
pub struct LogSummary {
    pub warnings: u64,
    pub errors: u64,
    /// The first few warning/error messages, deduplicated.
    pub messages: Vec<String>,
}

pub struct Service {
    pub pid: u32,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    log_thread: Option<JoinHandle<LogSummary>>,
}

pub struct ServiceOptions<'a> {
    pub bin: &'a Path,
    pub tracker: &'a str,
    pub sample_period: Duration,
    pub history: u32,
    pub log_path: PathBuf,
    /// More service flags, after the ones above.
    pub extra_args: &'a [String],
}

impl Service {
    /// Starts the service on a free port and waits until it listens (after its first sample).
    pub fn start(options: ServiceOptions<'_>) -> anyhow::Result<Service> {
        let log = File::create(&options.log_path)
            .with_context(|| format!("creating {}", options.log_path.display()))?;
        let mut cmd = Command::new(options.bin);
        cmd.args([
            "--tracker",
            options.tracker,
            "--listen-ip",
            "127.0.0.1",
            "--port",
            "0",
            "--sample-period",
            &humantime::format_duration(options.sample_period).to_string(),
            "--history",
            &options.history.to_string(),
            "--log-format",
            "json",
        ])
        .args(options.extra_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        join_before_exec(&mut cmd, Vec::new(), Some(libc::SIGTERM));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", options.bin.display()))?;
        let pid = child.id();
        cleanup::register_pid(pid);
        let stderr = child.stderr.take().expect("piped");
        drop(child);
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        let log_thread = std::thread::Builder::new()
            .name("service-log".into())
            .spawn(move || read_log(stderr, log, tx))
            .context("starting the log reader")?;
        let mut service = Service {
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path: options.log_path,
            log_thread: Some(log_thread),
        };
        let deadline = started + Duration::from_secs(300);
        loop {
            cleanup::check()?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    service.addr = addr;
                    return Ok(service);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = cleanup::try_reap(pid) {
                let how = describe_status(status);
                bail!(
                    "the service exited during start-up ({how}); its log {}:\n{}",
                    service.log_path.display(),
                    tail(&service.log_path, 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the service did not listen within 300 s; log: {}",
                    service.log_path.display()
                );
            }
        }
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL.
    pub fn stop(self) -> LogSummary {
        self.stop_with_status().0
    }

    /// [`Service::stop`], also telling how the service ended: its wait status after SIGTERM,
    /// `Stopped::Killed` when it had to be SIGKILLed, `Stopped::AlreadyReaped` when it was no
    /// longer ours to stop (someone reaped it before).
    pub fn stop_with_status(mut self) -> (LogSummary, Stopped) {
        let owned = cleanup::take_pids(&[self.pid]);
        let mut stopped = Stopped::AlreadyReaped;
        if !owned.is_empty() {
            // SAFETY: our own unreaped child (taken from the registry above).
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
            let began = Instant::now();
            let deadline = began + Duration::from_secs(10);
            let mut status = 0;
            loop {
                // SAFETY: plain syscall.
                let got =
                    unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
                if got != 0 {
                    stopped = Stopped::Exited {
                        status,
                        after: began.elapsed(),
                    };
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("  warning: the service ignored SIGTERM for 10 s; killing it");
                    cleanup::kill_and_reap(&owned, libc::SIGKILL);
                    stopped = Stopped::Killed;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let log = self
            .log_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (log, stopped)
    }
}

/// How [`Service::stop_with_status`] ended the service.
#[derive(Clone, Copy, Debug)]
pub enum Stopped {
    /// It exited after SIGTERM with this wait status, after this long.
    Exited { status: i32, after: Duration },
    /// It ignored SIGTERM for 10 s and was SIGKILLed.
    Killed,
    /// It had been reaped already (it died earlier).
    AlreadyReaped,
}

/// A wait status in words: `exit code N` or `signal N`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.log_thread.is_some() {
            let owned = cleanup::take_pids(&[self.pid]);
            cleanup::kill_and_reap(&owned, libc::SIGKILL);
        }
    }
}

fn read_log(
    stderr: std::process::ChildStderr,
    mut log: File,
    listening: mpsc::Sender<SocketAddr>,
) -> LogSummary {
    let mut summary = LogSummary::default();
    let mut sent = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let message = value["fields"]["message"].as_str().unwrap_or_default();
        if !sent
            && message == "listening"
            && let Some(addr) = value["fields"]["local"]
                .as_str()
                .and_then(|a| a.parse().ok())
        {
            let _ = listening.send(addr);
            sent = true;
        }
        match value["level"].as_str() {
            Some("WARN") => summary.warnings += 1,
            Some("ERROR") => summary.errors += 1,
            _ => continue,
        }
        if summary.messages.len() < 5 && !summary.messages.iter().any(|m| m == message) {
            summary.messages.push(message.to_string());
        }
    }
    summary
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    proc::cpu_seconds(pid).with_context(|| format!("reading /proc/{pid}/stat"))
}

/// The memory of a process from /proc/PID/status.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    proc::memory(pid).with_context(|| format!("reading /proc/{pid}/status"))
}

/// CPU time of the service's sampler thread (by name), in ns, from schedstat.
pub fn sampler_thread_ns(pid: u32) -> Option<u64> {
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "sampler" {
            let stat = fs::read_to_string(entry.path().join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Run count and run time (ns) summed over the BPF programs the process holds, from fdinfo.
/// Counted only while kernel.bpf_stats_enabled is 1.
pub fn bpf_stats(pid: u32) -> Option<(u64, u64)> {
    let mut runs = 0;
    let mut ns = 0;
    let mut programs = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.contains("prog_type:") {
            continue;
        }
        programs += 1;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            match (
                parts.next(),
                parts.next().and_then(|v| v.parse::<u64>().ok()),
            ) {
                (Some("run_time_ns:"), Some(v)) => ns += v,
                (Some("run_cnt:"), Some(v)) => runs += v,
                _ => {}
            }
        }
    }
    (programs > 0).then_some((runs, ns))
}

/// Observations of /healthz over a stretch of time.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    pub polls: u64,
    pub max_age: f64,
    pub max_last_sample: f64,
    pub sum_last_sample: f64,
    pub min_tracked: u64,
    pub max_tracked: u64,
    pub sum_tracked: f64,
    pub first: Option<Health>,
    pub last: Option<Health>,
    pub not_ok: u64,
}

impl Watch {
    pub fn record(&mut self, h: &Health) {
        self.polls += 1;
        self.max_age = self.max_age.max(h.newest_sample_age_seconds);
        self.max_last_sample = self.max_last_sample.max(h.last_sample_seconds);
        self.sum_last_sample += h.last_sample_seconds;
        self.min_tracked = if self.polls == 1 {
            h.tracked_processes
        } else {
            self.min_tracked.min(h.tracked_processes)
        };
        self.max_tracked = self.max_tracked.max(h.tracked_processes);
        self.sum_tracked += h.tracked_processes as f64;
        if h.status != "ok" {
            self.not_ok += 1;
        }
        if self.first.is_none() {
            self.first = Some(h.clone());
        }
        self.last = Some(h.clone());
    }

    pub fn mean_tracked(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.sum_tracked / self.polls as f64
        }
    }

    pub fn mean_last_sample(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.sum_last_sample / self.polls as f64
        }
    }

    /// Difference of a counter between the first and last observation.
    pub fn delta(&self, f: impl Fn(&Health) -> u64) -> u64 {
        match (&self.first, &self.last) {
            (Some(a), Some(b)) => f(b).saturating_sub(f(a)),
            _ => 0,
        }
    }
}

/// Polls /healthz every `every` until `until` is true or `timeout` passes.
pub async fn watch_until(
    conn: &mut Conn,
    watch: &mut Watch,
    every: Duration,
    timeout: Duration,
    mut until: impl FnMut(&Health) -> bool,
) -> anyhow::Result<Health> {
    let deadline = Instant::now() + timeout;
    loop {
        cleanup::check()?;
        let h = health(conn).await?;
        watch.record(&h);
        if until(&h) {
            return Ok(h);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting on /healthz (last: {h:?})");
        }
        tokio::time::sleep(every).await;
    }
}

/// The service's cost over a whole number of samples.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub samples: u64,
    pub slipped: u64,
    pub tracked: f64,
    pub containers: u64,
    pub open_descriptors: u64,
    pub events: u64,
    pub events_lost: u64,
    pub reconciliations: u64,
    pub repairs: u64,
    pub sampler_thread_secs: Option<f64>,
    /// (runs, ns) of the kernel-side programs during the window.
    pub bpf: Option<(u64, u64)>,
    pub watch: Watch,
    /// At the start and at the end of the window.
    pub memory_begin: Memory,
    pub memory: Memory,
}

impl Window {
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_secs / self.wall_secs.max(1e-9)
    }
    pub fn us_per_sample(&self) -> f64 {
        1e6 * self.cpu_secs / self.samples.max(1) as f64
    }
    pub fn us_per_process(&self) -> f64 {
        self.us_per_sample() / self.tracked.max(1.0)
    }
}

/// Measures `samples` samples, from just after one publication to just after another, so the
/// CPU counted is that of whole samples. /healthz is polled every `poll` (closer near the ends).
pub async fn measure_window(
    pid: u32,
    conn: &mut Conn,
    samples: u64,
    poll: Duration,
    period: Duration,
) -> anyhow::Result<Window> {
    let mut watch = Watch::default();
    let h = health(conn).await?;
    let begin = watch_until(
        conn,
        &mut watch,
        Duration::from_millis(10),
        period * 5,
        |n| n.samples_taken > h.samples_taken,
    )
    .await?;
    let cpu0 = cpu_seconds(pid)?;
    let memory_begin = memory(pid)?;
    let sampler0 = sampler_thread_ns(pid);
    let bpf0 = bpf_stats(pid);
    let t0 = Instant::now();
    let mut watch = Watch::default();
    watch.record(&begin);
    let target = begin.samples_taken + samples;
    let end_deadline = period * (samples as u32 * 3 + 10);
    let end = watch_until(conn, &mut watch, poll, end_deadline, |n| {
        n.samples_taken + 1 >= target
    })
    .await?;
    let end = if end.samples_taken >= target {
        end
    } else {
        watch_until(
            conn,
            &mut watch,
            Duration::from_millis(20),
            period * 5,
            |n| n.samples_taken >= target,
        )
        .await?
    };
    let cpu1 = cpu_seconds(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    let sampler1 = sampler_thread_ns(pid);
    let bpf1 = bpf_stats(pid);
    let memory = memory(pid)?;
    Ok(Window {
        wall_secs: wall,
        cpu_secs: cpu1 - cpu0,
        samples: end.samples_taken - begin.samples_taken,
        slipped: end.samples_slipped - begin.samples_slipped,
        tracked: watch.mean_tracked(),
        containers: end.containers,
        open_descriptors: end.open_descriptors,
        events: end.events_received - begin.events_received,
        events_lost: end.events_lost - begin.events_lost,
        reconciliations: end.reconciliations - begin.reconciliations,
        repairs: end.repairs - begin.repairs,
        sampler_thread_secs: sampler0
            .zip(sampler1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9),
        bpf: bpf0
            .zip(bpf1)
            .map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))),
        watch,
        memory_begin,
        memory,
    })
}
