//! Everything the benchmark changes on the host, so it can always be undone: the processes it
//! started (by pid), the cgroups it created, the sysctls it changed.
//!
//! Ownership rule for processes: every child is registered right after it is spawned and is
//! never reaped while registered. Whoever wants to end processes first *takes* them out of the
//! registry (under its lock), then kills and reaps them. A pid is therefore only ever signalled
//! while it still names our own unreaped child (a zombie keeps its pid), never a stranger that
//! reused it. Processes we did not spawn ourselves but that live in our cgroups (children of our
//! children) are ended through a pidfd after checking that they are still in the cgroup
//! ([`kill_members`]).
//!
//! Interruption: SIGINT, SIGTERM and SIGHUP only count (async-signal-safe). The benchmark checks
//! [`check`] at every wait and unwinds normally, cleaning up on the way. A watchdog thread
//! handles a second signal, or a first one left unanswered for 30 s: it cleans up what the
//! registry holds and exits. Children also get `PR_SET_PDEATHSIG`, so even a SIGKILLed benchmark
//! leaves no process behind (only cgroups, removed by the next run's leftover sweep).

use std::{
    collections::HashSet,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use testbed::proc::cgroup_procs;

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

#[derive(Default)]
struct Registry {
    pids: Option<HashSet<u32>>,
    /// Created cgroup directories, parents before children.
    cgroups: Vec<PathBuf>,
    /// Sysctl files and the values to restore.
    sysctls: Vec<(PathBuf, String)>,
}

impl Registry {
    const fn new() -> Registry {
        Registry {
            pids: None,
            cgroups: Vec::new(),
            sysctls: Vec::new(),
        }
    }

    fn pids(&mut self) -> &mut HashSet<u32> {
        self.pids.get_or_insert_with(HashSet::new)
    }
}

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts SIGINT/SIGTERM/SIGHUP and starts the watchdog. Call once, early.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn count(_: libc::c_int) {
        SIGNALS.fetch_add(1, Ordering::SeqCst);
    }
    let action = SigAction::new(
        SigHandler::Handler(count),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("installing {signal}"))?;
    }
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(watchdog)
        .context("starting the signal watchdog")?;
    Ok(())
}

fn watchdog() {
    let mut first: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let n = SIGNALS.load(Ordering::SeqCst);
        if n == 0 {
            continue;
        }
        let since = *first.get_or_insert_with(Instant::now);
        if n >= 2 || since.elapsed() > Duration::from_secs(30) {
            eprintln!("companion-bench: interrupted again; cleaning up and exiting");
            cleanup_all();
            std::process::exit(130);
        }
    }
}

/// True once a stop signal arrived.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Fails when a stop signal arrived: call at every wait so the benchmark unwinds promptly.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps up to `duration`, failing early when interrupted.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

pub fn register_pid(pid: u32) {
    registry().pids().insert(pid);
}

/// Takes `pids` out of the registry; returns those that were still registered (the caller now
/// owns them: it must kill and reap them).
pub fn take_pids(pids: &[u32]) -> Vec<u32> {
    let mut reg = registry();
    let set = reg.pids();
    pids.iter().copied().filter(|pid| set.remove(pid)).collect()
}

/// Kills and reaps processes taken with [`take_pids`]: all signals first, then all waits, so
/// thousands end in about the time one does.
pub fn kill_and_reap(pids: &[u32], signal: libc::c_int) {
    for &pid in pids {
        // SAFETY: plain syscall; `pid` is our own unreaped child (see the module comment).
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
    for &pid in pids {
        let mut status = 0;
        // SAFETY: plain syscall.
        while unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) } < 0
            && std::io::Error::last_os_error().kind() == ErrorKind::Interrupted
        {}
    }
}

/// Ends registered processes: takes, SIGKILLs, reaps.
pub fn end(pids: &[u32]) {
    let owned = take_pids(pids);
    kill_and_reap(&owned, libc::SIGKILL);
}

/// Reaps `pid` if it has exited, without blocking. Returns its wait status when it had.
pub fn try_reap(pid: u32) -> Option<i32> {
    let mut reg = registry();
    if !reg.pids().contains(&pid) {
        return Some(0);
    }
    let mut status = 0;
    // SAFETY: plain syscall on our registered (hence unreaped) child.
    let got = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if got == pid as libc::pid_t || got < 0 {
        reg.pids().remove(&pid);
        return Some(status);
    }
    None
}

/// Creates a cgroup directory and registers it for removal.
pub fn create_cgroup(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir(dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    registry().cgroups.push(dir.to_path_buf());
    Ok(())
}

/// Removes cgroup directories (deepest first) that must be empty of processes by now.
pub fn remove_cgroups(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    let mut sorted: Vec<&PathBuf> = dirs.iter().collect();
    sorted.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in sorted {
        match rmdir_retrying(dir) {
            Ok(()) => registry().cgroups.retain(|d| d != dir),
            Err(err) => failed.push(format!("{}: {err}", dir.display())),
        }
    }
    if !failed.is_empty() {
        bail!("cannot remove cgroups: {}", failed.join("; "));
    }
    Ok(())
}

/// A cgroup whose last process was just reaped can stay busy for a moment. One still holding
/// processes the registry does not own (children of our children, orphaned when their parent
/// was killed) has them killed, once, by verified pid ([`kill_members`]).
fn rmdir_retrying(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = false;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                if !killed && !cgroup_procs(dir).is_empty() {
                    kill_members(dir);
                    killed = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Removes one cgroup directory now, without waiting: Ok(true) when it is gone (and no longer
/// registered), Ok(false) while it is busy.
pub fn try_remove_cgroup(dir: &Path) -> std::io::Result<bool> {
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => return Ok(false),
        Err(err) => return Err(err),
    }
    registry().cgroups.retain(|d| d != dir);
    Ok(true)
}

/// SIGKILLs every process in one of our cgroups, by pid, without ever signalling a stranger:
/// each pid is pinned with a pidfd first, then the cgroup is read again and only pids still
/// listed in it are signalled through their pidfd (a pid that was reused between the two reads
/// names a process outside the cgroup, or one inside it, which is ours to end too). Registered
/// children signalled this way stay registered and are reaped by their owner; the others are
/// reaped by their own parent or init. Returns how many were signalled.
pub fn kill_members(dir: &Path) -> usize {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut pinned: Vec<(u32, OwnedFd)> = Vec::new();
    for pid in cgroup_procs(dir) {
        // SAFETY: pidfd_open(pid, 0) returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            // SAFETY: a new descriptor owned by nobody else.
            pinned.push((pid, unsafe { OwnedFd::from_raw_fd(fd as i32) }));
        }
    }
    let still = cgroup_procs(dir);
    let mut signalled = 0;
    for (pid, fd) in pinned {
        if !still.contains(&pid) {
            continue;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal on a pidfd we hold; no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            signalled += 1;
        }
    }
    signalled
}

/// Writes a sysctl (a file under /proc/sys), remembering the old value for [`cleanup_all`].
pub fn set_sysctl(name: &str, value: &str) -> anyhow::Result<()> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    let old = fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string();
    if old == value {
        return Ok(());
    }
    fs::write(&path, value).with_context(|| format!("setting {name} = {value}"))?;
    let mut reg = registry();
    if !reg.sysctls.iter().any(|(p, _)| *p == path) {
        reg.sysctls.push((path, old));
    }
    Ok(())
}

pub fn read_sysctl(name: &str) -> anyhow::Result<String> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// Undoes everything still registered: kills and reaps the processes, removes the cgroups
/// deepest first, restores the sysctls. Idempotent; reports problems on stderr.
pub fn cleanup_all() {
    let pids: Vec<u32> = registry().pids().iter().copied().collect();
    if !pids.is_empty() {
        let owned = take_pids(&pids);
        kill_and_reap(&owned, libc::SIGKILL);
    }
    let cgroups = registry().cgroups.clone();
    if let Err(err) = remove_cgroups(&cgroups) {
        eprintln!("companion-bench: {err:#}");
    }
    let sysctls = std::mem::take(&mut registry().sysctls);
    for (path, old) in sysctls.into_iter().rev() {
        if let Err(err) = fs::write(&path, &old) {
            eprintln!(
                "companion-bench: cannot restore {} to {old}: {err}",
                path.display()
            );
        }
    }
}

/// Calls [`cleanup_all`] when dropped: on return, on error and on panic.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup_all();
    }
}
