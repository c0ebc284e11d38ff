//! Which container processes exist now, and in which container.
//!
//! Two implementations answer the same question: [`procscan::ProcScan`] walks /proc on every
//! sample; [`ebpf::EbpfTracker`] follows fork, exec, exit and cgroup moves in the kernel and only
//! walks /proc to seed and repair its set. The sampler asks the tracker once per sample and reads
//! /proc only for the processes it returns.

pub mod ebpf;
pub mod fallback;

/// A container path, shared (see [`ContainerNames`]).
pub type ContainerPath = Arc<str>;
pub mod procscan;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Condvar, Mutex},
    time::{Instant, SystemTime},
};

use serde::Serialize;

use crate::procfs::Pid;

/// One tracked container process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub container: Arc<str>,
    /// Bumped by every exec the tracker sees: the sampler re-reads the command line when it
    /// changes. Trackers that cannot see execs leave it at 0.
    pub execs: u32,
    /// Whether the tracker read this process's cgroup itself. When it did not (a forked child,
    /// an event), the sampler checks /proc/PID/cgroup the first time it reads the process, so a
    /// stale entry whose pid was reused never lends its container to another process.
    pub verified: bool,
}

/// The tracked set: pid (thread-group id) → container.
pub type Processes = HashMap<Pid, Tracked>;

/// Which implementation is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    Procfs,
    Ebpf,
}

impl std::fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrackerKind::Procfs => "procfs",
            TrackerKind::Ebpf => "ebpf",
        })
    }
}

/// Counters a tracker exposes in /healthz and /metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    /// Kernel events applied.
    pub events_received: u64,
    /// Events the kernel side could not deliver (ring buffer full) or record (map full).
    pub events_lost: u64,
    /// Full /proc scans that checked the set (after losses, on schedule, or at start).
    pub reconciliations: u64,
    /// Entries those scans had to add, remove or move.
    pub repairs: u64,
    /// Why the tracker runs degraded, if it does (e.g. the eBPF side failed and /proc scanning
    /// took over).
    pub degraded: Option<String>,
}

/// A process the tracker saw exit since its last refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub pid: Pid,
    /// The container it was in when it exited.
    pub container: Arc<str>,
    /// Its CPU time at exit in nanoseconds, when the kernel told.
    pub cpu_ns: Option<u64>,
    /// How it ended, when the kernel told (eBPF tracker on a kernel with BTF).
    pub details: Option<ExitDetails>,
    /// Its command line as its last exec set it, when it exec'd since the previous refresh
    /// (or was forked by a process that did): for processes no sample ever read.
    pub cmdline: Option<Arc<str>>,
    /// Set when the OOM killer chose it (`oom:mark_victim`).
    pub oom: Option<OomFigures>,
}

/// What the kernel reports of a process's end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitDetails {
    /// The wait status its parent sees (exit code << 8, or the signal, 0x80 for a core dump).
    pub status: u32,
    pub ppid: Pid,
    /// The thread-group leader's name.
    pub comm: String,
    /// Start and end, nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub start_boot_ns: u64,
    pub end_boot_ns: u64,
    /// The kernel's tick-sampled user and system time, whose ratio splits `Exit::cpu_ns`.
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Peak resident set, in bytes.
    pub peak_rss_bytes: u64,
}

impl ExitDetails {
    /// The wait status decoded: the exit code when it called exit, else the terminating signal
    /// and whether it dumped core.
    pub fn outcome(&self) -> (Option<i32>, Option<i32>, bool) {
        let signal = (self.status & 0x7f) as i32;
        if signal == 0 {
            (Some(((self.status >> 8) & 0xff) as i32), None, false)
        } else {
            (None, Some(signal), self.status & 0x80 != 0)
        }
    }
}

/// The memory figures `oom:mark_victim` carries, in bytes; `None` when this kernel's tracepoint
/// lacks one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomFigures {
    pub total_vm_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
}

/// A process event the tracker saw, kept for the event stream (`GET /api/v2/events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub kind: ActivityKind,
    pub pid: Pid,
    /// The container it happened in.
    pub container: Arc<str>,
    /// When the tracker learned of it.
    pub at: SystemTime,
    /// Exit code and terminating signal, for an exit when the kernel told them.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityKind {
    Exec,
    Exit,
}

/// Activity kept from one refresh to the next at most; beyond it, events are only counted.
pub const MAX_ACTIVITY: usize = 4096;

/// The activity of one refresh, in the order it happened.
#[derive(Debug, Default)]
pub struct ActivityLog {
    pub seen: Vec<Activity>,
    /// Events beyond [`MAX_ACTIVITY`], not kept.
    pub dropped: u64,
}

impl ActivityLog {
    pub fn record(&mut self, activity: Activity) {
        if self.seen.len() < MAX_ACTIVITY {
            self.seen.push(activity);
        } else {
            self.dropped += 1;
        }
    }

    /// Moves this log's content into `published` (emptied first), keeping both allocations.
    pub fn publish_into(&mut self, published: &mut ActivityLog) {
        published.seen.clear();
        std::mem::swap(&mut self.seen, &mut published.seen);
        published.dropped = std::mem::take(&mut self.dropped);
    }
}

pub trait Tracker: Send {
    fn kind(&self) -> TrackerKind;

    /// Brings the set up to date. Called by the sampler at the start of each sample.
    fn refresh(&mut self) -> anyhow::Result<()>;

    /// The container processes as of the last refresh.
    fn processes(&self) -> &Processes;

    /// Exits seen by the last refresh.
    fn exits(&self) -> &[Exit];

    /// Execs and exits seen by the last refresh, in order (for the event stream). Trackers that
    /// do not see process events have none.
    fn activity(&self) -> &ActivityLog {
        static NONE: ActivityLog = ActivityLog {
            seen: Vec::new(),
            dropped: 0,
        };
        &NONE
    }

    /// Sleeps until `deadline` or until `stop` is raised, doing what the tracker needs meanwhile
    /// (draining kernel events). Returns false when stopped.
    fn wait_until(&mut self, deadline: Instant, stop: &Stop) -> bool;

    fn stats(&self) -> TrackerStats;
}

/// A stop signal a thread can sleep on: raised once, at shutdown.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub fn raise(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    pub fn is_raised(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps until `deadline`; returns false if the stop was raised first.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Container paths, shared: the same container is one allocation across the tracker, every
/// sample and the API.
#[derive(Debug, Default)]
pub struct ContainerNames {
    names: HashSet<Arc<str>>,
}

impl ContainerNames {
    pub fn intern(&mut self, path: &[u8]) -> Arc<str> {
        let path = container_name(path);
        if let Some(name) = self.names.get(&*path) {
            return name.clone();
        }
        let name: Arc<str> = path.into();
        self.names.insert(name.clone());
        name
    }

    /// Forgets names no longer used outside this table.
    pub fn prune(&mut self) {
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }
}

/// The name of the container at cgroup path `path`: the path's bytes, each invalid UTF-8
/// sequence replaced by U+FFFD (cgroup names are bytes; the API shows text). Every comparison of
/// a path read from the kernel with a tracked container goes through this, so no encoding makes
/// a process look like it is elsewhere.
pub fn container_name(path: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path)
}

/// A map sized for a burst of processes that have since left gives the memory back.
pub fn shrink_after_churn<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len() + 1024 {
        map.shrink_to_fit();
    }
}
