//! What the benchmark measured: per host shape ([`PointResult`]) its floor and one run per
//! tracker ([`RunResult`]), each with its measuring window, API load and probe.

use super::{
    Tracker, floor::Floor, host::Shape, load::LoadResult, peer::PeerResult, probe::ProbeResult,
};
use crate::kit::service::{LogSummary, Memory, Watch, Window};

/// What the service showed during API load.
#[derive(Clone, Debug)]
pub struct LoadOutcome {
    pub result: LoadResult,
    pub watch: Watch,
    pub cpu_secs: f64,
}

impl LoadOutcome {
    pub fn slipped(&self) -> u64 {
        self.watch.delta(|h| h.samples_slipped)
    }
}

/// One service run (one tracker, one host shape).
#[derive(Clone, Debug)]
pub struct RunResult {
    pub tracker: Tracker,
    pub startup_secs: f64,
    pub warmup_secs: f64,
    pub window: Window,
    /// The load phases: back to back, then paced (when --load-rate).
    pub load: Vec<LoadOutcome>,
    pub probe: Option<ProbeResult>,
    /// Memory at the end of the run (after load and probe).
    pub memory_end: Memory,
    pub log: LogSummary,
    pub degraded: Option<String>,
}

/// One host shape: its floor and the runs against it.
#[derive(Clone, Debug)]
pub struct PointResult {
    pub shape: Shape,
    pub full: bool,
    pub busy: usize,
    pub floor: Floor,
    pub runs: Vec<RunResult>,
    /// Trackers whose service could not start at this point, with why.
    pub failed: Vec<(Tracker, String)>,
    /// The peer over this host shape, or why it was not measured (None: not run here).
    pub peer: Option<Result<PeerResult, String>>,
    /// The eBPF service with `--sampler-threads N`, per N (at the largest shape), or why not.
    pub threads: Vec<(usize, Result<RunResult, String>)>,
}

impl PointResult {
    pub fn run(&self, tracker: Tracker) -> Option<&RunResult> {
        self.runs.iter().find(|r| r.tracker == tracker)
    }
    /// The service's base: the host without container processes.
    pub fn is_base(&self) -> bool {
        self.shape.containers == 0
    }
}
