//! The write side: the sampler thread's loop.
//!
//! [`Pipeline::run`] keeps a fixed schedule; each tick it takes a sample, appends it to the
//! history, computes the inventory, records what ended in the exit ledger and publishes the result in the [`store`](crate::store).

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::{
    events::EventHub,
    exits::Ledger,
    inventory::InventoryState,
    model::Sample,
    sampler::Sampler,
    store::{Published, SamplingStats, Shared},
    tracker::{Stop, Tracker},
};

/// The sampler thread's tools: what reads, what knows who to read, what sums up.
pub struct Pipeline {
    pub sampler: Sampler,
    pub tracker: Box<dyn Tracker>,
    pub inventory: InventoryState,
    /// Where each publication is told (`GET /api/v2/events`).
    pub events: Arc<EventHub>,
    pub ledger: Ledger,
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
            sampler_threads: self.sampler.threads_used(),
        };
        self.ledger.record(
            self.sampler.take_ended(),
            sample
                .containers()
                .filter(|(_, processes, _)| !processes.is_empty())
                .map(|(path, _, _)| path),
        );
        let exits = self.ledger.exits();
        let history = current.history.with(sample);
        let mut inventory = self.inventory.update(&history);
        for container in &mut inventory.containers {
            container.exits = exits.totals(&container.path);
        }
        current.durations.0.observe(sampling.last_sample_seconds);
        shared.publish(Published {
            history,
            tracker: self.tracker.kind(),
            tracker_stats: self.tracker.stats(),
            sampling,
            inventory,
            exits,
            durations: current.durations.clone(),
            metrics: OnceLock::new(),
        });
        // Told once published: a client that fetches on a `sample` event sees that sample.
        self.events
            .tell_sample(&shared.load().history, self.tracker.activity());
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
