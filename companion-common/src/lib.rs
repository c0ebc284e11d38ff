//! Types shared by the kernel programs (`companion-ebpf`) and the service (`companion`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into the ring buffer or
//! reads it from a global, the userspace side reads the same bytes. Field order is chosen so that
//! no struct has implicit padding.
#![no_std]

/// A new process (not a thread) was forked by a tracked process: `pid` is the child,
/// `parent` the tgid of the process that called fork/clone.
pub const EVENT_FORK: u32 = 1;
/// A tracked process called execve: its command line and name changed.
pub const EVENT_EXEC: u32 = 2;
/// The last thread of a tracked process exited; `cpu_ns` is its whole CPU time when known.
pub const EVENT_EXIT: u32 = 3;
/// A process was moved into a cgroup of the tracked hierarchy (see [`AttachEvent`]).
pub const EVENT_ATTACH: u32 = 4;
/// A process was created straight into a cgroup (`clone3` with `CLONE_INTO_CGROUP`) by a parent
/// that is not tracked: userspace must look up its cgroup.
pub const EVENT_FORK_INTO_CGROUP: u32 = 5;

/// The OOM killer chose a tracked process as its victim (see [`OomEvent`]).
pub const EVENT_OOM: u32 = 6;

/// Flag of [`ExitEvent::flags`]: `cpu_ns` holds the process's CPU time at exit.
pub const FLAG_CPU_KNOWN: u32 = 1;
/// Flag of [`ExitEvent::flags`]: the wait status, parent, name, times and peak RSS are filled
/// (the kernel's BTF gave every struct member they are read from).
pub const FLAG_DETAILS_KNOWN: u32 = 2;

/// Fork events. Every event starts with its `kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    /// The process (thread-group id) the event is about.
    pub pid: u32,
    /// For forks: the tgid of the parent. Zero otherwise.
    pub parent: u32,
    pub flags: u32,
    /// Unused (zero): keeps the layout of the other events' first fields.
    pub cpu_ns: u64,
}

/// Longest command line an [`ExecEvent`] carries; longer ones are cut.
pub const ARGS_CAP: usize = 256;

/// A tracked process called execve. `args` holds the start of its new argument area
/// (NUL-separated, `args_len` bytes valid), so a process that exits before any sample still has
/// its command known; `args_len` is 0 when capturing is off or the read failed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub kind: u32,
    pub pid: u32,
    pub args_len: u32,
    /// Length of the whole argument area, which may exceed `ARGS_CAP`.
    pub args_total: u32,
    pub args: [u8; ARGS_CAP],
}

/// The last thread of a tracked process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub kind: u32,
    pub pid: u32,
    pub flags: u32,
    /// The wait status its parent sees: exit code in bits 8–15, terminating signal in bits
    /// 0–6, core dumped in bit 7 (`FLAG_DETAILS_KNOWN`).
    pub status: u32,
    /// The parent's tgid at exit (`FLAG_DETAILS_KNOWN`).
    pub ppid: u32,
    pub _reserved: u32,
    /// CPU time of all its threads, in nanoseconds (`FLAG_CPU_KNOWN`).
    pub cpu_ns: u64,
    /// The kernel's tick-sampled user and system time (threads gone and the last one), in
    /// nanoseconds: their ratio splits `cpu_ns` (`FLAG_DETAILS_KNOWN`).
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Start of the process and time of the exit, nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub start_boot_ns: u64,
    pub end_boot_ns: u64,
    /// Peak resident set of the process, in pages (`signal->maxrss`).
    pub maxrss_pages: u64,
    /// The thread-group leader's name, NUL-padded.
    pub comm: [u8; 16],
}

/// A figure an [`OomEvent`] does not carry on this kernel.
pub const NO_FIGURE: u64 = u64::MAX;

/// `oom:mark_victim` for a tracked process: the figures the tracepoint carries, in kB, each
/// `NO_FIGURE` when this kernel's tracepoint lacks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub kind: u32,
    pub pid: u32,
    /// `oom_score_adj` of the victim, `i32::MIN` when absent.
    pub oom_score_adj: i32,
    pub _reserved: u32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
}

/// Longest cgroup path carried by an [`AttachEvent`]; longer paths are cut and flagged, and
/// userspace reads /proc/PID/cgroup instead.
pub const CGROUP_PATH_CAP: usize = 512;

/// A process was attached to a cgroup of the tracked hierarchy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttachEvent {
    pub kind: u32,
    pub pid: u32,
    /// Depth of the cgroup: 0 is the hierarchy's root ("not in a container").
    pub level: i32,
    /// Length of the path in the kernel; more than `CGROUP_PATH_CAP` means `path` is cut.
    pub path_len: u32,
    pub cgroup_id: u64,
    /// The cgroup path, NUL-terminated when shorter than the buffer.
    pub path: [u8; CGROUP_PATH_CAP],
}

/// Where a field sits in a tracepoint record, or that the field is absent (`ABSENT`).
/// Read by userspace from tracefs at load time, so nothing depends on one kernel's layout.
pub type FieldOffset = u32;
/// A tracepoint field or kernel struct member this kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// Set by userspace before the programs load (a read-only global of the BPF object).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Hierarchy id whose non-root cgroups are containers: the v1 hierarchy carrying `cpu`,
    /// or 0 for the cgroup v2 hierarchy.
    pub tracked_root: i32,
    /// `task/task_newtask`: the child's pid and the clone flags.
    pub newtask_pid: FieldOffset,
    pub newtask_clone_flags: FieldOffset,
    /// `sched/sched_process_exit`: `group_dead` (kernels ≥ 6.16), else `ABSENT`.
    pub exit_group_dead: FieldOffset,
    /// `cgroup/cgroup_attach_task` fields.
    pub attach_root: FieldOffset,
    pub attach_level: FieldOffset,
    pub attach_id: FieldOffset,
    pub attach_pid: FieldOffset,
    pub attach_path: FieldOffset,
    /// Kernel struct members, from the running kernel's BTF, for the CPU time at exit:
    /// `task_struct.signal`, `signal_struct.sum_sched_runtime`, `task_struct.se.sum_exec_runtime`.
    pub task_signal: FieldOffset,
    pub signal_sum_sched_runtime: FieldOffset,
    pub task_sum_exec_runtime: FieldOffset,
    /// Kernel struct members for the rest of an exit's record (all or none: `ABSENT` in
    /// `task_exit_code` turns the details off): `task_struct.{exit_code, group_leader,
    /// real_parent, tgid, comm, start_boottime, utime, stime}`, `signal_struct.{group_exit_code,
    /// utime, stime, maxrss}`.
    pub task_exit_code: FieldOffset,
    pub task_group_leader: FieldOffset,
    pub task_real_parent: FieldOffset,
    pub task_tgid: FieldOffset,
    pub task_comm: FieldOffset,
    pub task_start_boottime: FieldOffset,
    pub task_utime: FieldOffset,
    pub task_stime: FieldOffset,
    pub signal_group_exit_code: FieldOffset,
    pub signal_utime: FieldOffset,
    pub signal_stime: FieldOffset,
    pub signal_maxrss: FieldOffset,
    /// For the command line at exec: `task_struct.mm`, `mm_struct.{arg_start, arg_end}`, and
    /// how many bytes to copy (0: none, as with `--cmdline none`).
    pub task_mm: FieldOffset,
    pub mm_arg_start: FieldOffset,
    pub mm_arg_end: FieldOffset,
    pub exec_args_cap: u32,
    /// `oom/mark_victim` fields (`oom_pid` `ABSENT`: the tracepoint is not attached).
    pub oom_pid: FieldOffset,
    pub oom_total_vm: FieldOffset,
    pub oom_anon_rss: FieldOffset,
    pub oom_file_rss: FieldOffset,
    pub oom_shmem_rss: FieldOffset,
    pub oom_pgtables: FieldOffset,
    pub oom_score_adj: FieldOffset,
    pub _reserved: u32,
    /// Userspace is woken only once this many bytes wait in the ring buffer; it drains the rest
    /// on its own schedule, so a busy host does not cost a wakeup per event.
    pub wakeup_bytes: u64,
}

impl Config {
    /// A configuration in which every optional field is absent.
    pub const EMPTY: Config = Config {
        tracked_root: -1,
        newtask_pid: ABSENT,
        newtask_clone_flags: ABSENT,
        exit_group_dead: ABSENT,
        attach_root: ABSENT,
        attach_level: ABSENT,
        attach_id: ABSENT,
        attach_pid: ABSENT,
        attach_path: ABSENT,
        task_signal: ABSENT,
        signal_sum_sched_runtime: ABSENT,
        task_sum_exec_runtime: ABSENT,
        task_exit_code: ABSENT,
        task_group_leader: ABSENT,
        task_real_parent: ABSENT,
        task_tgid: ABSENT,
        task_comm: ABSENT,
        task_start_boottime: ABSENT,
        task_utime: ABSENT,
        task_stime: ABSENT,
        signal_group_exit_code: ABSENT,
        signal_utime: ABSENT,
        signal_stime: ABSENT,
        signal_maxrss: ABSENT,
        task_mm: ABSENT,
        mm_arg_start: ABSENT,
        mm_arg_end: ABSENT,
        exec_args_cap: 0,
        oom_pid: ABSENT,
        oom_total_vm: ABSENT,
        oom_anon_rss: ABSENT,
        oom_file_rss: ABSENT,
        oom_shmem_rss: ABSENT,
        oom_pgtables: ABSENT,
        oom_score_adj: ABSENT,
        _reserved: 0,
        wakeup_bytes: 0,
    };
}

/// Index of the counters in the `COUNTERS` per-CPU array.
pub const COUNTER_LOST: u32 = 0;
/// Insertions into the `TRACKED` map that failed (map full).
pub const COUNTER_MAP_FULL: u32 = 1;
pub const COUNTERS: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::OomEvent {}
}
