//! The eBPF tracker: a live set of container processes kept by the kernel's process events.
//!
//! Start-up: attach the programs first, then seed the set from /proc (inserting each container
//! process into the kernel-side set as it is found, so its forks are followed from that moment
//! on), then scan once more to catch anything that started or moved while the seed ran. From then
//! on events keep the set; a /proc scan repairs it when the kernel reports lost events and on a
//! schedule, and counts what it had to repair.

mod btf;
mod tracefs;

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use companion_common::{
    ABSENT, ARGS_CAP, AttachEvent, CGROUP_PATH_CAP, COUNTER_LOST, COUNTER_MAP_FULL, Config,
    EVENT_ATTACH, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_FORK_INTO_CGROUP, EVENT_OOM, ExecEvent,
    ExitEvent, FLAG_CPU_KNOWN, FLAG_DETAILS_KNOWN, NO_FIGURE, OomEvent, ProcEvent,
};
use mio::{Events, Interest, Poll, Token, unix::SourceFd};
use tracing::{debug, info, warn};

use super::{
    Activity, ActivityKind, ActivityLog, ContainerNames, Exit, ExitDetails, OomFigures, Processes,
    Stop, Tracked, Tracker, TrackerKind, TrackerStats, procscan::scan,
};
use crate::{
    cgroup::{Hierarchy, Naming, container_of, read_membership},
    procfs::{CmdlineMode, Pid, ProcRoot, Status, render_cmdline},
};

/// The kernel programs, built by build.rs (empty when built without the eBPF toolchain).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/companion"));

/// The tracepoints the programs attach to: (program, category, tracepoint). `oom/mark_victim`
/// is attached besides when the kernel has it.
const TRACEPOINTS: [(&str, &str, &str); 4] = [
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("cgroup_attach_task", "cgroup", "cgroup_attach_task"),
];

/// Bounds of the kernel-side set's size; it is preallocated, about 64 bytes an entry.
const MIN_TRACKED: u32 = 4096;
const MAX_TRACKED: u32 = 1 << 17;

pub struct EbpfOptions {
    pub root: ProcRoot,
    pub hierarchy: Hierarchy,
    pub ring_buffer_bytes: u32,
    pub reconcile_every: Duration,
    /// How much of the command line an exec event carries (`--cmdline`).
    pub cmdline: CmdlineMode,
}

pub struct EbpfTracker {
    /// Owns the loaded programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    events: RingBuf<MapData>,
    kernel_set: BpfHashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    poll: Poll,
    root: ProcRoot,
    naming: Naming,
    names: ContainerNames,
    processes: Processes,
    /// Exits drained since the last refresh, and those the last refresh published.
    pending_exits: Vec<Exit>,
    exits: Vec<Exit>,
    /// Execs and exits drained since the last refresh, and those the last refresh published.
    pending_activity: ActivityLog,
    activity: ActivityLog,
    /// Command lines from exec events, with the refresh they arrived in: kept for two
    /// refreshes, long enough for the sampler to have read the process itself.
    exec_cmdlines: HashMap<Pid, (Arc<str>, u64)>,
    /// OOM victims not yet seen exiting.
    oom_victims: HashMap<Pid, OomFigures>,
    refreshes: u64,
    cmdline: CmdlineMode,
    page_size: u64,
    /// While a reconciliation scans /proc: the pids events touched meanwhile.
    touched: Option<HashSet<Pid>>,
    stats: TrackerStats,
    /// Lost + map-full counts already answered by a reconciliation.
    losses_seen: u64,
    next_reconcile: Instant,
    reconcile_every: Duration,
    buf: Vec<u8>,
}

/// Loads and attaches the programs and seeds the set. Fails with the reason when BPF cannot be
/// used here (no toolchain at build time, no privileges, no tracefs, an unknown kernel layout).
pub fn load(options: EbpfOptions) -> anyhow::Result<Box<dyn Tracker>> {
    Ok(Box::new(EbpfTracker::load(options)?))
}

impl EbpfTracker {
    pub fn load(options: EbpfOptions) -> anyhow::Result<EbpfTracker> {
        if PROGRAMS.is_empty() {
            bail!(
                "this binary was built without its eBPF programs (bpf-linker was missing at build time; `cargo xtask setup` installs it)"
            );
        }
        let tracefs = tracefs::ensure_mounted()?;
        let config = kernel_config(
            &tracefs,
            options.hierarchy,
            options.ring_buffer_bytes,
            options.cmdline,
        )?;
        let capacity = tracked_capacity(&options.root);
        let mut ebpf = EbpfLoader::new()
            // The programs carry no CO-RE relocations: skip loading the kernel's BTF.
            .btf(None)
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", options.ring_buffer_bytes)
            .map_max_entries("TRACKED", capacity)
            .load(PROGRAMS)
            .context("loading the eBPF programs (root, or CAP_BPF with CAP_PERFMON, is needed)")?;

        // Maps first: events flow as soon as a program is attached.
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS")?)?;
        let kernel_set = BpfHashMap::try_from(ebpf.take_map("TRACKED").context("map TRACKED")?)?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS_MAP").context("map COUNTERS_MAP")?)?;
        for (program, category, name) in TRACEPOINTS {
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the object"))?
                .try_into()?;
            tracepoint
                .load()
                .with_context(|| format!("the verifier refused {program}"))?;
            tracepoint
                .attach(category, name)
                .with_context(|| format!("attaching to {category}/{name}"))?;
        }
        if config.oom_pid != ABSENT {
            let tracepoint: &mut TracePoint = ebpf
                .program_mut("mark_victim")
                .context("program mark_victim missing from the object")?
                .try_into()?;
            tracepoint
                .load()
                .context("the verifier refused mark_victim")?;
            tracepoint
                .attach("oom", "mark_victim")
                .context("attaching to oom/mark_victim")?;
        }

        let poll = Poll::new().context("creating a poller")?;
        poll.registry()
            .register(
                &mut SourceFd(&events.as_raw_fd()),
                Token(0),
                Interest::READABLE,
            )
            .context("polling the ring buffer")?;

        let mut tracker = EbpfTracker {
            _ebpf: ebpf,
            events,
            kernel_set,
            counters,
            poll,
            naming: options.hierarchy.naming(),
            root: options.root,
            names: ContainerNames::default(),
            processes: Processes::new(),
            pending_exits: Vec::new(),
            exits: Vec::new(),
            pending_activity: ActivityLog::default(),
            activity: ActivityLog::default(),
            exec_cmdlines: HashMap::new(),
            oom_victims: HashMap::new(),
            refreshes: 0,
            cmdline: options.cmdline,
            page_size: ::procfs::page_size(),
            touched: None,
            stats: TrackerStats::default(),
            losses_seen: 0,
            next_reconcile: Instant::now() + options.reconcile_every,
            reconcile_every: options.reconcile_every,
            buf: Vec::with_capacity(4096),
        };
        // Seed, then check: whatever started or moved during the first pass is found by the
        // second, which runs with every container process already followed by the kernel.
        let began = Instant::now();
        tracker.reconcile(Pass::Seed)?;
        tracker.reconcile(Pass::Check)?;
        let second = tracker.stats.repairs;
        info!(
            processes = tracker.processes.len(),
            second_pass_repairs = second,
            took = ?began.elapsed(),
            exit_cpu = config.task_signal != ABSENT,
            exit_details = config.task_exit_code != ABSENT,
            oom_victims = config.oom_pid != ABSENT,
            "eBPF tracker seeded"
        );
        Ok(tracker)
    }

    /// Applies every event waiting in the ring buffer.
    fn drain(&mut self) {
        loop {
            let decoded = {
                let Some(item) = self.events.next() else {
                    break;
                };
                Event::decode(&item, self.cmdline, self.page_size).ok_or(item.len())
            };
            match decoded {
                Ok(event) => {
                    self.stats.events_received += 1;
                    self.apply(event);
                }
                Err(len) => warn!(len, "undecodable event"),
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Fork { pid, parent } => {
                self.touch(pid);
                let container = match self.processes.get(&parent) {
                    Some(parent) => parent.container.clone(),
                    // The parent is unknown here (its own event was lost): ask /proc.
                    None => match self.container_from_proc(pid) {
                        Some(container) => container,
                        None => return,
                    },
                };
                // A child that never execs keeps its parent's command line.
                if let Some((cmdline, _)) = self.exec_cmdlines.get(&parent) {
                    let entry = (cmdline.clone(), self.refreshes);
                    self.exec_cmdlines.insert(pid, entry);
                }
                self.processes.insert(
                    pid,
                    Tracked {
                        container,
                        execs: 0,
                        verified: false,
                    },
                );
            }
            Event::ForkIntoCgroup { pid } => {
                self.touch(pid);
                match self.container_from_proc(pid) {
                    Some(container) => {
                        self.processes.insert(
                            pid,
                            Tracked {
                                container,
                                execs: 0,
                                verified: true,
                            },
                        );
                    }
                    None => {
                        let _ = self.kernel_set.remove(&pid);
                    }
                }
            }
            Event::Exec { pid, cmdline } => {
                if let Some(tracked) = self.processes.get_mut(&pid) {
                    tracked.execs = tracked.execs.wrapping_add(1);
                    self.pending_activity.record(Activity {
                        kind: ActivityKind::Exec,
                        pid,
                        container: tracked.container.clone(),
                        at: SystemTime::now(),
                        code: None,
                        signal: None,
                    });
                    match cmdline {
                        Some(cmdline) => {
                            self.exec_cmdlines
                                .insert(pid, (cmdline.into(), self.refreshes));
                        }
                        None => {
                            self.exec_cmdlines.remove(&pid);
                        }
                    }
                }
            }
            Event::Exit {
                pid,
                cpu_ns,
                details,
            } => {
                self.touch(pid);
                let cmdline = self.exec_cmdlines.remove(&pid).map(|(cmdline, _)| cmdline);
                let oom = self.oom_victims.remove(&pid);
                if let Some(tracked) = self.processes.remove(&pid) {
                    let (code, signal, _) = details
                        .as_ref()
                        .map_or((None, None, false), ExitDetails::outcome);
                    self.pending_activity.record(Activity {
                        kind: ActivityKind::Exit,
                        pid,
                        container: tracked.container.clone(),
                        at: SystemTime::now(),
                        code,
                        signal,
                    });
                    self.pending_exits.push(Exit {
                        pid,
                        container: tracked.container,
                        cpu_ns,
                        details,
                        cmdline,
                        oom,
                    });
                }
            }
            Event::Oom { pid, figures } => {
                if self.processes.contains_key(&pid) {
                    self.oom_victims.insert(pid, figures);
                } else if let Some(exit) = self.pending_exits.iter_mut().rfind(|e| e.pid == pid) {
                    // The victim's exit overtook the mark (another CPU).
                    exit.oom = Some(figures);
                }
            }
            Event::Attach { pid, level, path } => {
                self.touch(pid);
                if level == 0 {
                    self.processes.remove(&pid);
                    return;
                }
                if self.is_process(pid) == Some(false) {
                    // A single thread moved (v1 `tasks`): the leader's cgroup decides.
                    let _ = self.kernel_set.remove(&pid);
                    return;
                }
                let container = match path {
                    Some(path) => self.names.intern(&path),
                    None => match self.container_from_proc(pid) {
                        Some(container) => container,
                        None => return,
                    },
                };
                let execs = self.processes.get(&pid).map_or(0, |t| t.execs);
                self.processes.insert(
                    pid,
                    Tracked {
                        container,
                        execs,
                        verified: false,
                    },
                );
            }
        }
    }

    fn touch(&mut self, pid: Pid) {
        if let Some(touched) = &mut self.touched {
            touched.insert(pid);
        }
    }

    /// The container /proc says the process is in.
    fn container_from_proc(&mut self, pid: Pid) -> Option<super::ContainerPath> {
        read_membership(&self.root, pid, self.naming, &mut self.buf).ok()?;
        let path = container_of(&self.buf, self.naming)?;
        Some(self.names.intern(path))
    }

    /// Whether `pid` is a thread-group leader (a process) rather than one of its threads;
    /// `None` when it is gone already. A process gone since its move is kept: its exit event
    /// follows and goes to the exit ledger (a thread's never comes; the entry is then dropped
    /// by the next reconciliation).
    fn is_process(&mut self, pid: Pid) -> Option<bool> {
        match self.root.read(pid, "status", &mut self.buf) {
            Ok(()) => {
                Some(Status::parse(&self.buf).is_ok_and(|status| status.tgid == u64::from(pid)))
            }
            Err(err) if crate::procfs::is_gone(&err) => None,
            Err(_) => Some(false),
        }
    }

    /// Sum of the kernel side's loss counters over all CPUs. An error here means the kernel
    /// side is no longer usable.
    fn losses(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for index in [COUNTER_LOST, COUNTER_MAP_FULL] {
            let per_cpu = self
                .counters
                .get(&index, 0)
                .context("reading the kernel side's counters")?;
            total += per_cpu.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// Compares the set with a /proc scan and repairs it. Events that arrive while the scan runs
    /// are newer than what the scan read, so their processes keep the state the events give.
    fn reconcile(&mut self, pass: Pass) -> anyhow::Result<()> {
        self.drain();
        self.touched = Some(HashSet::new());
        let mut truth = Processes::new();
        {
            let kernel_set = &mut self.kernel_set;
            scan(
                &self.root,
                self.naming,
                &mut self.names,
                &mut self.buf,
                |pid, tracked| {
                    // Followed by the kernel from this moment: its forks are not missed.
                    let _ = kernel_set.insert(pid, 0, 0);
                    truth.insert(pid, tracked);
                },
            )?;
        }
        self.drain();
        let touched = self.touched.take().unwrap_or_default();

        let mut repairs = 0u64;
        for (&pid, found) in &truth {
            if touched.contains(&pid) {
                continue;
            }
            match self.processes.get_mut(&pid) {
                Some(known) if known.container == found.container => known.verified = true,
                Some(known) => {
                    debug!(pid, from = %known.container, to = %found.container, "repair: moved");
                    known.container = found.container.clone();
                    known.verified = true;
                    repairs += 1;
                }
                None => {
                    debug!(pid, container = %found.container, "repair: missing");
                    self.processes.insert(pid, found.clone());
                    repairs += 1;
                }
            }
        }
        let stale: Vec<Pid> = self
            .processes
            .keys()
            .filter(|pid| !truth.contains_key(pid) && !touched.contains(pid))
            .copied()
            .collect();
        for pid in stale {
            debug!(pid, "repair: gone");
            self.processes.remove(&pid);
            repairs += 1;
        }
        // The kernel-side set holds exactly the tracked processes.
        let extra: Vec<u32> = self
            .kernel_set
            .keys()
            .filter_map(Result::ok)
            .filter(|pid| !self.processes.contains_key(pid))
            .collect();
        for pid in extra {
            let _ = self.kernel_set.remove(&pid);
        }
        self.names.prune();
        super::shrink_after_churn(&mut self.processes);
        self.next_reconcile = Instant::now() + self.reconcile_every;
        if pass == Pass::Seed {
            return Ok(());
        }
        self.stats.reconciliations += 1;
        self.stats.repairs += repairs;
        if repairs > 0 {
            info!(
                repairs,
                processes = self.processes.len(),
                "reconciliation repaired the set"
            );
        }
        Ok(())
    }
}

impl Tracker for EbpfTracker {
    fn kind(&self) -> TrackerKind {
        TrackerKind::Ebpf
    }

    fn refresh(&mut self) -> anyhow::Result<()> {
        self.drain();
        let losses = self.losses()?;
        if losses > self.losses_seen {
            warn!(
                lost = losses - self.losses_seen,
                "the kernel side lost events; repairing from /proc"
            );
            self.losses_seen = losses;
            self.reconcile(Pass::Check)?;
        } else if Instant::now() >= self.next_reconcile {
            self.reconcile(Pass::Check)?;
        }
        self.stats.events_lost = losses;
        self.exits = std::mem::take(&mut self.pending_exits);
        self.pending_activity.publish_into(&mut self.activity);
        self.refreshes += 1;
        let refreshes = self.refreshes;
        self.exec_cmdlines
            .retain(|_, (_, arrived)| *arrived + 2 > refreshes);
        super::shrink_after_churn(&mut self.exec_cmdlines);
        // A victim is killed at once; one still listed after a refresh was not ours to see die
        // (its exit event was lost and a reconciliation removed it).
        let processes = &self.processes;
        self.oom_victims
            .retain(|pid, _| processes.contains_key(pid));
        Ok(())
    }

    fn processes(&self) -> &Processes {
        &self.processes
    }

    fn exits(&self) -> &[Exit] {
        &self.exits
    }

    fn activity(&self) -> &ActivityLog {
        &self.activity
    }

    fn wait_until(&mut self, deadline: Instant, stop: &Stop) -> bool {
        let mut events = Events::with_capacity(1);
        loop {
            if stop.is_raised() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            // The kernel wakes us only when the ring buffer fills up; drain then, so it never
            // overflows between samples. Short slices keep shutdown prompt.
            let timeout = (deadline - now).min(Duration::from_millis(100));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) if !events.is_empty() => self.drain(),
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    warn!("polling the ring buffer: {err}");
                    std::thread::sleep(timeout);
                }
            }
        }
    }

    fn stats(&self) -> TrackerStats {
        self.stats.clone()
    }
}

/// A reconciliation that fills an empty set, or one that checks it (and counts repairs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Seed,
    Check,
}

/// An event as userspace reads it from the ring buffer.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Fork {
        pid: Pid,
        parent: Pid,
    },
    ForkIntoCgroup {
        pid: Pid,
    },
    Exec {
        pid: Pid,
        /// The new command line as `--cmdline` keeps it, when the kernel copied it.
        cmdline: Option<String>,
    },
    Exit {
        pid: Pid,
        cpu_ns: Option<u64>,
        details: Option<ExitDetails>,
    },
    Oom {
        pid: Pid,
        figures: OomFigures,
    },
    /// `path` is `None` when the kernel's path did not fit the event.
    Attach {
        pid: Pid,
        level: i32,
        path: Option<Vec<u8>>,
    },
}

/// Reads a plain-data event of type `T` from the start of `bytes`, if it is long enough.
fn read_event<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; the event types are plain data, read unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

impl Event {
    fn decode(bytes: &[u8], cmdline: CmdlineMode, page_size: u64) -> Option<Event> {
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
        match kind {
            EVENT_EXEC => {
                let event: ExecEvent = read_event(bytes)?;
                let len = (event.args_len as usize).min(ARGS_CAP);
                let cmdline = (len > 0).then(|| {
                    let mut text = render_cmdline(&event.args[..len], cmdline);
                    if event.args_total as usize > len && cmdline == CmdlineMode::Full {
                        text.push('…');
                    }
                    text
                });
                return Some(Event::Exec {
                    pid: event.pid,
                    cmdline,
                });
            }
            EVENT_EXIT => {
                let event: ExitEvent = read_event(bytes)?;
                let details = (event.flags & FLAG_DETAILS_KNOWN != 0).then(|| ExitDetails {
                    status: event.status,
                    ppid: event.ppid,
                    comm: String::from_utf8_lossy(
                        event.comm.split(|&b| b == 0).next().unwrap_or_default(),
                    )
                    .into_owned(),
                    start_boot_ns: event.start_boot_ns,
                    end_boot_ns: event.end_boot_ns,
                    utime_ns: event.utime_ns,
                    stime_ns: event.stime_ns,
                    peak_rss_bytes: event.maxrss_pages.saturating_mul(page_size),
                });
                return Some(Event::Exit {
                    pid: event.pid,
                    cpu_ns: (event.flags & FLAG_CPU_KNOWN != 0).then_some(event.cpu_ns),
                    details,
                });
            }
            EVENT_OOM => {
                let event: OomEvent = read_event(bytes)?;
                let bytes = |kb: u64| (kb != NO_FIGURE).then(|| kb.saturating_mul(1024));
                return Some(Event::Oom {
                    pid: event.pid,
                    figures: OomFigures {
                        total_vm_bytes: bytes(event.total_vm_kb),
                        anon_rss_bytes: bytes(event.anon_rss_kb),
                        file_rss_bytes: bytes(event.file_rss_kb),
                        shmem_rss_bytes: bytes(event.shmem_rss_kb),
                        pgtables_bytes: bytes(event.pgtables_kb),
                        oom_score_adj: (event.oom_score_adj != i32::MIN)
                            .then_some(event.oom_score_adj),
                    },
                });
            }
            _ => {}
        }
        if kind == EVENT_ATTACH {
            if bytes.len() < size_of::<AttachEvent>() {
                return None;
            }
            // SAFETY: the length was checked; AttachEvent is plain data, read unaligned.
            let event: AttachEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let end = event.path.iter().position(|&b| b == 0);
            let path = match end {
                Some(end) if (event.path_len as usize) < CGROUP_PATH_CAP => {
                    Some(event.path[..end].to_vec())
                }
                _ => None,
            };
            return Some(Event::Attach {
                pid: event.pid,
                level: event.level,
                path,
            });
        }
        if bytes.len() < size_of::<ProcEvent>() {
            return None;
        }
        // SAFETY: as above.
        let event: ProcEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(match kind {
            EVENT_FORK => Event::Fork {
                pid: event.pid,
                parent: event.parent,
            },
            EVENT_FORK_INTO_CGROUP => Event::ForkIntoCgroup { pid: event.pid },
            _ => return None,
        })
    }
}

/// The programs' configuration for this kernel: tracepoint layouts from tracefs, struct
/// members from BTF (optional: without them exits carry no CPU time).
fn kernel_config(
    tracefs: &std::path::Path,
    hierarchy: Hierarchy,
    ring_buffer_bytes: u32,
    cmdline: CmdlineMode,
) -> anyhow::Result<Config> {
    let format = |category, name| {
        tracefs::Format::read(tracefs, category, name)
            .with_context(|| format!("tracepoint {category}/{name}"))
    };
    let newtask = format("task", "task_newtask")?;
    let exit = format("sched", "sched_process_exit")?;
    let attach = format("cgroup", "cgroup_attach_task")?;
    let mut config = Config {
        tracked_root: hierarchy.kernel_id(),
        newtask_pid: newtask.require("pid", 4)?.offset,
        newtask_clone_flags: newtask.require("clone_flags", 8)?.offset,
        exit_group_dead: exit.optional("group_dead", 1).map_or(ABSENT, |f| f.offset),
        attach_root: attach.require("dst_root", 4)?.offset,
        attach_level: attach.require("dst_level", 4)?.offset,
        attach_id: attach.optional("dst_id", 8).map_or(ABSENT, |f| f.offset),
        attach_pid: attach.require("pid", 4)?.offset,
        attach_path: attach.require("dst_path", 4)?.offset,
        wakeup_bytes: u64::from(ring_buffer_bytes / 2),
        ..Config::EMPTY
    };
    match std::fs::read("/sys/kernel/btf/vmlinux").context("reading kernel BTF") {
        Ok(data) => match btf::Btf::parse(&data) {
            Ok(btf) => struct_offsets(&btf, cmdline, &mut config),
            Err(err) => warn!("exits will carry no CPU time, code or signal: {err}"),
        },
        Err(err) => warn!("exits will carry no CPU time, code or signal: {err:#}"),
    }
    match format("oom", "mark_victim") {
        Ok(oom) => match oom.require("pid", 4) {
            Ok(pid) => {
                let figure = |name| oom.optional(name, 8).map_or(ABSENT, |f| f.offset);
                config.oom_pid = pid.offset;
                config.oom_total_vm = figure("total_vm");
                config.oom_anon_rss = figure("anon_rss");
                config.oom_file_rss = figure("file_rss");
                config.oom_shmem_rss = figure("shmem_rss");
                config.oom_pgtables = figure("pgtables");
                config.oom_score_adj = oom
                    .optional("oom_score_adj", 2)
                    .map_or(ABSENT, |f| f.offset);
            }
            Err(err) => warn!("OOM kills will come from cgroup counters only: {err:#}"),
        },
        Err(err) => warn!("OOM kills will come from cgroup counters only: {err:#}"),
    }
    Ok(config)
}

/// The kernel struct members the programs read, from BTF; each group is filled only when all
/// its members are found.
fn struct_offsets(btf: &btf::Btf, cmdline: CmdlineMode, config: &mut Config) {
    let task = |member| btf.member_offset("task_struct", member);
    let signal = |member| btf.member_offset("signal_struct", member);
    let cpu = || {
        Ok::<_, btf::BtfError>((
            task("signal")?,
            signal("sum_sched_runtime")?,
            task("se.sum_exec_runtime")?,
        ))
    };
    match cpu() {
        Ok((task_signal, sum_sched_runtime, sum_exec_runtime)) => {
            config.task_signal = task_signal;
            config.signal_sum_sched_runtime = sum_sched_runtime;
            config.task_sum_exec_runtime = sum_exec_runtime;
        }
        Err(err) => warn!("exits will carry no CPU time: {err}"),
    }
    let details = || {
        Ok::<_, btf::BtfError>(Config {
            task_exit_code: task("exit_code")?,
            task_group_leader: task("group_leader")?,
            task_real_parent: task("real_parent")?,
            task_tgid: task("tgid")?,
            task_comm: task("comm")?,
            task_start_boottime: task("start_boottime")?,
            task_utime: task("utime")?,
            task_stime: task("stime")?,
            signal_group_exit_code: signal("group_exit_code")?,
            signal_utime: signal("utime")?,
            signal_stime: signal("stime")?,
            signal_maxrss: signal("maxrss")?,
            ..*config
        })
    };
    match details() {
        Ok(with_details) => *config = with_details,
        Err(err) => warn!("exits will carry no exit code, signal or times: {err}"),
    }
    if cmdline == CmdlineMode::None {
        return;
    }
    let args = || {
        Ok::<_, btf::BtfError>((
            task("mm")?,
            btf.member_offset("mm_struct", "arg_start")?,
            btf.member_offset("mm_struct", "arg_end")?,
        ))
    };
    match args() {
        Ok((task_mm, arg_start, arg_end)) => {
            config.task_mm = task_mm;
            config.mm_arg_start = arg_start;
            config.mm_arg_end = arg_end;
            config.exec_args_cap = ARGS_CAP as u32;
        }
        Err(err) => warn!("execs will carry no command line: {err}"),
    }
}

/// Entries of the kernel-side set: room for every pid up to `pid_max`, within bounds.
fn tracked_capacity(root: &ProcRoot) -> u32 {
    let pid_max = std::fs::read_to_string(root.global("sys/kernel/pid_max"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(32_768);
    pid_max.clamp(MIN_TRACKED, MAX_TRACKED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Event> {
        Event::decode(bytes, CmdlineMode::Full, 4096)
    }

    #[test]
    fn decodes_every_kind() {
        let proc_event = |kind| ProcEvent {
            kind,
            pid: 7,
            parent: 3,
            flags: 0,
            cpu_ns: 0,
        };
        assert_eq!(
            decode(&bytes(&proc_event(EVENT_FORK))),
            Some(Event::Fork { pid: 7, parent: 3 })
        );
        assert_eq!(
            decode(&bytes(&proc_event(EVENT_FORK_INTO_CGROUP))),
            Some(Event::ForkIntoCgroup { pid: 7 })
        );

        let mut exec = ExecEvent {
            kind: EVENT_EXEC,
            pid: 7,
            args_len: 12,
            args_total: 12,
            args: [0; ARGS_CAP],
        };
        exec.args[..12].copy_from_slice(b"sleep\0--x\0y\0");
        assert_eq!(
            decode(&bytes(&exec)),
            Some(Event::Exec {
                pid: 7,
                cmdline: Some("sleep --x y".into())
            })
        );
        assert_eq!(
            Event::decode(&bytes(&exec), CmdlineMode::Argv0, 4096),
            Some(Event::Exec {
                pid: 7,
                cmdline: Some("sleep".into())
            })
        );
        exec.args_total = 5000;
        let Some(Event::Exec {
            cmdline: Some(cut), ..
        }) = decode(&bytes(&exec))
        else {
            panic!("an exec")
        };
        assert!(cut.ends_with('…'), "a cut command line is marked: {cut}");
        exec.args_len = 0;
        assert_eq!(
            decode(&bytes(&exec)),
            Some(Event::Exec {
                pid: 7,
                cmdline: None
            })
        );

        let mut exit = ExitEvent {
            kind: EVENT_EXIT,
            pid: 7,
            flags: FLAG_CPU_KNOWN | FLAG_DETAILS_KNOWN,
            status: 3 << 8,
            ppid: 2,
            cpu_ns: 42,
            utime_ns: 1,
            stime_ns: 2,
            start_boot_ns: 10,
            end_boot_ns: 20,
            maxrss_pages: 3,
            ..ExitEvent::default()
        };
        exit.comm[..3].copy_from_slice(b"app");
        assert_eq!(
            decode(&bytes(&exit)),
            Some(Event::Exit {
                pid: 7,
                cpu_ns: Some(42),
                details: Some(ExitDetails {
                    status: 3 << 8,
                    ppid: 2,
                    comm: "app".into(),
                    start_boot_ns: 10,
                    end_boot_ns: 20,
                    utime_ns: 1,
                    stime_ns: 2,
                    peak_rss_bytes: 3 * 4096,
                })
            })
        );
        exit.flags = 0;
        assert_eq!(
            decode(&bytes(&exit)),
            Some(Event::Exit {
                pid: 7,
                cpu_ns: None,
                details: None
            })
        );

        let oom = OomEvent {
            kind: EVENT_OOM,
            pid: 7,
            oom_score_adj: -100,
            _reserved: 0,
            total_vm_kb: 10,
            anon_rss_kb: 20,
            file_rss_kb: 30,
            shmem_rss_kb: 0,
            pgtables_kb: NO_FIGURE,
        };
        assert_eq!(
            decode(&bytes(&oom)),
            Some(Event::Oom {
                pid: 7,
                figures: OomFigures {
                    total_vm_bytes: Some(10 * 1024),
                    anon_rss_bytes: Some(20 * 1024),
                    file_rss_bytes: Some(30 * 1024),
                    shmem_rss_bytes: Some(0),
                    pgtables_bytes: None,
                    oom_score_adj: Some(-100),
                }
            })
        );

        let mut attach = AttachEvent {
            kind: EVENT_ATTACH,
            pid: 9,
            level: 2,
            path_len: 6,
            cgroup_id: 1,
            path: [0; CGROUP_PATH_CAP],
        };
        attach.path[..6].copy_from_slice(b"/a/b/c");
        assert_eq!(
            decode(&bytes(&attach)),
            Some(Event::Attach {
                pid: 9,
                level: 2,
                path: Some(b"/a/b/c".to_vec())
            })
        );
        attach.path_len = 4000;
        assert_eq!(
            decode(&bytes(&attach)),
            Some(Event::Attach {
                pid: 9,
                level: 2,
                path: None
            })
        );
    }

    #[test]
    fn short_or_unknown_events_are_refused() {
        assert_eq!(decode(&[]), None);
        for kind in [EVENT_FORK, EVENT_ATTACH, EVENT_EXEC, EVENT_EXIT, EVENT_OOM] {
            assert_eq!(decode(&kind.to_ne_bytes()), None, "{kind}");
        }
        let unknown = ProcEvent {
            kind: 99,
            ..ProcEvent::default()
        };
        assert_eq!(decode(&bytes(&unknown)), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
                let _ = decode(&bytes);
            }
        }
    }
}
