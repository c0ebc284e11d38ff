//! The fallback tracker: every sample, list /proc and read each process's cgroup file.
//! Its cost grows with every process on the host; the eBPF tracker's does not.

use std::time::Instant;

use anyhow::Context;
use tracing::debug;

use super::{ContainerNames, Exit, Processes, Stop, Tracked, Tracker, TrackerKind, TrackerStats};
use crate::{
    cgroup::{Naming, container_of, read_membership},
    procfs::{self, ProcRoot},
};

pub struct ProcScan {
    root: ProcRoot,
    naming: Naming,
    names: ContainerNames,
    processes: Processes,
    buf: Vec<u8>,
    scans: u64,
    degraded: Option<String>,
}

impl ProcScan {
    pub fn new(root: ProcRoot, naming: Naming) -> ProcScan {
        ProcScan {
            root,
            naming,
            names: ContainerNames::default(),
            processes: Processes::new(),
            buf: Vec::with_capacity(4096),
            scans: 0,
            degraded: None,
        }
    }

    /// Marks this tracker as a fallback for a failed eBPF tracker, with the reason.
    pub fn degraded(mut self, why: String) -> ProcScan {
        self.degraded = Some(why);
        self
    }
}

/// One pass over /proc: every process in a container, with its container. Processes that vanish
/// while being read are skipped.
pub fn scan(
    root: &ProcRoot,
    naming: Naming,
    names: &mut ContainerNames,
    buf: &mut Vec<u8>,
    mut found: impl FnMut(procfs::Pid, Tracked),
) -> anyhow::Result<()> {
    let pids = root
        .pids()
        .with_context(|| format!("listing {}", root.path().display()))?;
    for pid in pids {
        match read_membership(root, pid, naming, buf) {
            Ok(()) => {}
            Err(err) if procfs::is_gone(&err) => continue,
            Err(err) => {
                debug!(pid, %err, "cannot read cgroup");
                continue;
            }
        }
        if let Some(path) = container_of(buf, naming) {
            let tracked = Tracked {
                container: names.intern(path),
                execs: 0,
                verified: true,
            };
            found(pid, tracked);
        }
    }
    Ok(())
}

impl Tracker for ProcScan {
    fn kind(&self) -> TrackerKind {
        TrackerKind::Procfs
    }

    fn refresh(&mut self) -> anyhow::Result<()> {
        let mut next = Processes::with_capacity(self.processes.len());
        scan(
            &self.root,
            self.naming,
            &mut self.names,
            &mut self.buf,
            |pid, tracked| {
                next.insert(pid, tracked);
            },
        )?;
        self.processes = next;
        self.names.prune();
        self.scans += 1;
        Ok(())
    }

    fn processes(&self) -> &Processes {
        &self.processes
    }

    fn exits(&self) -> &[Exit] {
        &[]
    }

    fn wait_until(&mut self, deadline: Instant, stop: &Stop) -> bool {
        stop.sleep_until(deadline)
    }

    fn stats(&self) -> TrackerStats {
        TrackerStats {
            reconciliations: 0,
            degraded: self.degraded.clone(),
            ..TrackerStats::default()
        }
    }
}
