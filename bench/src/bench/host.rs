//! The simulated dense host: real cgroups in Docker's layout under a unique prefix, idle (or
//! lightly busy) container processes, host processes outside any container, optional churn.
//!
//! Processes are spawned from the benchmark's main thread (their `PR_SET_PDEATHSIG` is tied to
//! the spawning thread) and join their container before they exec, as `docker exec` does: the
//! child writes `0` to the container's `cgroup.procs` between fork and exec.

use std::{
    ffi::OsString,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;
use rand::Rng;
use testbed::CgroupMount;

use crate::kit::{
    cleanup, own_base,
    process::{open_procs, spawn, which},
};

/// How the host looks: C containers × P processes, K host processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub containers: usize,
    pub per_container: usize,
    pub hosts: usize,
}

impl Shape {
    pub fn container_processes(&self) -> usize {
        self.containers * self.per_container
    }
}

/// What busy container processes do.
#[derive(Clone, Debug, clap::Args)]
pub struct BusyArgs {
    /// CPU burnt per wake-up.
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    pub work: Duration,
    /// Time between wake-ups.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
}

/// The `busy-worker` subcommand: spins for `work` every `every`, forever.
pub fn busy_worker(args: &BusyArgs) -> anyhow::Result<()> {
    let mut next = Instant::now();
    let mut x: u64 = 1;
    loop {
        next += args.every;
        let until = Instant::now() + args.work;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
}

pub struct Container {
    pub dir: PathBuf,
    /// The cgroup path the service reports, e.g. /companion-bench-123/docker/<id>.
    pub name: String,
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct HostOptions {
    pub busy_fraction: f64,
    pub busy: BusyArgs,
    pub churn_per_second: f64,
    pub churn_lifetime: Duration,
}

pub struct Host {
    pub mount: CgroupMount,
    /// The benchmark's prefix, e.g. /sys/fs/cgroup/cpu/companion-bench-123.
    base: PathBuf,
    docker: PathBuf,
    sleep_bin: PathBuf,
    self_exe: PathBuf,
    /// Host processes are moved to the hierarchy's root when the benchmark itself runs below it.
    root_procs: Option<PathBuf>,
    options: HostOptions,
    pub containers: Vec<Container>,
    pub host_pids: Vec<u32>,
    busy_count: usize,
    churn: Option<Churn>,
}

impl Host {
    pub fn new(options: HostOptions) -> anyhow::Result<Host> {
        let (mount, base) = own_base()?;
        let docker = base.join("docker");
        cleanup::create_cgroup(&docker)?;
        let own = mount.cgroup_of(std::process::id());
        let root_procs = own
            .is_some_and(|c| c != "/")
            .then(|| mount.path.join("cgroup.procs"));
        Ok(Host {
            sleep_bin: which("sleep")?,
            self_exe: std::env::current_exe().context("locating the benchmark binary")?,
            mount,
            base,
            docker,
            root_procs,
            options,
            containers: Vec::new(),
            host_pids: Vec::new(),
            busy_count: 0,
            churn: None,
        })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn shape(&self) -> Shape {
        Shape {
            containers: self.containers.len(),
            per_container: self.containers.first().map_or(0, |c| c.pids.len()),
            hosts: self.host_pids.len(),
        }
    }

    pub fn container_pids(&self) -> Vec<u32> {
        self.containers
            .iter()
            .flat_map(|c| c.pids.iter().copied())
            .collect()
    }

    /// Each container's cgroup directory.
    pub fn container_dirs(&self) -> Vec<PathBuf> {
        self.containers.iter().map(|c| c.dir.clone()).collect()
    }

    pub fn busy_count(&self) -> usize {
        self.busy_count
    }

    /// Brings the host to `shape`, starting or ending processes and containers as needed.
    /// Churn is paused meanwhile.
    pub fn resize(&mut self, shape: Shape) -> anyhow::Result<()> {
        let churn = self.churn.is_some();
        self.stop_churn();
        let began = Instant::now();
        // Shrink first so the peak process count stays low.
        if self.host_pids.len() > shape.hosts {
            let gone = self.host_pids.split_off(shape.hosts);
            cleanup::end(&gone);
        }
        let per_changed = self
            .containers
            .first()
            .is_some_and(|c| c.pids.len() != shape.per_container);
        let keep = if per_changed { 0 } else { shape.containers };
        if self.containers.len() > keep {
            let gone = self.containers.split_off(keep);
            self.end_containers(gone)?;
        }
        let mut rng = rand::rng();
        let mut started = 0usize;
        while self.containers.len() < shape.containers {
            cleanup::check()?;
            let container = self.start_container(shape.per_container, &mut rng)?;
            started += container.pids.len();
            self.containers.push(container);
        }
        while self.host_pids.len() < shape.hosts {
            cleanup::check()?;
            let fd = match &self.root_procs {
                Some(path) => Some(open_procs(path)?),
                None => None,
            };
            let pid = spawn(
                &self.sleep_bin,
                &[OsString::from("1000000")],
                fd.as_ref().map(|f| f.as_raw_fd()),
            )?;
            self.host_pids.push(pid);
            started += 1;
        }
        if started > 0 {
            eprintln!(
                "  host: {} containers × {}, {} host processes ({} started in {:.1}s)",
                shape.containers,
                shape.per_container,
                shape.hosts,
                started,
                began.elapsed().as_secs_f64()
            );
        }
        if churn || self.options.churn_per_second > 0.0 {
            self.start_churn()?;
        }
        Ok(())
    }

    fn start_container(
        &mut self,
        processes: usize,
        rng: &mut impl Rng,
    ) -> anyhow::Result<Container> {
        let id: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let dir = self.docker.join(&id);
        cleanup::create_cgroup(&dir)?;
        let procs = open_procs(&dir.join("cgroup.procs"))?;
        let mut pids = Vec::with_capacity(processes);
        for _ in 0..processes {
            let busy = self.options.busy_fraction > 0.0
                && rng.random_bool(self.options.busy_fraction.min(1.0));
            let pid = if busy {
                self.busy_count += 1;
                let args = [
                    OsString::from("busy-worker"),
                    OsString::from("--work"),
                    OsString::from(humantime::format_duration(self.options.busy.work).to_string()),
                    OsString::from("--every"),
                    OsString::from(humantime::format_duration(self.options.busy.every).to_string()),
                ];
                spawn(&self.self_exe, &args, Some(procs.as_raw_fd()))?
            } else {
                spawn(
                    &self.sleep_bin,
                    &[OsString::from("1000000")],
                    Some(procs.as_raw_fd()),
                )?
            };
            pids.push(pid);
        }
        Ok(Container {
            name: self.mount.name_of(&dir),
            dir,
            pids,
        })
    }

    fn end_containers(&mut self, gone: Vec<Container>) -> anyhow::Result<()> {
        let pids: Vec<u32> = gone.iter().flat_map(|c| c.pids.iter().copied()).collect();
        cleanup::end(&pids);
        // Anything else that got in (nothing should) is ended by pid too.
        for c in &gone {
            let stray = testbed::proc::cgroup_procs(&c.dir);
            if !stray.is_empty() {
                eprintln!(
                    "  warning: {} unexpected processes in {}",
                    stray.len(),
                    c.dir.display()
                );
            }
        }
        let dirs: Vec<PathBuf> = gone.into_iter().map(|c| c.dir).collect();
        cleanup::remove_cgroups(&dirs)
    }

    fn start_churn(&mut self) -> anyhow::Result<()> {
        if self.options.churn_per_second <= 0.0 || self.containers.is_empty() {
            return Ok(());
        }
        let dirs: Vec<PathBuf> = self.containers.iter().map(|c| c.dir.clone()).collect();
        self.churn = Some(Churn::start(
            dirs,
            self.sleep_bin.clone(),
            self.options.churn_per_second,
            self.options.churn_lifetime,
        )?);
        Ok(())
    }

    fn stop_churn(&mut self) {
        if let Some(churn) = self.churn.take() {
            churn.stop();
        }
    }

    /// Processes the churn thread started so far.
    pub fn churned(&self) -> u64 {
        self.churn
            .as_ref()
            .map_or(0, |c| c.started.load(Ordering::Relaxed))
    }

    /// Starts one process inside `container` (joined before exec), for the latency probe.
    pub fn spawn_in(&self, container: &Container, args: &[&str]) -> anyhow::Result<u32> {
        let procs = open_procs(&container.dir.join("cgroup.procs"))?;
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        spawn(&self.sleep_bin, &args, Some(procs.as_raw_fd()))
    }

    /// Ends everything: churn, processes (by pid), cgroups (deepest first).
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        self.stop_churn();
        let hosts = std::mem::take(&mut self.host_pids);
        let containers = std::mem::take(&mut self.containers);
        let mut all: Vec<u32> = hosts;
        all.extend(containers.iter().flat_map(|c| c.pids.iter().copied()));
        cleanup::end(&all);
        let mut dirs: Vec<PathBuf> = containers.into_iter().map(|c| c.dir).collect();
        dirs.push(self.docker.clone());
        dirs.push(self.base.clone());
        cleanup::remove_cgroups(&dirs)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("companion-bench: {err:#}");
        }
    }
}

/// A thread that starts `rate` short-lived processes per second in random containers; each
/// lives `lifetime` (a `sleep`) and is reaped by the thread.
struct Churn {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Churn {
    fn start(
        dirs: Vec<PathBuf>,
        sleep_bin: PathBuf,
        rate: f64,
        lifetime: Duration,
    ) -> anyhow::Result<Churn> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::Builder::new()
                .name("churn".into())
                .spawn(move || churn_loop(dirs, sleep_bin, rate, lifetime, &stop, &started))
                .context("starting the churn thread")?
        };
        Ok(Churn {
            stop,
            started,
            thread,
        })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn churn_loop(
    dirs: Vec<PathBuf>,
    sleep_bin: PathBuf,
    rate: f64,
    lifetime: Duration,
    stop: &AtomicBool,
    started: &AtomicU64,
) {
    let mut rng = rand::rng();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let life = format!("{:.3}", lifetime.as_secs_f64());
    let mut live: std::collections::VecDeque<(Instant, u32)> = Default::default();
    let mut next = Instant::now();
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) && !cleanup::interrupted() {
        let now = Instant::now();
        if now >= next {
            next += gap;
            if now > next + Duration::from_secs(1) {
                next = now; // fell behind: do not burst
            }
            let dir = &dirs[rng.random_range(0..dirs.len())];
            let spawned = open_procs(&dir.join("cgroup.procs"))
                .and_then(|f| spawn(&sleep_bin, &[OsString::from(&life)], Some(f.as_raw_fd())));
            match spawned {
                Ok(pid) => {
                    started.fetch_add(1, Ordering::Relaxed);
                    live.push_back((now + lifetime + Duration::from_millis(200), pid));
                }
                Err(err) => {
                    failures += 1;
                    if failures <= 3 {
                        eprintln!("  churn: {err:#}");
                    }
                }
            }
        }
        while live.front().is_some_and(|(due, _)| *due <= now) {
            let (_, pid) = live.pop_front().expect("non-empty");
            cleanup::end(&[pid]);
        }
        let wake = live.front().map_or(next, |(due, _)| (*due).min(next));
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    let rest: Vec<u32> = live.into_iter().map(|(_, pid)| pid).collect();
    cleanup::end(&rest);
}
