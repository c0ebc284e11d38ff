//! The kit the benchmark and the soak share: the service as a measured child process
//! ([`service`]), a plain HTTP/1.1 client ([`http`]), statistics ([`stats`]), everything the run
//! changes on the host and its undoing ([`cleanup`]), registered children spawned into cgroups
//! ([`process`]), the machine's description ([`machine`]) and the flags both take ([`flags`]).
//! The simulated host itself (cgroup mounts and naming, joining a cgroup before exec, sweeping
//! dead runs, ground truth from /proc) is the `testbed` crate's, shared with the end-to-end
//! tests.

pub mod cleanup;
pub mod flags;
pub mod http;
pub mod machine;
pub mod process;
pub mod service;
pub mod stats;

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::ValueEnum;
use testbed::CgroupMount;

/// The service's tracker mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tracker {
    Ebpf,
    Procfs,
}

impl fmt::Display for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tracker::Ebpf => "ebpf",
            Tracker::Procfs => "procfs",
        })
    }
}

/// The workspace root: the bench crate's parent directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// What both the benchmark and the soak do first: check for root, count signals instead of
/// dying of them, create the work directory. Everything is undone when the guard drops.
pub fn begin(work_dir: &Path) -> anyhow::Result<cleanup::Guard> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root: it creates cgroups and the service loads eBPF");
    }
    cleanup::install_signal_handlers()?;
    let guard = cleanup::Guard;
    fs::create_dir_all(work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    Ok(guard)
}

/// The result of a run, or that it was interrupted (its guards cleaned up on the way out, and
/// whatever failed after the signal is moot).
pub fn end(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if cleanup::interrupted() {
        bail!("interrupted; everything the run started was cleaned up");
    }
    result
}

/// The naming hierarchy, swept of dead runs' leftovers, and this run's own base cgroup in it
/// (`companion-bench-<pid>`, registered for cleanup).
pub fn own_base() -> anyhow::Result<(CgroupMount, PathBuf)> {
    let mount = CgroupMount::find().map_err(anyhow::Error::msg)?;
    testbed::sweep::dead_runs();
    let base = mount.path.join(format!(
        "{}{}",
        testbed::sweep::BENCH_PREFIX,
        std::process::id()
    ));
    cleanup::create_cgroup(&base)?;
    Ok((mount, base))
}
