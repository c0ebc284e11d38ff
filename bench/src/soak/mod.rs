//! The soak test: the service for a long time under sustained churn and API load, then checks
//! that it survived, answered only what the API specifies, gave its memory back and still
//! tracks exactly the processes /proc shows.
//!
//! Phases: build the host ([`host`]: hundreds of containers, each with a long-lived process,
//! and movers), start the service, start the API load ([`load`]) and the watch on the service
//! ([`monitor`]) for the whole run; wait for a full history, then a "cold" window; a warm-up
//! churn and drain (see `--warmup`), then a baseline window (the "before" memory and CPU); churn for `--minutes` (processes started and exiting, moves,
//! containers removed and created); wind the churn down; wait until the history holds no
//! churn-era sample, then an "after" window; stop the load, check the tracked set against /proc
//! ([`verify`]), stop the service with SIGTERM; print the figures and the checks
//! ([`report`]). Everything started or created is undone on every exit path, Ctrl-C included
//! (the benchmark's [`cleanup`]).

pub mod adversary;
pub mod host;
pub mod load;
pub mod monitor;
pub mod report;
mod settings;
pub mod verify;

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

pub use self::settings::{Settings, SoakArgs};
use self::{
    host::{HostStats, SoakHost},
    load::{LoadOptions, LoadResult},
    monitor::{Observed, Phase, PhaseCell, SharedObserved, lock},
    verify::{Verification, VerifyInput},
};
use crate::kit::{
    begin, cleanup, end,
    http::Conn,
    machine::Machine,
    service::{self, Health, LogSummary, Service, ServiceOptions, Stopped},
};

/// CPU seconds and wall time at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub at: Instant,
    /// The service's utime + stime (None once it is gone).
    pub service_cpu: Option<f64>,
    /// The soak's own CPU, its reaped children's included.
    pub own_cpu: f64,
    /// The machine's busy and total jiffies (/proc/stat).
    pub machine: (u64, u64),
}

impl Clock {
    fn now(pid: u32) -> Clock {
        Clock {
            at: Instant::now(),
            service_cpu: service::cpu_seconds(pid).ok(),
            own_cpu: own_cpu(),
            machine: machine_jiffies(),
        }
    }
}

/// A stretch between two clocks.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub from: Clock,
    pub to: Clock,
}

impl Span {
    pub fn secs(&self) -> f64 {
        (self.to.at - self.from.at).as_secs_f64()
    }
    /// The service's CPU in percent of one core.
    pub fn service_percent(&self) -> Option<f64> {
        Some(100.0 * (self.to.service_cpu? - self.from.service_cpu?) / self.secs().max(1e-9))
    }
    pub fn own_percent(&self) -> f64 {
        100.0 * (self.to.own_cpu - self.from.own_cpu) / self.secs().max(1e-9)
    }
    /// The whole machine's busy time in percent of all its cores.
    pub fn machine_percent(&self) -> f64 {
        let busy = self.to.machine.0.saturating_sub(self.from.machine.0) as f64;
        let total = self.to.machine.1.saturating_sub(self.from.machine.1) as f64;
        100.0 * busy / total.max(1.0)
    }
}

/// A measuring window: its span, the medians of the RSS readings within it (kB), and the
/// allocator's figures at its end.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub span: Span,
    pub rss_kb: Option<u64>,
    /// The anonymous part of RSS (the heap; file-backed pages of the binary come and go with
    /// the page cache).
    pub anon_kb: Option<u64>,
    pub heap: Option<Heap>,
}

fn own_cpu() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn machine_jiffies() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The service's own counts, from /metrics at the end.
#[derive(Clone, Debug, Default)]
pub struct Scraped {
    /// (route, status) → answers.
    pub requests: Vec<(String, String, u64)>,
    /// The upper bound of the sample-duration histogram's highest filled bucket, and the count.
    pub max_sample_bound: Option<String>,
    pub samples: u64,
    /// The allocator's figures (companion_heap_*_bytes): bytes in use, bytes resident.
    pub heap: Option<Heap>,
}

/// jemalloc's view of the service's heap, from /metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Heap {
    pub allocated: u64,
    pub resident: u64,
}

fn parse_metrics(text: &str) -> Scraped {
    let mut out = Scraped::default();
    let label = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_string())
    };
    let value = |line: &str| -> Option<f64> { line.rsplit(' ').next()?.parse().ok() };
    let mut buckets: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("companion_http_requests_total{") {
            if let (Some(route), Some(status), Some(v)) =
                (label(line, "route"), label(line, "status"), value(line))
            {
                out.requests.push((route, status, v as u64));
            }
        } else if line.starts_with("companion_sample_duration_seconds_bucket{") {
            if let (Some(le), Some(v)) = (label(line, "le"), value(line)) {
                buckets.push((le, v));
            }
        } else if line.starts_with("companion_sample_duration_seconds_count") {
            out.samples = value(line).unwrap_or(0.0) as u64;
        } else if line.starts_with("companion_heap_allocated_bytes ") {
            out.heap.get_or_insert_default().allocated = value(line).unwrap_or(0.0) as u64;
        } else if line.starts_with("companion_heap_resident_bytes ") {
            out.heap.get_or_insert_default().resident = value(line).unwrap_or(0.0) as u64;
        }
    }
    // Cumulative buckets: the first whose count reaches the total bounds the longest sample.
    out.max_sample_bound = buckets
        .iter()
        .find(|(_, v)| *v as u64 >= out.samples && out.samples > 0)
        .map(|(le, _)| le.clone());
    out
}

/// Everything measured, filled as the soak goes (absent: the soak did not get there).
#[derive(Default)]
pub struct Figures {
    pub setup_secs: f64,
    pub startup_secs: f64,
    pub full_history_secs: f64,
    /// The window after the history first filled, before any churn; the baseline ("before")
    /// window; the window after the churn.
    pub cold: Option<Window>,
    pub baseline: Option<Window>,
    pub churn: Option<Span>,
    pub drain_secs: f64,
    pub after: Option<Window>,
    pub health_baseline_end: Option<Health>,
    pub health_churn_start: Option<Health>,
    pub health_churn_end: Option<Health>,
    pub health_end: Option<Health>,
    /// The warm-up churn and drain took this long (0: none).
    pub warmup_secs: f64,
    pub hwm_kb: Option<u64>,
    pub host: HostStats,
    pub load: Option<LoadResult>,
    pub verification: Option<Verification>,
    pub scraped: Option<Scraped>,
    pub observed: Observed,
    pub log: LogSummary,
    pub stopped: Option<Stopped>,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    pub total_secs: f64,
    pub removed_total: usize,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    end(soak(args))
}

fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args)?;
    let _guard = begin(&settings.work_dir)?;
    let began = Instant::now();
    let mut machine = Machine::probe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.load_threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let mut figures = Figures::default();
    let mut host = SoakHost::new(settings.host.clone())?;
    eprintln!(
        "companion-bench soak: {} tracker, {} containers under {} ({}); service {}; log in {}",
        settings.tracker,
        settings.host.cgroups,
        host.base().display(),
        if host.mount.v1_cpu {
            "cgroup v1 cpu hierarchy"
        } else {
            "cgroup v2"
        },
        settings.bin.display(),
        settings.work_dir.display()
    );
    host.populate()?;
    figures.setup_secs = began.elapsed().as_secs_f64();

    let started = Instant::now();
    let service = Service::start(ServiceOptions {
        bin: &settings.bin,
        tracker: &settings.tracker.to_string(),
        sample_period: settings.period,
        history: settings.history,
        log_path: settings
            .work_dir
            .join(format!("service-{}.log", settings.tracker)),
        extra_args: &settings.service_args,
    })?;
    figures.startup_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  service pid {} on {} (started in {:.1}s)",
        service.pid, service.addr, figures.startup_secs
    );

    let observed: SharedObserved = Default::default();
    let phase = Arc::new(PhaseCell::default());
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let stop_load = Arc::new(AtomicBool::new(false));
    let poll = (settings.period / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
    let monitor = runtime.spawn(monitor::run(
        service.pid,
        service.addr,
        poll,
        observed.clone(),
        phase.clone(),
        stop_monitor.clone(),
    ));
    let load = runtime.spawn(load::run(
        service.addr,
        host.directory(),
        LoadOptions {
            clients: settings.clients,
            rate: settings.rate,
            history: settings.history,
            grace: settings.grace,
        },
        stop_load.clone(),
    ));

    let outcome = phases(
        &runtime,
        &settings,
        &mut host,
        &service,
        &observed,
        &phase,
        &mut figures,
    );
    if let Err(err) = &outcome {
        figures.aborted = Some(format!("{err:#}"));
        eprintln!("  stopped early: {err:#}");
    }

    // Wind down in every case: load, checks that need the service, monitor, service, host.
    phase.set(Phase::Final);
    stop_load.store(true, Ordering::SeqCst);
    figures.load = runtime.block_on(load).ok();
    if let (Some(duration), Ok(())) = (args.adversary, &outcome) {
        eprintln!("  adversarial phase, {duration:?}");
        let clients = adversary::Adversaries::default();
        let bound = args.adversary_memory_bound;
        match runtime.block_on(adversary::run(
            service.addr,
            service.pid,
            duration,
            clients,
            bound,
        )) {
            Ok(adversary) => eprintln!("{adversary}"),
            Err(err) => figures.aborted = Some(format!("adversarial phase: {err:#}")),
        }
    }
    let alive = lock(&observed).died.is_none();
    if outcome.is_ok() && alive && !cleanup::interrupted() {
        eprintln!("  checking the tracked set against /proc");
        let mut conn = Conn::new(service.addr);
        let removed: Vec<Arc<str>> = {
            let dir = host.directory();
            let dir = dir.read().unwrap_or_else(|e| e.into_inner());
            dir.removed.iter().map(|r| r.name.clone()).collect()
        };
        figures.removed_total = removed.len();
        let input = VerifyInput {
            mount: &host.mount,
            base_name: host.mount.name_of(host.base()),
            live: host.live(),
            removed,
            period: settings.period,
        };
        match runtime.block_on(verify::run(&mut conn, input, 3)) {
            Ok(v) => figures.verification = Some(v),
            Err(err) => {
                figures.aborted = Some(format!("checking the tracked set: {err:#}"));
            }
        }
        figures.scraped = runtime
            .block_on(conn.get_within("/metrics", Duration::from_secs(15)))
            .ok()
            .filter(|(status, _)| status.as_u16() == 200)
            .map(|(_, body)| parse_metrics(&String::from_utf8_lossy(&body)));
        figures.health_end = runtime.block_on(service::health(&mut conn)).ok();
    }
    stop_monitor.store(true, Ordering::SeqCst);
    let _ = runtime.block_on(monitor);
    figures.hwm_kb = service::memory(service.pid).ok().map(|m| m.hwm_kb);
    let (log, stopped) = service.stop_with_status();
    figures.log = log;
    figures.stopped = Some(stopped);
    figures.observed = lock(&observed).clone();
    figures.host = host.stats.clone();
    host.teardown()?;
    drop(host);
    machine.finish();
    figures.total_secs = began.elapsed().as_secs_f64();

    let (text, failed) = report::text(&settings, &machine, &figures);
    let series = settings.work_dir.join("rss.csv");
    match write_series(&series, &figures.observed, began) {
        Ok(()) => eprintln!("  RSS readings: {}", series.display()),
        Err(err) => eprintln!("  warning: cannot write {}: {err}", series.display()),
    }
    if cleanup::interrupted() {
        bail!("interrupted; everything the soak started was cleaned up");
    }
    println!("{text}");
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// The monitor's VmRSS readings as CSV: seconds since the start, phase, kB.
fn write_series(
    path: &std::path::Path,
    observed: &Observed,
    began: Instant,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("seconds,phase,rss_kb,anon_kb,file_kb,threads\n");
    for r in &observed.rss {
        let _ = writeln!(
            text,
            "{:.3},{:?},{},{},{},{}",
            r.at.saturating_duration_since(began).as_secs_f64(),
            r.phase,
            r.rss_kb,
            r.anon_kb,
            r.file_kb,
            r.threads
        );
    }
    fs::write(path, text)
}

/// The allocator's figures from /metrics now (None if the service does not give them).
fn scrape_heap(rt: &tokio::runtime::Runtime, conn: &mut Conn) -> Option<Heap> {
    let (status, body) = rt
        .block_on(conn.get_within("/metrics", Duration::from_secs(15)))
        .ok()?;
    (status.as_u16() == 200)
        .then(|| parse_metrics(&String::from_utf8_lossy(&body)).heap)
        .flatten()
}

/// Baseline, churn, drain. Returns early (Err) when the service dies or a wait times out.
fn phases(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    host: &mut SoakHost,
    service: &Service,
    observed: &SharedObserved,
    phase: &PhaseCell,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let pid = service.pid;
    let dead = || lock(observed).died.is_some();
    let check_alive = || -> anyhow::Result<()> {
        if let Some((_, status)) = lock(observed).died {
            bail!("the service died ({})", service::describe_status(status));
        }
        Ok(())
    };
    let mut conn = Conn::new(service.addr);
    // Sleeps in small steps, watching for the service's death and for signals.
    let wait = |d: Duration| -> anyhow::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            cleanup::sleep((until - Instant::now()).min(Duration::from_millis(100)))?;
            check_alive()?;
        }
        Ok(())
    };
    // Waits one --baseline window and measures it.
    let window = || -> anyhow::Result<Window> {
        let from = Clock::now(pid);
        wait(settings.baseline)?;
        let to = Clock::now(pid);
        let median =
            |figure: fn(&monitor::Reading) -> u64| lock(observed).median(from.at, to.at, figure);
        Ok(Window {
            span: Span { from, to },
            rss_kb: median(|r| r.rss_kb),
            anon_kb: median(|r| r.anon_kb),
            heap: scrape_heap(rt, &mut Conn::new(service.addr)),
        })
    };
    // Polls /healthz until `done`.
    let mut wait_health =
        |what: &str, timeout: Duration, done: &dyn Fn(&Health) -> bool| -> anyhow::Result<Health> {
            let deadline = Instant::now() + timeout;
            loop {
                check_alive()?;
                cleanup::check()?;
                let h = rt.block_on(service::health(&mut conn))?;
                if done(&h) {
                    return Ok(h);
                }
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what} (last /healthz: {h:?})");
                }
                std::thread::sleep((settings.period / 4).max(Duration::from_millis(20)));
            }
        };

    // Baseline: a full history, then the window.
    phase.set(Phase::Baseline);
    let history_wait = settings.period * (settings.history * 3) + Duration::from_secs(120);
    let started = Instant::now();
    wait_health("a full history", history_wait, &|h| {
        h.history_capacity > 0 && h.samples_in_history >= h.history_capacity
    })?;
    figures.full_history_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  history full after {:.1}s; {} window {}",
        figures.full_history_secs,
        if settings.warmup.is_zero() {
            "baseline"
        } else {
            "cold"
        },
        humantime::format_duration(settings.baseline)
    );
    if !settings.warmup.is_zero() {
        figures.cold = Some(window()?);

        phase.set(Phase::Warmup);
        eprintln!(
            "  warm-up: {} of churn, then the history cleared of it",
            humantime::format_duration(settings.warmup)
        );
        let warm = Instant::now();
        host.churn(warm + settings.warmup, &dead)?;
        check_alive()?;
        let end = wait_health("/healthz", Duration::from_secs(30), &|_| true)?;
        let target = end.samples_taken + u64::from(settings.history) + 1;
        wait_health(
            "the warm-up samples to leave the history",
            history_wait,
            &|h| h.samples_taken >= target,
        )?;
        figures.warmup_secs = warm.elapsed().as_secs_f64();
        // The counts describe the measured churn alone: the containers alive now are its start.
        let alive = host.stats.created - host.stats.removed;
        host.stats = HostStats {
            created: alive,
            created_initially: alive,
            ..HostStats::default()
        };
        phase.set(Phase::Baseline);
        eprintln!(
            "  baseline window {}",
            humantime::format_duration(settings.baseline)
        );
    }
    figures.baseline = Some(window()?);
    figures.health_baseline_end =
        Some(wait_health("/healthz", Duration::from_secs(30), &|_| true)?);

    // Churn.
    phase.set(Phase::Churn);
    figures.health_churn_start = Some(wait_health("/healthz", Duration::from_secs(30), &|_| true)?);
    eprintln!(
        "  churn: {:.1} min, {} processes/s, {} moves/s, {} containers/min, {} API clients{}",
        settings.churn.as_secs_f64() / 60.0,
        settings.host.churn_rate,
        settings.host.moves_per_second,
        settings.host.turnover_per_minute,
        settings.clients,
        settings
            .rate
            .map_or(" back to back".into(), |r| format!(" at {r} requests/s"))
    );
    let from = Clock::now(pid);
    let churned = host.churn(from.at + settings.churn, &dead);
    let to = Clock::now(pid);
    figures.churn = Some(Span { from, to });
    churned?;
    check_alive()?;
    let end = wait_health("/healthz", Duration::from_secs(30), &|_| true)?;
    eprintln!(
        "  churn over after {:.1}s: {} processes started, {} moves, {} containers created, {} removed",
        (to.at - from.at).as_secs_f64(),
        host.stats.processes(),
        host.stats.moves,
        host.stats.created - host.stats.created_initially,
        host.stats.removed
    );

    // Drain: every churn-era sample out of the history, then the after window.
    phase.set(Phase::Drain);
    let drained = Instant::now();
    let target = end.samples_taken + u64::from(settings.history) + 1;
    figures.health_churn_end = Some(end);
    wait_health(
        "the churn-era samples to leave the history",
        history_wait,
        &|h| h.samples_taken >= target,
    )?;
    figures.drain_secs = drained.elapsed().as_secs_f64();
    eprintln!(
        "  history clear of churn-era samples after {:.1}s; after window {}",
        figures.drain_secs,
        humantime::format_duration(settings.baseline)
    );
    figures.after = Some(window()?);
    Ok(())
}
