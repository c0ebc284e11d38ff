//! Per-container figures, computed with each sample and published with it: what
//! `/api/v2/containers` lists and what `/metrics` exports. Requests and scrapes only read them.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

use crate::{
    cgroup::{CgroupFigures, CgroupReading, Identity},
    exits::ExitTotals,
    history::History,
    model::{ProcessSample, Sample},
    runtime::{NameCache, RuntimeFiles, RuntimeNames},
};

/// One container as `/api/v2/containers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerSummary {
    /// The cgroup path: the name the v1.0 API takes.
    pub path: Arc<str>,
    #[serde(flatten)]
    pub identity: Identity,
    /// What the runtime calls it: name, image, Kubernetes namespace, pod and container.
    #[serde(flatten)]
    pub names: Arc<RuntimeNames>,
    /// Processes the API lists for it.
    pub processes: usize,
    /// CPU used over the interval (the last sample's unless asked otherwise), in percent of
    /// one core.
    pub cpu_percent: f64,
    /// CPU used since the service started following the container, in seconds.
    pub cpu_seconds_total: f64,
    /// Resident memory of its processes, in bytes.
    pub rss_bytes: u64,
    /// Limits, throttling, memory and pressure from its cgroup files, over the same interval.
    #[serde(flatten)]
    pub cgroup: CgroupFigures,
    /// The newest reading of its cgroup files (its counters go to /metrics).
    #[serde(skip)]
    pub reading: Option<Arc<CgroupReading>>,
    /// Ends and OOM kills since the service started following it (the exit ledger's totals).
    #[serde(flatten)]
    pub exits: ExitTotals,
}

impl ContainerSummary {
    /// This summary with its CPU and cgroup figures over the last `interval` samples instead.
    pub fn over(&self, history: &History, interval: usize, ticks_per_second: u64) -> Self {
        let (cpu_percent, cgroup) = over_interval(history, &self.path, interval, ticks_per_second);
        ContainerSummary {
            cpu_percent,
            cgroup,
            ..self.clone()
        }
    }
}

/// The CPU a container used over the last `interval` samples of `history` (in percent of a
/// core), and its cgroup figures over the same window: from the oldest sample of the window
/// that read its cgroup (a younger container's window is shorter) to the newest.
pub fn over_interval(
    history: &History,
    path: &str,
    interval: usize,
    ticks_per_second: u64,
) -> (f64, CgroupFigures) {
    let window: Vec<_> = history.samples().rev().take(interval + 1).collect();
    let (Some(newest), Some(oldest)) = (window.first(), window.last()) else {
        return (0.0, CgroupFigures::default());
    };
    let seconds_since = |earlier: &Sample| {
        newest
            .timestamp
            .duration_since(earlier.timestamp)
            .ok()
            .map(|d| d.as_secs_f64())
            .filter(|&s| s > 0.0)
    };
    // The newest sample's totals cover the time since the one before it, and so on.
    let ticks: u64 = window[..window.len() - 1]
        .iter()
        .map(|s| s.totals(path).cpu_ticks)
        .sum();
    let cpu_percent = seconds_since(oldest).map_or(0.0, |seconds| {
        100.0 * ticks as f64 / ticks_per_second.max(1) as f64 / seconds
    });
    let older = window[1..]
        .iter()
        .rev()
        .find_map(|s| Some((s.cgroup(path)?, seconds_since(s)?)));
    let figures = CgroupFigures::of(
        newest.cgroup(path).map(|r| &**r),
        older.map(|(r, _)| &**r),
        older.map_or(0.0, |(_, seconds)| seconds),
    );
    (cpu_percent, figures)
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
    /// The containers `reference` names, as Docker resolves a reference: the container with
    /// exactly this id; else those with exactly this name (Docker's or Podman's name,
    /// `namespace/pod/container` or `pod/container` in Kubernetes); else those whose id starts
    /// with it. More than one is ambiguous.
    pub fn by_reference(&self, reference: &str) -> Vec<&ContainerSummary> {
        let matching = |test: &dyn Fn(&ContainerSummary) -> bool| -> Vec<&ContainerSummary> {
            self.containers.iter().filter(|c| test(c)).collect()
        };
        let exact = matching(&|c| c.identity.id.as_deref() == Some(reference));
        if !exact.is_empty() {
            return exact;
        }
        let named = matching(&|c| c.names.is_named(reference));
        if !named.is_empty() {
            return named;
        }
        matching(&|c| c.identity.matches_prefix(reference))
    }
}

pub struct InventoryOptions {
    /// Where the container runtimes' files are, for names and images.
    pub runtime_files: RuntimeFiles,
    /// Processes exported as their own series (`--metrics-top-processes`).
    pub top_processes: usize,
    pub ticks_per_second: u64,
}

/// What carries over from one sample to the next.
pub struct InventoryState {
    options: InventoryOptions,
    last_seq: Option<u64>,
    cpu_seconds: HashMap<Arc<str>, f64>,
    identities: HashMap<Arc<str>, Identity>,
    names: NameCache,
}

impl InventoryState {
    pub fn new(options: InventoryOptions) -> InventoryState {
        InventoryState {
            names: NameCache::new(options.runtime_files.clone()),
            options,
            last_seq: None,
            cpu_seconds: HashMap::new(),
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

        let now = Instant::now();
        let mut containers = Vec::new();
        for (path, _, totals) in newest.containers() {
            if totals.listed == 0 {
                continue;
            }
            let identity = self
                .identities
                .entry(path.clone())
                .or_insert_with(|| Identity::of(path))
                .clone();
            let (cpu_percent, cgroup) =
                over_interval(history, path, 1, self.options.ticks_per_second);
            containers.push(ContainerSummary {
                path: path.clone(),
                names: self.names.names(&identity, now),
                identity,
                processes: totals.listed as usize,
                cpu_percent,
                cpu_seconds_total: self.cpu_seconds.get(path).copied().unwrap_or_default(),
                rss_bytes: totals.rss_kb * 1024,
                cgroup,
                reading: newest.cgroup(path).cloned(),
                exits: ExitTotals::default(),
            });
        }
        // Forget containers that are gone.
        let present: HashSet<&str> = newest.containers().map(|(path, _, _)| &**path).collect();
        self.cpu_seconds.retain(|path, _| present.contains(&**path));
        self.identities.retain(|path, _| present.contains(&**path));
        let ids: HashSet<&str> = self
            .identities
            .values()
            .filter_map(|i| i.id.as_deref())
            .collect();
        self.names.retain(&ids);

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
