//! Which cgroup is "the container" of a process (membership), which hierarchy that is on this
//! host, and what the cgroup says of a container: its identity, and from its files (fs) its
//! limits, throttling and pressure (limits, pressure, read by reader, shown as figures).

pub mod figures;
mod fs;
mod identity;
pub mod limits;
mod membership;
pub mod pressure;
mod reader;

pub use figures::CgroupFigures;
pub use fs::CgroupFs;
pub use identity::Identity;
pub use membership::{CgroupLine, container_of, parse_cgroup, read_membership};
pub use reader::{CgroupReader, CgroupReading, ReadError};

use std::path::Path;

use anyhow::Context;
use procfs::FromRead;

/// Joins the host's cgroup namespace (that of kthreadd, pid 2 of the proc root: kernel threads
/// live in the initial namespaces; else pid 1) when this process runs in another one, as in a
/// container with a private cgroup namespace.
///
/// The paths in /proc/PID/cgroup are relative to the *reader's* cgroup namespace: from inside a
/// container, other containers' processes read `/../<their cgroup>`. After joining, they read
/// the host's names, the same the kernel reports in cgroup events. Returns whether it joined.
pub fn join_host_namespace(proc_root: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let kthreadd = std::fs::read(proc_root.join("2/comm")).is_ok_and(|comm| comm == b"kthreadd\n");
    let host = proc_root.join(if kthreadd {
        "2/ns/cgroup"
    } else {
        "1/ns/cgroup"
    });
    let (Ok(ours), Ok(theirs)) = (
        std::fs::metadata("/proc/self/ns/cgroup"),
        std::fs::metadata(&host),
    ) else {
        // No namespaces to compare (a fake proc root, an old kernel): nothing to do.
        return Ok(false);
    };
    if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
        return Ok(false);
    }
    let namespace =
        std::fs::File::open(&host).with_context(|| format!("opening {}", host.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&namespace),
        Some(rustix::thread::LinkNameSpaceType::ControlGroup),
    )
    .with_context(|| {
        format!(
            "joining the host's cgroup namespace ({}) needs CAP_SYS_ADMIN",
            host.display()
        )
    })?;
    Ok(true)
}

/// How a process's container is named (flag `--cgroup-hierarchy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Naming {
    /// The v1 hierarchy carrying the `cpu` controller when the host has one, else cgroup v2
    /// (the rule of the v1.0 contract, as cAdvisor names containers).
    Auto,
    /// Always the v1 `cpu` hierarchy; processes of a host without it are not reported.
    V1Cpu,
    /// Always the cgroup v2 path, even on a hybrid host.
    Unified,
}

/// The hierarchy that decides, for this host and naming, whether a process is in a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v1 hierarchy with this id (the one carrying `cpu`).
    V1 { id: u32 },
    /// The cgroup v2 hierarchy (id 0 in the kernel).
    Unified,
}

impl Hierarchy {
    /// Resolves the naming against the controllers this host has mounted (`/proc/cgroups`).
    /// The per-process rule of the contract reduces to this host-wide choice: every process
    /// lists every mounted hierarchy.
    pub fn resolve(naming: Naming, proc_root: &Path) -> anyhow::Result<Hierarchy> {
        let path = proc_root.join("cgroups");
        let controllers = procfs::CGroupControllers::from_file(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cpu = controllers
            .0
            .iter()
            .find(|c| c.name == "cpu" && c.enabled && c.hierarchy != 0)
            .map(|c| c.hierarchy);
        match (naming, cpu) {
            (Naming::Unified, _) | (Naming::Auto, None) => Ok(Hierarchy::Unified),
            (Naming::V1Cpu | Naming::Auto, Some(id)) => Ok(Hierarchy::V1 { id }),
            (Naming::V1Cpu, None) => {
                anyhow::bail!(
                    "--cgroup-hierarchy v1-cpu: this host has no cgroup v1 hierarchy with the cpu controller"
                )
            }
        }
    }

    /// The id the kernel gives this hierarchy in tracepoints (`dst_root`).
    pub fn kernel_id(self) -> i32 {
        match self {
            Hierarchy::V1 { id } => id as i32,
            Hierarchy::Unified => 0,
        }
    }

    /// The naming that reads exactly this hierarchy from /proc/PID/cgroup.
    pub fn naming(self) -> Naming {
        match self {
            Hierarchy::V1 { .. } => Naming::V1Cpu,
            Hierarchy::Unified => Naming::Unified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(cgroups: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroups"), cgroups).unwrap();
        dir
    }

    const HYBRID: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\n\
cpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t4\t49\t1\n";
    const PURE_V2: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t80\t1\n\
cpu\t0\t80\t1\nmemory\t0\t80\t1\n";

    #[test]
    fn hybrid_host() {
        let root = root_with(HYBRID);
        assert_eq!(
            Hierarchy::resolve(Naming::Auto, root.path()).unwrap(),
            Hierarchy::V1 { id: 1 }
        );
        assert_eq!(
            Hierarchy::resolve(Naming::V1Cpu, root.path()).unwrap(),
            Hierarchy::V1 { id: 1 }
        );
        assert_eq!(
            Hierarchy::resolve(Naming::Unified, root.path()).unwrap(),
            Hierarchy::Unified
        );
    }

    #[test]
    fn pure_v2_host() {
        let root = root_with(PURE_V2);
        assert_eq!(
            Hierarchy::resolve(Naming::Auto, root.path()).unwrap(),
            Hierarchy::Unified
        );
        assert!(Hierarchy::resolve(Naming::V1Cpu, root.path()).is_err());
    }

    #[test]
    fn this_machine() {
        // Whatever this host is, auto resolves, and its naming reads the same hierarchy.
        let hierarchy = Hierarchy::resolve(Naming::Auto, Path::new("/proc")).unwrap();
        assert_ne!(hierarchy.naming(), Naming::Auto);
    }
}
