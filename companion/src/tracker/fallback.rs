//! Keeps the service sampling when the eBPF side fails after start: the /proc scan takes over,
//! and /healthz reports `degraded` with the reason.

use std::time::Instant;

use tracing::error;

use super::{
    ActivityLog, Exit, Processes, Stop, Tracker, TrackerKind, TrackerStats, procscan::ProcScan,
};

pub struct Fallback {
    current: Box<dyn Tracker>,
    /// Builds the replacement; taken when used.
    replacement: Option<Box<dyn FnOnce(String) -> ProcScan + Send>>,
    /// Test seam (`--test-fail-ebpf-after`): fail on purpose after this many refreshes.
    fail_after: Option<u32>,
    refreshes: u32,
}

impl Fallback {
    pub fn new(
        primary: Box<dyn Tracker>,
        replacement: impl FnOnce(String) -> ProcScan + Send + 'static,
        fail_after: Option<u32>,
    ) -> Fallback {
        Fallback {
            current: primary,
            replacement: Some(Box::new(replacement)),
            fail_after,
            refreshes: 0,
        }
    }

    fn primary_refresh(&mut self) -> anyhow::Result<()> {
        self.refreshes = self.refreshes.saturating_add(1);
        if self.replacement.is_some() && self.fail_after.is_some_and(|n| self.refreshes > n) {
            anyhow::bail!("failure injected by --test-fail-ebpf-after");
        }
        self.current.refresh()
    }
}

impl Tracker for Fallback {
    fn kind(&self) -> TrackerKind {
        self.current.kind()
    }

    fn refresh(&mut self) -> anyhow::Result<()> {
        let Err(err) = self.primary_refresh() else {
            return Ok(());
        };
        let Some(replace) = self.replacement.take() else {
            return Err(err);
        };
        let reason = format!(
            "the {} tracker failed: {err:#}; scanning /proc instead",
            self.current.kind()
        );
        error!("{reason}");
        // Dropping the eBPF tracker detaches its programs.
        self.current = Box::new(replace(reason));
        self.current.refresh()
    }

    fn processes(&self) -> &Processes {
        self.current.processes()
    }

    fn exits(&self) -> &[Exit] {
        self.current.exits()
    }

    fn activity(&self) -> &ActivityLog {
        self.current.activity()
    }

    fn wait_until(&mut self, deadline: Instant, stop: &Stop) -> bool {
        self.current.wait_until(deadline, stop)
    }

    fn stats(&self) -> TrackerStats {
        self.current.stats()
    }
}
