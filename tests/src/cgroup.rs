//! Simulated containers: real cgroups under a unique prefix, processes started inside them, and
//! a guard that kills what it started (by PID) and removes what it created.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use procfs::process::MountInfo;

use nix::{sys::signal::Signal, unistd::Pid as NixPid};

use crate::proc::{self, Pid};

/// Directory names of test cgroups start with this; the pid of the test process follows.
pub const PREFIX: &str = "companion-test-";
/// Container ids made by [`unique_id`] start with this marker, then the test process's pid
/// (8 hex digits), so leftovers of a crashed run can be recognised.
pub const ID_MARKER: &str = "c0de7e57";

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
        let mounts = mounts();
        let found = match self {
            Hierarchy::Cpu => &mounts.cpu,
            Hierarchy::Cpuacct => &mounts.cpuacct,
            Hierarchy::Cpuset => &mounts.cpuset,
            Hierarchy::Unified => &mounts.unified,
            Hierarchy::Memory => &mounts.memory,
        };
        found
            .as_deref()
            .unwrap_or_else(|| panic!("this host has no mounted {self:?} hierarchy"))
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

struct Mounts {
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    cpuset: Option<PathBuf>,
    unified: Option<PathBuf>,
    memory: Option<PathBuf>,
}

fn mounts() -> &'static Mounts {
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let text = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
        let mut mounts = Mounts {
            cpu: None,
            cpuacct: None,
            cpuset: None,
            unified: None,
            memory: None,
        };
        for mount in text
            .lines()
            .filter_map(|line| MountInfo::from_line(line).ok())
        {
            let path = mount.mount_point;
            match mount.fs_type.as_str() {
                "cgroup2" if mounts.unified.is_none() => mounts.unified = Some(path),
                "cgroup" => {
                    let has = |c: &str| mount.super_options.contains_key(c);
                    if has("cpu") && mounts.cpu.is_none() {
                        mounts.cpu = Some(path.clone());
                    }
                    if has("cpuacct") && mounts.cpuacct.is_none() {
                        mounts.cpuacct = Some(path.clone());
                    }
                    if has("cpuset") && mounts.cpuset.is_none() {
                        mounts.cpuset = Some(path.clone());
                    }
                    if has("memory") && mounts.memory.is_none() {
                        mounts.memory = Some(path);
                    }
                }
                _ => {}
            }
        }
        mounts
    })
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
        CLEANED.get_or_init(clean_leftovers_of_dead_runs);
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
        let files: Vec<CString> = containers
            .iter()
            .flat_map(|c| c.dirs.iter())
            .map(|(_, dir)| {
                CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).expect("no NUL")
            })
            .collect();
        // SAFETY: the hook only calls async-signal-safe functions (open, write, close) on
        // memory prepared before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for file in &files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // "0" moves the writing process itself.
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
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
            if !remove_cgroup(&dir, Duration::from_secs(2)) {
                deferred.push(dir);
            }
        }
        deferred.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        deferred.retain(|dir| !remove_cgroup(dir, Duration::ZERO));
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

/// Removes an empty cgroup, retrying while it is busy (processes still being reaped); true when
/// it is gone. A cgroup that still has child cgroups (another test's) stays.
fn remove_cgroup(dir: &Path, patience: Duration) -> bool {
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

fn write_pid(file: &Path, pid: Pid) {
    fs::write(file, pid.to_string())
        .unwrap_or_else(|err| panic!("writing {pid} to {}: {err}", file.display()));
}

/// Removes test cgroups left by test processes that no longer run (a crashed or killed run):
/// kills the processes inside by PID, then removes the directories deepest first.
fn clean_leftovers_of_dead_runs() {
    let mut stale = Vec::new();
    for hierarchy in Hierarchy::ALL {
        let Some(root) = mounts_get(hierarchy) else {
            continue;
        };
        find_stale(root, 0, &mut stale);
    }
    for dir in &stale {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = all_procs_below(dir);
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut dirs = Vec::new();
        collect_dirs(dir, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = remove_cgroup(&d, Duration::from_secs(1));
        }
    }
}

fn mounts_get(hierarchy: Hierarchy) -> Option<&'static Path> {
    let m = mounts();
    match hierarchy {
        Hierarchy::Cpu => m.cpu.as_deref(),
        Hierarchy::Cpuacct => m.cpuacct.as_deref(),
        Hierarchy::Cpuset => m.cpuset.as_deref(),
        Hierarchy::Unified => m.unified.as_deref(),
        Hierarchy::Memory => m.memory.as_deref(),
    }
}

/// The pid a test directory name was made by, if it is one.
fn owner_of(name: &str) -> Option<Pid> {
    if let Some(rest) = name.strip_prefix(PREFIX) {
        return rest.split('-').next()?.parse().ok();
    }
    let at = name.find(ID_MARKER)?;
    let hex = name.get(at + ID_MARKER.len()..at + ID_MARKER.len() + 8)?;
    Pid::from_str_radix(hex, 16).ok()
}

fn find_stale(dir: &Path, depth: usize, stale: &mut Vec<PathBuf>) {
    if depth > 5 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match owner_of(&name) {
            Some(pid) if pid != std::process::id() && !proc::alive(pid) => stale.push(path),
            Some(_) => {}
            None => find_stale(&path, depth + 1, stale),
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn all_procs_below(dir: &Path) -> BTreeSet<Pid> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.iter().flat_map(|d| proc::cgroup_procs(d)).collect()
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
        assert_eq!(owner_of(&a), Some(std::process::id()));
        assert_eq!(
            owner_of(&format!("docker-{a}.scope")),
            Some(std::process::id())
        );
        assert_eq!(owner_of("companion-test-42-1-abcdef"), Some(42));
        assert_eq!(owner_of("docker"), None);
    }
}
