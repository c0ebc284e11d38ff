//! What the service publishes after each sample: the read side.
//!
//! The sampler thread (see `pipeline`) swaps a new [`Published`] in whole after each sample. The
//! API only loads the newest publication; nothing it does waits for a sample or reads /proc.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::{
    exits::Exits,
    history::History,
    inventory::Inventory,
    tracker::{TrackerKind, TrackerStats},
};

/// One publication, replaced whole after every sample.
pub struct Published {
    pub history: History,
    pub tracker: TrackerKind,
    pub tracker_stats: TrackerStats,
    pub sampling: SamplingStats,
    /// Per-container figures of the newest sample.
    pub inventory: Inventory,
    /// The exit ledger (shared with the next publication when no process ended).
    pub exits: Arc<Exits>,
    /// Durations of all samples so far.
    pub durations: SampleDurations,
    /// The sample-derived part of /metrics, rendered by the first scrape of this publication.
    pub metrics: OnceLock<String>,
}

/// How the schedule is kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SamplingStats {
    pub samples_taken: u64,
    /// Scheduled samples skipped because the previous one overran its period.
    pub samples_slipped: u64,
    /// Duration of the newest sample.
    pub last_sample_seconds: f64,
    /// Container processes in the newest sample.
    pub tracked_processes: usize,
    /// Containers in the newest sample.
    pub containers: usize,
    /// Processes whose files are read through descriptors kept open.
    pub open_descriptors: usize,
    /// Threads the newest sample's reads were split over (see `--sampler-threads`).
    pub sampler_threads: usize,
}

/// A histogram of sample durations, shared by every publication (its counts only grow).
#[derive(Clone, Debug)]
pub struct SampleDurations(pub Histogram);

impl Default for SampleDurations {
    fn default() -> Self {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        SampleDurations(Histogram::new(buckets))
    }
}

/// The newest publication, swapped atomically by the sampler thread.
pub struct Store {
    current: ArcSwap<Published>,
}

/// The store, shared by the sampler thread and the API.
pub type Shared = Arc<Store>;

impl Store {
    /// A store with an empty history of `capacity` samples.
    pub fn new(capacity: usize, tracker: TrackerKind) -> Shared {
        Arc::new(Store {
            current: ArcSwap::from_pointee(Published {
                history: History::new(capacity),
                tracker,
                tracker_stats: TrackerStats::default(),
                sampling: SamplingStats::default(),
                inventory: Inventory::default(),
                exits: Arc::default(),
                durations: SampleDurations::default(),
                metrics: OnceLock::new(),
            }),
        })
    }

    pub fn load(&self) -> Arc<Published> {
        self.current.load_full()
    }

    /// Replaces the publication whole (the sampler thread only).
    pub(crate) fn publish(&self, published: Published) {
        self.current.store(Arc::new(published));
    }
}
