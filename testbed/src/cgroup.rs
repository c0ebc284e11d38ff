//! Simulated containers: real cgroups under a unique prefix, processes started inside them, and
//! a guard that kills what it started (by PID) and removes what it created.

use std::{
    collections::BTreeSet,
    fs, io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid as NixPid};

use crate::proc::{self, Pid};

pub use crate::sweep::{ID_MARKER, PREFIX};

/// A cgroup hierarchy of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hierarchy {
    /// The v1 hierarchy with the `cpu` controller: the container naming of `--cgroup-hierarchy
    /// auto` and `v1-cpu` on a hybrid host.
    Cpu,
    /// The v1 `cpuacct` hierarchy (separate from `cpu` on this host kind).
    Cpuacct,
    /// The v1 `cpuset` hierarchy; listed before `cpu` in /proc/PID/cgroup.
    Cpuset,
    /// cgroup v2 (`/sys/fs/cgroup/unified` on a hybrid host).
    Unified,
    /// The v1 `memory` hierarchy: where a hybrid host keeps memory limits
    /// (`memory.limit_in_bytes`).
    Memory,
}

impl Hierarchy {
    /// Where this hierarchy is mounted, from /proc/self/mountinfo.
    pub fn mount(self) -> &'static Path {
        self.mounted()
            .unwrap_or_else(|| panic!("this host has no mounted {self:?} hierarchy"))
    }

    /// Where this hierarchy is mounted, if it is.
    pub fn mounted(self) -> Option<&'static Path> {
        mounts().get(self).map(|m| m.path.as_path())
    }

    /// The controller name in /proc/PID/cgroup (`""` for v2).
    pub fn controller(self) -> &'static str {
        match self {
            Hierarchy::Cpu => "cpu",
            Hierarchy::Cpuacct => "cpuacct",
            Hierarchy::Cpuset => "cpuset",
            Hierarchy::Unified => "",
            Hierarchy::Memory => "memory",
        }
    }

    pub const ALL: [Hierarchy; 5] = [
        Hierarchy::Cpu,
        Hierarchy::Cpuacct,
        Hierarchy::Cpuset,
        Hierarchy::Unified,
        Hierarchy::Memory,
    ];
}

/// One cgroup mount: where it is, and which hierarchy path its root is (`/` unless a subtree is
/// mounted).
#[derive(Clone, Debug)]
struct MountPoint {
    path: PathBuf,
    root: String,
}

#[derive(Default)]
struct Mounts {
    cpu: Option<MountPoint>,
    cpuacct: Option<MountPoint>,
    cpuset: Option<MountPoint>,
    unified: Option<MountPoint>,
    memory: Option<MountPoint>,
}

impl Mounts {
    fn get(&self, hierarchy: Hierarchy) -> Option<&MountPoint> {
        match hierarchy {
            Hierarchy::Cpu => self.cpu.as_ref(),
            Hierarchy::Cpuacct => self.cpuacct.as_ref(),
            Hierarchy::Cpuset => self.cpuset.as_ref(),
            Hierarchy::Unified => self.unified.as_ref(),
            Hierarchy::Memory => self.memory.as_ref(),
        }
    }
}

/// The cgroup mounts of this host, from /proc/self/mountinfo (parsed by the `procfs` crate); the
/// first mount of each hierarchy counts.
fn mounts() -> &'static Mounts {
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let infos = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .expect("reading /proc/self/mountinfo");
        let mut mounts = Mounts::default();
        for mount in infos {
            let point = MountPoint {
                path: mount.mount_point.clone(),
                root: mount.root.clone(),
            };
            match mount.fs_type.as_str() {
                "cgroup2" if mounts.unified.is_none() => mounts.unified = Some(point),
                "cgroup" => {
                    let has = |c: &str| mount.super_options.contains_key(c);
                    for (controller, slot) in [
                        ("cpu", &mut mounts.cpu),
                        ("cpuacct", &mut mounts.cpuacct),
                        ("cpuset", &mut mounts.cpuset),
                        ("memory", &mut mounts.memory),
                    ] {
                        if has(controller) && slot.is_none() {
                            *slot = Some(point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    })
}

/// Where the hierarchy that names containers is mounted, as the service picks it by default:
/// the v1 hierarchy with the `cpu` controller when there is one, else cgroup v2.
#[derive(Clone, Debug)]
pub struct CgroupMount {
    /// Mount point, e.g. /sys/fs/cgroup/cpu.
    pub path: PathBuf,
    /// The hierarchy path of the mount's root (`/` unless a subtree is mounted).
    pub root: String,
    /// A v1 hierarchy carrying the `cpu` controller (else the unified v2 hierarchy).
    pub v1_cpu: bool,
}

impl CgroupMount {
    /// The naming hierarchy of this host, found in mountinfo, never assumed.
    pub fn find() -> Result<CgroupMount, String> {
        let mounts = mounts();
        let (hierarchy, v1_cpu) = if mounts.cpu.is_some() {
            (Hierarchy::Cpu, true)
        } else {
            (Hierarchy::Unified, false)
        };
        let point = mounts
            .get(hierarchy)
            .ok_or("no cgroup v1 `cpu` hierarchy and no cgroup v2 mount in /proc/self/mountinfo")?;
        Ok(CgroupMount {
            path: point.path.clone(),
            root: point.root.clone(),
            v1_cpu,
        })
    }

    /// The hierarchy this is.
    pub fn hierarchy(&self) -> Hierarchy {
        if self.v1_cpu {
            Hierarchy::Cpu
        } else {
            Hierarchy::Unified
        }
    }

    /// The name the service gives a directory below the mount point.
    pub fn name_of(&self, dir: &Path) -> String {
        let rel = dir.strip_prefix(&self.path).unwrap_or(dir);
        let root = self.root.trim_end_matches('/');
        format!("{root}/{}", rel.display())
    }

    /// A process's cgroup in this hierarchy (`None` when it is gone).
    pub fn cgroup_of(&self, pid: Pid) -> Option<String> {
        proc::cgroup_path(pid, self.hierarchy().controller())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A 64-hex container id, unique on this host: [`ID_MARKER`], this process's pid, a counter and
/// random digits.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u128 = rand::random();
    let id = format!("{ID_MARKER}{:08x}{n:08x}{random:032x}", std::process::id());
    format!("{id:0<64}")[..64].to_owned()
}

/// Serialises creating and removing directories inside this test process, so two tests sharing
/// a parent (`/system.slice`) never race a `mkdir` against an `rmdir`.
static DIRS: Mutex<()> = Mutex::new(());
/// Directories a guard created but could not remove because another guard still had a cgroup
/// inside; the last guard to drop removes them.
static DEFERRED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A container: one cgroup path, created in one or more hierarchies.
#[derive(Clone, Debug)]
pub struct Container {
    /// The container path as the API names it: `/companion-test-…/<id>`.
    pub path: String,
    /// The directories, one per hierarchy, the first being the one that names the container.
    pub dirs: Vec<(Hierarchy, PathBuf)>,
}

impl Container {
    /// The cgroup directory in `hierarchy`.
    pub fn dir(&self, hierarchy: Hierarchy) -> &Path {
        self.dirs
            .iter()
            .find(|(h, _)| *h == hierarchy)
            .map(|(_, d)| d.as_path())
            .unwrap_or_else(|| panic!("{} was not created in {hierarchy:?}", self.path))
    }

    /// The directory of the first (naming) hierarchy.
    pub fn main_dir(&self) -> &Path {
        &self.dirs[0].1
    }

    /// The processes in its `cgroup.procs` of the naming hierarchy.
    pub fn procs(&self) -> BTreeSet<Pid> {
        proc::cgroup_procs(self.main_dir())
    }

    /// What the API should list for it now (see [`proc::listable_in`]).
    pub fn listable(&self) -> BTreeSet<Pid> {
        proc::listable_in(self.main_dir())
    }

    /// The API path of its processes route, with the container path percent-encoded as needed.
    pub fn api_path(&self) -> String {
        format!(
            "/api/v1.0{}/processes",
            crate::http::encode_path(&self.path)
        )
    }
}

#[derive(Default)]
struct Inner {
    /// Directories created, in creation order.
    created: Vec<PathBuf>,
    /// Processes this guard started; kept so they can be reaped (and their stdin kept open).
    children: Vec<Child>,
    /// Scratch directories to remove.
    temp_dirs: Vec<PathBuf>,
}

/// The cgroups and processes of one test, all under a unique prefix. Dropping it kills every
/// process in its cgroups and every process it started (by PID), waits for them, and removes
/// its cgroups deepest first.
pub struct TestCgroup {
    prefix: String,
    inner: Mutex<Inner>,
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCgroup {
    pub fn new() -> TestCgroup {
        static CLEANED: OnceLock<()> = OnceLock::new();
        CLEANED.get_or_init(|| {
            crate::sweep::dead_runs();
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random: u32 = rand::random();
        TestCgroup {
            prefix: format!("{PREFIX}{}-{n}-{:06x}", std::process::id(), random >> 8),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The prefix directory name, `companion-test-<pid>-<n>-<random>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A Docker-style container `/<prefix>/<64-hex id>` created in `hierarchies` (the first
    /// names it).
    pub fn container(&self, hierarchies: &[Hierarchy]) -> Container {
        self.container_named(&unique_id(), hierarchies)
    }

    /// A container `/<prefix>/<relative>`.
    pub fn container_named(&self, relative: &str, hierarchies: &[Hierarchy]) -> Container {
        let path = format!("/{}/{}", self.prefix, relative.trim_start_matches('/'));
        self.container_at(&path, hierarchies)
    }

    /// A container at an absolute cgroup path (`/docker/<id>`, `/system.slice/…`). The caller
    /// makes it unique (see [`unique_id`]); parents are created when missing and removed at drop
    /// when this guard created them and they are empty by then.
    pub fn container_at(&self, path: &str, hierarchies: &[Hierarchy]) -> Container {
        assert!(path.starts_with('/') && path.len() > 1, "bad path {path:?}");
        assert!(!hierarchies.is_empty());
        let mut dirs = Vec::new();
        for &hierarchy in hierarchies {
            let dir = hierarchy.mount().join(&path[1..]);
            self.mkdir_all(hierarchy, &dir)
                .unwrap_or_else(|err| panic!("creating cgroup {}: {err}", dir.display()));
            dirs.push((hierarchy, dir));
        }
        Container {
            path: path.to_owned(),
            dirs,
        }
    }

    fn mkdir_all(&self, hierarchy: Hierarchy, dir: &Path) -> io::Result<()> {
        let root = hierarchy.mount();
        let relative = dir.strip_prefix(root).expect("inside the hierarchy");
        let _dirs = lock(&DIRS);
        let mut at = root.to_path_buf();
        for component in relative.components() {
            at.push(component);
            match fs::create_dir(&at) {
                Ok(()) => {
                    lock(&self.inner).created.push(at.clone());
                    if hierarchy == Hierarchy::Cpuset {
                        // A v1 cpuset takes no process before it has cpus and mems.
                        let parent = at.parent().expect("has a parent");
                        for file in ["cpuset.cpus", "cpuset.mems"] {
                            let value = fs::read_to_string(parent.join(file))?;
                            fs::write(at.join(file), value.trim())?;
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Starts `command` inside `containers` (all their hierarchies): the child moves itself
    /// into each `cgroup.procs` between fork and exec, so when this returns the process is in
    /// the containers and runs the new program. Returns its pid.
    ///
    /// Set the command's stdio yourself ([`crate::spawn::command`] makes them null).
    pub fn spawn(&self, containers: &[&Container], mut command: Command) -> Pid {
        let files: Vec<fs::File> = containers
            .iter()
            .flat_map(|c| c.dirs.iter())
            .map(|(_, dir)| {
                let path = dir.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap_or_else(|err| panic!("opening {}: {err}", path.display()))
            })
            .collect();
        let fds: Vec<_> = files.iter().map(|f| f.as_raw_fd()).collect();
        crate::spawn::join_before_exec(&mut command, fds, None);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {command:?}: {err}"));
        let pid = child.id();
        lock(&self.inner).children.push(child);
        pid
    }

    /// Starts `command` outside any test cgroup (it stays where the test process is).
    pub fn spawn_outside(&self, command: Command) -> Pid {
        self.spawn(&[], command)
    }

    /// Moves a whole process (all threads) into `container` (all its hierarchies).
    pub fn move_to(&self, pid: Pid, container: &Container) {
        for (_, dir) in &container.dirs {
            write_pid(&dir.join("cgroup.procs"), pid);
        }
    }

    /// Moves one thread only, through the v1 `tasks` file of `hierarchy`.
    pub fn move_thread(&self, tid: Pid, container: &Container, hierarchy: Hierarchy) {
        write_pid(&container.dir(hierarchy).join("tasks"), tid);
    }

    /// Moves a process back to the root cgroup of `hierarchy` (out of every container there).
    pub fn move_to_root(&self, pid: Pid, hierarchy: Hierarchy) {
        write_pid(&hierarchy.mount().join("cgroup.procs"), pid);
    }

    /// Kills a process by PID and reaps it when it is this guard's child.
    pub fn kill(&self, pid: Pid) {
        let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
        let mut inner = lock(&self.inner);
        if let Some(at) = inner.children.iter().position(|c| c.id() == pid) {
            let mut child = inner.children.remove(at);
            let _ = child.wait();
        }
    }

    /// Waits for a child of this guard to exit (it must exit by itself); returns whether it
    /// did within `timeout`.
    pub fn wait_exit(&self, pid: Pid, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut inner = lock(&self.inner);
                let at = inner
                    .children
                    .iter()
                    .position(|c| c.id() == pid)
                    .expect("a child of this guard");
                if let Ok(Some(_)) = inner.children[at].try_wait() {
                    // Reaped by try_wait; the wait returns at once.
                    let _ = inner.children.remove(at).wait();
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A scratch directory removed at drop.
    pub fn temp_dir(&self) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{}-{n}", self.prefix));
        fs::create_dir_all(&dir).expect("creating a temp dir");
        lock(&self.inner).temp_dirs.push(dir.clone());
        dir
    }

    /// Every pid in this guard's cgroups now.
    pub fn all_procs(&self) -> BTreeSet<Pid> {
        let created = lock(&self.inner).created.clone();
        created.iter().flat_map(|d| proc::cgroup_procs(d)).collect()
    }

    fn cleanup(&self) {
        let mut inner = lock(&self.inner);
        let created = inner.created.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut pids: BTreeSet<Pid> =
                created.iter().flat_map(|d| proc::cgroup_procs(d)).collect();
            for child in &mut inner.children {
                if let Ok(None) = child.try_wait() {
                    pids.insert(child.id());
                }
            }
            inner
                .children
                .retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
            if pids.is_empty() && inner.children.is_empty() {
                break;
            }
            for &pid in &pids {
                let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "test cgroup {}: processes still alive after SIGKILL: {pids:?}",
                    self.prefix
                );
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut created = created;
        // Deepest first.
        created.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let _dirs = lock(&DIRS);
        let mut deferred = lock(&DEFERRED);
        for dir in created {
            if !crate::sweep::remove_cgroup(&dir, Duration::from_secs(2)) {
                deferred.push(dir);
            }
        }
        deferred.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        deferred.retain(|dir| !crate::sweep::remove_cgroup(dir, Duration::ZERO));
        for dir in inner.temp_dirs.drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn write_pid(file: &Path, pid: Pid) {
    fs::write(file, pid.to_string())
        .unwrap_or_else(|err| panic!("writing {pid} to {}: {err}", file.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_recognisable() {
        let (a, b) = (unique_id(), unique_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a.starts_with(ID_MARKER));
    }
}
