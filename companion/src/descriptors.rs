//! The open-file limit, and what the sampler may keep open within it.
//!
//! Each tracked process costs two descriptors (its stat and status, read with pread every
//! sample); beyond the budget a process is read by open/read/close, about twice the CPU. So at
//! start the soft limit is raised to the hard one, and — when privileged (CAP_SYS_RESOURCE) — both
//! to the kernel's ceiling `fs.nr_open`. The kernel allocates a process's descriptor table as it
//! fills, so a high limit costs nothing until used.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use serde::Serialize;
use tracing::{info, warn};

/// Descriptors kept for other uses (connections, the BPF side, logs) before the sampler's share.
pub const RESERVE: u64 = 2048;

/// The open-file limit as set at start, and its shares. Shown by `/healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct OpenFiles {
    /// The soft limit in effect.
    pub limit: u64,
    /// The soft limit the service started with.
    pub initial_limit: u64,
    /// The kernel's ceiling (`fs.nr_open`), when readable.
    pub kernel_max: Option<u64>,
    /// Why the limit is what it is.
    pub reason: String,
    /// Descriptors the sampler may keep open: two per process (its stat and status), one per
    /// cgroup file (about a dozen per container), first come first served.
    pub budget: usize,
    /// Of them, not in use now.
    #[serde(serialize_with = "left")]
    pub left: Budget,
}

fn left<S: serde::Serializer>(budget: &Budget, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(budget.left() as u64)
}

/// Descriptors that may still be taken, shared by the sampler's process files and the cgroup
/// reader: what one does not use, the other may. Both return theirs when they close them.
#[derive(Clone, Debug)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    pub fn new(descriptors: usize) -> Budget {
        Budget(Arc::new(AtomicUsize::new(descriptors)))
    }

    /// Takes `n` descriptors if that many are left.
    pub fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(n))
            .is_ok()
    }

    pub fn give(&self, n: usize) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn left(&self) -> usize {
        self.0.load(Relaxed)
    }
}

impl OpenFiles {
    /// Raises the limit as far as allowed; what is left after the reserve is the sampler's
    /// budget. Logs what it did and why.
    pub fn raise() -> OpenFiles {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let start = getrlimit(Resource::Nofile);
        let initial_limit = start.current.unwrap_or(u64::MAX);
        // A kernel-wide setting: the service's own /proc has it, whatever --proc-root says.
        let kernel_max = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        let hard = start.maximum.unwrap_or(u64::MAX);
        let reason = match kernel_max {
            Some(max) if max > hard || initial_limit < max.min(hard) => {
                let whole = Rlimit {
                    current: Some(max),
                    maximum: Some(max.max(hard)),
                };
                match setrlimit(Resource::Nofile, whole) {
                    Ok(()) => format!(
                        "raised to fs.nr_open ({max}), the kernel's ceiling: privileged, so every \
                         tracked process's stat and status can stay open"
                    ),
                    Err(_) => raise_to_hard(start, hard, max),
                }
            }
            Some(max) => format!("already at fs.nr_open ({max}), the kernel's ceiling"),
            None => raise_to_hard(start, hard, hard),
        };
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        let budget = usize::try_from(limit.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
        let open_files = OpenFiles {
            limit,
            initial_limit,
            kernel_max,
            reason,
            budget,
            left: Budget::new(budget),
        };
        info!(
            limit,
            initial_limit,
            kernel_max,
            budget,
            "open-file limit {}; beyond about {} processes (two descriptors each, and the cgroup \
             files' share), stat and status are opened for each read",
            open_files.reason,
            budget / 2,
        );
        open_files
    }
}

/// Without the privilege to pass the hard limit: the soft limit goes up to it.
fn raise_to_hard(start: rustix::process::Rlimit, hard: u64, max: u64) -> String {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let why = if hard < max {
        format!(
            "; raising it up to fs.nr_open ({max}) needs CAP_SYS_RESOURCE (or a higher hard limit, \
             e.g. LimitNOFILE= or --ulimit nofile=)"
        )
    } else {
        String::new()
    };
    if start.current == Some(hard) {
        return format!("the hard limit ({hard}){why}");
    }
    let soft = Rlimit {
        current: Some(hard),
        maximum: start.maximum,
    };
    match setrlimit(Resource::Nofile, soft) {
        Ok(()) => format!("raised to the hard limit ({hard}){why}"),
        Err(err) => {
            warn!("cannot raise the open-file limit to the hard limit {hard}: {err}");
            format!("left as it was: raising it to the hard limit ({hard}) failed: {err}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_never_overdrawn() {
        let budget = Budget::new(5);
        let other = budget.clone();
        assert!(budget.take(2));
        assert!(other.take(2));
        assert!(!budget.take(2), "one left");
        assert!(other.take(1));
        assert_eq!(budget.left(), 0);
        other.give(2);
        assert_eq!(budget.left(), 2);
    }
}
