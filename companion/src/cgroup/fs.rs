//! Reading (never writing) cgroup files: where the hierarchies are mounted in this mount
//! namespace (from the mounts `procfs` parses), and a container's memory limit.

use std::path::{Path, PathBuf};

use procfs::process::MountInfo;
use tracing::debug;

use crate::procfs::own_mounts;

/// Limits at or above this are "no limit" (cgroup v1 prints a page-rounded `i64::MAX`).
const UNLIMITED: u64 = 1 << 62;

/// The mounted cgroup hierarchies this service reads limits from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFs {
    /// The cgroup v1 hierarchy with the memory controller.
    memory_v1: Option<PathBuf>,
    /// The cgroup v2 hierarchy.
    unified: Option<PathBuf>,
}

impl CgroupFs {
    /// Finds the hierarchies in /proc/self/mountinfo; a missing one means limits from it are
    /// unknown, not an error.
    pub fn discover() -> CgroupFs {
        match own_mounts() {
            Ok(mounts) => CgroupFs::from_mountinfo(mounts),
            Err(err) => {
                debug!("memory limits unknown: {err:#}");
                CgroupFs::default()
            }
        }
    }

    /// From the parsed lines of a mountinfo file.
    pub fn from_mountinfo(mounts: impl IntoIterator<Item = MountInfo>) -> CgroupFs {
        CgroupFs::from_mounts(mounts.into_iter().map(|m| {
            let options = m.super_options.into_keys().collect();
            (m.fs_type, m.mount_point, options)
        }))
    }

    /// From (file system type, mount point, super options) of each mount.
    pub fn from_mounts(
        mounts: impl IntoIterator<Item = (String, PathBuf, Vec<String>)>,
    ) -> CgroupFs {
        let mut fs = CgroupFs::default();
        for (fs_type, point, options) in mounts {
            match fs_type.as_str() {
                "cgroup2" if fs.unified.is_none() => fs.unified = Some(point),
                "cgroup" if fs.memory_v1.is_none() && options.iter().any(|o| o == "memory") => {
                    fs.memory_v1 = Some(point)
                }
                _ => {}
            }
        }
        fs
    }

    /// The memory limit of the cgroup at `path` in bytes; `None` when it has none or it cannot be
    /// read. The v1 memory hierarchy is asked first (where a hybrid host enforces limits), then v2.
    pub fn memory_limit(&self, path: &str) -> Option<u64> {
        let relative = path.trim_start_matches('/');
        let v1 = self
            .memory_v1
            .as_deref()
            .map(|m| m.join(relative).join("memory.limit_in_bytes"));
        let v2 = self
            .unified
            .as_deref()
            .map(|m| m.join(relative).join("memory.max"));
        [v1, v2]
            .into_iter()
            .flatten()
            .find_map(|file| read_limit(&file))
    }
}

impl CgroupFs {
    /// How many processes the OOM killer killed in the cgroup at `path` since it was created:
    /// `oom_kill` of the v1 `memory.oom_control`, else of the v2 `memory.events`. `None` when
    /// neither can be read.
    pub fn oom_kills(&self, path: &str) -> Option<u64> {
        let relative = path.trim_start_matches('/');
        let v1 = self
            .memory_v1
            .as_deref()
            .map(|m| m.join(relative).join("memory.oom_control"));
        let v2 = self
            .unified
            .as_deref()
            .map(|m| m.join(relative).join("memory.events"));
        [v1, v2].into_iter().flatten().find_map(|file| {
            let text = std::fs::read_to_string(file).ok()?;
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
        })
    }
}

fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let limit: u64 = text.trim().parse().ok()?; // "max" (v2) fails here: no limit
    (limit < UNLIMITED).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_and_reads_limits() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory");
        let v2 = dir.path().join("unified");
        for (base, name, value) in [
            (&v1, "memory.limit_in_bytes", "268435456\n"),
            (&v2, "memory.max", "max\n"),
        ] {
            std::fs::create_dir_all(base.join("docker/a")).unwrap();
            std::fs::write(base.join("docker/a").join(name), value).unwrap();
        }
        std::fs::create_dir_all(v1.join("docker/b")).unwrap();
        std::fs::write(
            v1.join("docker/b/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::create_dir_all(v2.join("docker/c")).unwrap();
        std::fs::write(v2.join("docker/c/memory.max"), "1048576\n").unwrap();

        let fs = CgroupFs::from_mounts([
            ("tmpfs".to_owned(), dir.path().to_path_buf(), vec![]),
            (
                "cgroup".to_owned(),
                dir.path().join("cpu"),
                vec!["cpu".to_owned()],
            ),
            ("cgroup".to_owned(), v1.clone(), vec!["memory".to_owned()]),
            ("cgroup2".to_owned(), v2.clone(), vec![]),
        ]);
        assert_eq!(fs.memory_limit("/docker/a"), Some(268435456));
        assert_eq!(fs.memory_limit("/docker/b"), None, "v1 unlimited");
        assert_eq!(fs.memory_limit("/docker/c"), Some(1048576), "v2 limit");
        assert_eq!(fs.memory_limit("/docker/none"), None);
    }

    #[test]
    fn reads_oom_kill_counters() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("memory"), dir.path().join("unified"));
        std::fs::create_dir_all(v1.join("a")).unwrap();
        std::fs::write(
            v1.join("a/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        std::fs::create_dir_all(v2.join("b")).unwrap();
        std::fs::write(
            v2.join("b/memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        let fs = CgroupFs::from_mounts([
            ("cgroup".to_owned(), v1, vec!["memory".to_owned()]),
            ("cgroup2".to_owned(), v2, vec![]),
        ]);
        assert_eq!(fs.oom_kills("/a"), Some(3));
        assert_eq!(fs.oom_kills("/b"), Some(2), "v2 when v1 has no such cgroup");
        assert_eq!(fs.oom_kills("/none"), None);
    }

    #[test]
    fn this_machine_has_cgroups() {
        assert_ne!(CgroupFs::discover(), CgroupFs::default());
    }

    #[test]
    fn mountinfo_lines() {
        let text =
            b"35 24 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory\n\
garbage line\n\
40 24 0:35 / /sys/fs/cgroup/unified rw,nosuid shared:21 - cgroup2 cgroup2 rw\n";
        let fs = CgroupFs::from_mountinfo(crate::procfs::mounts(text));
        assert_eq!(
            fs.memory_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            fs.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn mountinfo_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = CgroupFs::from_mountinfo(crate::procfs::mounts(&bytes));
            }

            #[test]
            fn mountinfo_like_lines_never_panic(
                lines in proptest::collection::vec("[0-9]{1,3} [0-9]{1,3} [0-9]:[0-9]{1,2} [ -~]{0,60}", 0..10)
            ) {
                let _ = CgroupFs::from_mountinfo(crate::procfs::mounts(lines.join("\n").as_bytes()));
            }

            #[test]
            fn mount_points_round_trip(point in "(/[a-z0-9_.-]{1,10}){1,4}") {
                let line = format!("40 24 0:35 / {point} rw,nosuid shared:21 - cgroup2 cgroup2 rw\n");
                let fs = CgroupFs::from_mountinfo(crate::procfs::mounts(line.as_bytes()));
                prop_assert_eq!(fs.unified, Some(PathBuf::from(point)));
            }
        }
    }
}
