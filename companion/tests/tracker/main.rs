//! The eBPF tracker (`--tracker ebpf`) end to end: forks, execs, exits and cgroup moves followed
//! from kernel events, churn, lost events and their repair, and agreement with the /proc scan.
//! BPF works on the test hosts (root): a failure to load is a failure, never a skip.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, cpu_heavy, pid_set, proc, spawn,
    wait_children, wait_for, wait_threads,
};

/// Reconciliation only when events are lost, never on schedule during a test: what the tests see
/// comes from the events.
const NO_SCHEDULED_RECONCILE: [&str; 2] = ["--reconcile-every", "1h"];

fn ebpf(extra: &[&str]) -> Service {
    let mut args = NO_SCHEDULED_RECONCILE.to_vec();
    args.extend_from_slice(extra);
    Service::with_tracker(Tracker::Ebpf, &args)
}

/// Polls until `check` holds and returns how many samples were published meanwhile (an upper
/// bound of the samples it took).
fn samples_until(service: &Service, what: &str, mut check: impl FnMut(&Service) -> bool) -> u64 {
    let start = service.samples_taken();
    service.wait_until(what, service.patience(), |s| {
        if check(s) {
            Ok(())
        } else {
            Err(format!("{} samples so far", s.samples_taken() - start))
        }
    });
    service.samples_taken() - start
}

/// "By the next sample or two", plus one for the polling race.
const MAX_SAMPLES: u64 = 3;

fn listed_in(service: &Service, container: &Container) -> BTreeSet<Pid> {
    service.pids(&container.path).unwrap_or_default()
}

/// The API's sets for these containers equal the ground truth read from /proc now.
fn matches_ground_truth(service: &Service, containers: &[Container]) -> Result<(), String> {
    for c in containers {
        let truth = c.listable();
        let listed = listed_in(service, c);
        if listed != truth {
            let missing: Vec<_> = truth.difference(&listed).collect();
            let extra: Vec<_> = listed.difference(&truth).collect();
            return Err(format!("{}: missing {missing:?}, extra {extra:?}", c.path));
        }
    }
    Ok(())
}

mod agreement;
mod churn;
mod events;
