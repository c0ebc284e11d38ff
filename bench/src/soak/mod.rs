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
pub mod verify;

use std::{
    fs,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use self::{
    host::{HostOptions, HostStats, SoakHost},
    load::{LoadOptions, LoadResult},
    monitor::{Observed, Phase, PhaseCell, SharedObserved, lock},
    verify::{Verification, VerifyInput},
};
use crate::bench::{
    Tracker, begin, cleanup, end,
    http::Conn,
    report::Machine,
    service::{self, Health, LogSummary, Service, ServiceOptions, Stopped},
    workspace_root,
};

/// Flags of `companion-bench soak`. Defaults in brackets; `--quick` changes the ones marked
/// (quick: …).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The run: containers and their long-lived processes are created, the service started, API load \
begins and lasts until the end; after a full history, a \"cold\" window, a --warmup churn and \
drain, and a baseline window (the \"before\" memory), the host churns for --minutes; then the churn stops, the soak waits until the history \
holds no churn-era sample (history × period, plus a little) and an \"after\" window, and checks: \
no crash (alive throughout, exit 0 on SIGTERM), no answer outside the specified ones, RSS back \
within --rss-tolerance of before, the tracked set equal to a /proc scan. Each check is printed \
with PASS or FAIL; any FAIL makes the exit status non-zero.

Examples:
  cargo xtask soak --minutes 10                      # the default soak, about 18 minutes
  cargo xtask soak --quick                           # CI: about two minutes
  cargo xtask soak --minutes 30 --tracker procfs
  cargo xtask soak --minutes 0.5 --history 20 --sample-period 250ms --churn-rate 500

Needs root: it creates cgroups and the service loads eBPF. Machines are shared: the report \
gives the load average and the machine's CPU use during the churn.")]
pub struct SoakArgs {
    /// Minutes of churn; fractions allowed (0.5) [10] (quick: 0.5).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// The service's tracker.
    #[arg(long, value_enum, default_value_t = Tracker::Ebpf)]
    pub tracker: Tracker,
    /// The service's --sample-period [1s] (quick: 250ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sample_period: Option<Duration>,
    /// The service's --history [60] (quick: 20).
    #[arg(long)]
    pub history: Option<u32>,
    /// Containers (cgroups) alive at any time, each with one long-lived process [200]
    /// (quick: 100).
    #[arg(long)]
    pub cgroups: Option<usize>,
    /// Processes started per second during the churn, forked children included; each exits by
    /// itself [300] (quick: 200).
    #[arg(long)]
    pub churn_rate: Option<f64>,
    /// Longest life of a churned `sleep` (lives are uniform from 50 ms to this; a forking
    /// shell's child lives at most 500 ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,
    /// Fraction of churn jobs that are `true` (exits at once).
    #[arg(long, default_value_t = 0.3)]
    pub true_fraction: f64,
    /// Fraction of churn jobs that are a shell forking two children (`sleep X & true & wait`:
    /// three processes); the rest are `sleep`s.
    #[arg(long, default_value_t = 0.2)]
    pub fork_fraction: f64,
    /// Processes moved between containers per second during the churn: half of them
    /// long-lived movers, half churned `sleep`s [20] (quick: 10).
    #[arg(long)]
    pub moves_per_second: Option<f64>,
    /// Long-lived processes carried between containers by the moves [cgroups / 4].
    #[arg(long)]
    pub movers: Option<usize>,
    /// Containers removed, and as many created, per minute during the churn [60] (quick: 120).
    #[arg(long)]
    pub cgroup_turnover: Option<f64>,
    /// Concurrent API clients, for the whole run [20] (quick: 10).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Total request rate over all clients; 0 sends back to back.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub load_threads: usize,
    /// Length of the baseline window (after the history is full) and of the after window, over
    /// which RSS (median of readings) and CPU are measured [20s] (quick: 8s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub baseline: Option<Duration>,
    /// Churn before the baseline window, then a drain; 0 disables it [the longer of history ×
    /// period and the time the turnover takes to replace every container, plus 30s] (quick:
    /// plus 15s). An allocator keeps part of the memory of a workload's peak, and slabs stay
    /// partly filled by long-lived objects allocated amid churn; it reuses that memory later.
    /// With a warm-up that reaches both (a full history of churn-era samples, every container
    /// replaced once), "before" is that steady state and before/after measures growth, i.e.
    /// leaks. The RSS before the warm-up ("cold") is reported too.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// The RSS after the churn must be at most this many percent above the RSS before.
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance: f64,
    /// How long a new container may stay unknown to the service: a v1.0 "not found" for a
    /// container whose process joined it less than this before the request is expected
    /// [3 × sample period + 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// More flags for the service, one per use: `--service-arg=--reconcile-every=1m`.
    #[arg(long, allow_hyphen_values = true)]
    pub service_arg: Vec<String>,
    /// The service binary [$COMPANION_BIN, else <workspace>/target/release/companion].
    #[arg(long, env = "COMPANION_BIN")]
    pub companion_bin: Option<PathBuf>,
    /// Where the service's log goes [/tmp/companion-soak-<pid>].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// A CI run of about two minutes: 30 s of churn, history 20 at 250 ms (see the marks above).
    #[arg(long)]
    pub quick: bool,
    /// After the soak, an adversarial phase this long (silent connections, slowloris, HTTP/2
    /// window-0 streams, rapid-reset reconnects) while healthy clients ask (see adversary.rs).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub adversary: Option<Duration>,
    /// The adversarial phase fails when the service's RSS grows by more than this many MiB
    /// (the default --max-buffered-bytes of 64 MiB and the hostile connections' own state).
    #[arg(long, default_value_t = 128)]
    pub adversary_memory_bound: u64,
}

/// The flags with their defaults resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub churn: Duration,
    pub tracker: Tracker,
    pub period: Duration,
    pub history: u32,
    pub host: HostOptions,
    pub clients: usize,
    pub rate: Option<f64>,
    pub load_threads: usize,
    pub baseline: Duration,
    pub warmup: Duration,
    pub rss_tolerance: f64,
    pub grace: Duration,
    pub service_args: Vec<String>,
    pub bin: PathBuf,
    pub work_dir: PathBuf,
    pub quick: bool,
    pub command: String,
}

impl Settings {
    fn resolve(args: &SoakArgs) -> anyhow::Result<Settings> {
        let q = args.quick;
        let minutes = args.minutes.unwrap_or(if q { 0.5 } else { 10.0 });
        if !(minutes.is_finite() && minutes > 0.0) {
            bail!("--minutes must be above 0");
        }
        let period = args.sample_period.unwrap_or(if q {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        });
        if period < Duration::from_millis(10) {
            bail!("--sample-period must be at least 10ms");
        }
        let history = args.history.unwrap_or(if q { 20 } else { 60 });
        if history < 2 {
            bail!("--history must be at least 2");
        }
        let cgroups = args.cgroups.unwrap_or(if q { 100 } else { 200 });
        if cgroups < 2 {
            bail!("--cgroups must be at least 2");
        }
        let fractions = [args.true_fraction, args.fork_fraction];
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || fractions.iter().sum::<f64>() > 1.0
        {
            bail!("--true-fraction and --fork-fraction are fractions with a sum of at most 1");
        }
        if args.max_lifetime < Duration::from_millis(60) {
            bail!("--max-lifetime must be at least 60ms");
        }
        let pick =
            |v: Option<f64>, normal: f64, quick: f64| v.unwrap_or(if q { quick } else { normal });
        let churn_rate = pick(args.churn_rate, 300.0, 200.0);
        let moves = pick(args.moves_per_second, 20.0, 10.0);
        let turnover = pick(args.cgroup_turnover, 60.0, 120.0);
        if [churn_rate, moves, turnover]
            .iter()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            bail!("--churn-rate, --moves-per-second and --cgroup-turnover must be 0 or more");
        }
        let bin = match &args.companion_bin {
            Some(bin) => bin.clone(),
            None => workspace_root().join("target/release/companion"),
        };
        if !bin.is_file() {
            bail!(
                "the service binary {} does not exist: build it (cargo build --release -p companion) \
                 or set COMPANION_BIN / --companion-bin",
                bin.display()
            );
        }
        Ok(Settings {
            churn: Duration::from_secs_f64(minutes * 60.0),
            tracker: args.tracker,
            period,
            history,
            host: HostOptions {
                cgroups,
                churn_rate,
                max_lifetime: args.max_lifetime,
                true_fraction: args.true_fraction,
                fork_fraction: args.fork_fraction,
                moves_per_second: moves,
                movers: args.movers.unwrap_or(cgroups / 4),
                turnover_per_minute: turnover,
            },
            clients: args.clients.unwrap_or(if q { 10 } else { 20 }),
            rate: (args.rate > 0.0).then_some(args.rate),
            load_threads: args.load_threads.max(1),
            baseline: args
                .baseline
                .unwrap_or(Duration::from_secs(if q { 8 } else { 20 })),
            // Until the history is full of churn-era samples (the churn's peak footprint) and
            // every container has been replaced once (its long-lived process then lives in
            // memory allocated amid churn): the allocator's state after any longer churn.
            warmup: args.warmup.unwrap_or_else(|| {
                let replaced = if turnover > 0.0 {
                    Duration::from_secs_f64((60.0 * cgroups as f64 / turnover).min(3600.0))
                } else {
                    Duration::ZERO
                };
                (period * history).max(replaced) + Duration::from_secs(if q { 15 } else { 30 })
            }),
            rss_tolerance: args.rss_tolerance,
            grace: args.grace.unwrap_or(period * 3 + Duration::from_secs(1)),
            service_args: args.service_arg.clone(),
            bin: fs::canonicalize(&bin).unwrap_or(bin),
            work_dir: args.work_dir.clone().unwrap_or_else(|| {
                PathBuf::from(format!("/tmp/companion-soak-{}", std::process::id()))
            }),
            quick: q,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        })
    }
}

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
