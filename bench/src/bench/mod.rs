//! The density benchmark.
//!
//! For each host shape of the plan (the default scenario, then the sweep points): bring the
//! simulated host to that shape ([`host`]), measure the floor of reading /proc ([`floor`]), then
//! run the service once per tracker mode against the same host ([`crate::kit::service`]): wait for a full
//! history, measure its CPU and memory over whole samples, and — for the default scenario — put
//! the API under load ([`load`]) and measure exec-to-visible latency ([`probe`]). The figures are
//! [`results`]; they go to stdout, BENCHMARKS.md and an SVG plot ([`report`], [`plot`]).
//! Everything started or changed is undone on every exit path ([`crate::kit::cleanup`]).

pub mod floor;
pub mod host;
pub mod load;
pub mod plot;
pub mod probe;
pub mod report;
pub mod results;

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::ValueEnum;
use tokio::runtime::Runtime;

pub use crate::kit::Tracker;
use crate::kit::{
    begin, cleanup, end,
    flags::RunFlags,
    http::Conn,
    machine::Machine,
    service::{self, Service, ServiceOptions, Watch},
    workspace_root,
};

use self::{
    floor::Floor,
    host::{Host, HostOptions, Shape},
    load::LoadOptions,
    probe::ProbeOptions,
    results::{LoadOutcome, PointResult, RunResult},
};

/// Flags of `companion-bench bench`. Defaults in brackets; `--quick` changes the ones marked
/// (quick: …).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Default: the default scenario (1,000 containers × 5 idle processes, 5,000 host processes) with \
both trackers, API load (back to back, then paced) and the exec-to-visible probe; then the \
sweeps, CPU and memory only, over container processes (1k, 5k, 10k, 20k) and host processes \
(0, 5k, 10k): about 25 minutes. The default scenario alone (`--sweep none`): about 6 minutes.

Examples:
  cargo xtask bench                                    # the full run
  cargo xtask bench --sweep none                       # the default scenario only
  cargo xtask bench --quick                            # a 1-minute smoke run, no report
  cargo xtask bench --sweep containers --sizes 1000,5000 --trackers ebpf
  cargo xtask bench --sweep none --busy-fraction 0.1 --churn 20

Needs root: it creates cgroups, the service loads eBPF, and it may raise kernel.pid_max \
(restored at the end, also on Ctrl-C).")]
pub struct BenchArgs {
    /// Containers in the default scenario [1000] (quick: 50).
    #[arg(long)]
    pub containers: Option<usize>,
    /// Idle processes per container [5] (quick: 4).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Host processes outside any container [5000] (quick: 200).
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Fraction of container processes that are busy (wake every --busy-every, spin for
    /// --busy-work) instead of idle `sleep`s.
    #[arg(long, default_value_t = 0.0)]
    pub busy_fraction: f64,
    /// CPU a busy process burns per wake-up.
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    pub busy_work: Duration,
    /// Time between a busy process's wake-ups.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub busy_every: Duration,
    /// Processes started (and ended) per second inside random containers, during every
    /// measurement. Each lives --churn-lifetime.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// How long each churned process lives (a `sleep`).
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub churn_lifetime: Duration,

    /// Tracker modes to run, one after the other against the same host.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ebpf,procfs")]
    pub trackers: Vec<Tracker>,
    /// The service's --sample-period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_period: Duration,
    /// The service's --history.
    #[arg(long, default_value_t = 60)]
    pub history: u32,
    /// Before measuring: `full` waits until the history is full (samples_in_history ==
    /// history), a duration waits that long instead [full] (quick: 5s).
    #[arg(long)]
    pub warmup: Option<Warmup>,
    /// Measurement window, rounded to whole samples [30s] (quick: 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub measure: Option<Duration>,
    /// /healthz polling interval during measurements.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub health_poll: Duration,

    /// Concurrent API clients in the load test [100] (quick: 20).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Duration of each load phase (back to back, then paced); 0s skips the load test [20s]
    /// (quick: 3s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub load_duration: Option<Duration>,
    /// Fraction of monitoring-check queries (`sort=cpu&limit=5&interval=30`); the rest are
    /// history queries (`count=10`).
    #[arg(long, default_value_t = 0.9)]
    pub load_mix: f64,
    /// A second load phase at this total rate (requests per second over all clients, latency
    /// counted from the scheduled send); 0 skips it. The first phase sends back to back.
    #[arg(long, default_value_t = 5000.0)]
    pub load_rate: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub load_threads: usize,
    /// Exec-to-visible trials per tracker; 0 skips the probe [20] (quick: 5).
    #[arg(long)]
    pub probe_trials: Option<usize>,
    /// The probe's polling interval.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub probe_poll: Duration,
    /// Rounds of each floor measurement; the floor is measured before and after the service
    /// runs of each host shape and the median of all rounds taken [10] (quick: 3).
    #[arg(long)]
    pub floor_rounds: Option<usize>,
    /// Pause before each floor round, so the kernel's data of the processes is as cold as it
    /// is for the service, which reads them once per sample period.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub floor_gap: Duration,

    /// Sweeps after the default scenario (CPU and memory only): `containers`, `hosts`, both
    /// (`all`) or `none` [all] (quick: none).
    #[arg(long, value_enum)]
    pub sweep: Option<Sweep>,
    /// Sizes of the selected sweep: container processes for `containers` and `all`, host
    /// processes for `hosts` (shorthand for the two flags below).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Container-process counts of the container sweep (containers = size / --processes)
    /// [1000,5000,10000,20000].
    #[arg(long, value_delimiter = ',')]
    pub container_sizes: Option<Vec<usize>>,
    /// Host-process counts of the host sweep [0,5000,10000].
    #[arg(long, value_delimiter = ',')]
    pub host_sizes: Option<Vec<usize>>,

    /// Set kernel.pid_max to this during the run (default: raised only when the plan needs
    /// it; restored at the end).
    #[arg(long)]
    pub pid_max: Option<u64>,
    /// Turn on the kernel's BPF run-time statistics (BPF_ENABLE_STATS, off again when the
    /// benchmark exits) to report the time of the service's kernel-side programs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub bpf_stats: bool,
    #[command(flatten)]
    pub run: RunFlags,
    /// Append the results to this Markdown file [<workspace>/BENCHMARKS.md] (quick: none).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Do not append to the report.
    #[arg(long)]
    pub no_report: bool,
    /// Write the cost plot here, when the container sweep ran
    /// [<workspace>/docs/bench-cost.svg].
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// A smoke run: small host, short phases, no sweep, no report (see the marks above).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sweep {
    Containers,
    Hosts,
    All,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmup {
    Full,
    For(Duration),
}

impl std::str::FromStr for Warmup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Warmup::Full);
        }
        humantime::parse_duration(s)
            .map(Warmup::For)
            .map_err(|e| format!("`full` or a duration: {e}"))
    }
}

impl fmt::Display for Warmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmup::Full => f.write_str("full history"),
            Warmup::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// The flags with their defaults resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub shape: Shape,
    pub busy_fraction: f64,
    pub churn: f64,
    pub churn_lifetime: Duration,
    pub trackers: Vec<Tracker>,
    pub period: Duration,
    pub history: u32,
    pub warmup: Warmup,
    pub measure: Duration,
    pub health_poll: Duration,
    pub clients: usize,
    pub load_duration: Duration,
    pub load_mix: f64,
    pub load_rate: f64,
    pub probe_trials: usize,
    pub probe_poll: Duration,
    pub floor_rounds: usize,
    pub floor_gap: Duration,
    pub sweep: Sweep,
    pub container_sizes: Vec<usize>,
    pub host_sizes: Vec<usize>,
    pub bin: PathBuf,
    pub report: Option<PathBuf>,
    pub svg: PathBuf,
    pub work_dir: PathBuf,
    pub quick: bool,
    /// The command line, for the report.
    pub command: String,
}

impl Settings {
    fn resolve(args: &BenchArgs) -> anyhow::Result<Settings> {
        let q = args.quick;
        let pick = |value: Option<usize>, normal: usize, quick: usize| {
            value.unwrap_or(if q { quick } else { normal })
        };
        let workspace = workspace_root();
        let shape = Shape {
            containers: pick(args.containers, 1000, 50),
            per_container: pick(args.processes, 5, 4),
            hosts: pick(args.hosts, 5000, 200),
        };
        if shape.containers == 0 || shape.per_container == 0 {
            bail!("--containers and --processes must be at least 1");
        }
        if !(0.0..=1.0).contains(&args.busy_fraction) || !(0.0..=1.0).contains(&args.load_mix) {
            bail!("--busy-fraction and --load-mix are fractions (0 to 1)");
        }
        if args.history < 2 {
            bail!("--history must be at least 2");
        }
        let sweep = args
            .sweep
            .unwrap_or(if q { Sweep::None } else { Sweep::All });
        let mut trackers = args.trackers.clone();
        trackers.dedup();
        let report = if args.no_report {
            None
        } else {
            match (&args.report, q) {
                (Some(path), _) => Some(path.clone()),
                (None, true) => None,
                (None, false) => Some(workspace.join("BENCHMARKS.md")),
            }
        };
        let run = args.run.resolve("bench")?;
        Ok(Settings {
            shape,
            busy_fraction: args.busy_fraction,
            churn: args.churn,
            churn_lifetime: args.churn_lifetime,
            trackers,
            period: args.sample_period,
            history: args.history,
            warmup: args.warmup.unwrap_or(if q {
                Warmup::For(Duration::from_secs(5))
            } else {
                Warmup::Full
            }),
            measure: args
                .measure
                .unwrap_or(Duration::from_secs(if q { 5 } else { 30 })),
            health_poll: args.health_poll,
            clients: pick(args.clients, 100, 20),
            load_duration: args.load_duration.unwrap_or(Duration::from_secs(if q {
                3
            } else {
                20
            })),
            load_mix: args.load_mix,
            load_rate: args.load_rate,
            probe_trials: pick(args.probe_trials, 20, 5),
            probe_poll: args.probe_poll,
            floor_rounds: pick(args.floor_rounds, 10, 3),
            floor_gap: args.floor_gap,
            sweep,
            container_sizes: args
                .container_sizes
                .clone()
                .or_else(|| args.sizes.clone().filter(|_| sweep != Sweep::Hosts))
                .unwrap_or_else(|| vec![1000, 5000, 10000, 20000]),
            host_sizes: args
                .host_sizes
                .clone()
                .or_else(|| args.sizes.clone().filter(|_| sweep == Sweep::Hosts))
                .unwrap_or_else(|| vec![0, 5000, 10000]),
            bin: run.bin,
            report,
            svg: args
                .svg
                .clone()
                .unwrap_or_else(|| workspace.join("docs/bench-cost.svg")),
            work_dir: run.work_dir,
            quick: q,
            command: run.command,
        })
    }

    /// The host shapes to run: the default scenario (full suite) first, then the sweep points.
    pub fn plan(&self) -> Vec<(Shape, bool)> {
        let mut plan = vec![(self.shape, true)];
        let mut add = |shape: Shape| {
            if !plan.iter().any(|(s, _)| *s == shape) {
                plan.push((shape, false));
            }
        };
        if matches!(self.sweep, Sweep::Hosts | Sweep::All) {
            for &hosts in &self.host_sizes {
                add(Shape {
                    hosts,
                    ..self.shape
                });
            }
        }
        if matches!(self.sweep, Sweep::Containers | Sweep::All) {
            let mut sizes = self.container_sizes.clone();
            sizes.sort_unstable();
            for size in sizes {
                let containers = size.div_ceil(self.shape.per_container).max(1);
                add(Shape {
                    containers,
                    ..self.shape
                });
            }
        }
        plan
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    end(bench(args))
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args)?;
    let _guard = begin(&settings.work_dir)?;
    let began = Instant::now();
    let machine = Machine::probe();
    let plan = settings.plan();
    eprintln!(
        "companion-bench: {} host shape(s), trackers {}; service {}; logs in {}",
        plan.len(),
        settings
            .trackers
            .iter()
            .map(Tracker::to_string)
            .collect::<Vec<_>>()
            .join(","),
        settings.bin.display(),
        settings.work_dir.display()
    );
    prepare_sysctls(&settings, &args, &plan)?;
    let _bpf_stats = if settings.trackers.contains(&Tracker::Ebpf) && args.bpf_stats {
        enable_bpf_stats()
            .inspect_err(|err| eprintln!("  note: no BPF run-time statistics: {err}"))
            .ok()
    } else {
        None
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.load_threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let mut host = Host::new(HostOptions {
        busy_fraction: settings.busy_fraction,
        busy: host::BusyArgs {
            work: args.busy_work,
            every: args.busy_every,
        },
        churn_per_second: settings.churn,
        churn_lifetime: settings.churn_lifetime,
    })?;
    eprintln!(
        "  cgroups under {} ({})",
        host.base().display(),
        if host.mount.v1_cpu {
            "cgroup v1 cpu hierarchy"
        } else {
            "cgroup v2"
        }
    );

    let mut results: Vec<PointResult> = Vec::new();
    let mut unavailable: Vec<(Tracker, String)> = Vec::new();
    for (i, &(shape, full)) in plan.iter().enumerate() {
        eprintln!(
            "[{}/{}] {} containers × {} processes = {} container processes, {} host processes{}",
            i + 1,
            plan.len(),
            shape.containers,
            shape.per_container,
            shape.container_processes(),
            shape.hosts,
            if full {
                " (default scenario: full suite)"
            } else {
                " (sweep point)"
            }
        );
        host.resize(shape)?;
        cleanup::sleep(Duration::from_secs(1))?;
        let measure_floor = || -> anyhow::Result<Floor> {
            let floor = floor::measure(
                &host.container_pids(),
                settings.floor_rounds,
                settings.floor_gap,
                host.mount.v1_cpu,
            )?;
            eprintln!(
                "  floor: open/read/close {:.2} µs/process, pread {:.2} µs/process, procfs tracker {:.0} µs/round ({} listed, {} in containers)",
                floor.open_read_close_us(),
                floor.pread_us(),
                floor.procfs_round_us(),
                floor.procfs_listed,
                floor.procfs_in_containers
            );
            Ok(floor)
        };
        let floor = measure_floor()?;
        let mut point = PointResult {
            shape,
            full,
            busy: host.busy_count(),
            floor,
            runs: Vec::new(),
            failed: Vec::new(),
        };
        for &tracker in &settings.trackers {
            if let Some((_, why)) = unavailable.iter().find(|(t, _)| *t == tracker) {
                point.failed.push((tracker, why.clone()));
                continue;
            }
            match run_service(&runtime, &settings, &host, tracker, full, i)? {
                Ok(run) => {
                    eprintln!("  {}", report::run_line(&point, &run));
                    point.runs.push(run);
                }
                Err(why) => {
                    eprintln!(
                        "  {tracker}: the service did not start; skipping this tracker: {why}"
                    );
                    point.failed.push((tracker, why.clone()));
                    unavailable.push((tracker, why));
                }
            }
        }
        // Once more after the runs: the medians of both halves, so drift of a shared machine
        // during the runs weighs on the floor as on the service.
        point.floor = point.floor.merge(measure_floor()?);
        results.push(point);
    }
    let mut machine = machine;
    machine.finish();
    let churned = host.churned();
    host.teardown()?;
    drop(host);
    let elapsed = began.elapsed();

    let text = report::text(&settings, &machine, &results, elapsed);
    println!("{text}");
    if let Some(path) = &settings.report {
        let markdown = report::markdown(&settings, &machine, &results, elapsed, churned);
        append(path, &markdown)?;
        eprintln!("appended to {}", path.display());
    }
    if let Some(svg) = plot::svg(&results, &settings) {
        if let Some(dir) = settings.svg.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&settings.svg, svg)
            .with_context(|| format!("writing {}", settings.svg.display()))?;
        eprintln!("plot: {}", settings.svg.display());
    }
    eprintln!("done in {:.1} min", elapsed.as_secs_f64() / 60.0);
    Ok(())
}

/// Raises kernel.pid_max when the plan's peak would crowd it.
fn prepare_sysctls(
    settings: &Settings,
    args: &BenchArgs,
    plan: &[(Shape, bool)],
) -> anyhow::Result<()> {
    let current: u64 = cleanup::read_sysctl("kernel.pid_max")?.parse()?;
    let peak = plan
        .iter()
        .map(|(s, _)| s.container_processes() + s.hosts)
        .max()
        .unwrap_or(0) as u64
        + (settings.churn * settings.churn_lifetime.as_secs_f64() * 2.0) as u64;
    let tasks = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(2000);
    let wanted = match args.pid_max {
        Some(v) => Some(v),
        None if (tasks + peak) * 3 / 2 > current => {
            Some(((tasks + peak) * 2).next_power_of_two().min(4_194_304))
        }
        None => None,
    };
    if let Some(v) = wanted {
        eprintln!("  kernel.pid_max: {current} → {v} for this run (restored at the end)");
        cleanup::set_sysctl("kernel.pid_max", &v.to_string())?;
    }
    Ok(())
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned descriptor is
/// open (BPF_ENABLE_STATS): the kernel turns them off again when it closes, even if the
/// benchmark is killed, unlike the kernel.bpf_stats_enabled sysctl.
fn enable_bpf_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    const BPF_STATS_RUN_TIME: u32 = 0;
    let attr: u32 = BPF_STATS_RUN_TIME;
    // SAFETY: bpf(BPF_ENABLE_STATS) reads `size` bytes of `attr` (its `enable_stats.type`).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            &attr as *const u32,
            std::mem::size_of::<u32>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn run_service(
    rt: &Runtime,
    settings: &Settings,
    host: &Host,
    tracker: Tracker,
    full: bool,
    index: usize,
) -> anyhow::Result<Result<RunResult, String>> {
    let shape = host.shape();
    let log_path = settings.work_dir.join(format!(
        "service-{index}-{tracker}-c{}-k{}.log",
        shape.container_processes(),
        shape.hosts
    ));
    let began = Instant::now();
    let service = match Service::start(ServiceOptions {
        bin: &settings.bin,
        tracker: &tracker.to_string(),
        sample_period: settings.period,
        history: settings.history,
        log_path,
        extra_args: &[],
    }) {
        Ok(service) => service,
        Err(err) if !cleanup::interrupted() => return Ok(Err(format!("{err:#}"))),
        Err(err) => return Err(err),
    };
    let startup_secs = began.elapsed().as_secs_f64();
    let pid = service.pid;
    let addr = service.addr;
    let period = settings.period;
    let samples = (settings.measure.as_secs_f64() / period.as_secs_f64())
        .round()
        .max(1.0) as u64;
    let containers: Arc<Vec<String>> = Arc::new(
        host.containers
            .iter()
            .map(|c| c.name.trim_start_matches('/').to_string())
            .collect(),
    );
    let (warmup_secs, window, load, degraded) = rt.block_on(async {
        let mut conn = Conn::new(addr);
        let warm = Instant::now();
        let mut watch = Watch::default();
        match settings.warmup {
            Warmup::Full => {
                let timeout = period * (settings.history * 3) + Duration::from_secs(120);
                service::watch_until(
                    &mut conn,
                    &mut watch,
                    Duration::from_millis(500),
                    timeout,
                    |h| h.history_capacity > 0 && h.samples_in_history >= h.history_capacity,
                )
                .await
                .context("waiting for a full history")?;
            }
            Warmup::For(d) => {
                let until = Instant::now() + d;
                while Instant::now() < until {
                    cleanup::check()?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let warmup_secs = warm.elapsed().as_secs_f64();
        let window = service::measure_window(pid, &mut conn, samples, settings.health_poll, period)
            .await
            .context("measuring")?;
        let mut load = Vec::new();
        if full && !settings.load_duration.is_zero() && settings.clients > 0 {
            load.push(api_load(pid, &mut conn, addr, containers.clone(), settings, None).await?);
            if settings.load_rate > 0.0 {
                let rate = Some(settings.load_rate);
                load.push(api_load(pid, &mut conn, addr, containers, settings, rate).await?);
            }
        }
        let degraded = service::health(&mut conn).await?.degraded;
        anyhow::Ok((warmup_secs, window, load, degraded))
    })?;
    let probe = if full && settings.probe_trials > 0 {
        let container = host.containers.first().context("no containers")?;
        Some(probe::run(
            rt,
            host,
            container,
            addr,
            &ProbeOptions {
                trials: settings.probe_trials,
                poll: settings.probe_poll,
                period,
            },
        )?)
    } else {
        None
    };
    let memory_end = service::memory(pid).unwrap_or_default();
    let log = service.stop();
    Ok(Ok(RunResult {
        tracker,
        startup_secs,
        warmup_secs,
        window,
        load,
        probe,
        memory_end,
        log,
        degraded,
    }))
}

/// Runs the load while watching /healthz on a separate connection.
async fn api_load(
    pid: u32,
    conn: &mut Conn,
    addr: std::net::SocketAddr,
    containers: Arc<Vec<String>>,
    settings: &Settings,
    rate: Option<f64>,
) -> anyhow::Result<LoadOutcome> {
    let options = LoadOptions {
        clients: settings.clients,
        duration: settings.load_duration,
        check_fraction: settings.load_mix,
        rate,
    };
    let cpu0 = service::cpu_seconds(pid)?;
    let mut watch = Watch::default();
    watch.record(&service::health(conn).await?);
    let load = load::run(addr, containers, &options);
    let watching = async {
        let until = Instant::now() + options.duration;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(h) = service::health(conn).await {
                watch.record(&h);
            }
        }
    };
    let (result, ()) = tokio::join!(load, watching);
    let cpu1 = service::cpu_seconds(pid)?;
    watch.record(&service::health(conn).await?);
    cleanup::check()?;
    Ok(LoadOutcome {
        result,
        watch,
        cpu_secs: cpu1 - cpu0,
    })
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(file, "{}", report::BENCHMARKS_HEADER)?;
    }
    write!(file, "{text}")?;
    Ok(())
}
