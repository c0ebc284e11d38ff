//! What the service publishes after each sample, and the schedule that produces it.
//!
//! The sampler thread runs [`run`]: on a fixed schedule it takes a sample, appends it to the
//! history, computes the inventory, and swaps the result in whole. The API only loads the newest
//! publication; nothing it does waits for a sample or reads /proc.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    history::{History, Sample},
    inventory::{Inventory, InventoryState},
    sampler::Sampler,
    tracker::{Stop, Tracker, TrackerKind, TrackerStats},
};

/// One publication, replaced whole after every sample.
pub struct Published {
    pub history: History,
    pub tracker: TrackerKind,
    pub tracker_stats: TrackerStats,
    pub sampling: SamplingStats,
    /// Per-container figures of the newest sample.
    pub inventory: Inventory,
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
                durations: SampleDurations::default(),
                metrics: OnceLock::new(),
            }),
        })
    }

    pub fn load(&self) -> Arc<Published> {
        self.current.load_full()
    }
}

/// The sampler thread's tools: what reads, what knows who to read, what sums up.
pub struct Pipeline {
    pub sampler: Sampler,
    pub tracker: Box<dyn Tracker>,
    pub inventory: InventoryState,
}

impl Pipeline {
    /// Takes one sample and publishes it.
    pub fn sample_and_publish(&mut self, shared: &Shared, slipped: u64) -> anyhow::Result<()> {
        let began = Instant::now();
        let sample = self.sampler.sample(self.tracker.as_mut())?;
        self.publish(shared, sample, began.elapsed(), slipped);
        Ok(())
    }

    /// Appends `sample` to the published history, with its inventory.
    fn publish(&mut self, shared: &Shared, sample: Sample, took: Duration, slipped: u64) {
        let current = shared.load();
        let sampling = SamplingStats {
            samples_taken: current.sampling.samples_taken + 1,
            samples_slipped: current.sampling.samples_slipped + slipped,
            last_sample_seconds: took.as_secs_f64(),
            tracked_processes: sample.processes().len(),
            containers: sample
                .containers()
                .filter(|(_, processes, _)| !processes.is_empty())
                .count(),
            open_descriptors: self.sampler.open_descriptors(),
        };
        let history = current.history.with(sample);
        let inventory = self.inventory.update(&history);
        current.durations.0.observe(sampling.last_sample_seconds);
        shared.current.store(Arc::new(Published {
            history,
            tracker: self.tracker.kind(),
            tracker_stats: self.tracker.stats(),
            sampling,
            inventory,
            durations: current.durations.clone(),
            metrics: OnceLock::new(),
        }));
    }

    /// Takes samples every `period` on a fixed schedule (no drift: the n-th sample is due at
    /// start + n × period) until `stop` is raised. A sample that overruns makes the schedule
    /// skip the ticks it covered; they are counted as slipped.
    pub fn run(mut self, shared: Shared, period: Duration, stop: Arc<Stop>) {
        let start = Instant::now();
        let mut tick: u32 = 1;
        while self.tracker.wait_until(start + period * tick, &stop) {
            let began = Instant::now();
            let sample = self.sampler.sample(self.tracker.as_mut());
            let took = began.elapsed();
            let next = (start.elapsed().as_nanos() / period.as_nanos()) as u32 + 1;
            let slipped = u64::from(next.saturating_sub(tick + 1));
            if slipped > 0 {
                warn!(
                    slipped,
                    ?took,
                    "sampling overran its period; skipping to the next tick"
                );
            }
            match sample {
                Ok(sample) => self.publish(&shared, sample, took, slipped),
                Err(err) => warn!("sample failed: {err:#}"),
            }
            tick = next;
        }
        info!("sampler stopped");
    }
}
