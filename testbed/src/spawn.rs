//! Starting processes inside containers ([`join_before_exec`]), and commands for the kinds of
//! processes the tests need: each returns a `Command` with null stdio, to be started with
//! [`crate::cgroup::TestCgroup::spawn`].

use std::{
    os::{
        fd::RawFd,
        unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// Makes `command`'s child join cgroups between fork and exec, as `docker exec` does: it writes
/// `0` (itself) to each `cgroup.procs` open as `cgroup_procs` (descriptors the parent keeps open
/// until the spawn returns), so when the spawn returns the process is inside and runs the new
/// program. With `death_signal`, the child also gets it when the spawning thread ends
/// (`PR_SET_PDEATHSIG`), so a killed benchmark leaves no process behind. The signal mask is
/// cleared (the parent may block signals it waits for).
pub fn join_before_exec(
    command: &mut Command,
    cgroup_procs: Vec<RawFd>,
    death_signal: Option<libc::c_int>,
) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook only makes async-signal-safe calls (prctl, getppid, write, sigemptyset,
    // sigprocmask) on memory prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(signal) = death_signal
                && (libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0
                    || libc::getppid() != parent)
            {
                return Err(std::io::Error::other("parent gone"));
            }
            for &fd in &cgroup_procs {
                // "0" moves the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// A command with stdin, stdout and stderr connected to /dev/null.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// `sh -c SCRIPT`.
pub fn shell(script: &str) -> Command {
    let mut command = command("/bin/sh");
    command.arg("-c").arg(script);
    command
}

/// A process that burns one CPU until killed: `sh -c 'while :; do :; done'`.
pub fn busy_loop() -> Command {
    shell("while :; do :; done")
}

/// The command line [`busy_loop`] shows.
pub const BUSY_CMDLINE: &str = "/bin/sh -c while :; do :; done";

/// An idle process: `sleep 1000`.
pub fn sleeper() -> Command {
    let mut command = command("/bin/sleep");
    command.arg("1000");
    command
}

/// The command line [`sleeper`] shows.
pub const SLEEPER_CMDLINE: &str = "/bin/sleep 1000";

/// A process that exits by itself after `ms` milliseconds.
pub fn exits_after_ms(ms: u64) -> Command {
    let mut command = command("/bin/sleep");
    command.arg(format!("{}.{:03}", ms / 1000, ms % 1000));
    command
}

/// A process that exits by itself (status 0) once `file` exists: an exit on demand, not at a
/// time a loaded machine might miss. It starts no other process.
pub fn exits_when_file_exists(file: &Path) -> Command {
    let mut command = python_code(
        "import os, sys, time\n\
         while not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n",
    );
    command.arg(file);
    command
}

/// The name of the oddly named program: a newline and `) (` in it.
pub const WEIRD_NAME: &str = "a) (b\nc";

/// `sleep 1000` run from a copy of /bin/sleep named [`WEIRD_NAME`] in `dir`: its comm (and
/// `stat`'s second field) is `(a) (b\nc)`. Returns the command and the copy's path.
pub fn weird_name_sleeper(dir: &Path) -> (Command, PathBuf) {
    named_sleeper(dir, WEIRD_NAME.as_bytes())
}

/// `sleep 1000` run from a copy of /bin/sleep whose file name is the raw bytes `name`.
pub fn named_sleeper(dir: &Path, name: &[u8]) -> (Command, PathBuf) {
    let path = dir.join(std::ffi::OsStr::from_bytes(name));
    std::fs::copy("/bin/sleep", &path).expect("copying /bin/sleep");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut command = command(&path);
    command.arg("1000");
    (command, path)
}

/// A process whose command line is the single one-character argument `c`: `cat` run as `c`,
/// waiting on a stdin pipe that stays open while the guard holds the child.
pub fn one_char_cmdline() -> Command {
    let mut command = command("/bin/cat");
    command.arg0("c").stdin(Stdio::piped());
    command
}

/// A Python interpreter that is not a version-manager shim (fast to start).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"] {
            if Path::new(candidate).exists() {
                return PathBuf::from(candidate);
            }
        }
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the tests");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// `python3 -c CODE`.
pub fn python_code(code: &str) -> Command {
    let mut command = command(python());
    command.arg("-c").arg(code);
    command
}

/// A process with `threads` extra threads (all sleeping) besides its main thread. Wait for
/// them with [`crate::wait_threads`].
pub fn threaded(threads: usize) -> Command {
    python_code(&format!(
        "import threading, time\n\
         for _ in range({threads}):\n    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n\
         time.sleep(1000)\n"
    ))
}

/// A parent that forks one child which never execs; both sleep. The child shows the parent's
/// command line. Find it with [`crate::proc::children`].
pub fn forking_parent() -> Command {
    python_code(
        "import os, time\n\
         os.fork()\n\
         time.sleep(1000)\n",
    )
}

/// A process that uses about `percent`% of one CPU: busy for `percent` ms, then sleeping for
/// `100 - percent` ms, over and over.
pub fn partly_busy(percent: u32) -> Command {
    assert!((1..100).contains(&percent));
    python_code(&format!(
        "import time\n\
         while True:\n    end = time.monotonic() + {busy}\n    while time.monotonic() < end:\n        pass\n    time.sleep({idle})\n",
        busy = f64::from(percent) / 1000.0,
        idle = f64::from(100 - percent) / 1000.0,
    ))
}
