//! The ground truth, read from /proc by the tests themselves.

use std::{collections::BTreeSet, fs, path::Path};

pub type Pid = u32;

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
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
    )
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
    stat_field(pid, 3)
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let (_, f) = stat(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn alive(pid: Pid) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The thread ids of a process, leader included.
pub fn threads(pid: Pid) -> Vec<Pid> {
    let mut tids: Vec<Pid> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// Thread-group id of a task (a process's pid, or the process of a thread).
pub fn tgid(tid: Pid) -> Option<Pid> {
    status_field(tid, "Tgid")?.trim().parse().ok()
}

/// Direct children of a process (all of its threads' children).
pub fn children(pid: Pid) -> BTreeSet<Pid> {
    threads(pid)
        .into_iter()
        .filter_map(|tid| fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
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
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_owned())
    })
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// How many processes of this host are in a container (a cpu cgroup other than `/`): what the
/// service samples every period.
pub fn host_container_processes() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok())
        .filter(|&pid| cgroup_path(pid, "cpu").is_some_and(|p| p != "/"))
        .count()
}
