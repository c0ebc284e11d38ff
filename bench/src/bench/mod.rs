//! The density benchmark.
//!
//! For each host shape of the plan (the default scenario, then the sweep points): bring the
//! simulated host to that shape ([`host`]), measure the floor of reading /proc ([`floor`]), then
//! run the service once per tracker mode against the same host ([`crate::kit::service`]): wait for a full
//! history, measure its CPU and memory over whole samples, and — for the default scenario — put
//! the API under load ([`load`]) and measure exec-to-visible latency ([`probe`]). The figures are
//! [`results`]. At the points of the container sweep the peer runs over the same host
//! ([`peer`]); at the largest shape the eBPF service runs with paced API load, then once more
//! per `--sampler-threads` value. The figures go to stdout, BENCHMARKS.md and an SVG plot
//! ([`report`], [`plot`]).
//! Everything started or changed is undone on every exit path ([`crate::kit::cleanup`]).

pub mod floor;
pub mod host;
pub mod load;
pub mod peer;
pub mod plot;
pub mod probe;
pub mod report;
pub mod results;
mod settings;

use std::{
    fs,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::runtime::Runtime;

pub use self::settings::{BenchArgs, Settings, Sweep, Warmup};
pub use crate::kit::Tracker;
use crate::kit::{
    begin, cleanup, end,
    http::Conn,
    machine::Machine,
    service::{self, Service, ServiceOptions, Watch},
};

use self::{
    floor::Floor,
    host::{Host, HostOptions, Shape},
    load::LoadOptions,
    probe::ProbeOptions,
    results::{LoadOutcome, PointResult, RunResult},
};

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
    prepare_limits(&settings, &args, &plan)?;
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
    let mut peer_failed: Option<String> = None;
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
            } else if shape.containers == 0 {
                " (the service's base)"
            } else {
                " (sweep point)"
            }
        );
        host.resize(shape)?;
        cleanup::sleep(Duration::from_secs(1))?;
        // The cadence rounds are split between the two measurements (before and after).
        let measure_floor = |cadence_rounds: usize| -> anyhow::Result<Floor> {
            let floor = floor::measure(
                &host.container_pids(),
                &host.container_dirs(),
                settings.floor_rounds,
                cadence_rounds,
                settings.floor_gap,
                host.mount.v1_cpu,
            )?;
            eprintln!(
                "  floor: open/read/close {:.2} µs/process, pread {:.2} µs/process back to back, {:.2} at the cadence ({:.2} with the cgroup files), procfs tracker {:.0} µs/round ({} listed, {} in containers)",
                floor.open_read_close_us(),
                floor.pread_us(),
                floor.cadence_us(),
                floor.cadence_with_cgroups_us(),
                floor.procfs_round_us(),
                floor.procfs_listed,
                floor.procfs_in_containers
            );
            Ok(floor)
        };
        // The base has no container processes to read: no floor.
        let base = shape.containers == 0;
        let floor = if base {
            Floor::default()
        } else {
            measure_floor(settings.cadence_rounds.div_ceil(2))?
        };
        let largest = !full && i + 1 == plan.len();
        let mut point = PointResult {
            shape,
            full,
            busy: host.busy_count(),
            floor,
            runs: Vec::new(),
            failed: Vec::new(),
            peer: None,
            threads: Vec::new(),
        };
        for &tracker in &settings.trackers {
            if let Some((_, why)) = unavailable.iter().find(|(t, _)| *t == tracker) {
                point.failed.push((tracker, why.clone()));
                continue;
            }
            let what = RunPlan {
                load: if full {
                    LoadPlan::Full
                } else if largest && tracker == Tracker::Ebpf && settings.load_at_largest {
                    LoadPlan::PacedOnly
                } else {
                    LoadPlan::None
                },
                probe: full,
                warmup: settings.warmup,
                extra_args: Vec::new(),
                label: tracker.to_string(),
            };
            match run_service(&runtime, &settings, &host, tracker, &what, i)? {
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
        let peer_here = full || (!base && shape.hosts == settings.shape.hosts);
        if let (Some(bin), true) = (&settings.peer, peer_here) {
            point.peer = Some(match &peer_failed {
                Some(why) => Err(why.clone()),
                // A third of the service's window: its cost per scrape varies little, and one
                // scrape of 50,000 processes takes it most of a minute.
                None => match peer::measure(
                    &runtime,
                    bin,
                    &settings.work_dir,
                    settings.measure / 3,
                    settings.period,
                ) {
                    Ok(peer) => {
                        eprintln!("  peer   {}", report::peer_line(&point, &peer));
                        Ok(peer)
                    }
                    Err(err) if !cleanup::interrupted() => {
                        let why = format!("{err:#}");
                        eprintln!("  peer: not measured: {why}");
                        peer_failed = Some(why.clone());
                        Err(why)
                    }
                    Err(err) => return Err(err),
                },
            });
        }
        if i + 1 == plan.len() && settings.trackers.contains(&Tracker::Ebpf) {
            for &threads in &settings.speedup_threads {
                let run = RunPlan {
                    load: LoadPlan::None,
                    probe: false,
                    warmup: settings.threads_warmup(),
                    extra_args: vec!["--sampler-threads".into(), threads.to_string()],
                    label: format!("ebpf-threads{threads}"),
                };
                let outcome = run_service(&runtime, &settings, &host, Tracker::Ebpf, &run, i)?;
                match &outcome {
                    Ok(r) => eprintln!("  {}", report::threads_line(threads, r)),
                    Err(why) => eprintln!("  --sampler-threads {threads}: not measured: {why}"),
                }
                point.threads.push((threads, outcome));
            }
        }
        // Once more after the runs: the medians of both halves, so drift of a shared machine
        // during the runs weighs on the floor as on the service.
        if !base {
            point.floor = point
                .floor
                .merge(measure_floor(settings.cadence_rounds / 2)?);
        }
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

/// Raises kernel.pid_max when the plan's peak would crowd it, and, where allowed, the open-file
/// limit (the service inherits it) so that the floors and the service can hold two descriptors
/// for every process of the largest shape.
fn prepare_limits(
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
    // 2 per process within four fifths of what is left after the service's reserve of 2048
    // (see floor::descriptor_budget).
    raise_open_files(2 * (tasks + peak) * 5 / 4 + 2048)
}

/// Raises this process's open-file limit (soft and hard; root with CAP_SYS_RESOURCE may exceed
/// the hard one, up to fs.nr_open) to at least `wanted`; never lowers it. Children inherit it.
/// Where it may not, the floors and the service read the processes beyond their descriptor
/// budget with open/read/close (the report says from where).
fn raise_open_files(wanted: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open-file limit");
    }
    let nr_open: u64 = cleanup::read_sysctl("fs.nr_open")?.parse()?;
    let wanted = wanted.min(nr_open);
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: plain syscall on a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        eprintln!(
            "  note: the open-file limit stays at {} (hard {}), not {wanted}: {}",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
        return Ok(());
    }
    eprintln!(
        "  open-file limit: {} → {wanted} (this run and the services it starts)",
        limit.rlim_cur
    );
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

/// Which API load phases a run gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LoadPlan {
    None,
    /// Back to back, then paced (when --load-rate).
    Full,
    /// The paced phase only.
    PacedOnly,
}

/// What one service run does besides measuring its window.
struct RunPlan {
    load: LoadPlan,
    probe: bool,
    warmup: Warmup,
    /// More service flags.
    extra_args: Vec<String>,
    /// For the log's file name.
    label: String,
}

fn run_service(
    rt: &Runtime,
    settings: &Settings,
    host: &Host,
    tracker: Tracker,
    plan: &RunPlan,
    index: usize,
) -> anyhow::Result<Result<RunResult, String>> {
    let shape = host.shape();
    let log_path = settings.work_dir.join(format!(
        "service-{index}-{}-c{}-k{}.log",
        plan.label,
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
        extra_args: &plan.extra_args,
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
        match plan.warmup {
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
        if plan.load != LoadPlan::None && !settings.load_duration.is_zero() && settings.clients > 0
        {
            if plan.load == LoadPlan::Full {
                let all = containers.clone();
                load.push(api_load(pid, &mut conn, addr, all, settings, None).await?);
            }
            if settings.load_rate > 0.0 {
                let rate = Some(settings.load_rate);
                load.push(api_load(pid, &mut conn, addr, containers, settings, rate).await?);
            }
        }
        let degraded = service::health(&mut conn).await?.degraded;
        anyhow::Ok((warmup_secs, window, load, degraded))
    })?;
    let probe = if plan.probe && settings.probe_trials > 0 {
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
