//! Per-container figures, computed with each sample and published with it: what
//! `/api/v2/containers` lists and what `/metrics` exports. Requests and scrapes only read them.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    cgroup::{CgroupFs, Identity},
    exits::ExitTotals,
    history::History,
    model::ProcessSample,
};

/// How long a container's memory limit is trusted before it is read again.
const LIMIT_REFRESH: Duration = Duration::from_secs(10);

/// One container as `/api/v2/containers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerSummary {
    /// The cgroup path: the name the v1.0 API takes.
    pub path: Arc<str>,
    #[serde(flatten)]
    pub identity: Identity,
    /// Processes the API lists for it.
    pub processes: usize,
    /// CPU used over the last sample interval, in percent of one core.
    pub cpu_percent: f64,
    /// CPU used since the service started following the container, in seconds.
    pub cpu_seconds_total: f64,
    /// Resident memory of its processes, in bytes.
    pub rss_bytes: u64,
    /// The cgroup's memory limit, when it has one.
    pub memory_limit_bytes: Option<u64>,
    /// Ends and OOM kills since the service started following it (the exit ledger's totals).
    #[serde(flatten)]
    pub exits: ExitTotals,
}

/// The figures of one sample.
#[derive(Default)]
pub struct Inventory {
    /// Sorted by path.
    pub containers: Vec<ContainerSummary>,
    /// The busiest processes over the last interval (`--metrics-top-processes`), busiest first.
    pub top: Vec<ProcessUse>,
}

/// A process and the CPU it used over the last interval, in cores.
pub struct ProcessUse {
    pub process: ProcessSample,
    pub cores: f64,
}

impl Inventory {
    /// Containers whose id starts with `prefix`.
    pub fn by_id_prefix(&self, prefix: &str) -> Vec<&ContainerSummary> {
        self.containers
            .iter()
            .filter(|c| c.identity.matches_prefix(prefix))
            .collect()
    }
}

pub struct InventoryOptions {
    pub cgroups: CgroupFs,
    /// Processes exported as their own series (`--metrics-top-processes`).
    pub top_processes: usize,
    pub ticks_per_second: u64,
}

/// What carries over from one sample to the next.
pub struct InventoryState {
    options: InventoryOptions,
    last_seq: Option<u64>,
    cpu_seconds: HashMap<Arc<str>, f64>,
    limits: HashMap<Arc<str>, (Option<u64>, Instant)>,
    identities: HashMap<Arc<str>, Identity>,
}

impl InventoryState {
    pub fn new(options: InventoryOptions) -> InventoryState {
        InventoryState {
            options,
            last_seq: None,
            cpu_seconds: HashMap::new(),
            limits: HashMap::new(),
            identities: HashMap::new(),
        }
    }

    /// The inventory of the newest sample of `history`, which has just been taken.
    pub fn update(&mut self, history: &History) -> Inventory {
        let Some(newest) = history.newest() else {
            return Inventory::default();
        };
        let tps = self.options.ticks_per_second as f64;
        // Every sample since the last update adds its containers' CPU to their counters (the
        // sampler totals them as it reads, so this is one step per container and sample).
        let since = self.last_seq.unwrap_or(newest.seq - 1);
        for sample in history.samples().filter(|s| s.seq > since) {
            for (path, _, totals) in sample.containers() {
                *self.cpu_seconds.entry(path.clone()).or_default() += totals.cpu_ticks as f64 / tps;
            }
        }
        self.last_seq = Some(newest.seq);
        // The interval the newest sample's totals cover.
        let interval = history
            .samples()
            .rev()
            .nth(1)
            .and_then(|previous| newest.timestamp.duration_since(previous.timestamp).ok())
            .map_or(f64::INFINITY, |d| d.as_secs_f64());

        let now = Instant::now();
        let mut containers = Vec::new();
        for (path, _, totals) in newest.containers() {
            if totals.listed == 0 {
                continue;
            }
            let limit = match self.limits.get(path) {
                Some((limit, read)) if now.duration_since(*read) < LIMIT_REFRESH => *limit,
                _ => {
                    let limit = self.options.cgroups.memory_limit(path);
                    self.limits.insert(path.clone(), (limit, now));
                    limit
                }
            };
            containers.push(ContainerSummary {
                path: path.clone(),
                identity: self
                    .identities
                    .entry(path.clone())
                    .or_insert_with(|| Identity::of(path))
                    .clone(),
                processes: totals.listed as usize,
                cpu_percent: 100.0 * totals.cpu_ticks as f64 / tps / interval,
                cpu_seconds_total: self.cpu_seconds.get(path).copied().unwrap_or_default(),
                rss_bytes: totals.rss_kb * 1024,
                memory_limit_bytes: limit,
                exits: ExitTotals::default(),
            });
        }
        // Forget containers that are gone.
        let present: HashSet<&str> = newest.containers().map(|(path, _, _)| &**path).collect();
        self.cpu_seconds.retain(|path, _| present.contains(&**path));
        self.limits.retain(|path, _| present.contains(&**path));
        self.identities.retain(|path, _| present.contains(&**path));

        let mut top: Vec<ProcessUse> = Vec::new();
        if self.options.top_processes > 0
            && let Some(usage) = history.usage(None)
        {
            for container in &usage.containers {
                top.extend(container.processes.iter().filter(|(p, _)| p.listed()).map(
                    |(p, ticks)| ProcessUse {
                        process: (*p).clone(),
                        cores: *ticks as f64 / tps / usage.seconds.max(f64::EPSILON),
                    },
                ));
            }
        }
        top.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        top.truncate(self.options.top_processes);
        Inventory { containers, top }
    }
}
