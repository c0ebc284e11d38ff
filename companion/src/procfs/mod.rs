//! Reading the kernel's per-process files: where they are (an injectable proc root, so tests can
//! point the service at a fake /proc) and how their text is parsed.
//!
//! Parsers take bytes, never `&str`: process names and command lines are not always UTF-8.

mod cmdline;
mod mountinfo;
mod stat;
mod status;

use std::{
    fs::{self, File},
    io::{self, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

pub use cmdline::{CMDLINE_LIMIT, CmdlineMode, has_cmdline, parse_cmdline, render_cmdline};
pub use mountinfo::{mounts, own_mounts};
pub use stat::Stat;
pub use status::Status;

/// A malformed file. The kernel never writes one, so this means a fake root, a truncated read or
/// a kernel whose format we do not know; the process is skipped rather than reported wrongly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("stat: no '(' ... ')' around the process name")]
    StatNoComm,
    #[error("stat: field {field} is not a number")]
    StatField { field: &'static str },
    #[error("status: value of {key} is malformed")]
    StatusField { key: &'static str },
}

/// A process id as the kernel prints it in /proc.
pub type Pid = u32;

/// The proc file system the service reads: `/proc`, `/rootfs/proc` in a container, or a fake tree.
#[derive(Clone, Debug)]
pub struct ProcRoot {
    root: PathBuf,
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pid>/<name>`.
    pub fn file(&self, pid: Pid, name: &str) -> PathBuf {
        let mut path = self.root.join(pid.to_string());
        path.push(name);
        path
    }

    /// `<root>/<name>` (e.g. `self/mountinfo`, `cgroups`).
    pub fn global(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Every process (thread-group) id in the root, in the order the kernel lists them.
    /// Threads are not listed by /proc's readdir, so these are processes only.
    pub fn pids(&self) -> io::Result<impl Iterator<Item = Pid>> {
        Ok(fs::read_dir(&self.root)?.filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let name = name.to_str()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            name.parse().ok()
        }))
    }

    /// Reads `<root>/<pid>/<name>` whole into `buf` (cleared first).
    pub fn read(&self, pid: Pid, name: &str, buf: &mut Vec<u8>) -> io::Result<()> {
        read_path(&self.file(pid, name), buf)
    }
}

/// Reads a whole file into `buf` (cleared first).
pub fn read_path(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// Reads a whole proc file through an open descriptor, from offset 0. A proc file regenerates its
/// text on a read at offset 0, so this is a fresh view without the cost of open and close.
///
/// Proc files hand over their whole text in one read when the buffer is large enough, so a
/// short read is the end of the file and costs one system call; a full buffer is grown and the
/// file read again from the start, so the text always comes from one generation.
pub fn pread_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut size = buf.capacity().max(4096);
    loop {
        buf.resize(size, 0);
        let n = file.read_at(buf, 0)?;
        if n < size {
            buf.truncate(n);
            return Ok(());
        }
        size *= 2;
    }
}

/// The state letter of a task (`R`, `S`, `Z`…) from the start of a stat file at `path` (relative
/// to the proc root, e.g. `42/stat` or `42/task/43/stat`); `None` when it cannot be read.
///
/// Only the head of the file is read: the state follows the name, which is at most 64 bytes.
pub fn task_state(root: &ProcRoot, path: &str) -> Option<u8> {
    let mut head = [0u8; 256];
    let n = File::open(root.global(path)).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    let close = head.iter().rposition(|&b| b == b')')?;
    head.get(close + 2).copied()
}

/// A thread of process `pid` that has not exited, other than its main thread; `None` when there
/// is none. When the main thread has exited while others run (it stays a zombie until the last
/// one ends), the process's memory, command line and cgroup are read from such a thread.
pub fn live_thread(root: &ProcRoot, pid: Pid) -> Option<Pid> {
    fs::read_dir(root.file(pid, "task"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<Pid>().ok())
        .filter(|&tid| tid != pid)
        .find(|&tid| {
            task_state(root, &format!("{pid}/task/{tid}/stat")).is_some_and(|s| !is_dead(s))
        })
}

/// Whether a state letter is that of a task that has exited (zombie, or dead being reaped).
pub fn is_dead(state: u8) -> bool {
    matches!(state, b'Z' | b'X' | b'x')
}

/// True when the error means the process is gone (exited, or its pid now names nothing).
pub fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// Splits `key:\tvalue` lines; used by the status parser and by tests.
pub(crate) fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n').filter(|line| !line.is_empty())
}

/// Lossy UTF-8 for text the kernel copies from userspace (names, command lines, cgroup names).
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Clock ticks per second of /proc's time fields (`USER_HZ`, almost always 100).
pub fn ticks_per_second() -> u64 {
    ::procfs::ticks_per_second()
}

/// Clock ticks since boot, on the clock /proc/PID/stat's `starttime` counts with.
pub fn boot_ticks(ticks_per_second: u64) -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let ns = now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128;
    (ns * u128::from(ticks_per_second) / 1_000_000_000) as u64
}
