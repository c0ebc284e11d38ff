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

/// Flag of [`ProcEvent::flags`]: `cpu_ns` holds the process's CPU time at exit.
pub const FLAG_CPU_KNOWN: u32 = 1;

/// Fork, exec and exit events. Every event starts with its `kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    /// The process (thread-group id) the event is about.
    pub pid: u32,
    /// For forks: the tgid of the parent. Zero otherwise.
    pub parent: u32,
    pub flags: u32,
    /// For exits: CPU time of all threads, in nanoseconds, when `FLAG_CPU_KNOWN` is set.
    pub cpu_ns: u64,
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
}
