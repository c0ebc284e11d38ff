//! Wrong or missing data: a reused pid, a cgroup whose name is not UTF-8, command lines rewritten
//! behind the sampler's back, a process whose main thread exited, a name the kernel escapes.
//! Each against real processes and cgroups, with both trackers (the eBPF one through real BPF).

use std::{
    ffi::{CString, OsStr},
    fs,
    io::{self, Write as _},
    os::unix::{ffi::OsStrExt, fs::FileExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, both_trackers, cpu_heavy, proc,
    spawn, wait_for,
};

/// A cmdline rewritten behind the sampler's back shows within this many samples (the sampler's
/// bound, documented in the README), plus two for the polling race.
const CMDLINE_BOUND_SAMPLES: u64 = 10 + 2;

/// Polls until `check` holds; returns how many samples were published meanwhile.
fn samples_until(service: &Service, what: &str, mut check: impl FnMut(&Service) -> bool) -> u64 {
    let start = service.samples_taken();
    service.wait_until(what, service.patience() * 2, |s| {
        if check(s) {
            Ok(())
        } else {
            Err(format!("{} samples so far", s.samples_taken() - start))
        }
    });
    service.samples_taken() - start
}

/// The newest snapshot's entry for `pid`, if `container` lists it.
fn listed(service: &Service, container: &str, pid: Pid) -> Option<serde_json::Value> {
    let snapshots = service.processes(container, "").ok()?;
    api::find(snapshots.last()?, pid).cloned()
}

/// Waits until the service has published a sample after this call.
fn wait_next_sample(service: &Service) {
    let seen = service.samples_taken();
    service.wait_until("the next sample", service.patience(), |s| {
        if s.samples_taken() > seen {
            Ok(())
        } else {
            Err("none yet".into())
        }
    });
}

/// A busy loop started with exactly `pid` (clone3 with `set_tid`: root only), moved into the
/// cgroup of `procs` before it execs. Killed and reaped on drop.
struct WithPid {
    pid: Pid,
}

impl WithPid {
    fn spawn(pid: Pid, procs: &Path) -> io::Result<WithPid> {
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        let procs = CString::new(procs.as_os_str().as_bytes()).expect("no NUL");
        let argv = [
            c"sh".as_ptr(),
            c"-c".as_ptr(),
            c"while :; do :; done".as_ptr(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null::<libc::c_char>()];
        let tids = [pid as libc::pid_t];
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: tids.as_ptr() as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM is a fork; the child only makes async-signal-safe
        // calls (open, write, close, execve, _exit) on memory prepared before, and allocates
        // nothing.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                size_of::<CloneArgs>(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        if ret == 0 {
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(126);
                }
                libc::close(fd);
                libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(WithPid { pid: ret as Pid })
    }
}

impl Drop for WithPid {
    fn drop(&mut self) {
        // SAFETY: plain system calls on our own child.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(self.pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
}

/// Item 4: a process exits and a new one gets its pid before the next sample. The new one is
/// listed by that sample already, and its CPU since its start counts in the next.
fn reused_pid_is_listed_at_once_and_counts_its_cpu(tracker: Tracker) {
    let _cpu = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = Service::with_tracker(tracker, &[]);
    let old = cg.spawn(&[&c], spawn::sleeper());
    service.wait_pids(&c.path, Some(&[old].into()), service.patience());

    // Right after a sample, so that the exit and the newcomer fall between two samples: the
    // sampler holds the old process's files open.
    wait_next_sample(&service);
    cg.kill(old);
    let procs = c.dir(Hierarchy::Cpu).join("cgroup.procs");
    let new = WithPid::spawn(old, &procs).expect("clone3 with the freed pid");
    assert_eq!(new.pid, old);
    wait_for(
        "the newcomer in the container",
        Duration::from_secs(5),
        || match proc::cgroup_path(new.pid, "cpu") {
            Some(path) if path == c.path => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let in_container = SystemTime::now();
    let starttime: u64 = proc::stat_field(new.pid, 22).unwrap().parse().unwrap();

    service.wait_samples(3);
    let snapshots = service.snapshots(&c.path, "count=6");
    let after: Vec<&serde_json::Value> = snapshots
        .iter()
        .filter(|s| api::timestamp(s) > in_container)
        .collect();
    assert!(
        after.len() >= 2,
        "{} samples after the newcomer",
        after.len()
    );
    let first = api::find(after[0], new.pid)
        .unwrap_or_else(|| panic!("the newcomer is missing from the first sample after it"));
    assert_eq!(
        first["stat"]["starttime"], starttime,
        "the newcomer, not its predecessor"
    );
    let second = api::find(after[1], new.pid).expect("listed in the second sample");
    assert!(
        api::share(second) > 0.0,
        "the busy newcomer shows {}% in the second sample after it",
        api::share(second)
    );
}

/// A cgroup directory whose name is raw bytes, under `parent`; removed on drop after killing
/// the process started in it.
struct OddCgroup<'a> {
    cg: &'a TestCgroup,
    container: Container,
    pid: Option<Pid>,
}

impl<'a> OddCgroup<'a> {
    fn new(cg: &'a TestCgroup, parent: &Container, name: &[u8]) -> OddCgroup<'a> {
        let dir = parent.dir(Hierarchy::Cpu).join(OsStr::from_bytes(name));
        fs::create_dir(&dir).expect("creating the cgroup");
        OddCgroup {
            cg,
            container: Container {
                path: format!("{}/{}", parent.path, String::from_utf8_lossy(name)),
                dirs: vec![(Hierarchy::Cpu, dir)],
            },
            pid: None,
        }
    }

    fn dir(&self) -> PathBuf {
        self.container.main_dir().to_path_buf()
    }
}

impl Drop for OddCgroup<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            self.cg.kill(pid);
        }
        for _ in 0..200 {
            if fs::remove_dir(self.dir()).is_ok() || !self.dir().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Item 5: a process in a cgroup whose name is not UTF-8 is listed by the next samples, by
/// either tracker (the eBPF one learns it from the attach event, not from a later /proc scan).
fn cgroup_name_not_utf8_is_listed_at_once(tracker: Tracker) {
    let cg = TestCgroup::new();
    let parent = cg.container(&[Hierarchy::Cpu]);
    let mut odd = OddCgroup::new(&cg, &parent, b"odd-\xff\xfe-name");
    let service = Service::with_tracker(tracker, &["--reconcile-every", "1h"]);
    let pid = cg.spawn(&[&odd.container], spawn::sleeper());
    odd.pid = Some(pid);
    let path = odd.container.path.clone();
    let took = samples_until(&service, "the process in the non-UTF-8 cgroup", |s| {
        listed(s, &path, pid).is_some()
    });
    assert!(took <= 3, "listed after {took} samples");
    let process = listed(&service, &path, pid).unwrap();
    assert_eq!(process["cgroup"], path.as_str(), "U+FFFD for each bad byte");
}

/// Writes `new` over `old` in the command line of `pid` through /proc/PID/mem (as a debugger
/// would); the process does not run.
fn rewrite_cmdline_from_outside(pid: Pid, old: &[u8], new: &[u8]) {
    assert_eq!(old.len(), new.len());
    let start: u64 = proc::stat_field(pid, 48).unwrap().parse().unwrap();
    let end: u64 = proc::stat_field(pid, 49).unwrap().parse().unwrap();
    let mem = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .expect("opening /proc/PID/mem");
    let mut args = vec![0; (end - start) as usize];
    mem.read_exact_at(&mut args, start).expect("reading argv");
    let at = args
        .windows(old.len())
        .rposition(|w| w == old)
        .expect("the old text in argv");
    mem.write_all_at(new, start + at as u64)
        .expect("writing argv");
}

/// Item 6, from outside: an idle process's command line rewritten through /proc/PID/mem shows
/// within the documented bound.
fn cmdline_rewritten_from_outside_shows_within_the_bound(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = Service::with_tracker(tracker, &[]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    service.wait_until("the sleeper", service.patience(), |s| {
        match listed(s, &c.path, pid) {
            Some(p) if p["cmdline"] == spawn::SLEEPER_CMDLINE => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    rewrite_cmdline_from_outside(pid, b"1000", b"9999");
    assert_eq!(proc::cmdline(pid).as_deref(), Some("/bin/sleep 9999"));
    let took = samples_until(&service, "the rewritten cmdline", |s| {
        listed(s, &c.path, pid).is_some_and(|p| p["cmdline"] == "/bin/sleep 9999")
    });
    assert!(took <= CMDLINE_BOUND_SAMPLES, "shown after {took} samples");
}

/// Item 6, from another thread: the main thread sleeps while a second thread, woken by a FIFO,
/// rewrites argv in place and ends.
fn cmdline_rewritten_by_another_thread_shows_within_the_bound(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let fifo = cg.temp_dir().join("go");
    let path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a plain system call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut command = spawn::python_code(
        "import ctypes, sys, threading, time\n\
         def rewrite():\n\
         \x20   open(sys.argv[1]).read()\n\
         \x20   fields = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n\
         \x20   start, end = int(fields[45]), int(fields[46])\n\
         \x20   args = ctypes.string_at(start, end - start)\n\
         \x20   old = sys.argv[2].encode()\n\
         \x20   at = args.rfind(old)\n\
         \x20   ctypes.memmove(start + at, old.replace(b'1', b'2'), len(old))\n\
         threading.Thread(target=rewrite).start()\n\
         time.sleep(1000)\n",
    );
    command.arg(&fifo).arg("marker-1111");
    let service = Service::with_tracker(tracker, &[]);
    let pid = cg.spawn(&[&c], command);
    service.wait_until("the python process", service.patience(), |s| {
        match listed(s, &c.path, pid) {
            Some(p)
                if p["cmdline"]
                    .as_str()
                    .is_some_and(|c| c.ends_with("marker-1111")) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });
    // Let it settle (start-up CPU) before the rewrite.
    service.wait_samples(2);
    fs::File::options()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"go"))
        .expect("waking the rewriting thread");
    wait_for(
        "the rewrite",
        Duration::from_secs(5),
        || match proc::cmdline(pid) {
            Some(c) if c.ends_with("marker-2222") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let took = samples_until(&service, "the rewritten cmdline", |s| {
        listed(s, &c.path, pid).is_some_and(|p| {
            p["cmdline"]
                .as_str()
                .is_some_and(|c| c.ends_with("marker-2222"))
        })
    });
    assert!(took <= CMDLINE_BOUND_SAMPLES, "shown after {took} samples");
}

/// Item 7: the main thread exits (`SYS_exit`, not `exit_group`) while another thread spins.
/// The process is alive: it is listed with its command line and memory, and its CPU counts.
fn process_whose_main_thread_exited_is_listed(tracker: Tracker) {
    let _cpu = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = Service::with_tracker(tracker, &[]);
    let mut command = spawn::python_code(
        "import ctypes, threading, time\n\
         def spin():\n\
         \x20   while True:\n\
         \x20       pass\n\
         threading.Thread(target=spin).start()\n\
         time.sleep(0.5)\n\
         ctypes.CDLL(None).syscall(60, 0)\n",
    );
    command.arg("zombie-leader");
    let pid = cg.spawn(&[&c], command);
    wait_for(
        "the leader to exit",
        Duration::from_secs(10),
        || match proc::state(pid) {
            Some(state) if state == "Z" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(proc::threads(pid).len(), 2, "the spinning thread lives");
    // Three samples all taken after the main thread exited.
    service.wait_samples(4);
    let snapshots = service
        .processes(&c.path, "count=3")
        .unwrap_or_else(|r| panic!("not listed: {} {}", r.status, r.text()));
    for snapshot in &snapshots {
        let p = api::find(snapshot, pid)
            .unwrap_or_else(|| panic!("missing from a sample after its main thread exited"));
        assert!(api::share(p) > 0.0, "its CPU counts: {p}");
    }
    let p = api::find(snapshots.last().unwrap(), pid).unwrap().clone();
    assert!(
        p["cmdline"]
            .as_str()
            .is_some_and(|c| c.ends_with("zombie-leader")),
        "the command line of the live thread: {}",
        p["cmdline"]
    );
    assert!(api::vm_rss(&p) > 0, "memory of the live thread");
    assert_eq!(p["status"]["Pid"], u64::from(pid));
    assert_eq!(p["status"]["Tgid"], u64::from(pid));
    assert_eq!(p["status"]["Name"], "python3");
    // The per-container figures count it too.
    let containers = service.get("/api/v2/containers").json();
    let entry = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == c.path.as_str())
        .unwrap_or_else(|| panic!("{} in /api/v2/containers: {containers}", c.path));
    assert_eq!(entry["processes"], 1, "{entry}");
}

/// Item 9: status.Name is the real name, the same text as stat.comm without its parentheses
/// (the kernel escapes `\n` and `\\` in the status file).
fn status_name_is_the_real_name(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let name = b"a\\b\nc";
    let (command, _path) = spawn::named_sleeper(&cg.temp_dir(), name);
    let service = Service::with_tracker(tracker, &[]);
    let pid = cg.spawn(&[&c], command);
    assert_eq!(
        proc::status_field(pid, "Name").as_deref(),
        Some("a\\\\b\\nc"),
        "the kernel escapes the status file"
    );
    let p = service.wait_until("the oddly named sleeper", service.patience(), |s| {
        listed(s, &c.path, pid).ok_or_else(|| "not yet".to_owned())
    });
    assert_eq!(p["stat"]["comm"], "(a\\b\nc)");
    assert_eq!(p["status"]["Name"], "a\\b\nc");
}

both_trackers!(
    reused_pid_is_listed_at_once_and_counts_its_cpu,
    cgroup_name_not_utf8_is_listed_at_once,
    cmdline_rewritten_from_outside_shows_within_the_bound,
    cmdline_rewritten_by_another_thread_shows_within_the_bound,
    process_whose_main_thread_exited_is_listed,
    status_name_is_the_real_name,
);
