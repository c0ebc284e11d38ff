//! The floor: what reading /proc costs at the least, measured in this process with plain system
//! calls (no parsing), so the service's cost can be stated as a ratio to it.
//!
//! - open/read/close of /proc/PID/stat and /proc/PID/status for each container process;
//! - pread at offset 0 of the same files through descriptors opened once;
//! - the service's design floor: pread within the service's descriptor budget (its formula:
//!   the open-file limit − 2048, two descriptors per process, processes first), open/read/close
//!   beyond it;
//! - the cadence floor: the service's design (pread on held descriptors within the budget,
//!   open/read/close beyond), but one round per sample period, as the service reads them: back
//!   to back, the kernel's data of these tasks stays cache-warm and a round costs about half of
//!   what it costs once a second; beside it, the same rounds with the containers' cgroup files
//!   the service also reads each sample (`--cgroup-stats`, on by default: on this benchmark's
//!   host, whose containers have only a cpu cgroup, the four `cpu.*` files of
//!   [`CGROUP_FILES`]), through descriptors while the budget lasts, by path beyond;
//! - the procfs tracker's floor: readdir /proc, open/read/close /proc/PID/cgroup of every process,
//!   and for the processes found in a container the design-floor read of stat and status.
//!
//! Each figure is the median over rounds of the thread's CPU time per round (after one warm-up
//! round), which is what the service's utime+stime counts too.

use std::{
    collections::HashMap,
    ffi::{CStr, CString, OsStr},
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::kit::{cleanup, stats::median};

#[derive(Clone, Debug, Default)]
pub struct Floor {
    /// Container processes measured (the benchmark's own).
    pub processes: usize,
    /// Processes the pread variant covered (descriptor budget).
    pub pread_processes: usize,
    /// Processes /proc listed, and those found in a container, in the procfs rounds.
    pub procfs_listed: usize,
    pub procfs_in_containers: usize,
    /// Per round: CPU µs per process for stat+status with open/read/close, and its wall time.
    orc: Vec<f64>,
    orc_wall: Vec<f64>,
    /// Per round: CPU µs per process for stat+status with pread on open descriptors.
    pread: Vec<f64>,
    /// Per round: CPU µs of the procfs tracker's floor over the whole host.
    procfs: Vec<f64>,
    /// Per round: CPU µs per process for stat+status with pread on held descriptors, one round
    /// per `cadence_gap` (see [`measure_cadence`]).
    cadence: Vec<f64>,
    /// The same rounds with the containers' cgroup files read too, CPU µs per process.
    cadence_cgroups: Vec<f64>,
    pub cadence_gap: Duration,
}

/// The cgroup files the service reads for a container that has only a cgroup v1 cpu directory
/// (`companion/src/cgroup/reader.rs`, `CPU_V1`).
pub const CGROUP_FILES: [&[u8]; 4] = [
    b"cpu.cfs_quota_us",
    b"cpu.cfs_period_us",
    b"cpu.shares",
    b"cpu.stat",
];

impl Floor {
    pub fn rounds(&self) -> usize {
        self.orc.len()
    }
    /// µs per process for stat+status, open/read/close (median of rounds).
    pub fn open_read_close_us(&self) -> f64 {
        median(&mut self.orc.clone())
    }
    pub fn open_read_close_wall_us(&self) -> f64 {
        median(&mut self.orc_wall.clone())
    }
    /// µs per process for stat+status, pread on open descriptors.
    pub fn pread_us(&self) -> f64 {
        median(&mut self.pread.clone())
    }
    /// µs per process of the service's design (pread within budget, open/read/close beyond).
    pub fn design_us(&self) -> f64 {
        let within = self.pread_processes.min(self.processes);
        let beyond = self.processes - within;
        (self.pread_us() * within as f64 + self.open_read_close_us() * beyond as f64)
            / self.processes.max(1) as f64
    }
    /// µs per process for stat+status, pread on held descriptors, at the service's cadence.
    pub fn cadence_us(&self) -> f64 {
        median(&mut self.cadence.clone())
    }
    /// µs per process for stat+status and the containers' cgroup files, at the cadence: all the
    /// reads the service makes each sample with its defaults.
    pub fn cadence_with_cgroups_us(&self) -> f64 {
        median(&mut self.cadence_cgroups.clone())
    }
    pub fn cadence_rounds(&self) -> usize {
        self.cadence.len()
    }
    /// The procfs tracker's floor: µs per round over the whole host.
    pub fn procfs_round_us(&self) -> f64 {
        median(&mut self.procfs.clone())
    }
    pub fn procfs_us_per_container_process(&self) -> f64 {
        self.procfs_round_us() / self.procfs_in_containers.max(1) as f64
    }
    /// Both measurements' rounds together (the floor measured before and after the service
    /// runs of one host shape, so slow drift of a shared machine weighs on both sides).
    pub fn merge(mut self, other: Floor) -> Floor {
        self.orc.extend(other.orc);
        self.orc_wall.extend(other.orc_wall);
        self.pread.extend(other.pread);
        self.procfs.extend(other.procfs);
        self.cadence.extend(other.cadence);
        self.cadence_cgroups.extend(other.cadence_cgroups);
        self.procfs_listed = self.procfs_listed.max(other.procfs_listed);
        self.procfs_in_containers = self.procfs_in_containers.max(other.procfs_in_containers);
        self
    }
}

/// Processes that may keep two descriptors each, by the service's formula (processes take
/// theirs first; the cgroup files get what is left).
pub fn descriptor_budget() -> usize {
    usable_descriptors() / 2
}

/// Descriptors the service may keep open: the open-file limit less its reserve of 2048.
fn usable_descriptors() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur != limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    let current = if limit.rlim_cur == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_cur
    };
    // The service keeps 2048 for other uses and a fifth of the rest for cgroup files.
    current.saturating_sub(2048) as usize
}

/// Measures the floor for `pids` (the container processes) and for the whole host: `rounds`
/// back-to-back rounds of each variant, and `cadence_rounds` of the cadence floor, one every
/// `gap`. `v1_cpu` says which /proc/PID/cgroup line names the container.
pub fn measure(
    pids: &[u32],
    cgroup_dirs: &[PathBuf],
    rounds: usize,
    cadence_rounds: usize,
    gap: Duration,
    v1_cpu: bool,
) -> anyhow::Result<Floor> {
    let rounds = rounds.max(2);
    let (cadence, cadence_cgroups) = measure_cadence(pids, cgroup_dirs, cadence_rounds, gap)?;
    let budget = descriptor_budget().min(pids.len());
    let mut buf = vec![0u8; 4096];
    let n = pids.len().max(1) as f64;

    // open/read/close
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for round in 0..=rounds {
        cleanup::check()?;
        let (c, w) = timed(|| {
            for &pid in pids {
                read_path(pid, b"stat", &mut buf);
                read_path(pid, b"status", &mut buf);
            }
        });
        if round > 0 {
            cpu.push(c / n);
            wall.push(w / n);
        }
    }
    let orc = cpu;
    let orc_wall = wall;

    // pread on descriptors kept open, within the budget
    let open: Vec<(i32, i32)> = pids[..budget]
        .iter()
        .filter_map(|&pid| Some((open_path(pid, b"stat")?, open_path(pid, b"status")?)))
        .collect();
    let mut pread_rounds = Vec::new();
    for round in 0..=rounds {
        cleanup::check()?;
        let (c, _) = timed(|| {
            for &(stat, status) in &open {
                pread(stat, &mut buf);
                pread(status, &mut buf);
            }
        });
        if round > 0 {
            pread_rounds.push(c / open.len().max(1) as f64);
        }
    }

    close_all(&open);

    // the procfs tracker: readdir + cgroup of every process + stat/status of container ones,
    // through descriptors kept open for the first `budget` container processes found (as the
    // service's sampler keeps them), open/read/close for the rest.
    let mut listing = Vec::with_capacity(pids.len() * 2);
    list_proc(&mut listing);
    let mut by_pid: HashMap<u32, (i32, i32)> = HashMap::new();
    let host_budget = descriptor_budget();
    for &pid in &listing {
        if by_pid.len() >= host_budget {
            break;
        }
        let in_one = read_path(pid, b"cgroup", &mut buf)
            .is_some_and(|len| in_container(&buf[..len], v1_cpu));
        if !in_one {
            continue;
        }
        if let (Some(stat), Some(status)) = (open_path(pid, b"stat"), open_path(pid, b"status")) {
            by_pid.insert(pid, (stat, status));
        }
    }
    let mut cpu = Vec::new();
    let mut listed = 0;
    let mut found = 0;
    for round in 0..=rounds {
        cleanup::check()?;
        let (c, _) = timed(|| {
            listed = 0;
            found = 0;
            list_proc(&mut listing);
            for &pid in &listing {
                listed += 1;
                let Some(len) = read_path(pid, b"cgroup", &mut buf) else {
                    continue;
                };
                if !in_container(&buf[..len], v1_cpu) {
                    continue;
                }
                found += 1;
                match by_pid.get(&pid) {
                    Some(&(stat, status)) => {
                        pread(stat, &mut buf);
                        pread(status, &mut buf);
                    }
                    None => {
                        read_path(pid, b"stat", &mut buf);
                        read_path(pid, b"status", &mut buf);
                    }
                }
            }
        });
        if round > 0 {
            cpu.push(c);
        }
    }
    close_all(&by_pid.into_values().collect::<Vec<_>>());
    Ok(Floor {
        processes: pids.len(),
        pread_processes: open.len(),
        procfs_listed: listed,
        procfs_in_containers: found,
        orc,
        orc_wall,
        pread: pread_rounds,
        procfs: cpu,
        cadence,
        cadence_cgroups,
        cadence_gap: gap,
    })
}

/// The cadence floor: `rounds` rounds (after one warm-up round) of the design's reads of
/// stat+status (pread on descriptors held within the budget, open/read/close beyond), the
/// rounds starting `gap` apart (at once when a round outlasts the gap); CPU µs per process of
/// each round. Then, in the same rounds, the cgroup files of `cgroup_dirs` (held with what the
/// processes left of the budget, by path beyond): the second list is per process, both reads.
fn measure_cadence(
    pids: &[u32],
    cgroup_dirs: &[PathBuf],
    rounds: usize,
    gap: Duration,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    if rounds == 0 || pids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (held, beyond) = pids.split_at(descriptor_budget().min(pids.len()));
    let open: Vec<(i32, i32)> = held
        .iter()
        .filter_map(|&pid| Some((open_path(pid, b"stat")?, open_path(pid, b"status")?)))
        .collect();
    let cgroup_files: Vec<CString> = cgroup_dirs
        .iter()
        .flat_map(|dir| {
            CGROUP_FILES
                .iter()
                .map(move |name| dir.join(OsStr::from_bytes(name)))
        })
        .filter(|path| path.exists())
        .filter_map(|path| CString::new(path.into_os_string().into_vec()).ok())
        .collect();
    let left = usable_descriptors().saturating_sub(2 * open.len());
    let (held_files, files_beyond) = cgroup_files.split_at(left.min(cgroup_files.len()));
    let held_files: Vec<i32> = held_files.iter().filter_map(|p| open_c(p)).collect();
    let mut buf = vec![0u8; 4096];
    let (mut out, mut with_cgroups) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    let n = (open.len() + beyond.len()).max(1) as f64;
    let mut next = Instant::now();
    let mut result = Ok(());
    for round in 0..=rounds {
        if let Some(wait) = next.checked_duration_since(Instant::now())
            && let Err(err) = cleanup::sleep(wait)
        {
            result = Err(err);
            break;
        }
        next = Instant::now() + gap;
        let (c, _) = timed(|| {
            for &(stat, status) in &open {
                pread(stat, &mut buf);
                pread(status, &mut buf);
            }
            for &pid in beyond {
                read_path(pid, b"stat", &mut buf);
                read_path(pid, b"status", &mut buf);
            }
        });
        let (g, _) = timed(|| {
            for &fd in &held_files {
                pread(fd, &mut buf);
            }
            for path in files_beyond {
                if let Some(fd) = open_c(path) {
                    pread(fd, &mut buf);
                    // SAFETY: a descriptor we opened.
                    unsafe { libc::close(fd) };
                }
            }
        });
        if round > 0 {
            out.push(c / n);
            with_cgroups.push((c + g) / n);
        }
    }
    close_all(&open);
    for fd in held_files {
        // SAFETY: descriptors we opened.
        unsafe { libc::close(fd) };
    }
    result.map(|()| (out, with_cgroups))
}

/// open(2) read-only of a NUL-terminated path.
fn open_c(path: &CStr) -> Option<i32> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

fn close_all(fds: &[(i32, i32)]) {
    for &(stat, status) in fds {
        // SAFETY: descriptors we opened.
        unsafe {
            libc::close(stat);
            libc::close(status);
        }
    }
}

/// (thread CPU µs, wall µs) of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let c0 = thread_cpu();
    let w0 = Instant::now();
    f();
    let wall = w0.elapsed();
    let cpu = thread_cpu().saturating_sub(c0);
    (cpu.as_secs_f64() * 1e6, wall.as_secs_f64() * 1e6)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall on a local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// "/proc/<pid>/<name>\0" without allocating.
fn proc_path(pid: u32, name: &[u8], out: &mut [u8; 64]) {
    let mut digits = [0u8; 10];
    let mut n = pid;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut i = 0;
    for &b in b"/proc/" {
        out[i] = b;
        i += 1;
    }
    for k in (0..len).rev() {
        out[i] = digits[k];
        i += 1;
    }
    out[i] = b'/';
    i += 1;
    for &b in name {
        out[i] = b;
        i += 1;
    }
    out[i] = 0;
}

fn open_path(pid: u32, name: &[u8]) -> Option<i32> {
    let mut path = [0u8; 64];
    proc_path(pid, name, &mut path);
    // SAFETY: NUL-terminated path on the stack.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

/// open + read (until a short read) + close; the bytes read.
fn read_path(pid: u32, name: &[u8], buf: &mut [u8]) -> Option<usize> {
    let fd = open_path(pid, name)?;
    let mut total = 0;
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd, buf[total..].as_mut_ptr().cast(), buf.len() - total) };
        if n <= 0 {
            break;
        }
        total += n as usize;
        if total < buf.len() {
            break;
        }
        total = 0; // larger than the buffer: keep reading, keep the tail
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    Some(total)
}

/// One pread at offset 0 (the files fit the buffer: a short read is the whole text).
fn pread(fd: i32, buf: &mut [u8]) -> usize {
    // SAFETY: reading into our buffer.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    n.max(0) as usize
}

/// The numeric entries of /proc, with opendir/readdir.
fn list_proc(out: &mut Vec<u32>) {
    out.clear();
    // SAFETY: libc directory stream, closed below; names are NUL-terminated by the kernel.
    unsafe {
        let dir = libc::opendir(c"/proc".as_ptr());
        if dir.is_null() {
            return;
        }
        loop {
            let entry = libc::readdir64(dir);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes();
            if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
                continue;
            }
            let pid = name
                .iter()
                .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
            out.push(pid);
        }
        libc::closedir(dir);
    }
}

/// Whether a /proc/PID/cgroup text puts the process in a container (not "/") in the naming
/// hierarchy: the v1 line whose controller list holds exactly `cpu`, else the `0::` line.
fn in_container(text: &[u8], v1_cpu: bool) -> bool {
    for line in text.split(|&b| b == b'\n') {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let naming = if v1_cpu {
            controllers.split(|&b| b == b',').any(|c| c == b"cpu")
        } else {
            controllers.is_empty()
        };
        if naming {
            return path != b"/";
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let mut out = [0u8; 64];
        proc_path(12345, b"status", &mut out);
        assert_eq!(&out[..19], b"/proc/12345/status\0");
        proc_path(0, b"stat", &mut out);
        assert_eq!(&out[..13], b"/proc/0/stat\0");
    }

    #[test]
    fn containers() {
        let text = b"12:cpuset:/\n4:cpu,cpuacct:/docker/abc\n1:cpu:/docker/x\n0::/\n";
        assert!(in_container(text, true));
        assert!(!in_container(b"1:cpu:/\n0::/a\n", true));
        assert!(in_container(b"1:cpu:/\n0::/a\n", false));
        assert!(!in_container(b"0::/\n", false));
    }

    #[test]
    fn reads_own_files() {
        let pid = std::process::id();
        let mut buf = vec![0u8; 4096];
        let n = read_path(pid, b"stat", &mut buf).unwrap();
        assert!(buf[..n].starts_with(pid.to_string().as_bytes()));
        let mut listing = Vec::new();
        list_proc(&mut listing);
        assert!(listing.contains(&pid));
    }
}
