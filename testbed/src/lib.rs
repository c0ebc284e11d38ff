//! `testbed`: the simulated host, shared by the end-to-end tests (`companion/tests/`), the
//! benchmark and the soak (`bench/`): real cgroups, real processes, the real `companion` binary,
//! and the ground truth read from /proc through the `procfs` crate.
//!
//! Host simulation (used by all):
//! - [`cgroup::TestCgroup`]: simulated containers under a unique prefix, processes started inside
//!   them, moves; on drop everything it started is killed by PID and its cgroups are removed.
//! - [`cgroup::CgroupMount`]: the hierarchy that names containers, as the service picks it, and
//!   [`cgroup::Hierarchy`]: every hierarchy of a hybrid host, found in mountinfo.
//! - [`sweep`]: leftovers of dead runs (tests or benchmarks) found and removed; the directory
//!   walks every clean-up needs.
//! - [`spawn::join_before_exec`]: a child joins its cgroups between fork and exec, as
//!   `docker exec` does.
//! - [`proc`]: the ground truth, read from /proc through the `procfs` crate.
//!
//! End-to-end tests:
//!
//! - [`service::Service`]: the binary on a free port, ready when /healthz answers; queried with
//!   a raw HTTP/1.1 client ([`http`]); stopped with SIGTERM on drop, its log printed when the
//!   test fails.
//! - [`api`]: the v1.0 contract as checks (keys, order, types, sorting, share invariants), run on
//!   every 200 answer the harness sees.
//! - [`spawn`]: the kinds of processes the tests need (busy, idle, oddly named, threaded,
//!   forking, short-lived).
//! - [`oneshot`]: runs expected to end by themselves (a refused start: exit status, stderr);
//!   [`service::StartOptions`] starts a service through a wrapper or with another readiness probe.
//! - [`tls`]: a private CA with server and client certificates, and a TLS client.
//! - [`openmetrics`]: /metrics parsed by the Prometheus client's strict OpenMetrics parser.
//! - [`docker`]: real Docker containers (a test image made offline, unique names, removal on
//!   drop) and the ground truth of `docker top` and `docker inspect`.
//!
//! Everything here needs root on a host with cgroups and BPF.

pub mod api;
pub mod cgroup;
pub mod docker;
pub mod http;
pub mod oneshot;
pub mod openmetrics;
pub mod proc;
pub mod service;
pub mod spawn;
pub mod sweep;
pub mod tls;

use std::{
    collections::BTreeSet,
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

pub use cgroup::{CgroupMount, Container, Hierarchy, TestCgroup, unique_id};
pub use proc::Pid;
pub use service::{Service, Tracker};

/// A set of pids, as the API's answers are compared.
pub fn pid_set(pids: &[Pid]) -> BTreeSet<Pid> {
    pids.iter().copied().collect()
}

/// Polls `check` every 20 ms until it returns `Ok`, for at most `timeout`; panics with `what`
/// and the last `Err` reason otherwise.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let began = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(reason) => {
                if began.elapsed() >= timeout {
                    panic!("timed out after {timeout:?} waiting for {what}: {reason}");
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a process has at least `n` threads (leader included); returns their ids.
pub fn wait_threads(pid: Pid, n: usize) -> Vec<Pid> {
    wait_for(
        &format!("{n} threads in {pid}"),
        Duration::from_secs(10),
        || {
            let tids = proc::threads(pid);
            if tids.len() >= n {
                Ok(tids)
            } else {
                Err(format!("{tids:?}"))
            }
        },
    )
}

/// Waits until a process has at least `n` children; returns them.
pub fn wait_children(pid: Pid, n: usize) -> Vec<Pid> {
    wait_for(
        &format!("{n} children of {pid}"),
        Duration::from_secs(10),
        || {
            let children = proc::children(pid);
            if children.len() >= n {
                Ok(children.into_iter().collect())
            } else {
                Err(format!("{children:?}"))
            }
        },
    )
}

/// Tests that burn CPU (busy loops, churn) or measure it take this lock, so at most one of them
/// runs at a time in a test binary and their CPU figures are not distorted by each other.
pub fn cpu_heavy() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes each test body once for both trackers:
///
/// ```ignore
/// fn schema(tracker: Tracker) { … }
/// both_trackers!(schema, cpu_shares);
/// ```
///
/// makes modules `procfs` and `ebpf`, each with one `#[test]` per body calling
/// `super::body(Tracker::…)` (test names `procfs::schema`, `ebpf::schema`).
#[macro_export]
macro_rules! both_trackers {
    ($($name:ident),* $(,)?) => {
        mod procfs {
            $( #[test] fn $name() { super::$name($crate::Tracker::Procfs) } )*
        }
        mod ebpf {
            $( #[test] fn $name() { super::$name($crate::Tracker::Ebpf) } )*
        }
    };
}
