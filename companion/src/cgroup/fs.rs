//! Where the cgroup hierarchies are mounted in this mount namespace (from the mounts `procfs`
//! parses). This service reads cgroup files, never writes them.

use std::path::{Path, PathBuf};

use procfs::process::MountInfo;
use tracing::debug;

use crate::procfs::own_mounts;

/// The mounted cgroup hierarchies this service reads limits, throttling and pressure from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFs {
    /// The cgroup v1 hierarchy with the cpu controller.
    cpu_v1: Option<PathBuf>,
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
                debug!("cgroup limits unknown: {err:#}");
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
                "cgroup" => {
                    let has = |controller| options.iter().any(|o| o == controller);
                    if fs.cpu_v1.is_none() && has("cpu") {
                        fs.cpu_v1 = Some(point.clone());
                    }
                    if fs.memory_v1.is_none() && has("memory") {
                        fs.memory_v1 = Some(point);
                    }
                }
                _ => {}
            }
        }
        fs
    }

    /// The cgroup v1 hierarchy with the cpu controller, when the host has one.
    pub fn cpu_v1(&self) -> Option<&Path> {
        self.cpu_v1.as_deref()
    }

    /// The cgroup v1 hierarchy with the memory controller, when the host has one.
    pub fn memory_v1(&self) -> Option<&Path> {
        self.memory_v1.as_deref()
    }

    /// The cgroup v2 hierarchy, when mounted.
    pub fn unified(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_one_mount_per_controller() {
        let at = |name: &str| PathBuf::from("/fs").join(name);
        let fs = CgroupFs::from_mounts([
            ("tmpfs".to_owned(), at("tmp"), vec![]),
            ("cgroup".to_owned(), at("cpuset"), vec!["cpuset".to_owned()]),
            (
                "cgroup".to_owned(),
                at("cpu,cpuacct"),
                vec!["rw".to_owned(), "cpu".to_owned(), "cpuacct".to_owned()],
            ),
            ("cgroup".to_owned(), at("memory"), vec!["memory".to_owned()]),
            (
                "cgroup".to_owned(),
                at("memory2"),
                vec!["memory".to_owned()],
            ),
            ("cgroup2".to_owned(), at("unified"), vec![]),
        ]);
        assert_eq!(fs.cpu_v1(), Some(at("cpu,cpuacct").as_path()));
        assert_eq!(
            fs.memory_v1(),
            Some(at("memory").as_path()),
            "the first one"
        );
        assert_eq!(fs.unified(), Some(at("unified").as_path()));
        let v2 = CgroupFs::from_mounts([("cgroup2".to_owned(), at("cgroup"), vec![])]);
        assert_eq!((v2.cpu_v1(), v2.memory_v1()), (None, None));
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
