//! Start-up and shutdown: resolve the host, pick a tracker, take the first sample, serve.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    allocator,
    api::v2::Host,
    api::{
        self, Admission, AppState, TokenAuth, guard,
        limits::ByteBudget,
        server::{self, ServerOptions},
    },
    cgroup::{self, CgroupFs, CgroupReader, Hierarchy},
    cli::{HttpArgs, ServeArgs, TrackerChoice},
    descriptors::OpenFiles,
    events::EventHub,
    exits::{Ledger, LedgerOptions},
    inventory::{InventoryOptions, InventoryState},
    metrics::HttpMetrics,
    pipeline::Pipeline,
    privileges,
    procfs::ProcRoot,
    runtime::RuntimeFiles,
    sampler::{Sampler, SamplerOptions},
    seccomp,
    store::Store,
    tracker::{
        Stop, Tracker, TrackerKind,
        ebpf::{self, EbpfOptions},
        fallback::Fallback,
        procscan::ProcScan,
    },
};

/// Nice value of the API's threads, relative to the sampler's 0.
const API_NICE: i32 = 5;

/// Runs the service until SIGINT or SIGTERM.
///
/// Everything that needs privileges (loading the BPF programs, binding the port, raising the
/// descriptor limit) happens first, on this one thread; then the process drops to the few
/// capabilities it still needs, and only then starts its other threads (capabilities are per
/// thread, so threads started earlier would keep them all).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let root = ProcRoot::new(proc_root(&args));
    check_proc_root(&root)?;
    if cgroup::join_host_namespace(root.path())? {
        info!("joined the host's cgroup namespace, to read containers by their host names");
    }
    let hierarchy = Hierarchy::resolve(args.cgroup_hierarchy, root.path())?;
    let (admission, server_options) = http_options(&args.http)?;
    let tracker = choose_tracker(&args, &root, hierarchy)?;
    let open_files = Arc::new(OpenFiles::raise());

    // Bind before the first sample so a port in use fails fast; accept only after it.
    let addr = SocketAddr::new(args.listen_ip, args.port);
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && admission.auth.is_none() {
        warn!(%local, "listening beyond this host without --auth-token-file: anyone who can reach this port can list every container's processes and command lines");
    }
    if !local.ip().is_loopback() && admission.auth.is_some() && server_options.tls.is_none() {
        warn!(%local, "listening beyond this host with a token but without TLS: the token and every answer cross the network in clear text (see --tls-cert)");
    }

    privileges::keep_only(&privileges::needed(tracker.kind(), args.ptrace))?;

    let host = Arc::new(host_facts(&root, &args)?);
    // An event stream holds its connection: at most as many streams as connections.
    let events = EventHub::new(args.http.max_connections as usize);
    let mut pipeline = Pipeline {
        sampler: {
            let sampler = Sampler::new(SamplerOptions {
                root: root.clone(),
                naming: hierarchy.naming(),
                descriptors: open_files.left.clone(),
                cmdline: args.cmdline,
                threads: args.sampler_threads,
            });
            if args.cgroup_stats {
                sampler.with_cgroups(CgroupReader::new(
                    CgroupFs::discover(),
                    open_files.left.clone(),
                ))
            } else {
                sampler
            }
        },
        inventory: InventoryState::new(InventoryOptions {
            runtime_files: RuntimeFiles {
                host_root: host_root(&args),
                docker_root: args.docker_root.clone(),
            },
            top_processes: args.metrics_top_processes,
            ticks_per_second: host.clock_ticks_per_second,
        }),
        ledger: Ledger::new(LedgerOptions {
            per_container: args.exits_per_container as usize,
            total: args.exits_total as usize,
            cgroups: CgroupFs::discover(),
            ticks_per_second: host.clock_ticks_per_second,
        }),
        tracker,
        events: events.clone(),
    };
    // The first sample is published before the API accepts anyone: no empty history is seen.
    let shared = Store::new(args.history as usize, pipeline.tracker.kind());
    let began = Instant::now();
    pipeline
        .sample_and_publish(&shared, 0)
        .context("first sample")?;
    let first = shared.load();
    info!(
        processes = first.sampling.tracked_processes,
        containers = first.sampling.containers,
        took = ?began.elapsed(),
        "first sample taken"
    );
    drop(first);
    // Start-up (BTF, loading the programs, seeding) is done with its allocations.
    allocator::release_freed();

    let stop = Arc::new(Stop::default());
    let sampling = {
        let (shared, stop, period) = (shared.clone(), stop.clone(), args.sample_period);
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || pipeline.run(shared, period, stop))
            .context("cannot start the sampler thread")?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Sampling on schedule comes first: under a flood of requests the API threads yield the
        // CPU to the sampler (raising one's own nice value needs no privilege).
        .on_thread_start(|| {
            let _ = rustix::process::setpriority_process(None, API_NICE);
        })
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Every thread runs now (the runtime's workers, the sampler): the filter covers them all,
    // and threads started later inherit it.
    if args.seccomp {
        seccomp::install()
            .context("installing the system call filter (--seccomp false skips it)")?;
    }
    let served = runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        let state = AppState {
            shared,
            sample_period: args.sample_period,
            http_metrics: Arc::new(HttpMetrics::default()),
            host,
            events: events.clone(),
            open_files,
        };
        let router = api::router(state, &admission);
        info!(%local, tls = server_options.tls.is_some(), auth = admission.auth.is_some(), "listening");
        // Event streams never end by themselves: they are ended first, so that stopping does
        // not wait for them.
        let shutdown = async move {
            shutdown_signal().await;
            events.close();
        };
        server::serve(listener, router, server_options, shutdown).await
    });
    stop.raise();
    if sampling.join().is_err() {
        bail!("the sampler thread panicked");
    }
    info!("stopped");
    served
}

fn http_options(args: &HttpArgs) -> anyhow::Result<(Admission, ServerOptions)> {
    let auth = match &args.auth_token_file {
        Some(path) => {
            let (token, warnings) = guard::read_token_file(path)?;
            for warning in warnings {
                warn!("{warning}");
            }
            Some(TokenAuth::new(&token, !args.auth_healthz))
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_config(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    let admission = Admission {
        auth,
        max_in_flight: args.max_in_flight as usize,
        request_timeout: args.request_timeout,
        max_buffered_bytes: args.max_buffered_bytes,
        ui: args.ui,
    };
    let server_options = ServerOptions {
        tls,
        max_connections: args.max_connections as usize,
        header_timeout: args.header_timeout,
        request_timeout: args.request_timeout,
        connection_buffer_bytes: ByteBudget::per_connection(args.max_buffered_bytes),
    };
    Ok((admission, server_options))
}

fn host_facts(root: &ProcRoot, args: &ServeArgs) -> anyhow::Result<Host> {
    use ::procfs::{FromRead, Meminfo};
    let meminfo = Meminfo::from_file(root.global("meminfo")).context("reading meminfo")?;
    let stat = std::fs::read_to_string(root.global("stat")).context("reading /proc/stat")?;
    let boot_time_seconds = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
        .context("no btime in /proc/stat")?;
    Ok(Host {
        memory_total_bytes: meminfo.mem_total,
        boot_time_seconds,
        clock_ticks_per_second: crate::procfs::ticks_per_second(),
        page_size_bytes: ::procfs::page_size(),
        sample_period_seconds: args.sample_period.as_secs_f64(),
        history_capacity: args.history as usize,
    })
}

fn proc_root(args: &ServeArgs) -> PathBuf {
    match &args.proc_root {
        Some(root) => root.clone(),
        None if Path::new("/rootfs").is_dir() => PathBuf::from("/rootfs/proc"),
        None => PathBuf::from("/proc"),
    }
}

/// The host's root file system: `--host-root`, else /rootfs when the container deployment mounts
/// the host there, else /.
fn host_root(args: &ServeArgs) -> PathBuf {
    match &args.host_root {
        Some(root) => root.clone(),
        None if Path::new("/rootfs").is_dir() => PathBuf::from("/rootfs"),
        None => PathBuf::from("/"),
    }
}

fn check_proc_root(root: &ProcRoot) -> anyhow::Result<()> {
    let mut pids = root.pids().with_context(|| {
        format!(
            "cannot read the proc root {} (set --proc-root to the host's /proc)",
            root.path().display()
        )
    })?;
    if pids.next().is_none() {
        bail!(
            "{} lists no processes: it is not a proc file system (set --proc-root)",
            root.path().display()
        );
    }
    Ok(())
}

fn choose_tracker(
    args: &ServeArgs,
    root: &ProcRoot,
    hierarchy: Hierarchy,
) -> anyhow::Result<Box<dyn Tracker>> {
    let scan = {
        let (root, naming) = (root.clone(), hierarchy.naming());
        move || ProcScan::new(root, naming)
    };
    let ebpf = || {
        let tracker = ebpf::load(EbpfOptions {
            root: root.clone(),
            hierarchy,
            ring_buffer_bytes: args.bpf_ring_buffer,
            reconcile_every: args.reconcile_every,
            cmdline: args.cmdline,
        })?;
        // Should the eBPF side fail later, the /proc scan takes over.
        let replacement = {
            let scan = scan.clone();
            move |why| scan().degraded(why)
        };
        anyhow::Ok(Box::new(Fallback::new(
            tracker,
            replacement,
            args.test_fail_ebpf_after,
        )) as Box<dyn Tracker>)
    };
    match args.tracker {
        TrackerChoice::Procfs => {
            info!(tracker = %TrackerKind::Procfs, "tracker chosen by --tracker procfs");
            Ok(Box::new(scan()))
        }
        TrackerChoice::Ebpf => {
            let tracker = ebpf().context("--tracker ebpf: the eBPF tracker cannot be used")?;
            info!(tracker = %TrackerKind::Ebpf, "tracker chosen by --tracker ebpf");
            Ok(tracker)
        }
        TrackerChoice::Auto => match ebpf() {
            Ok(tracker) => {
                info!(tracker = %TrackerKind::Ebpf, "eBPF loaded: following process events");
                Ok(tracker)
            }
            Err(err) => {
                warn!(tracker = %TrackerKind::Procfs, "eBPF unavailable, scanning /proc every sample instead: {err:#}");
                Ok(Box::new(scan()))
            }
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!("cannot listen for SIGTERM: {err}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}
