//! The exit ledger: per container, the last processes that ended — how (exit code, signal, OOM
//! kill), when, after how long, with how much CPU and memory — and totals since the service
//! started.
//!
//! The sampler hands over every process that ended ([`Ended`]): those it sampled and saw leave,
//! and those the eBPF tracker saw exit without a sample ever reading them. The kernel's record
//! (exit event) is preferred; what only a sample knew (the command line, the last RSS) fills the
//! rest. With the /proc-scan tracker an end is only a disappearance: code and signal stay
//! unknown (`null`). OOM kills are counted from the cgroup's own counter as well
//! (`memory.oom_control` in v1, `memory.events` in v2), so none goes uncounted in either mode.
//!
//! Memory is bounded twice: at most `per_container` entries per container, at most `total` in
//! all (the oldest go first). A container's entries outlive the container itself within those
//! bounds: a crashed container is what someone will ask about.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::{Serialize, Serializer};

use crate::{
    cgroup::CgroupFs,
    model::ProcessInfo,
    procfs::{Pid, Stat, Status},
    tracker::{Exit, OomFigures},
};

/// How often the OOM-kill counters of all present containers are read (those where a process
/// ended are read at once).
const COUNTER_REFRESH: Duration = Duration::from_secs(10);

/// A process that ended, as the sampler puts it together.
#[derive(Clone, Debug)]
pub struct Ended {
    pub pid: Pid,
    pub container: Arc<str>,
    /// What the last sample read of it, when one did.
    pub last: Option<LastSeen>,
    /// What the tracker saw of its exit (eBPF), when it did.
    pub exit: Option<Exit>,
    /// The command line of its parent, for a process no sample read and whose exec the tracker
    /// did not report (a forked child that never exec'd).
    pub parent_cmdline: Option<Arc<str>>,
    /// When the sample that noticed the end began.
    pub noticed: SystemTime,
}

/// A process as the last sample read it.
#[derive(Clone, Debug)]
pub struct LastSeen {
    pub info: Arc<ProcessInfo>,
    pub stat: Arc<Stat>,
    pub status: Option<Arc<Status>>,
}

/// How an end was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// The kernel reported the exit (eBPF tracker): code, signal and times are the kernel's.
    ExitEvent,
    /// The process was gone at a sample (/proc-scan tracker, or an exit event was lost).
    Disappearance,
}

/// One ended process, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ExitRecord {
    pub container: Arc<str>,
    pub pid: Pid,
    pub ppid: Option<Pid>,
    pub comm: Box<str>,
    /// As last known: read by a sample, or carried by the exec event when no sample read it
    /// (cut at 256 bytes, marked `…`); `--cmdline` applies.
    pub cmdline: Arc<str>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(serialize_with = "rfc3339")]
    pub ended_at: jiff::Timestamp,
    pub lifetime_seconds: Option<f64>,
    pub user_cpu_seconds: Option<f64>,
    pub system_cpu_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// The code passed to exit(), when it exited; `null` when killed by a signal or unknown.
    pub exit_code: Option<i32>,
    /// The signal that killed it; `null` when it exited or unknown.
    pub signal: Option<i32>,
    pub core_dumped: Option<bool>,
    /// Whether the OOM killer chose it; `null` when unknown (/proc-scan tracker).
    pub oom_killed: Option<bool>,
    /// The victim's memory when the OOM killer chose it (`oom:mark_victim`).
    pub oom: Option<OomFigures>,
    pub seen: Seen,
}

fn rfc3339<S: Serializer>(time: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(time)
}

fn rfc3339_or_null<S: Serializer>(time: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => s.collect_str(time),
        None => s.serialize_none(),
    }
}

/// Per-container counts since the service started following the container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitTotals {
    /// Processes that ended (a process moved out of the container is not counted).
    pub exits_total: u64,
    /// Those that called exit() with a non-zero code.
    pub nonzero_exits_total: u64,
    /// Those killed by a signal (OOM kills included).
    pub signaled_total: u64,
    /// OOM kills: the larger of the victims reported by the kernel and the cgroup's own counter.
    pub oom_kills_total: u64,
    /// Ends by reason, for /metrics: exit() (any code), a signal other than an OOM kill, an OOM
    /// kill reported by the kernel, and disappearances whose reason is unknown.
    #[serde(skip)]
    pub by_reason: ByReason,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByReason {
    pub exit: u64,
    pub signal: u64,
    pub oom: u64,
    pub unknown: u64,
}

/// One container's part of the ledger.
#[derive(Clone, Debug, Default)]
pub struct ContainerExits {
    /// Oldest first, with their sequence numbers.
    entries: VecDeque<(u64, Arc<ExitRecord>)>,
    pub totals: ExitTotals,
    /// The cgroup's OOM-kill counter when first read (0 for a container that appeared after
    /// the service started), and its last value.
    oom_counter: Option<(u64, u64)>,
    /// Whether the newest sample listed the container.
    pub present: bool,
}

impl ContainerExits {
    /// Entries ended at or after `since`, newest first.
    pub fn newest_first(
        &self,
        since: Option<jiff::Timestamp>,
    ) -> impl Iterator<Item = &Arc<ExitRecord>> {
        self.entries
            .iter()
            .rev()
            .map(|(_, record)| record)
            .take_while(move |record| since.is_none_or(|since| record.ended_at >= since))
    }
}

/// What the API reads: published after each sample that changed it.
#[derive(Clone, Debug, Default)]
pub struct Exits {
    pub containers: HashMap<Arc<str>, ContainerExits>,
}

impl Exits {
    pub fn totals(&self, container: &str) -> ExitTotals {
        self.containers
            .get(container)
            .map(|c| c.totals)
            .unwrap_or_default()
    }

    /// Entries of every container ended at or after `since`, newest first, at most `limit`.
    pub fn newest_first(
        &self,
        since: Option<jiff::Timestamp>,
        limit: usize,
    ) -> Vec<Arc<ExitRecord>> {
        let mut all: Vec<(u64, &Arc<ExitRecord>)> = self
            .containers
            .values()
            .flat_map(|c| c.entries.iter().rev())
            .filter(|(_, record)| since.is_none_or(|since| record.ended_at >= since))
            .map(|(seq, record)| (*seq, record))
            .collect();
        all.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        all.into_iter()
            .take(limit)
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// Entries held, in all containers.
    pub fn len(&self) -> usize {
        self.containers.values().map(|c| c.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct LedgerOptions {
    /// Entries kept per container (`--exits-per-container`).
    pub per_container: usize,
    /// Entries kept in all (`--exits-total`).
    pub total: usize,
    pub cgroups: CgroupFs,
    pub ticks_per_second: u64,
}

/// The ledger and the bookkeeping of its bounds; owned by the sampler thread.
pub struct Ledger {
    options: LedgerOptions,
    exits: Arc<Exits>,
    /// Every entry's (sequence, container), oldest first, for the total bound; entries already
    /// dropped by the per-container bound are skipped when met (and compacted away).
    order: VecDeque<(u64, Arc<str>)>,
    held: usize,
    next_seq: u64,
    samples: u64,
    /// When every present container's OOM counter was last read.
    last_full_read: Option<Instant>,
}

impl Ledger {
    pub fn new(options: LedgerOptions) -> Ledger {
        Ledger {
            options,
            exits: Arc::default(),
            order: VecDeque::new(),
            held: 0,
            next_seq: 0,
            samples: 0,
            last_full_read: None,
        }
    }

    /// The current ledger, to publish.
    pub fn exits(&self) -> Arc<Exits> {
        self.exits.clone()
    }

    /// Takes in one sample's ends. `present` lists the containers the sample saw with a
    /// process.
    pub fn record<'a>(&mut self, ended: Vec<Ended>, present: impl Iterator<Item = &'a Arc<str>>) {
        self.samples += 1;
        let first_sample = self.samples == 1;
        let mut present_now: Vec<Arc<str>> = present.cloned().collect();
        present_now.sort_unstable();

        // The OOM-kill counters to read: where something ended (an OOM kill ends a process),
        // containers that just lost their last process, new containers (the starting point),
        // and every present container now and then (a victim no sample saw).
        let known = &self.exits.containers;
        let mut to_read: Vec<Arc<str>> = ended.iter().map(|e| e.container.clone()).collect();
        to_read.extend(
            known
                .iter()
                .filter(|(path, c)| c.present && present_now.binary_search(path).is_err())
                .map(|(path, _)| path.clone()),
        );
        let full_read = self
            .last_full_read
            .is_none_or(|at| at.elapsed() >= COUNTER_REFRESH);
        if full_read {
            self.last_full_read = Some(Instant::now());
            to_read.extend(present_now.iter().cloned());
        } else {
            to_read.extend(
                present_now
                    .iter()
                    .filter(|path| !known.contains_key(*path))
                    .cloned(),
            );
        }
        to_read.sort_unstable();
        to_read.dedup();
        let counters: Vec<(Arc<str>, Option<u64>)> = to_read
            .into_iter()
            .map(|path| {
                let value = self.options.cgroups.oom_kills(&path);
                (path, value)
            })
            .collect();

        // The published ledger is shared with readers: copy it only when something changed.
        let unchanged = ended.is_empty()
            && present_now.len() == known.values().filter(|c| c.present).count()
            && present_now
                .iter()
                .all(|path| known.get(path).is_some_and(|c| c.present))
            && counters.iter().all(|(path, value)| {
                known
                    .get(path)
                    .is_some_and(|c| c.oom_counter.map(|(_, now)| now) == *value)
            });
        if unchanged {
            return;
        }
        let clock = Clock::now();
        let exits = Arc::make_mut(&mut self.exits);
        let mut records: Vec<ExitRecord> = ended
            .into_iter()
            .map(|end| to_record(end, &clock, self.options.ticks_per_second))
            .collect();
        // Within a sample, in the order they ended.
        records.sort_by_key(|record| record.ended_at);
        for record in records {
            let container = exits
                .containers
                .entry(record.container.clone())
                .or_default();
            count(&mut container.totals, &record);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.push_back((seq, record.container.clone()));
            container.entries.push_back((seq, Arc::new(record)));
            self.held += 1;
            if container.entries.len() > self.options.per_container {
                container.entries.pop_front();
                self.held -= 1;
            }
        }
        for (path, value) in counters {
            let container = exits.containers.entry(path).or_default();
            if let Some(now) = value {
                container.oom_counter = Some(match container.oom_counter {
                    Some((base, _)) => (base.min(now), now),
                    // The service's first sample starts counting from what is there; a
                    // container that appeared later was created meanwhile, from zero.
                    None if first_sample => (now, now),
                    None => (0, now),
                });
            }
        }
        for container in exits.containers.values_mut() {
            let counted = container
                .oom_counter
                .map_or(0, |(base, now)| now.saturating_sub(base));
            container.totals.oom_kills_total = container.totals.by_reason.oom.max(counted);
        }
        enforce_total(&mut self.order, &mut self.held, self.options.total, exits);
        for (path, container) in exits.containers.iter_mut() {
            container.present = present_now.binary_search(path).is_ok();
        }
        // A container gone with nothing left to tell is forgotten.
        exits
            .containers
            .retain(|_, c| c.present || !c.entries.is_empty());
    }
}

/// Drops the oldest entries while more than `total` are held.
fn enforce_total(
    order: &mut VecDeque<(u64, Arc<str>)>,
    held: &mut usize,
    total: usize,
    exits: &mut Exits,
) {
    {
        while *held > total {
            let Some((seq, path)) = order.pop_front() else {
                break;
            };
            if let Some(container) = exits.containers.get_mut(&path)
                && container.entries.front().is_some_and(|(s, _)| *s == seq)
            {
                container.entries.pop_front();
                *held -= 1;
            }
        }
        // Entries the per-container bound dropped leave stale positions behind: compact them
        // away once they outnumber the live ones.
        if order.len() > 2 * *held + 1024 {
            order.retain(|(seq, path)| {
                exits
                    .containers
                    .get(path)
                    .and_then(|c| c.entries.front())
                    .is_some_and(|(oldest, _)| seq >= oldest)
            });
            order.shrink_to_fit();
        }
    }
}

fn count(totals: &mut ExitTotals, record: &ExitRecord) {
    totals.exits_total += 1;
    if record.exit_code.is_some_and(|code| code != 0) {
        totals.nonzero_exits_total += 1;
    }
    if record.signal.is_some() {
        totals.signaled_total += 1;
    }
    let reason = &mut totals.by_reason;
    match (record.exit_code, record.signal, record.oom_killed) {
        (_, Some(_), Some(true)) => reason.oom += 1,
        (_, Some(_), _) => reason.signal += 1,
        (Some(_), None, _) => reason.exit += 1,
        (None, None, _) => reason.unknown += 1,
    }
}

/// The realtime and boot-time clocks read together, to turn boot-relative times into UTC.
struct Clock {
    realtime: jiff::Timestamp,
    boot_ns: u64,
}

impl Clock {
    fn now() -> Clock {
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Clock {
            realtime: jiff::Timestamp::now(),
            boot_ns: (boot.tv_sec as u64) * 1_000_000_000 + boot.tv_nsec as u64,
        }
    }

    /// The UTC time of `boot_ns` nanoseconds after boot.
    fn at_boot_ns(&self, boot_ns: u64) -> jiff::Timestamp {
        let ago = self.boot_ns.saturating_sub(boot_ns);
        self.realtime
            .checked_sub(Duration::from_nanos(ago))
            .unwrap_or(self.realtime)
    }
}

fn to_record(end: Ended, clock: &Clock, ticks_per_second: u64) -> ExitRecord {
    let tps = ticks_per_second.max(1);
    let details = end.exit.as_ref().and_then(|e| e.details.as_ref());
    let last = end.last.as_ref();
    let ticks_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / tps;

    let sampled_comm = last.map(|l| l.stat.comm.trim_matches(['(', ')']));
    // The kernel's name at exit is current; a sample's may predate an exec.
    let comm: Box<str> = match (details, sampled_comm) {
        (Some(details), _) => details.comm.as_str().into(),
        (None, Some(sampled)) => sampled.into(),
        (None, None) => "".into(),
    };
    let exec_cmdline = end.exit.as_ref().and_then(|e| e.cmdline.clone());
    let sampled_cmdline = last
        .map(|l| l.info.cmdline.clone())
        .filter(|c| !c.is_empty());
    // An exec since the last sample (another name at exit) makes the sampled command stale.
    let exec_since_sample = sampled_comm.is_some_and(|sampled| *sampled != *comm);
    let cmdline = if exec_since_sample {
        exec_cmdline.or(sampled_cmdline)
    } else {
        sampled_cmdline.or(exec_cmdline)
    }
    .or(end.parent_cmdline)
    .unwrap_or_else(|| Arc::from(""));
    let ppid = details.map(|d| d.ppid).or_else(|| {
        last.and_then(|l| l.status.as_ref().map(|s| s.ppid as Pid))
            .or_else(|| last.map(|l| l.stat.ppid as Pid))
    });
    let start_boot_ns = details
        .map(|d| d.start_boot_ns)
        .or_else(|| last.map(|l| ticks_ns(l.stat.starttime)));
    let started_at = start_boot_ns.map(|ns| clock.at_boot_ns(ns));
    let (ended_at, end_boot_ns) = match details {
        Some(details) => (
            clock.at_boot_ns(details.end_boot_ns),
            Some(details.end_boot_ns),
        ),
        None => (
            jiff::Timestamp::try_from(end.noticed).unwrap_or(clock.realtime),
            None,
        ),
    };
    let lifetime_seconds = match (start_boot_ns, end_boot_ns, started_at) {
        (Some(start), Some(end), _) => Some(end.saturating_sub(start) as f64 / 1e9),
        (_, None, Some(started)) => {
            Some((ended_at.as_nanosecond() - started.as_nanosecond()).max(0) as f64 / 1e9)
        }
        _ => None,
    };
    let cpu_ns = end.exit.as_ref().and_then(|e| e.cpu_ns);
    let (user_cpu_seconds, system_cpu_seconds) = match (cpu_ns, details, last) {
        (Some(cpu), Some(d), _) => {
            let (user, system) = split(cpu, d.utime_ns, d.stime_ns);
            (Some(user as f64 / 1e9), Some(system as f64 / 1e9))
        }
        (Some(cpu), None, Some(l)) => {
            let (user, system) = split(cpu, l.stat.utime, l.stat.stime);
            (Some(user as f64 / 1e9), Some(system as f64 / 1e9))
        }
        (None, _, Some(l)) => (
            Some(l.stat.utime as f64 / tps as f64),
            Some(l.stat.stime as f64 / tps as f64),
        ),
        _ => (None, None),
    };
    let sampled_peak = last
        .and_then(|l| l.status.as_ref())
        .map(|s| s.vm_hwm * 1024);
    let peak_rss_bytes = match (details.map(|d| d.peak_rss_bytes), sampled_peak) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let (exit_code, signal, core_dumped) = match details {
        Some(d) => {
            let (code, signal, core) = d.outcome();
            (code, signal, Some(core))
        }
        None => (None, None, None),
    };
    let oom = end.exit.as_ref().and_then(|e| e.oom);
    let oom_killed = end.exit.as_ref().map(|_| oom.is_some());
    ExitRecord {
        container: end.container,
        pid: end.pid,
        ppid,
        comm,
        cmdline,
        started_at,
        ended_at,
        lifetime_seconds,
        user_cpu_seconds,
        system_cpu_seconds,
        peak_rss_bytes,
        exit_code,
        signal,
        core_dumped,
        oom_killed,
        oom,
        seen: if end.exit.is_some() {
            Seen::ExitEvent
        } else {
            Seen::Disappearance
        },
    }
}

/// Splits `total` in the ratio `user : system`, as the kernel does for /proc (all user time
/// when neither was sampled).
fn split(total: u64, user: u64, system: u64) -> (u64, u64) {
    if system == 0 || user + system == 0 {
        return (total, 0);
    }
    if user == 0 {
        return (0, total);
    }
    let user_part = (u128::from(total) * u128::from(user) / u128::from(user + system)) as u64;
    (user_part, total - user_part)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tracker::ExitDetails;

    /// A record with every field filled, for the API document's checks.
    pub(crate) fn record() -> ExitRecord {
        let mut end = ended("/a", 1, 9, true);
        end.last = None;
        to_record(end, &Clock::now(), 100)
    }

    fn ledger(per_container: usize, total: usize) -> Ledger {
        Ledger::new(LedgerOptions {
            per_container,
            total,
            cgroups: CgroupFs::default(),
            ticks_per_second: 100,
        })
    }

    fn ended(container: &str, pid: Pid, status: u32, oom: bool) -> Ended {
        Ended {
            pid,
            container: container.into(),
            last: None,
            exit: Some(Exit {
                pid,
                container: container.into(),
                cpu_ns: Some(30_000_000),
                details: Some(ExitDetails {
                    status,
                    ppid: 1,
                    comm: "app".into(),
                    start_boot_ns: 1_000_000_000,
                    end_boot_ns: 1_500_000_000 + u64::from(pid),
                    utime_ns: 1,
                    stime_ns: 2,
                    peak_rss_bytes: 4096,
                }),
                cmdline: Some("app --run".into()),
                oom: oom.then(OomFigures::default),
            }),
            parent_cmdline: None,
            noticed: SystemTime::now(),
        }
    }

    fn pids(records: &[Arc<ExitRecord>]) -> Vec<Pid> {
        records.iter().map(|r| r.pid).collect()
    }

    #[test]
    fn keeps_the_last_n_per_container_newest_first() {
        let mut ledger = ledger(3, 100);
        let a: Arc<str> = "/a".into();
        for batch in [[1, 2], [3, 4], [5, 6]] {
            let ends = batch
                .iter()
                .map(|&pid| ended("/a", pid, 0, false))
                .collect();
            ledger.record(ends, [&a].into_iter());
        }
        let exits = ledger.exits();
        let listed: Vec<Pid> = exits.containers["/a"]
            .newest_first(None)
            .map(|r| r.pid)
            .collect();
        assert_eq!(listed, [6, 5, 4]);
        assert_eq!(exits.totals("/a").exits_total, 6, "totals count every end");
        assert_eq!(pids(&exits.newest_first(None, 2)), [6, 5]);
    }

    #[test]
    fn the_total_bound_drops_the_oldest_across_containers() {
        let mut ledger = ledger(10, 4);
        let (a, b): (Arc<str>, Arc<str>) = ("/a".into(), "/b".into());
        ledger.record(
            vec![ended("/a", 1, 0, false), ended("/a", 2, 0, false)],
            [&a].into_iter(),
        );
        ledger.record(
            vec![
                ended("/b", 3, 0, false),
                ended("/b", 4, 0, false),
                ended("/b", 5, 0, false),
            ],
            [&a, &b].into_iter(),
        );
        let exits = ledger.exits();
        assert_eq!(exits.len(), 4);
        assert_eq!(pids(&exits.newest_first(None, 100)), [5, 4, 3, 2]);
    }

    #[test]
    fn removed_containers_stay_while_they_have_entries() {
        let mut ledger = ledger(2, 2);
        let (a, b): (Arc<str>, Arc<str>) = ("/a".into(), "/b".into());
        ledger.record(vec![ended("/a", 1, 9, false)], [&a].into_iter());
        // /a is gone from the samples: its entry stays.
        ledger.record(Vec::new(), [&b].into_iter());
        let exits = ledger.exits();
        assert!(!exits.containers["/a"].present);
        assert_eq!(exits.containers["/a"].newest_first(None).count(), 1);
        // Pushed out by newer entries elsewhere, it is forgotten whole.
        let ends = (2..4).map(|pid| ended("/b", pid, 0, false)).collect();
        ledger.record(ends, [&b].into_iter());
        assert!(!ledger.exits().containers.contains_key("/a"));
    }

    #[test]
    fn stale_positions_are_compacted() {
        let mut ledger = ledger(2, 10_000);
        let a: Arc<str> = "/a".into();
        for pid in 0..20_000 {
            ledger.record(vec![ended("/a", pid, 0, false)], [&a].into_iter());
        }
        assert_eq!(ledger.exits().len(), 2);
        assert!(
            ledger.order.len() <= 2 * 2 + 1024 + 1,
            "{}",
            ledger.order.len()
        );
    }

    #[test]
    fn codes_signals_and_oom_are_told_apart() {
        let mut ledger = ledger(10, 100);
        let a: Arc<str> = "/a".into();
        ledger.record(
            vec![
                ended("/a", 1, 3 << 8, false),    // exit(3)
                ended("/a", 2, 0, false),         // exit(0)
                ended("/a", 3, 15, false),        // SIGTERM
                ended("/a", 4, 11 | 0x80, false), // SIGSEGV, core dumped
                ended("/a", 5, 9, true),          // OOM kill
            ],
            [&a].into_iter(),
        );
        let exits = ledger.exits();
        let by_pid = |pid: Pid| {
            exits.containers["/a"]
                .newest_first(None)
                .find(|r| r.pid == pid)
                .unwrap()
                .clone()
        };
        let r = by_pid(1);
        assert_eq!(
            (r.exit_code, r.signal, r.core_dumped),
            (Some(3), None, Some(false))
        );
        assert_eq!(by_pid(2).exit_code, Some(0));
        assert_eq!((by_pid(3).exit_code, by_pid(3).signal), (None, Some(15)));
        assert_eq!(
            (by_pid(4).signal, by_pid(4).core_dumped),
            (Some(11), Some(true))
        );
        assert_eq!(
            (by_pid(5).signal, by_pid(5).oom_killed),
            (Some(9), Some(true))
        );
        assert_eq!(by_pid(1).oom_killed, Some(false));
        assert_eq!(&*by_pid(1).cmdline, "app --run");
        assert_eq!(by_pid(1).lifetime_seconds, Some(0.500000001));
        let totals = exits.totals("/a");
        assert_eq!(
            (
                totals.exits_total,
                totals.nonzero_exits_total,
                totals.signaled_total,
                totals.oom_kills_total
            ),
            (5, 1, 3, 1)
        );
        assert_eq!(
            totals.by_reason,
            ByReason {
                exit: 2,
                signal: 2,
                oom: 1,
                unknown: 0
            }
        );
    }

    #[test]
    fn since_filters_by_end_time() {
        let mut ledger = ledger(10, 100);
        let a: Arc<str> = "/a".into();
        let mut old = ended("/a", 1, 0, false);
        old.exit = None;
        old.noticed = SystemTime::now() - Duration::from_secs(3600);
        let mut new = ended("/a", 2, 0, false);
        new.exit = None;
        ledger.record(vec![old, new], [&a].into_iter());
        let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
        assert_eq!(pids(&ledger.exits().newest_first(Some(since), 10)), [2]);
        let record = &ledger.exits().newest_first(None, 10)[0];
        assert_eq!(record.seen, Seen::Disappearance);
        assert_eq!((record.exit_code, record.oom_killed), (None, None));
    }

    #[test]
    fn cpu_is_split_like_the_kernel_does() {
        assert_eq!(split(100, 1, 3), (25, 75));
        assert_eq!(split(100, 0, 0), (100, 0));
        assert_eq!(split(100, 0, 5), (0, 100));
        assert_eq!(split(100, 5, 0), (100, 0));
    }

    /// The bound in bytes: what one entry costs (README, "Exit ledger").
    #[test]
    fn entry_size() {
        // The record behind its Arc (two counters), its slot in the deque and in the order.
        let size = size_of::<ExitRecord>()
            + 16
            + size_of::<(u64, Arc<ExitRecord>)>()
            + size_of::<(u64, Arc<str>)>();
        eprintln!("ledger entry: {size} bytes besides its name and command line");
        assert!(size <= 352, "{size}");
    }
}
