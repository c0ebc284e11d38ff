//! The run's own children: spawned (optionally into a cgroup, joined before exec) and
//! registered with [`cleanup`] at once, so that they are always ended and reaped.

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context;
use testbed::spawn::join_before_exec;

use super::cleanup;

/// Opens a cgroup's `cgroup.procs` for writing (a child joins through it, see [`spawn`]).
pub fn open_procs(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Spawns `bin args` with no stdio, dying with its parent thread, optionally joining a cgroup
/// (by writing "0" to an open `cgroup.procs`) before exec. Registers the pid.
pub fn spawn(bin: &Path, args: &[OsString], cgroup_procs: Option<i32>) -> anyhow::Result<u32> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    join_before_exec(
        &mut cmd,
        cgroup_procs.into_iter().collect(),
        Some(libc::SIGKILL),
    );
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    // The child is reaped by pid (see cleanup): dropping the handle neither kills nor waits.
    drop(child);
    cleanup::register_pid(pid);
    Ok(pid)
}

/// Finds a program in PATH once, so thousands of spawns skip the search.
pub fn which(name: &str) -> anyhow::Result<PathBuf> {
    which::which(name).with_context(|| format!("`{name}` not found in PATH"))
}
