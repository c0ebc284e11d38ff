//! Cgroup membership: `/proc/PID/cgroup`, `hierarchy-id:controller,list:/path` lines, one per
//! hierarchy, and the container a process belongs to by the naming rule.

use std::io;

use super::Naming;
use crate::procfs::{self, Pid, ProcRoot};

/// One line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy: &'a [u8],
    pub controllers: &'a [u8],
    pub path: &'a [u8],
}

impl CgroupLine<'_> {
    /// Whether the comma-separated controller list holds `name` exactly (`cpu` is not `cpuset`).
    pub fn has_controller(&self, name: &[u8]) -> bool {
        self.controllers.split(|&b| b == b',').any(|c| c == name)
    }

    /// The cgroup v2 line: hierarchy 0, no controllers.
    pub fn is_unified(&self) -> bool {
        self.hierarchy == b"0" && self.controllers.is_empty()
    }
}

/// The lines of the file; a line without two `:` is skipped. The path may itself hold `:`.
pub fn parse_cgroup(text: &[u8]) -> impl Iterator<Item = CgroupLine<'_>> {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let mut parts = line.splitn(3, |&b| b == b':');
        Some(CgroupLine {
            hierarchy: parts.next()?,
            controllers: parts.next()?,
            path: parts.next()?,
        })
    })
}

/// The container a process belongs to, by the naming rule, or `None` for a host process
/// (path `/`) or a file without the line the rule needs.
pub fn container_of(text: &[u8], naming: Naming) -> Option<&[u8]> {
    let lines = || parse_cgroup(text);
    let v1_cpu = || lines().find(|line| line.has_controller(b"cpu"));
    let unified = || lines().find(CgroupLine::is_unified);
    let line = match naming {
        Naming::V1Cpu => v1_cpu(),
        Naming::Unified => unified(),
        Naming::Auto => v1_cpu().or_else(unified),
    }?;
    (line.path != b"/" && !line.path.is_empty()).then_some(line.path)
}

/// Reads into `buf` the cgroup file that decides the container of process `pid`: its
/// `/proc/PID/cgroup`, or a live thread's when its main thread has exited while other threads
/// run. On cgroup v1 the kernel shows an exiting task in the root of every hierarchy (v2 keeps
/// its path), so such a process, alive in its container, would read as a host process.
///
/// The extra reads happen only for a process at the root of every v1 hierarchy: one look at its
/// state, and for a zombie main thread, its task list.
pub fn read_membership(
    root: &ProcRoot,
    pid: Pid,
    naming: Naming,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    root.read(pid, "cgroup", buf)?;
    if naming == Naming::Unified || container_of(buf, naming).is_some() || !every_v1_at_root(buf) {
        return Ok(());
    }
    if procfs::task_state(root, &format!("{pid}/stat")) != Some(b'Z') {
        return Ok(());
    }
    match procfs::live_thread(root, pid) {
        Some(tid) => match root.read(pid, &format!("task/{tid}/cgroup"), buf) {
            // The thread ended meanwhile: the process is as the main thread's file said.
            Err(err) if procfs::is_gone(&err) => root.read(pid, "cgroup", buf),
            other => other,
        },
        None => Ok(()),
    }
}

/// Whether the file has a v1 line and every v1 line says `/` (as for an exiting task).
fn every_v1_at_root(text: &[u8]) -> bool {
    let mut v1 = parse_cgroup(text)
        .filter(|line| line.hierarchy != b"0")
        .peekable();
    v1.peek().is_some() && v1.all(|line| line.path == b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &[u8] = b"9:name=systemd:/\n4:memory:/process_api/79c2\n3:cpuset:/\n\
2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/system.slice/docker-abc.scope\n";

    #[test]
    fn rule_picks_the_cpu_hierarchy_then_v2() {
        assert_eq!(
            container_of(HYBRID, Naming::Auto),
            Some(&b"/docker/abc"[..])
        );
        assert_eq!(
            container_of(HYBRID, Naming::V1Cpu),
            Some(&b"/docker/abc"[..])
        );
        assert_eq!(
            container_of(HYBRID, Naming::Unified),
            Some(&b"/system.slice/docker-abc.scope"[..])
        );
        let pure_v2 = b"0::/kubepods.slice/x.scope\n";
        assert_eq!(
            container_of(pure_v2, Naming::Auto),
            Some(&b"/kubepods.slice/x.scope"[..])
        );
        assert_eq!(container_of(pure_v2, Naming::V1Cpu), None);
    }

    #[test]
    fn cpuset_listed_first_is_not_cpu() {
        let text = b"6:cpuset:/wrong\n4:cpu,cpuacct:/right\n";
        assert_eq!(container_of(text, Naming::Auto), Some(&b"/right"[..]));
    }

    #[test]
    fn root_means_host_process() {
        assert_eq!(container_of(b"4:cpu:/\n0::/\n", Naming::Auto), None);
        // v1 cpu at the root wins over a non-root v2 path: the rule takes the cpu hierarchy.
        assert_eq!(
            container_of(b"4:cpu:/\n0::/user.slice\n", Naming::Auto),
            None
        );
        assert_eq!(container_of(b"", Naming::Auto), None);
    }

    #[test]
    fn paths_with_colons_and_odd_lines() {
        let text = b"garbage\n1:cpu:/a:b:c\n";
        assert_eq!(container_of(text, Naming::Auto), Some(&b"/a:b:c"[..]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                for naming in [Naming::Auto, Naming::V1Cpu, Naming::Unified] {
                    let _ = container_of(&bytes, naming);
                }
            }

            #[test]
            fn round_trips(
                path in "(/[a-zA-Z0-9_.:@+-]{1,20}){1,4}",
                id in 1u32..20,
                controllers in "(cpu|cpu,cpuacct|cpuacct,cpu)",
            ) {
                let text = format!("{}:cpuset:/other\n{id}:{controllers}:{path}\n0::/v2{path}\n", id + 1);
                prop_assert_eq!(container_of(text.as_bytes(), Naming::Auto), Some(path.as_bytes()));
                let v2 = format!("/v2{path}");
                prop_assert_eq!(container_of(text.as_bytes(), Naming::Unified), Some(v2.as_bytes()));
            }
        }
    }
}
