// SPDX-License-Identifier: MIT OR GPL-2.0
//! Kernel programs that keep companion's set of container processes up to date.
//!
//! The set itself lives in the `TRACKED` map (tgid → 0), so that the kernel side can tell
//! container processes from host processes without asking userspace: a process enters it when it
//! is attached to a non-root cgroup of the tracked hierarchy or forked by a process already in
//! it, and leaves it when it exits or is attached to the root cgroup. Only events about processes
//! in the set reach userspace, so host processes cost nothing beyond the map lookup.
//!
//! Exits carry what the exit ledger records (wait status, parent, name, times, peak RSS), execs
//! the start of the new command line, and `oom:mark_victim` reports OOM victims.
//!
//! No kernel layout is compiled in: tracepoint field offsets and the few struct members read at
//! exec and exit come from the `CONFIG` global, which userspace fills at load time from tracefs
//! and BTF.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_task, bpf_probe_read_user},
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use companion_common::{
    ABSENT, ARGS_CAP, AttachEvent, CGROUP_PATH_CAP, COUNTER_LOST, COUNTER_MAP_FULL, COUNTERS,
    Config, EVENT_ATTACH, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_FORK_INTO_CGROUP, EVENT_OOM,
    ExecEvent, ExitEvent, FLAG_CPU_KNOWN, FLAG_DETAILS_KNOWN, NO_FIGURE, OomEvent, ProcEvent,
};

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[unsafe(no_mangle)]
static CONFIG: Config = Config::EMPTY;

/// Container processes (thread-group ids). Sized by userspace at load time.
#[map]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(65_536, 0);

/// Events for userspace. Sized by userspace at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// What could not be delivered or recorded; userspace repairs the set when these grow.
#[map]
static COUNTERS_MAP: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

macro_rules! config {
    ($field:ident) => {
        // SAFETY: CONFIG is a read-only global written by the loader before the programs run.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$field) }
    };
}

fn count(counter: u32) {
    if let Some(slot) = COUNTERS_MAP.get_ptr_mut(counter) {
        // SAFETY: a per-CPU slot is only touched by programs running on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Ask for a wakeup only when enough is waiting: userspace drains the rest at its next sample.
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn emit_fork(kind: u32, pid: u32, parent: u32) {
    let event = ProcEvent {
        kind,
        pid,
        parent,
        flags: 0,
        cpu_ns: 0,
    };
    if EVENTS.output::<ProcEvent>(&event, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
}

fn track(tgid: u32) {
    if TRACKED.insert(tgid, 0, 0).is_err() {
        count(COUNTER_MAP_FULL);
    }
}

fn is_tracked(tgid: u32) -> bool {
    TRACKED.get_ptr(tgid).is_some()
}

fn read_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's format file; the helper checks bounds.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Option<()> {
    let clone_flags: u64 = read_field(ctx, config!(newtask_clone_flags))?;
    if clone_flags & CLONE_THREAD != 0 {
        return None; // a thread, not a process
    }
    let child: i32 = read_field(ctx, config!(newtask_pid))?;
    let child = child as u32;
    // The caller's tgid: the child inherits its cgroups.
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_tracked(parent) {
        track(child);
        emit_fork(EVENT_FORK, child, parent);
    } else if clone_flags & CLONE_INTO_CGROUP != 0 && config!(tracked_root) == 0 {
        // Born straight into a v2 cgroup: track it until userspace has looked at its cgroup,
        // so children it forks meanwhile are not lost.
        track(child);
        emit_fork(EVENT_FORK_INTO_CGROUP, child, parent);
    }
    Some(())
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    // After exec the caller is the thread-group leader, whatever thread called execve.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(tgid) {
        return 0;
    }
    let cap = u64::from(config!(exec_args_cap)).min(ARGS_CAP as u64);
    let area = arg_area();
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(COUNTER_LOST);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to reserved ring buffer memory of the right size.
    unsafe {
        (*event).kind = EVENT_EXEC;
        (*event).pid = tgid;
        (*event).args_len = 0;
        (*event).args_total = 0;
        if let Some((start, total)) = area {
            (*event).args_total = total as u32;
            let mut len = total;
            if len > cap {
                len = cap;
            }
            if len > ARGS_CAP as u64 {
                len = ARGS_CAP as u64;
            }
            if len > 0
                && bpf_probe_read_user(
                    (&raw mut (*event).args).cast(),
                    len as u32,
                    start as *const core::ffi::c_void,
                ) == 0
            {
                (*event).args_len = len as u32;
            }
        }
    }
    entry.submit(wakeup_flags());
    0
}

/// Where the current process's new arguments are: (start address, length).
fn arg_area() -> Option<(u64, u64)> {
    let (task_mm, arg_start, arg_end) =
        (config!(task_mm), config!(mm_arg_start), config!(mm_arg_end));
    if config!(exec_args_cap) == 0 || task_mm == ABSENT || arg_start == ABSENT || arg_end == ABSENT
    {
        return None;
    }
    // SAFETY: probe reads at offsets from this kernel's BTF; a bad address fails the helper.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm: *const u8 =
            bpf_probe_read_kernel(task.add(task_mm as usize) as *const *const u8).ok()?;
        let start: u64 = bpf_probe_read_kernel(mm.add(arg_start as usize) as *const u64).ok()?;
        let end: u64 = bpf_probe_read_kernel(mm.add(arg_end as usize) as *const u64).ok()?;
        (end > start).then_some((start, end - start))
    }
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_tracked(tgid) {
        return 0;
    }
    let whole_process_gone = match read_field::<u8>(&ctx, config!(exit_group_dead)) {
        Some(group_dead) => group_dead != 0,
        // Older kernels have no `group_dead`: take the leader's exit as the process's.
        None => pid_tgid as u32 == tgid,
    };
    if !whole_process_gone {
        return 0;
    }
    let _ = TRACKED.remove(tgid);
    let mut event = ExitEvent {
        kind: EVENT_EXIT,
        pid: tgid,
        ..ExitEvent::default()
    };
    if let Some(cpu_ns) = exit_cpu_ns() {
        event.cpu_ns = cpu_ns;
        event.flags |= FLAG_CPU_KNOWN;
    }
    if exit_details(&mut event).is_some() {
        event.flags |= FLAG_DETAILS_KNOWN;
    }
    // SAFETY: a helper without arguments.
    event.end_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if EVENTS.output::<ExitEvent>(&event, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}

/// CPU time of the exiting process: threads already gone are summed in
/// `signal->sum_sched_runtime`, the exiting one adds its own `se.sum_exec_runtime`.
fn exit_cpu_ns() -> Option<u64> {
    let task_signal = config!(task_signal);
    let sum_sched_runtime = config!(signal_sum_sched_runtime);
    let sum_exec_runtime = config!(task_sum_exec_runtime);
    if task_signal == ABSENT || sum_sched_runtime == ABSENT || sum_exec_runtime == ABSENT {
        return None;
    }
    // SAFETY: probe reads of the current task at offsets taken from this kernel's BTF; a bad
    // address makes the helper fail, not fault.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let signal: *const u8 =
            bpf_probe_read_kernel(task.add(task_signal as usize) as *const *const u8).ok()?;
        let dead_threads: u64 =
            bpf_probe_read_kernel(signal.add(sum_sched_runtime as usize) as *const u64).ok()?;
        let this_thread: u64 =
            bpf_probe_read_kernel(task.add(sum_exec_runtime as usize) as *const u64).ok()?;
        Some(dead_threads + this_thread)
    }
}

/// Reads `T` at `base + offset` in kernel memory.
///
/// # Safety
/// `offset` must come from this kernel's BTF for the struct `base` points to.
unsafe fn member<T>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: a probe read; a bad address makes the helper fail, not fault.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// The rest of an exit's record, read from the exiting task, its thread-group leader and their
/// shared `signal_struct`.
fn exit_details(event: &mut ExitEvent) -> Option<()> {
    let (exit_code, task_signal) = (config!(task_exit_code), config!(task_signal));
    if exit_code == ABSENT || task_signal == ABSENT {
        return None;
    }
    let (group_leader, real_parent, tgid) = (
        config!(task_group_leader),
        config!(task_real_parent),
        config!(task_tgid),
    );
    let (comm, start_boottime) = (config!(task_comm), config!(task_start_boottime));
    let (utime, stime) = (config!(task_utime), config!(task_stime));
    let (group_exit_code, signal_utime, signal_stime, maxrss) = (
        config!(signal_group_exit_code),
        config!(signal_utime),
        config!(signal_stime),
        config!(signal_maxrss),
    );
    // SAFETY: every offset comes from this kernel's BTF (all present when `task_exit_code` is).
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let leader: *const u8 = member(task, group_leader)?;
        let signal: *const u8 = member(task, task_signal)?;
        // What wait() reports: a group exit (exit_group, a fatal signal, a core dump) leaves its
        // status in `signal->group_exit_code`; otherwise the leader's own `exit_code` is it.
        let group_code: i32 = member(signal, group_exit_code)?;
        let leader_code: i32 = member(leader, exit_code)?;
        event.status = if group_code != 0 {
            group_code
        } else {
            leader_code
        } as u32;
        let parent: *const u8 = member(leader, real_parent)?;
        let ppid: i32 = member(parent, tgid)?;
        event.ppid = ppid as u32;
        event.comm = member(leader, comm)?;
        event.start_boot_ns = member(leader, start_boottime)?;
        let task_utime: u64 = member(task, utime)?;
        let task_stime: u64 = member(task, stime)?;
        let dead_utime: u64 = member(signal, signal_utime)?;
        let dead_stime: u64 = member(signal, signal_stime)?;
        event.utime_ns = task_utime + dead_utime;
        event.stime_ns = task_stime + dead_stime;
        event.maxrss_pages = member(signal, maxrss)?;
    }
    Some(())
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

fn try_mark_victim(ctx: &TracePointContext) -> Option<()> {
    let pid: i32 = read_field(ctx, config!(oom_pid))?;
    let pid = pid as u32;
    // Runs in the task that hit the limit; the victim is another process.
    if !is_tracked(pid) {
        return None;
    }
    let figure = |offset| read_field::<u64>(ctx, offset).unwrap_or(NO_FIGURE);
    let event = OomEvent {
        kind: EVENT_OOM,
        pid,
        oom_score_adj: read_field::<i16>(ctx, config!(oom_score_adj)).map_or(i32::MIN, i32::from),
        _reserved: 0,
        total_vm_kb: figure(config!(oom_total_vm)),
        anon_rss_kb: figure(config!(oom_anon_rss)),
        file_rss_kb: figure(config!(oom_file_rss)),
        shmem_rss_kb: figure(config!(oom_shmem_rss)),
        pgtables_kb: figure(config!(oom_pgtables)),
    };
    if EVENTS.output::<OomEvent>(&event, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    Some(())
}

#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &TracePointContext) -> Option<()> {
    let root: i32 = read_field(ctx, config!(attach_root))?;
    if root != config!(tracked_root) {
        return None;
    }
    let pid: i32 = read_field(ctx, config!(attach_pid))?;
    let level: i32 = read_field(ctx, config!(attach_level))?;
    let cgroup_id: u64 = read_field(ctx, config!(attach_id))?;
    let path_loc: u32 = read_field(ctx, config!(attach_path))?;
    let pid = pid as u32;
    if level > 0 {
        track(pid);
    } else {
        let _ = TRACKED.remove(pid);
    }

    let Some(mut entry) = EVENTS.reserve::<AttachEvent>(0) else {
        count(COUNTER_LOST);
        return None;
    };
    let event = entry.as_mut_ptr();
    // A `__data_loc` field: low 16 bits are the offset in the record, high 16 the length.
    let path_offset = (path_loc & 0xffff) as usize;
    let path_len = path_loc >> 16;
    // SAFETY: `event` points to reserved ring buffer memory of the right size; the path is read
    // with a bounded probe from the tracepoint record.
    unsafe {
        (*event).kind = EVENT_ATTACH;
        (*event).pid = pid;
        (*event).level = level;
        (*event).path_len = path_len;
        (*event).cgroup_id = cgroup_id;
        let src = (ctx.as_ptr() as *const u8).add(path_offset);
        let dst = &mut (*event).path;
        if bpf_probe_read_kernel_str_bytes(src, &mut dst[..CGROUP_PATH_CAP]).is_err() {
            dst[0] = 0;
        }
    }
    entry.submit(wakeup_flags());
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
