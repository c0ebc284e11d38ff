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
    collections::HashSet,
    os::fd::AsRawFd,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use companion_common::{
    ABSENT, AttachEvent, CGROUP_PATH_CAP, COUNTER_LOST, COUNTER_MAP_FULL, Config, EVENT_ATTACH,
    EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_FORK_INTO_CGROUP, FLAG_CPU_KNOWN, ProcEvent,
};
use mio::{Events, Interest, Poll, Token, unix::SourceFd};
use tracing::{debug, info, warn};

use super::{
    Activity, ActivityKind, ActivityLog, ContainerNames, Exit, Processes, Stop, Tracked, Tracker,
    TrackerKind, TrackerStats, procscan::scan,
};
use crate::{
    cgroup::{Hierarchy, Naming, container_of, read_membership},
    procfs::{Pid, ProcRoot, Status},
};

/// The kernel programs, built by build.rs (empty when built without the eBPF toolchain).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/companion"));

/// The tracepoints the programs attach to: (program, category, tracepoint).
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
        let config = kernel_config(&tracefs, options.hierarchy, options.ring_buffer_bytes)?;
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
                Event::decode(&item).ok_or(item.len())
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
            Event::Exec { pid } => {
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
                }
            }
            Event::Exit { pid, cpu_ns } => {
                self.touch(pid);
                if let Some(tracked) = self.processes.remove(&pid) {
                    self.pending_activity.record(Activity {
                        kind: ActivityKind::Exit,
                        pid,
                        container: tracked.container.clone(),
                        at: SystemTime::now(),
                        code: None,
                        signal: None,
                    });
                    self.pending_exits.push(Exit {
                        pid,
                        container: tracked.container,
                        cpu_ns,
                    });
                }
            }
            Event::Attach { pid, level, path } => {
                self.touch(pid);
                if level == 0 {
                    self.processes.remove(&pid);
                    return;
                }
                if !self.is_process(pid) {
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

    /// Whether `pid` is a thread-group leader (a process) rather than one of its threads.
    fn is_process(&mut self, pid: Pid) -> bool {
        if self.root.read(pid, "status", &mut self.buf).is_err() {
            return false;
        }
        Status::parse(&self.buf).is_ok_and(|status| status.tgid == u64::from(pid))
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
    },
    Exit {
        pid: Pid,
        cpu_ns: Option<u64>,
    },
    /// `path` is `None` when the kernel's path did not fit the event.
    Attach {
        pid: Pid,
        level: i32,
        path: Option<Vec<u8>>,
    },
}

impl Event {
    fn decode(bytes: &[u8]) -> Option<Event> {
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
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
            EVENT_EXEC => Event::Exec { pid: event.pid },
            EVENT_EXIT => Event::Exit {
                pid: event.pid,
                cpu_ns: (event.flags & FLAG_CPU_KNOWN != 0).then_some(event.cpu_ns),
            },
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
    match exit_cpu_offsets() {
        Ok((signal, sum_sched_runtime, sum_exec_runtime)) => {
            config.task_signal = signal;
            config.signal_sum_sched_runtime = sum_sched_runtime;
            config.task_sum_exec_runtime = sum_exec_runtime;
        }
        Err(err) => warn!("exits will carry no CPU time: {err:#}"),
    }
    Ok(config)
}

fn exit_cpu_offsets() -> anyhow::Result<(u32, u32, u32)> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").context("reading kernel BTF")?;
    let btf = btf::Btf::parse(&data)?;
    Ok((
        btf.member_offset("task_struct", "signal")?,
        btf.member_offset("signal_struct", "sum_sched_runtime")?,
        btf.member_offset("task_struct", "se.sum_exec_runtime")?,
    ))
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

    #[test]
    fn decodes_every_kind() {
        let proc_event = |kind, flags| ProcEvent {
            kind,
            pid: 7,
            parent: 3,
            flags,
            cpu_ns: 42,
        };
        assert_eq!(
            Event::decode(&bytes(&proc_event(EVENT_FORK, 0))),
            Some(Event::Fork { pid: 7, parent: 3 })
        );
        assert_eq!(
            Event::decode(&bytes(&proc_event(EVENT_EXEC, 0))),
            Some(Event::Exec { pid: 7 })
        );
        assert_eq!(
            Event::decode(&bytes(&proc_event(EVENT_EXIT, FLAG_CPU_KNOWN))),
            Some(Event::Exit {
                pid: 7,
                cpu_ns: Some(42)
            })
        );
        assert_eq!(
            Event::decode(&bytes(&proc_event(EVENT_EXIT, 0))),
            Some(Event::Exit {
                pid: 7,
                cpu_ns: None
            })
        );
        assert_eq!(
            Event::decode(&bytes(&proc_event(EVENT_FORK_INTO_CGROUP, 0))),
            Some(Event::ForkIntoCgroup { pid: 7 })
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
            Event::decode(&bytes(&attach)),
            Some(Event::Attach {
                pid: 9,
                level: 2,
                path: Some(b"/a/b/c".to_vec())
            })
        );
        attach.path_len = 4000;
        assert_eq!(
            Event::decode(&bytes(&attach)),
            Some(Event::Attach {
                pid: 9,
                level: 2,
                path: None
            })
        );
    }

    #[test]
    fn short_or_unknown_events_are_refused() {
        assert_eq!(Event::decode(&[]), None);
        assert_eq!(Event::decode(&EVENT_FORK.to_ne_bytes()), None);
        assert_eq!(Event::decode(&EVENT_ATTACH.to_ne_bytes()), None);
        let unknown = ProcEvent {
            kind: 99,
            ..ProcEvent::default()
        };
        assert_eq!(Event::decode(&bytes(&unknown)), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
                let _ = Event::decode(&bytes);
            }
        }
    }
}
