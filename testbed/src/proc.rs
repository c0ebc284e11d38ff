//! The ground truth, read from /proc through the `procfs` crate: independent of the service's
//! own parsers. Only `stat` keeps the raw text, so tests can compare fields by their proc(5)
//! number.

use std::{collections::BTreeSet, fs, path::Path};

use procfs::process::Process;

pub type Pid = u32;

fn process(pid: Pid) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// `/proc/PID/cmdline` with NULs as spaces and trailing NULs dropped, like the contract;
/// `None` when the process is gone.
pub fn cmdline(pid: Pid) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let joined: Vec<u8> = raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    Some(String::from_utf8_lossy(&joined).into_owned())
}

/// The raw value of one `/proc/PID/status` line (after `Key:` and its tab).
pub fn status_field(pid: Pid, key: &str) -> Option<String> {
    let text = fs::read(format!("/proc/{pid}/status")).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.strip_prefix('\t').unwrap_or(v).to_owned())
    })
}

/// VmRSS in kB, 0 when the line is missing (kernel threads, zombies); `None` when gone.
pub fn vm_rss_kb(pid: Pid) -> Option<u64> {
    Some(process(pid)?.status().ok()?.vmrss.unwrap_or(0))
}

/// The memory of a process from /proc/PID/status, in kB, and its thread count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub hwm_kb: u64,
    /// VmRSS: anonymous + file-backed + shared memory.
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
    pub threads: u64,
}

/// [`Memory`] of a process; `None` when it is gone.
pub fn memory(pid: Pid) -> Option<Memory> {
    let status = process(pid)?.status().ok()?;
    Some(Memory {
        hwm_kb: status.vmhwm.unwrap_or(0),
        rss_kb: status.vmrss.unwrap_or(0),
        anon_kb: status.rssanon.unwrap_or(0),
        file_kb: status.rssfile.unwrap_or(0),
        threads: status.threads,
    })
}

/// Whether the contract lists this process: a non-empty command line and memory.
pub fn is_listable(pid: Pid) -> bool {
    cmdline(pid).is_some_and(|c| !c.is_empty()) && vm_rss_kb(pid).is_some_and(|r| r > 0)
}

/// The fields of `/proc/PID/stat` after the comm, starting with `state` (field 3), and the comm
/// (between the first `(` and the last `)`, without them).
pub fn stat(pid: Pid) -> Option<(Vec<u8>, Vec<String>)> {
    let raw = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let comm = raw[open + 1..close].to_vec();
    let rest = String::from_utf8_lossy(&raw[close + 1..]);
    Some((comm, rest.split_whitespace().map(str::to_owned).collect()))
}

/// One numeric field of /proc/PID/stat by its 1-based number in proc(5) (`utime` is 14).
pub fn stat_field(pid: Pid, number: usize) -> Option<String> {
    assert!(number >= 3, "fields 1 and 2 are pid and comm");
    stat(pid).and_then(|(_, fields)| fields.get(number - 3).cloned())
}

/// `R`, `S`, `Z`…
pub fn state(pid: Pid) -> Option<String> {
    Some(process(pid)?.stat().ok()?.state.to_string())
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let stat = process(pid)?.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// utime + stime in seconds.
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    Some(cpu_ticks(pid)? as f64 / ticks_per_second() as f64)
}

pub fn alive(pid: Pid) -> bool {
    process(pid).is_some()
}

/// The thread ids of a process, leader included.
pub fn threads(pid: Pid) -> Vec<Pid> {
    let mut tids: Vec<Pid> = process(pid)
        .and_then(|p| p.tasks().ok())
        .map(|tasks| tasks.flatten().map(|t| t.tid as Pid).collect())
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// Thread-group id of a task (a process's pid, or the process of a thread).
pub fn tgid(tid: Pid) -> Option<Pid> {
    Some(process(tid)?.status().ok()?.tgid as Pid)
}

/// Direct children of a process (all of its threads' children).
pub fn children(pid: Pid) -> BTreeSet<Pid> {
    let Some(tasks) = process(pid).and_then(|p| p.tasks().ok()) else {
        return BTreeSet::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task.children().ok())
        .flatten()
        .collect()
}

/// The `cgroup.procs` of a cgroup directory (empty when it is gone).
pub fn cgroup_procs(dir: &Path) -> BTreeSet<Pid> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// What the API should list for a cgroup: the processes of its `cgroup.procs` with a command
/// line and memory, read now.
pub fn listable_in(dir: &Path) -> BTreeSet<Pid> {
    cgroup_procs(dir)
        .into_iter()
        .filter(|&pid| is_listable(pid))
        .collect()
}

/// The path of a process in one hierarchy of `/proc/PID/cgroup`: `controller` is a v1
/// controller name (exact match in the list) or `""` for the v2 line.
pub fn cgroup_path(pid: Pid, controller: &str) -> Option<String> {
    let cgroups = process(pid)?.cgroups().ok()?;
    cgroups.into_iter().find_map(|line| {
        let hit = if controller.is_empty() {
            line.hierarchy == 0 && line.controllers.is_empty()
        } else {
            line.controllers.iter().any(|c| c == controller)
        };
        hit.then_some(line.pathname)
    })
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// Every process of this host, by pid.
pub fn all_pids() -> Vec<Pid> {
    procfs::process::all_processes()
        .map(|all| all.flatten().map(|p| p.pid as Pid).collect())
        .unwrap_or_default()
}

/// How many processes of this host are in a container (a cpu cgroup other than `/`): what the
/// service samples every period.
pub fn host_container_processes() -> usize {
    all_pids()
        .into_iter()
        .filter(|&pid| cgroup_path(pid, "cpu").is_some_and(|p| p != "/"))
        .count()
}
