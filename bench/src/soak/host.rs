//! The churning host of the soak: hundreds of containers (real cgroups in Docker's, systemd's
//! and Kubernetes' layouts under the run's unique prefix), each with one long-lived process;
//! short-lived processes started in them at a steady rate (`sleep`s, `true`s, shells that fork
//! children); processes moved between containers; containers removed and created continually.
//!
//! Everything runs on the calling (main) thread: children die with the thread that spawned them
//! (`PR_SET_PDEATHSIG`), so the long-lived ones must come from a thread that lives as long as the
//! soak. Every direct child is registered with [`cleanup`] and reaped by pid; a pid is written to
//! a `cgroup.procs` (moved) only while it is our own unreaped child, so a move never touches a
//! stranger that reused a pid. Children of our children (the shells' `&` jobs) are waited for by
//! their shell; a leftover one is killed by verified pid before its cgroup is removed.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    ffi::OsString,
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use testbed::{CgroupMount, proc::cgroup_procs};

use crate::kit::{
    cleanup, own_base,
    process::{open_procs, spawn, which},
};

/// The containers as the API load sees them: which are live (and since when they have a
/// process), which were removed lately (and when).
#[derive(Default)]
pub struct Directory {
    pub live: Vec<LiveEntry>,
    pub removed: VecDeque<RemovedEntry>,
}

pub struct LiveEntry {
    /// The container's name as the service reports it (its cgroup path).
    pub name: Arc<str>,
    /// When its long-lived process had joined it.
    pub since: Instant,
}

pub struct RemovedEntry {
    /// Removal began (its long-lived process was killed) after it joined this list.
    pub name: Arc<str>,
}

/// The most recently removed containers kept for queries.
const REMOVED_KEPT: usize = 200;

impl Directory {
    /// Whether `name` is live, and since when.
    pub fn live_since(&self, name: &str) -> Option<Instant> {
        self.live.iter().find(|e| &*e.name == name).map(|e| e.since)
    }
}

pub type SharedDirectory = Arc<RwLock<Directory>>;

#[derive(Clone, Debug)]
pub struct HostOptions {
    pub cgroups: usize,
    /// Processes started per second while churning (forked children included).
    pub churn_rate: f64,
    pub max_lifetime: Duration,
    pub true_fraction: f64,
    pub fork_fraction: f64,
    pub moves_per_second: f64,
    pub movers: usize,
    /// Containers removed (and as many created) per minute while churning.
    pub turnover_per_minute: f64,
}

/// What the host did, for the report.
#[derive(Clone, Debug, Default)]
pub struct HostStats {
    /// Jobs started: `sleep`s, `true`s, forking shells.
    pub sleeps: u64,
    pub trues: u64,
    pub shells: u64,
    /// Processes the shells forked (two each).
    pub forked: u64,
    /// Direct children that exited by themselves and were reaped.
    pub reaped: u64,
    /// Direct children still running long after they should have exited, killed.
    pub overdue_killed: u64,
    pub spawn_failures: u64,
    pub first_spawn_error: Option<String>,
    /// Moves of long-lived movers and of churned processes (writes to `cgroup.procs`).
    pub moves: u64,
    pub moves_of_churned: u64,
    /// Moves that failed because the churned process had just exited (ESRCH), expected.
    pub moves_raced_exit: u64,
    /// Other failed moves (unexpected).
    pub move_failures: u64,
    pub first_move_error: Option<String>,
    /// Containers created (including the initial ones) and removed.
    pub created: u64,
    pub created_initially: u64,
    pub removed: u64,
    /// Leftover grandchildren killed before their cgroup could be removed.
    pub strays_killed: u64,
    /// Times the spawner fell more than a second behind its schedule.
    pub fell_behind: u64,
    /// Wall time of the churn while it started processes, and of its wind-down (until its last
    /// process was reaped and its last removed container gone).
    pub churn_secs: f64,
    pub wind_down_secs: f64,
}

impl HostStats {
    /// Processes started by the churn, forked children included.
    pub fn processes(&self) -> u64 {
        self.sleeps + self.trues + self.shells + self.forked
    }
}

struct Cgroup {
    name: Arc<str>,
    dir: PathBuf,
    /// Directories made for this container alone, outermost first (its own last).
    made: Vec<PathBuf>,
    procs: File,
    anchor: u32,
}

struct Retiring {
    cgroup: Cgroup,
    since: Instant,
    strays_killed: bool,
}

struct Mover {
    pid: u32,
    /// Index into `live` is unstable; the container's name is not.
    at: Arc<str>,
}

/// A direct child of the churn, to be reaped once it is due to have exited.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    pid: u32,
}

pub struct SoakHost {
    pub mount: CgroupMount,
    base: PathBuf,
    /// Shared parents (docker, system.slice, kubepods…), outermost first.
    parents: Vec<PathBuf>,
    sleep_bin: PathBuf,
    true_bin: PathBuf,
    sh_bin: PathBuf,
    options: HostOptions,
    live: Vec<Cgroup>,
    retiring: Vec<Retiring>,
    movers: Vec<Mover>,
    /// Unreaped churned children and when each is due to have exited.
    churned: HashMap<u32, Instant>,
    reap_queue: BinaryHeap<Reverse<Due>>,
    /// Churned `sleep`s that can be moved (checked against `churned` before use).
    movable: Vec<u32>,
    directory: SharedDirectory,
    rng: SmallRng,
    pub stats: HostStats,
    torn_down: bool,
}

impl SoakHost {
    pub fn new(options: HostOptions) -> anyhow::Result<SoakHost> {
        let (mount, base) = own_base()?;
        let mut parents = vec![base.clone()];
        for rel in [
            "docker",
            "system.slice",
            "kubepods.slice",
            "kubepods.slice/kubepods-burstable.slice",
        ] {
            let dir = base.join(rel);
            cleanup::create_cgroup(&dir)?;
            parents.push(dir);
        }
        Ok(SoakHost {
            mount,
            base,
            parents,
            sleep_bin: which("sleep")?,
            true_bin: which("true")?,
            sh_bin: which("sh")?,
            options,
            live: Vec::new(),
            retiring: Vec::new(),
            movers: Vec::new(),
            churned: HashMap::new(),
            reap_queue: BinaryHeap::new(),
            movable: Vec::new(),
            directory: SharedDirectory::default(),
            rng: SmallRng::from_rng(&mut rand::rng()),
            stats: HostStats::default(),
            torn_down: false,
        })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn directory(&self) -> SharedDirectory {
        self.directory.clone()
    }

    /// The live containers: (name, directory).
    pub fn live(&self) -> Vec<(Arc<str>, PathBuf)> {
        self.live
            .iter()
            .map(|c| (c.name.clone(), c.dir.clone()))
            .collect()
    }

    /// Creates the containers, each with its long-lived process, and the movers.
    pub fn populate(&mut self) -> anyhow::Result<()> {
        while self.live.len() < self.options.cgroups {
            cleanup::check()?;
            self.create_container()?;
        }
        self.stats.created_initially = self.stats.created;
        for _ in 0..self.options.movers {
            cleanup::check()?;
            let at = self.rng.random_range(0..self.live.len());
            let c = &self.live[at];
            let pid = spawn(
                &self.sleep_bin,
                &[OsString::from("1000000")],
                Some(c.procs.as_raw_fd()),
            )?;
            self.movers.push(Mover {
                pid,
                at: c.name.clone(),
            });
        }
        Ok(())
    }

    fn create_container(&mut self) -> anyhow::Result<()> {
        let id: String = (0..32)
            .map(|_| format!("{:02x}", self.rng.random::<u8>()))
            .collect();
        let style = self.rng.random_range(0..100u32);
        let (made, dir) = if style < 60 {
            let dir = self.parents[1].join(&id);
            (vec![dir.clone()], dir)
        } else if style < 85 {
            let dir = self.parents[2].join(format!("docker-{id}.scope"));
            (vec![dir.clone()], dir)
        } else {
            let uid: String = (0..16)
                .map(|_| format!("{:02x}", self.rng.random::<u8>()))
                .collect();
            let uid = format!(
                "{}_{}_{}_{}_{}",
                &uid[0..8],
                &uid[8..12],
                &uid[12..16],
                &uid[16..20],
                &uid[20..32]
            );
            let pod = self.parents[4].join(format!("kubepods-burstable-pod{uid}.slice"));
            let dir = pod.join(format!("cri-containerd-{id}.scope"));
            (vec![pod, dir.clone()], dir)
        };
        for d in &made {
            cleanup::create_cgroup(d)?;
        }
        let procs = open_procs(&dir.join("cgroup.procs"))?;
        let anchor = spawn(
            &self.sleep_bin,
            &[OsString::from("1000000")],
            Some(procs.as_raw_fd()),
        )?;
        let name: Arc<str> = self.mount.name_of(&dir).into();
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .push(LiveEntry {
                name: name.clone(),
                since: Instant::now(),
            });
        self.live.push(Cgroup {
            name,
            dir,
            made,
            procs,
            anchor,
        });
        self.stats.created += 1;
        Ok(())
    }

    /// Churns until `until`, or until `stop()` says so (the service died). Then stops starting
    /// processes and finishes: every churned process exits and is reaped, every container being
    /// removed is removed.
    pub fn churn(&mut self, until: Instant, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
        let began = Instant::now();
        let o = self.options.clone();
        let job_gap = |n: u32| Duration::from_secs_f64(f64::from(n) / o.churn_rate.max(1e-9));
        let move_gap = Duration::from_secs_f64(1.0 / o.moves_per_second.max(1e-9));
        let turnover_gap = Duration::from_secs_f64(60.0 / o.turnover_per_minute.max(1e-9));
        let mut next_job = began;
        let mut next_move = began;
        let mut next_turnover = began + turnover_gap;
        loop {
            cleanup::check()?;
            let now = Instant::now();
            if now >= until || stop() {
                break;
            }
            if o.churn_rate > 0.0 {
                let mut burst = 0;
                while next_job <= now && burst < 32 {
                    let n = self.start_job();
                    next_job += job_gap(n);
                    burst += 1;
                }
                if now > next_job + Duration::from_secs(1) {
                    next_job = now;
                    self.stats.fell_behind += 1;
                }
            }
            if o.moves_per_second > 0.0 {
                while next_move <= now {
                    self.move_one();
                    next_move += move_gap;
                }
            }
            if o.turnover_per_minute > 0.0 {
                while next_turnover <= now {
                    self.turnover()?;
                    next_turnover += turnover_gap;
                }
            }
            self.reap_due(now);
            self.progress_retiring()?;
            let mut wake = next_job.min(next_move).min(next_turnover);
            if let Some(Reverse(due)) = self.reap_queue.peek() {
                wake = wake.min(due.at);
            }
            let pause = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10));
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        self.stats.churn_secs = began.elapsed().as_secs_f64();
        let winding = Instant::now();
        self.finish()?;
        self.stats.wind_down_secs = winding.elapsed().as_secs_f64();
        Ok(())
    }

    /// After the churn: waits for every churned process and removal in progress.
    fn finish(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.options.max_lifetime + Duration::from_secs(20);
        while !self.churned.is_empty() || !self.retiring.is_empty() {
            cleanup::check()?;
            let now = Instant::now();
            self.reap_due(now);
            self.progress_retiring()?;
            if now > deadline {
                anyhow::bail!(
                    "the churn did not wind down: {} processes unreaped, {} containers not removed",
                    self.churned.len(),
                    self.retiring.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.movable.clear();
        Ok(())
    }

    /// Starts one job in a random live container; returns how many processes it makes.
    fn start_job(&mut self) -> u32 {
        let o = &self.options;
        let c = &self.live[self.rng.random_range(0..self.live.len())];
        let fd = Some(c.procs.as_raw_fd());
        let pick: f64 = self.rng.random();
        let max_life = o.max_lifetime.as_secs_f64().max(0.06);
        let now = Instant::now();
        let (result, due, processes, kind) = if pick < o.true_fraction {
            let r = spawn(&self.true_bin, &[], fd);
            (r, now + Duration::from_millis(5), 1, 0)
        } else if pick < o.true_fraction + o.fork_fraction {
            // A shell forking two children: a `sleep` (fork + exec) and a subshell running the
            // builtin `true` (fork only), waited for before the shell exits.
            let life = self.rng.random_range(0.05..max_life.clamp(0.051, 0.5));
            let script = format!("sleep {life:.3} & true & wait");
            let r = spawn(&self.sh_bin, &["-c".into(), script.into()], fd);
            (r, now + Duration::from_secs_f64(life + 0.02), 3, 1)
        } else {
            let life = self.rng.random_range(0.05..max_life);
            let r = spawn(&self.sleep_bin, &[OsString::from(format!("{life:.3}"))], fd);
            (r, now + Duration::from_secs_f64(life + 0.005), 1, 2)
        };
        match result {
            Ok(pid) => {
                match kind {
                    0 => self.stats.trues += 1,
                    1 => {
                        self.stats.shells += 1;
                        self.stats.forked += 2;
                    }
                    _ => {
                        self.stats.sleeps += 1;
                        if due > now + Duration::from_millis(200) {
                            self.movable.push(pid);
                        }
                    }
                }
                self.churned.insert(pid, due);
                self.reap_queue.push(Reverse(Due { at: due, pid }));
            }
            Err(err) => {
                self.stats.spawn_failures += 1;
                self.stats
                    .first_spawn_error
                    .get_or_insert_with(|| format!("{err:#}"));
            }
        }
        processes
    }

    /// Reaps the churned children due by now; one not exited yet is looked at again shortly,
    /// and killed when it is long overdue.
    fn reap_due(&mut self, now: Instant) {
        while let Some(Reverse(due)) = self.reap_queue.peek() {
            if due.at > now {
                break;
            }
            let Reverse(Due { at, pid }) = self.reap_queue.pop().expect("peeked");
            let expected = self.churned.get(&pid).copied().unwrap_or(at);
            if cleanup::try_reap(pid).is_some() {
                self.churned.remove(&pid);
                self.stats.reaped += 1;
            } else if now > expected + Duration::from_secs(10) {
                cleanup::end(&[pid]);
                self.churned.remove(&pid);
                self.stats.overdue_killed += 1;
            } else {
                self.reap_queue.push(Reverse(Due {
                    at: now + Duration::from_millis(20),
                    pid,
                }));
            }
        }
    }

    /// Moves a process to another container: a churned `sleep` (still our unreaped child) half
    /// of the time when there is one, else a long-lived mover.
    fn move_one(&mut self) {
        if self.live.len() < 2 {
            return;
        }
        let target = self.rng.random_range(0..self.live.len());
        if self.rng.random_bool(0.5) {
            while !self.movable.is_empty() {
                let i = self.rng.random_range(0..self.movable.len());
                let pid = self.movable[i];
                let alive_for = self
                    .churned
                    .get(&pid)
                    .map(|due| due.saturating_duration_since(Instant::now()));
                if alive_for.is_none_or(|d| d < Duration::from_millis(50)) {
                    self.movable.swap_remove(i);
                    continue;
                }
                // Registered in `churned`, so not reaped: the pid still names our child (at
                // worst a zombie, which the write does not move).
                let result = write_pid(&self.live[target].procs, pid);
                self.movable.swap_remove(i);
                self.stats.moves += 1;
                self.stats.moves_of_churned += 1;
                match result {
                    Ok(()) => {}
                    Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
                        self.stats.moves_raced_exit += 1;
                    }
                    Err(err) => {
                        let name = self.live[target].name.clone();
                        self.note_move_failure(pid, &name, err);
                    }
                }
                return;
            }
        }
        if self.movers.is_empty() {
            return;
        }
        let m = self.rng.random_range(0..self.movers.len());
        if self.movers[m].at == self.live[target].name {
            return;
        }
        let pid = self.movers[m].pid;
        let name = self.live[target].name.clone();
        match write_pid(&self.live[target].procs, pid) {
            Ok(()) => self.movers[m].at = name,
            Err(err) => self.note_move_failure(pid, &name, err),
        }
        self.stats.moves += 1;
    }

    fn note_move_failure(&mut self, pid: u32, to: &str, err: std::io::Error) {
        self.stats.move_failures += 1;
        self.stats
            .first_move_error
            .get_or_insert_with(|| format!("moving {pid} to {to}: {err}"));
    }

    /// Removes a random container and creates a new one.
    fn turnover(&mut self) -> anyhow::Result<()> {
        if self.live.len() > 1 {
            let i = self.rng.random_range(0..self.live.len());
            self.retire(i)?;
        }
        self.create_container()
    }

    /// Starts removing a container: it leaves the directory (the load now queries it as
    /// removed), its movers go elsewhere, its long-lived process is killed; it is removed once
    /// its churned processes are gone.
    fn retire(&mut self, i: usize) -> anyhow::Result<()> {
        let c = self.live.swap_remove(i);
        {
            let mut dir = self.directory.write().unwrap_or_else(|e| e.into_inner());
            dir.live.retain(|e| e.name != c.name);
            dir.removed.push_back(RemovedEntry {
                name: c.name.clone(),
            });
            while dir.removed.len() > REMOVED_KEPT {
                dir.removed.pop_front();
            }
        }
        for m in 0..self.movers.len() {
            if self.movers[m].at != c.name || self.live.is_empty() {
                continue;
            }
            let t = self.rng.random_range(0..self.live.len());
            let pid = self.movers[m].pid;
            let name = self.live[t].name.clone();
            match write_pid(&self.live[t].procs, pid) {
                Ok(()) => self.movers[m].at = name,
                Err(err) => self.note_move_failure(pid, &name, err),
            }
            self.stats.moves += 1;
        }
        cleanup::end(&[c.anchor]);
        self.retiring.push(Retiring {
            cgroup: c,
            since: Instant::now(),
            strays_killed: false,
        });
        Ok(())
    }

    /// Removes the retiring containers that have emptied; kills leftovers that overstay.
    fn progress_retiring(&mut self) -> anyhow::Result<()> {
        let overstay = self.options.max_lifetime + Duration::from_secs(5);
        let mut i = 0;
        while i < self.retiring.len() {
            let r = &mut self.retiring[i];
            let dir = r.cgroup.dir.clone();
            if !cgroup_procs(&dir).is_empty() {
                if !r.strays_killed && r.since.elapsed() > overstay {
                    r.strays_killed = true;
                    // Our own children are reaped through the queue; others (a shell's
                    // orphaned job) by their parent or init.
                    self.stats.strays_killed += cleanup::kill_members(&dir) as u64;
                }
                i += 1;
                continue;
            }
            let mut gone = true;
            for d in r.cgroup.made.iter().rev() {
                if !cleanup::try_remove_cgroup(d)
                    .with_context(|| format!("removing cgroup {}", d.display()))?
                {
                    gone = false;
                    break;
                }
            }
            if gone {
                self.retiring.swap_remove(i);
                self.stats.removed += 1;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Ends everything: churned processes, movers, long-lived processes (by pid), leftovers
    /// (by verified pid), then the cgroups, deepest first.
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut pids: Vec<u32> = self.churned.drain().map(|(pid, _)| pid).collect();
        self.reap_queue.clear();
        self.movable.clear();
        pids.extend(self.movers.drain(..).map(|m| m.pid));
        pids.extend(self.live.iter().map(|c| c.anchor));
        cleanup::end(&pids);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for c in self.live.drain(..) {
            dirs.extend(c.made);
        }
        for r in self.retiring.drain(..) {
            dirs.extend(r.cgroup.made);
        }
        dirs.extend(self.parents.iter().cloned());
        for d in &dirs {
            if !cgroup_procs(d).is_empty() {
                cleanup::kill_members(d);
            }
        }
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .clear();
        cleanup::remove_cgroups(&dirs)
    }
}

impl Drop for SoakHost {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("companion-bench: {err:#}");
        }
    }
}

/// Moves `pid` into the cgroup whose `cgroup.procs` is open as `procs`.
fn write_pid(mut procs: &File, pid: u32) -> std::io::Result<()> {
    procs.write_all(pid.to_string().as_bytes())
}
