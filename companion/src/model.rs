//! The data of one sample: each process as a pass read it, grouped by container with totals.
//!
//! A sample is cheap to keep: each process entry is one shared pointer. The sampler reuses
//! the previous sample's entry (and its `Stat`, `Status` and `ProcessInfo`) when they did not
//! change, so an idle process costs one copy of its data for the whole history, not H copies.

use std::{ops::Range, sync::Arc, time::SystemTime};

use crate::{
    cgroup::CgroupReading,
    procfs::{Pid, Stat, Status},
};

/// What identifies a process for its whole life, and what rarely changes.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: Pid,
    /// Start time in clock ticks since boot. With `pid` it tells a reused pid from its
    /// predecessor.
    pub starttime: u64,
    /// The container path (`/docker/<id>`).
    pub container: Arc<str>,
    /// The command line as the API shows it (see `--cmdline`).
    pub cmdline: Arc<str>,
    /// Whether the process has a command line (kernel threads and zombies have none); `None`
    /// when it could not be read.
    pub has_cmdline: Option<bool>,
}

impl ProcessInfo {
    pub fn same_process(&self, other: &ProcessInfo) -> bool {
        self.pid == other.pid && self.starttime == other.starttime
    }
}

/// One process as one sample saw it: a shared pointer, so that the samples of a history in which
/// the process did not change all hold the same one (8 bytes per sample, not 24).
#[derive(Clone, Debug)]
pub struct ProcessSample(Arc<ProcessData>);

/// What a [`ProcessSample`] points to.
#[derive(Debug)]
pub struct ProcessData {
    pub info: Arc<ProcessInfo>,
    pub stat: Arc<Stat>,
    /// `None` when the status file could not be read.
    pub status: Option<Arc<Status>>,
}

impl std::ops::Deref for ProcessSample {
    type Target = ProcessData;
    fn deref(&self) -> &ProcessData {
        &self.0
    }
}

impl ProcessSample {
    pub fn new(info: Arc<ProcessInfo>, stat: Arc<Stat>, status: Option<Arc<Status>>) -> Self {
        ProcessSample(Arc::new(ProcessData { info, stat, status }))
    }

    /// This sample when it holds exactly these parts, else a new one with them.
    pub fn reuse(
        previous: Option<&ProcessSample>,
        info: &Arc<ProcessInfo>,
        stat: &Arc<Stat>,
        status: Option<&Arc<Status>>,
    ) -> ProcessSample {
        let same = |p: &ProcessSample| {
            Arc::ptr_eq(&p.info, info)
                && Arc::ptr_eq(&p.stat, stat)
                && match (&p.status, status) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        match previous {
            Some(p) if same(p) => p.clone(),
            _ => ProcessSample::new(info.clone(), stat.clone(), status.cloned()),
        }
    }

    pub fn cpu_ticks(&self) -> u64 {
        self.stat.cpu_ticks()
    }

    /// Resident memory in kB, 0 when unknown.
    pub fn rss_kb(&self) -> u64 {
        self.status.as_ref().map_or(0, |s| s.vm_rss)
    }

    /// Whether the API lists it: kernel threads and zombies have no command line or memory.
    /// What could not be read does not hide a process.
    pub fn listed(&self) -> bool {
        self.info.has_cmdline != Some(false) && self.status.as_ref().is_none_or(|s| s.vm_rss != 0)
    }
}

/// A process that was in a container at the previous sample and is gone (exited, or moved out
/// of every container) by this one.
#[derive(Clone, Debug)]
pub struct Departed {
    pub info: Arc<ProcessInfo>,
    /// Its CPU time when it left, in clock ticks: the tracker's figure at exit when it has one,
    /// else the last sampled value.
    pub cpu_ticks: u64,
    /// The part of it used since the previous sample (0 when only the last sampled value is
    /// known).
    pub recent_ticks: u64,
}

/// A process as one pass read it, with the CPU it used since the previous pass.
#[derive(Clone, Debug)]
pub struct Sampled {
    pub process: ProcessSample,
    /// Clock ticks since the previous pass (since its birth when it is younger, 0 the first
    /// time an older process is seen).
    pub recent_ticks: u64,
}

/// What one sample saw of a container as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Processes the API lists.
    pub listed: u32,
    /// Their resident memory, in kB.
    pub rss_kb: u64,
    /// CPU the container used since the previous sample, in clock ticks, departed processes
    /// included.
    pub cpu_ticks: u64,
}

#[derive(Debug)]
struct ContainerEntry {
    path: Arc<str>,
    /// Its range in `processes`; empty when all its processes departed.
    processes: Range<usize>,
    totals: Totals,
    /// Its cgroup files as read with this sample; `None` when not read or unreadable.
    cgroup: Option<Arc<CgroupReading>>,
}

/// Everything one sampling pass saw.
#[derive(Debug)]
pub struct Sample {
    /// Position in the sequence of samples, set when the sample joins a history.
    pub seq: u64,
    pub timestamp: SystemTime,
    /// Clock ticks since boot when the pass began: a process with a later `starttime` was born
    /// after it.
    pub boot_ticks: u64,
    /// Sorted by (container, pid).
    processes: Vec<ProcessSample>,
    /// Every container with a process present or departed, sorted by path.
    containers: Vec<ContainerEntry>,
    /// Sorted by (container, pid).
    departed: Vec<Departed>,
}

impl Sample {
    pub fn new(
        timestamp: SystemTime,
        boot_ticks: u64,
        mut sampled: Vec<Sampled>,
        mut departed: Vec<Departed>,
    ) -> Sample {
        let order =
            |a: &ProcessInfo, b: &ProcessInfo| (&a.container, a.pid).cmp(&(&b.container, b.pid));
        sampled.sort_unstable_by(|a, b| order(&a.process.info, &b.process.info));
        departed.sort_unstable_by(|a, b| order(&a.info, &b.info));
        let mut containers: Vec<ContainerEntry> = Vec::new();
        for (
            index,
            Sampled {
                process,
                recent_ticks,
            },
        ) in sampled.iter().enumerate()
        {
            let entry = match containers.last_mut() {
                Some(entry) if entry.path == process.info.container => entry,
                _ => {
                    containers.push(ContainerEntry {
                        path: process.info.container.clone(),
                        processes: index..index,
                        totals: Totals::default(),
                        cgroup: None,
                    });
                    containers.last_mut().expect("just pushed")
                }
            };
            entry.processes.end = index + 1;
            entry.totals.cpu_ticks += recent_ticks;
            if process.listed() {
                entry.totals.listed += 1;
                entry.totals.rss_kb += process.rss_kb();
            }
        }
        for gone in &departed {
            let path = &gone.info.container;
            let at = match containers.binary_search_by(|e| e.path.cmp(path)) {
                Ok(at) => at,
                Err(at) => {
                    let empty = ContainerEntry {
                        path: path.clone(),
                        processes: 0..0,
                        totals: Totals::default(),
                        cgroup: None,
                    };
                    containers.insert(at, empty);
                    at
                }
            };
            containers[at].totals.cpu_ticks += gone.recent_ticks;
        }
        containers.shrink_to_fit();
        departed.shrink_to_fit();
        // Collected in place, the list would keep the larger allocation of `sampled` for the
        // whole history.
        let mut processes: Vec<ProcessSample> = sampled.into_iter().map(|s| s.process).collect();
        processes.shrink_to_fit();
        Sample {
            seq: 0,
            timestamp,
            boot_ticks,
            processes,
            containers,
            departed,
        }
    }

    pub fn processes(&self) -> &[ProcessSample] {
        &self.processes
    }

    /// Every container with a process present or departed, sorted by path, with its processes
    /// (sorted by pid; empty when all departed) and totals.
    pub fn containers(&self) -> impl Iterator<Item = (&Arc<str>, &[ProcessSample], Totals)> {
        self.containers
            .iter()
            .map(|e| (&e.path, &self.processes[e.processes.clone()], e.totals))
    }

    /// The processes of one container, sorted by pid (empty when it has none).
    pub fn container(&self, path: &str) -> &[ProcessSample] {
        match self.entry(path) {
            Some(entry) => &self.processes[entry.processes.clone()],
            None => &[],
        }
    }

    fn entry(&self, path: &str) -> Option<&ContainerEntry> {
        let at = self
            .containers
            .binary_search_by(|e| (*e.path).cmp(path))
            .ok()?;
        Some(&self.containers[at])
    }

    /// What this sample saw of one container as a whole (zero when it saw nothing of it).
    pub fn totals(&self, path: &str) -> Totals {
        self.entry(path).map(|e| e.totals).unwrap_or_default()
    }

    /// The container's cgroup files as read with this sample.
    pub fn cgroup(&self, path: &str) -> Option<&Arc<CgroupReading>> {
        self.entry(path)?.cgroup.as_ref()
    }

    /// Reads the cgroup files of every container with a listed process, with `read`.
    pub fn read_cgroups(&mut self, mut read: impl FnMut(&Arc<str>) -> Option<Arc<CgroupReading>>) {
        for entry in self.containers.iter_mut().filter(|e| e.totals.listed > 0) {
            entry.cgroup = read(&entry.path);
        }
    }

    pub fn departed(&self, container: &str) -> &[Departed] {
        let start = self
            .departed
            .partition_point(|d| &*d.info.container < container);
        let end = self
            .departed
            .partition_point(|d| &*d.info.container <= container);
        &self.departed[start..end]
    }

    pub fn all_departed(&self) -> &[Departed] {
        &self.departed
    }

    /// This process's CPU ticks in this sample, if the sample saw it (in any container).
    pub(crate) fn cpu_of(&self, info: &ProcessInfo) -> Option<u64> {
        let in_container = self.container(&info.container);
        let found = match in_container.binary_search_by_key(&info.pid, |p| p.info.pid) {
            Ok(at) => Some(&in_container[at]),
            // Moved between containers: rare enough for a scan.
            Err(_) => self.processes.iter().find(|p| p.info.pid == info.pid),
        };
        found
            .filter(|p| p.info.same_process(info))
            .map(ProcessSample::cpu_ticks)
    }
}
