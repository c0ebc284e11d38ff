//! `mountinfo`: the mounts of a mount namespace, the one parser of them in the service (cgroup
//! hierarchies and tracefs are found through it).

use anyhow::Context;
use procfs::process::MountInfo;

/// The mounts of a mountinfo text, one per line that parses; other lines are skipped.
pub fn mounts(text: &[u8]) -> impl Iterator<Item = MountInfo> + '_ {
    text.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(|line| MountInfo::from_line(line).ok())
}

/// The mounts of this process's mount namespace (`/proc/self/mountinfo`, always the real /proc:
/// the mounts are this process's own, not the monitored host's).
pub fn own_mounts() -> anyhow::Result<Vec<MountInfo>> {
    const PATH: &str = "/proc/self/mountinfo";
    let text = std::fs::read(PATH).with_context(|| format!("reading {PATH}"))?;
    Ok(mounts(&text).collect())
}
