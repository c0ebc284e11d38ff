//! Leftovers of dead runs: the cgroups (and any processes still in them) of a test or benchmark
//! process that no longer runs (crashed, or killed with SIGKILL). Every run sweeps once, before
//! it creates its own.
//!
//! A run's cgroups carry its pid in their names: `companion-test-<pid>-…` (a test's prefix),
//! `companion-bench-<pid>` (a benchmark's or soak's base) or a container id made by
//! [`crate::unique_id`] (`c0de7e57<pid as 8 hex digits>…`, used outside the prefix).

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid as NixPid};

use crate::{
    cgroup::Hierarchy,
    proc::{self, Pid},
};

/// Directory names of test cgroups start with this; the pid of the test process follows.
pub const PREFIX: &str = "companion-test-";
/// The base cgroup of a benchmark or soak run is this followed by its pid.
pub const BENCH_PREFIX: &str = "companion-bench-";
/// Container ids made by [`crate::unique_id`] start with this marker, then the test process's
/// pid (8 hex digits), so leftovers of a crashed run can be recognised.
pub const ID_MARKER: &str = "c0de7e57";

/// The pid of the run a cgroup directory name was made by, if it is one.
pub fn owner_of(name: &str) -> Option<Pid> {
    if let Some(rest) = name.strip_prefix(PREFIX) {
        return rest.split('-').next()?.parse().ok();
    }
    if let Some(rest) = name.strip_prefix(BENCH_PREFIX) {
        return rest.parse().ok();
    }
    let at = name.find(ID_MARKER)?;
    let hex = name.get(at + ID_MARKER.len()..at + ID_MARKER.len() + 8)?;
    Pid::from_str_radix(hex, 16).ok()
}

/// Removes the cgroups of runs that no longer run, in every hierarchy: kills the processes
/// inside by PID (what a dead run started and left behind), then removes the directories
/// deepest first. Returns the directories swept.
pub fn dead_runs() -> Vec<PathBuf> {
    let mut stale = Vec::new();
    for hierarchy in Hierarchy::ALL {
        if let Some(root) = hierarchy.mounted() {
            find_stale(root, 0, &mut stale);
        }
    }
    for dir in &stale {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = procs_below(dir);
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(10));
        }
        for d in dirs_deepest_first(dir) {
            let _ = remove_cgroup(&d, Duration::from_secs(1));
        }
        eprintln!("removed leftover cgroups {}", dir.display());
    }
    stale
}

fn find_stale(dir: &Path, depth: usize, stale: &mut Vec<PathBuf>) {
    if depth > 5 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match owner_of(&name) {
            Some(pid) if pid != std::process::id() && !proc::alive(pid) => stale.push(path),
            Some(_) => {}
            None => find_stale(&path, depth + 1, stale),
        }
    }
}

/// `dir` and every directory below it, deepest first (the order cgroups can be removed in).
pub fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    collect(&entry.path(), out);
                }
            }
        }
    }
    let mut dirs = Vec::new();
    collect(dir, &mut dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs
}

/// Every process in a cgroup and the cgroups below it.
pub fn procs_below(dir: &Path) -> BTreeSet<Pid> {
    dirs_deepest_first(dir)
        .iter()
        .flat_map(|d| proc::cgroup_procs(d))
        .collect()
}

/// Removes an empty cgroup, retrying while it is busy (processes still being reaped); true when
/// it is gone. A cgroup that still has child cgroups (another test's) stays.
pub fn remove_cgroup(dir: &Path, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return true,
            Err(err) => {
                let has_children = fs::read_dir(dir)
                    .map(|d| d.flatten().any(|e| e.path().is_dir()))
                    .unwrap_or(false);
                if has_children || Instant::now() >= deadline {
                    if !has_children {
                        eprintln!("cannot remove cgroup {}: {err}", dir.display());
                    }
                    return false;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_owners_are_recognised() {
        let id = crate::unique_id();
        assert_eq!(owner_of(&id), Some(std::process::id()));
        assert_eq!(
            owner_of(&format!("docker-{id}.scope")),
            Some(std::process::id())
        );
        assert_eq!(owner_of("companion-test-42-1-abcdef"), Some(42));
        assert_eq!(owner_of("companion-bench-4242"), Some(4242));
        assert_eq!(owner_of("docker"), None);
    }
}
