//! Reads /proc for the tracked processes: one pass makes one [`Sample`].
//!
//! Cost per process and sample is two reads (stat and status) through descriptors kept open
//! across samples; the command line is read when a process is first seen, again when it may have
//! changed (see [`may_have_rewritten_cmdline`]), and at least every [`CMDLINE_REFRESH_SAMPLES`]
//! samples whatever happened. Holding the descriptors also makes the reads pid-reuse safe: a
//! descriptor of an exited process fails with ESRCH, it never starts reading a newcomer with the
//! same pid; the pid is then read afresh in the same pass, as a new process.

use std::{collections::HashMap, fs::File, io, sync::Arc, time::SystemTime};

use tracing::{debug, warn};
use xxhash_rust::xxh3::xxh3_128;

use crate::{
    cgroup::{CgroupReader, Naming, container_of, read_membership},
    descriptors::Budget,
    exits::{Ended, LastSeen},
    model::{Departed, ProcessInfo, ProcessSample, Sample, Sampled},
    procfs::{
        self, CmdlineMode, ParseError, Pid, ProcRoot, Stat, Status, has_cmdline, render_cmdline,
    },
    tracker::{Exit, Processes, Tracked, Tracker, TrackerKind, container_name},
};

/// Every process's command line is read again at least once every this many samples, even when
/// nothing says it changed: another thread, or another process through /proc/PID/mem, can
/// rewrite it without the signs [`may_have_rewritten_cmdline`] looks for. The re-reads are spread
/// evenly over the samples (a process is due when its own counter comes round), so no sample
/// pays for all of them; the cost is one read of `cmdline` per process every this many samples.
pub const CMDLINE_REFRESH_SAMPLES: u32 = 10;

/// A process as the sampler last read it.
struct Cached {
    info: Arc<ProcessInfo>,
    stat: Parsed<Stat>,
    /// `None` while the status file cannot be read.
    status: Option<Parsed<Status>>,
    /// Open stat and status files, when the descriptor budget allowed.
    files: Option<(File, File)>,
    execs: u32,
    seen_in: u64,
    /// Samples since the command line was last read.
    cmdline_age: u32,
    /// While the main thread has exited and other threads run: a live thread, and the status
    /// served for the process (that thread's, under the process's pid and name).
    zombie_leader: Option<(Pid, Arc<Status>)>,
    /// The entry of the latest sample that saw it, shared by the next while nothing changes.
    last: Option<ProcessSample>,
}

pub struct SamplerOptions {
    pub root: ProcRoot,
    /// The naming that confirms a process's container in /proc/PID/cgroup.
    pub naming: Naming,
    /// Descriptors that may be kept open (two per process), shared with the cgroup reader.
    pub descriptors: Budget,
    pub cmdline: CmdlineMode,
    /// Threads that share a pass's reads; 0: chosen per pass (see [`Sampler::threads_for`]).
    pub threads: u32,
}

/// With `threads` at 0, a pass uses one thread per this many processes (at most one per core):
/// below it, splitting costs more in coordination than it saves, and one thread reads this many
/// in well under a tenth of a second.
pub const PROCESSES_PER_THREAD: usize = 10_000;

/// With `threads` at 0, at most this many threads read (100,000 processes in about a fifth of
/// a second): more would only add idle threads on hosts with many cores.
pub const MAX_AUTOMATIC_THREADS: usize = 8;

pub struct Sampler {
    options: SamplerOptions,
    cache: HashMap<Pid, Cached>,
    open: usize,
    ticks_per_second: u64,
    pass: u64,
    /// When the previous pass began (clock ticks since boot): a process started later is
    /// younger than it. `u64::MAX` before the first pass.
    previous_boot_ticks: u64,
    /// Processes that left during the current pass.
    departed: Vec<Departed>,
    /// Processes found gone during the current pass (their pid may already name a newcomer):
    /// they depart at its end, with their CPU at exit when the tracker knows it.
    gone: Vec<(Pid, Cached)>,
    /// The next process's starting `cmdline_age`: cycles through the refresh period, so that the
    /// periodic re-reads are spread over the samples.
    next_cmdline_age: u32,
    /// Processes that ended, for the exit ledger; taken after each pass.
    ended: Vec<Ended>,
    /// Processes gone without an exit event from the eBPF tracker: the event may come with the
    /// next refresh (they died between that refresh and their read), so they wait one pass.
    limbo: Vec<Ended>,
    buf: Vec<u8>,
    /// Reads each container's limits, throttling and pressure; `None` when not wanted.
    cgroups: Option<CgroupReader>,
    /// The reading threads besides the sampler's own; `None` when a pass never splits.
    pool: Option<rayon::ThreadPool>,
    /// Threads the latest pass used.
    threads_used: usize,
}

/// What reading one proc file gave; the text is in the buffer passed.
enum Read {
    Text,
    /// The process exited: its pid names nothing, or an open file of it answers ESRCH.
    Gone,
    /// Any other failure (EACCES from a security module, a fake root's odd file, …).
    Failed(io::Error),
}

fn read(root: &ProcRoot, pid: Pid, name: &str, file: Option<&File>, buf: &mut Vec<u8>) -> Read {
    let result = match file {
        Some(file) => procfs::pread_whole(file, buf),
        None => root.read(pid, name, buf),
    };
    match result {
        Ok(()) => Read::Text,
        Err(err) if procfs::is_gone(&err) => Read::Gone,
        Err(err) => Read::Failed(err),
    }
}

impl Sampler {
    pub fn new(options: SamplerOptions) -> Sampler {
        let most = match options.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_AUTOMATIC_THREADS),
            n => n as usize,
        };
        // Started now, before the service installs its system call filter.
        let pool = (most > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(most)
                    .thread_name(|i| format!("sampler-{i}"))
                    .build()
            })
            .transpose()
            .unwrap_or_else(|err| {
                warn!("cannot start the sampler's reading threads, reading on one: {err}");
                None
            });
        Sampler {
            options,
            cache: HashMap::new(),
            open: 0,
            ticks_per_second: procfs::ticks_per_second(),
            pass: 0,
            previous_boot_ticks: u64::MAX,
            departed: Vec::new(),
            gone: Vec::new(),
            next_cmdline_age: 0,
            ended: Vec::new(),
            limbo: Vec::new(),
            buf: Vec::with_capacity(4096),
            cgroups: None,
            pool,
            threads_used: 1,
        }
    }

    /// Also reads every container's cgroup files with each sample.
    pub fn with_cgroups(mut self, reader: CgroupReader) -> Sampler {
        self.cgroups = Some(reader);
        self
    }

    pub fn open_descriptors(&self) -> usize {
        self.open
    }

    /// Threads the latest pass split its reads over.
    pub fn threads_used(&self) -> usize {
        self.threads_used
    }

    /// The processes that ended since the last call, for the exit ledger.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Threads for a pass over `processes`: as configured, else one per
    /// [`PROCESSES_PER_THREAD`], at most the pool's.
    fn threads_for(&self, processes: usize) -> usize {
        let most = self
            .pool
            .as_ref()
            .map_or(1, |pool| pool.current_num_threads());
        match self.options.threads {
            0 => processes.div_ceil(PROCESSES_PER_THREAD).clamp(1, most),
            n => (n as usize).min(most),
        }
    }

    /// One pass: refresh the tracker, read every tracked process, note who left.
    pub fn sample(&mut self, tracker: &mut dyn Tracker) -> anyhow::Result<Sample> {
        let timestamp = SystemTime::now();
        let boot_ticks = procfs::boot_ticks(self.ticks_per_second);
        tracker.refresh()?;
        self.pass += 1;
        let tracked = tracker.processes();
        let threads = self.threads_for(tracked.len());
        self.threads_used = threads;

        let (mut sampled, known) = self.read_known(tracked, threads);
        // Every listed process known already (the usual case): no need to look for new ones.
        if known < tracked.len() {
            sampled.extend(self.read_new(tracked, threads));
        }

        let departed = self.collect_departed(tracker, boot_ticks, timestamp);
        self.hold_descriptors();
        self.previous_boot_ticks = boot_ticks;
        let mut sample = Sample::new(timestamp, boot_ticks, sampled, departed);
        if let Some(reader) = &mut self.cgroups {
            sample.read_cgroups(|path| reader.read(path));
            reader.retain(|path| !sample.container(path).is_empty());
        }
        Ok(sample)
    }

    /// Reads again every known process the tracker still lists. One found gone (or its pid
    /// reused) leaves the cache for `gone`: a newcomer holding its pid is then read as new.
    /// Returns the samples and how many of the listed processes are still known.
    fn read_known(&mut self, tracked: &Processes, threads: usize) -> (Vec<Sampled>, usize) {
        let pass = self.pass;
        let options = &self.options;
        let mut known: Vec<(Pid, &Tracked, &mut Cached)> = self
            .cache
            .iter_mut()
            .filter_map(|(&pid, cached)| Some((pid, tracked.get(&pid)?, cached)))
            .collect();
        let outcomes = split(self.pool.as_ref(), threads, &mut known, |entry, buf| {
            let (pid, tracked, cached) = entry;
            // Whatever happens below, a process still known is not taken for departed.
            cached.seen_in = pass;
            match refresh(options, *pid, tracked, cached, buf) {
                Ok(Refreshed::Same { recent_ticks }) => Known::Read(Sampled {
                    process: cached.sample(),
                    recent_ticks,
                }),
                // The process we knew exited (its descriptor answers ESRCH, or its pid shows
                // another start time).
                Ok(Refreshed::Gone | Refreshed::Reused) => Known::Ended(*pid),
                Err(err) => {
                    debug!(pid, %err, "process not sampled this time");
                    Known::Unread
                }
            }
        });
        let mut sampled = Vec::with_capacity(tracked.len());
        let mut known = outcomes.len();
        for outcome in outcomes {
            match outcome {
                Known::Read(process) => sampled.push(process),
                Known::Ended(pid) => {
                    let old = self.cache.remove(&pid).expect("cached");
                    self.gone.push((pid, old));
                    known -= 1;
                }
                Known::Unread => {}
            }
        }
        (sampled, known)
    }

    /// First read of every process the tracker lists and the cache does not hold. Descriptors
    /// are handed out before the reads, in order, while the budget lasts.
    fn read_new(&mut self, tracked: &Processes, threads: usize) -> Vec<Sampled> {
        let budget = &self.options.descriptors;
        let mut new: Vec<(Pid, &Tracked, bool)> = tracked
            .iter()
            .filter(|(pid, _)| !self.cache.contains_key(pid))
            .map(|(&pid, tracked)| (pid, tracked, budget.take(2)))
            .collect();
        // Taken for processes that turned out gone or unopenable: back to the budget.
        let taken = new.iter().filter(|(_, _, hold)| *hold).count();
        let (options, younger_than) = (&self.options, self.previous_boot_ticks);
        let read = split(self.pool.as_ref(), threads, &mut new, |entry, buf| {
            let (pid, tracked, hold) = *entry;
            match first_read(options, pid, tracked, hold, younger_than, buf) {
                Ok(read) => read.map(|(cached, recent_ticks)| (pid, cached, recent_ticks)),
                Err(err) => {
                    debug!(pid, %err, "process not sampled this time");
                    None
                }
            }
        });
        let mut sampled = Vec::with_capacity(read.len());
        let mut held = 0;
        for (pid, mut cached, recent_ticks) in read.into_iter().flatten() {
            if cached.files.is_some() {
                held += 1;
            }
            cached.seen_in = self.pass;
            cached.cmdline_age = self.next_cmdline_age;
            self.next_cmdline_age = (self.next_cmdline_age + 1) % CMDLINE_REFRESH_SAMPLES;
            sampled.push(Sampled {
                process: cached.sample(),
                recent_ticks,
            });
            self.cache.insert(pid, cached);
        }
        self.open += held;
        self.options.descriptors.give(2 * (taken - held));
        sampled
    }

    /// Known processes read by path (the budget was spent when they came) get descriptors as
    /// soon as departures free some: no process is read by open/read/close while descriptors
    /// can be had. The next read through them checks the start time, as every read does.
    fn hold_descriptors(&mut self) {
        let budget = &self.options.descriptors;
        if self.open >= self.cache.len() || budget.left() < 2 {
            return;
        }
        let root = &self.options.root;
        for (&pid, cached) in &mut self.cache {
            if cached.files.is_some() || cached.seen_in != self.pass {
                continue;
            }
            if !budget.take(2) {
                break;
            }
            let open = |name| File::open(root.file(pid, name));
            if let (Ok(stat), Ok(status)) = (open("stat"), open("status")) {
                cached.files = Some((stat, status));
                self.open += 1;
            } else {
                budget.give(2);
            }
        }
    }

    /// Records a cached process as departed, with its CPU time at exit when known.
    /// A known process that ended: it departs (with its CPU at exit when the kernel told it),
    /// and its record for the exit ledger is returned.
    fn end(&mut self, pid: Pid, cached: Cached, exit: Option<&Exit>, noticed: SystemTime) -> Ended {
        let end = Ended {
            pid,
            container: cached.info.container.clone(),
            last: Some(cached.last_seen()),
            exit: exit.cloned(),
            parent_cmdline: None,
            noticed,
        };
        let tps = self.ticks_per_second;
        self.depart(
            cached,
            exit.and_then(|e| e.cpu_ns).map(|ns| ns_to_ticks(ns, tps)),
        );
        end
    }

    fn depart(&mut self, cached: Cached, cpu_at_exit: Option<u64>) {
        if cached.files.is_some() {
            self.open -= 1;
            self.options.descriptors.give(2);
        }
        let last = cached.stat.value.cpu_ticks();
        let at_exit = cpu_at_exit.map_or(last, |at_exit| at_exit.max(last));
        self.departed.push(Departed {
            info: cached.info,
            cpu_ticks: at_exit,
            recent_ticks: at_exit - last,
        });
    }

    /// Processes cached but not seen in this pass left their container (or the host): they
    /// depart with their CPU time at exit when the tracker knows it. Exits of processes the
    /// sampler never saw (born and gone between two samples) depart too, so their CPU counts.
    /// Both kinds go to the exit ledger; a process that left its container alive does not.
    fn collect_departed(
        &mut self,
        tracker: &dyn Tracker,
        boot_ticks: u64,
        timestamp: SystemTime,
    ) -> Vec<Departed> {
        let exits = tracker.exits();
        let events = tracker.kind() == TrackerKind::Ebpf;
        let tps = self.ticks_per_second;
        let pass = self.pass;
        let unseen: Vec<Pid> = self
            .cache
            .iter()
            .filter(|(_, cached)| cached.seen_in != pass)
            .map(|(&pid, _)| pid)
            .collect();
        let mut limbo = Vec::new();
        for pid in unseen {
            let cached = self.cache.remove(&pid).expect("listed");
            let exit = exits.iter().find(|e| e.pid == pid);
            let alive = exit.is_none() && self.still_alive(pid, cached.info.starttime);
            let end = self.end(pid, cached, exit, timestamp);
            match (exit, alive) {
                (Some(_), _) => self.ended.push(end),
                // Moved out of every container: not an end.
                (None, true) => {}
                (None, false) if events => limbo.push(end),
                (None, false) => self.ended.push(end),
            }
        }
        // Processes whose pid a newcomer took in this pass: their exit event (if any) is theirs.
        for (pid, cached) in std::mem::take(&mut self.gone) {
            let exit = exits.iter().find(|e| e.pid == pid);
            let end = self.end(pid, cached, exit, timestamp);
            self.ended.push(end);
        }
        crate::tracker::shrink_after_churn(&mut self.cache);
        let mut waiting = std::mem::take(&mut self.limbo);
        for exit in exits {
            if let Some(at) = waiting.iter().position(|e| e.pid == exit.pid) {
                // Departed at the previous pass with its last sampled CPU: the event completes
                // the ledger's record.
                let mut end = waiting.swap_remove(at);
                end.exit = Some(exit.clone());
                self.ended.push(end);
                continue;
            }
            let sampled = self.cache.contains_key(&exit.pid)
                || self.departed.iter().any(|d| d.info.pid == exit.pid);
            if sampled {
                continue;
            }
            if let Some(ns) = exit.cpu_ns {
                let ticks = ns_to_ticks(ns, tps);
                self.departed.push(Departed {
                    info: Arc::new(ProcessInfo {
                        pid: exit.pid,
                        // Unknown, but after the previous pass began: it was never sampled.
                        starttime: boot_ticks,
                        container: exit.container.clone(),
                        cmdline: Arc::from(""),
                        has_cmdline: None,
                    }),
                    cpu_ticks: ticks,
                    recent_ticks: ticks,
                });
            }
            let parent_cmdline = exit
                .details
                .as_ref()
                .and_then(|d| self.cache.get(&d.ppid))
                .map(|parent| parent.info.cmdline.clone());
            self.ended.push(Ended {
                pid: exit.pid,
                container: exit.container.clone(),
                last: None,
                exit: Some(exit.clone()),
                parent_cmdline,
                noticed: timestamp,
            });
        }
        // No event came for them: they ended all the same, how is unknown.
        self.ended.append(&mut waiting);
        self.limbo = limbo;
        std::mem::take(&mut self.departed)
    }

    /// Whether `pid` still names the process that started at `starttime` and has not exited
    /// (it left its container alive). A zombie has exited: its parent has not reaped it yet.
    fn still_alive(&mut self, pid: Pid, starttime: u64) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let alive = matches!(
            read(&self.options.root, pid, "stat", None, &mut buf),
            Read::Text
        ) && Stat::parse(&buf).is_ok_and(|stat| {
            stat.starttime == starttime && !matches!(stat.state.as_str(), "Z" | "X")
        });
        self.buf = buf;
        alive
    }
}

/// What re-reading a known process gave.
enum Known {
    Read(Sampled),
    /// It exited, or its pid names a newcomer now.
    Ended(Pid),
    /// It could not be read this time: it stays known, but is not in this sample.
    Unread,
}

/// Runs `work` over `items`, split in `threads` contiguous parts on `pool` (inline when one
/// thread is asked for), each part with its own read buffer; the results in one list.
fn split<T: Send, R: Send>(
    pool: Option<&rayon::ThreadPool>,
    threads: usize,
    items: &mut [T],
    work: impl Fn(&mut T, &mut Vec<u8>) -> R + Sync,
) -> Vec<R> {
    let part = |items: &mut [T]| {
        let mut buf = Vec::with_capacity(4096);
        items
            .iter_mut()
            .map(|item| work(item, &mut buf))
            .collect::<Vec<R>>()
    };
    match pool {
        Some(pool) if threads > 1 && items.len() > 1 => {
            use rayon::prelude::*;
            let size = items.len().div_ceil(threads);
            let parts: Vec<Vec<R>> =
                pool.install(|| items.par_chunks_mut(size).map(part).collect());
            parts.into_iter().flatten().collect()
        }
        _ => part(items),
    }
}

/// First read of a process: verify its container when the tracker did not, open its files when
/// `hold`, read its command line. `Ok(None)`: it is gone, or not in the container the tracker
/// says. The caller sets its place in the command-line refresh cycle.
fn first_read(
    options: &SamplerOptions,
    pid: Pid,
    tracked: &Tracked,
    hold: bool,
    previous_boot_ticks: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(Cached, u64)>> {
    let root = &options.root;
    if !tracked.verified {
        match read_membership(root, pid, options.naming, buf) {
            Ok(()) => {}
            Err(err) if procfs::is_gone(&err) => return Ok(None),
            Err(err) => return Err(err),
        }
        let confirmed = container_of(buf, options.naming)
            .is_some_and(|path| container_name(path) == *tracked.container);
        if !confirmed {
            debug!(pid, tracked = %tracked.container, "container not confirmed by /proc");
            return Ok(None);
        }
    }
    let files = if hold {
        let open = |name| File::open(root.file(pid, name));
        match (open("stat"), open("status")) {
            (Ok(stat), Ok(status)) => Some((stat, status)),
            (Err(err), _) | (_, Err(err)) if procfs::is_gone(&err) => return Ok(None),
            // Read by path instead; the reads say what is wrong.
            _ => None,
        }
    } else {
        None
    };
    match read(root, pid, "stat", files.as_ref().map(|f| &f.0), buf) {
        Read::Text => {}
        Read::Gone => return Ok(None),
        Read::Failed(err) => return Err(err),
    }
    let stat = Parsed::new(buf, Stat::parse).map_err(invalid)?;
    let status = match read(root, pid, "status", files.as_ref().map(|f| &f.1), buf) {
        Read::Text => Parsed::new(buf, Status::parse).ok(),
        Read::Gone => return Ok(None),
        Read::Failed(_) => None,
    };
    let zombie_leader = status
        .as_ref()
        .and_then(|s| zombie_leader_view(root, pid, &s.value, None, buf));
    let thread = zombie_leader.as_ref().map(|(tid, _)| *tid);
    let Some((cmdline, has_cmdline)) = read_cmdline(options, pid, thread, buf) else {
        return Ok(None);
    };
    // Its CPU so far counts as recent only if it started after the previous pass began;
    // an older process seen for the first time has no known baseline.
    let recent_ticks = if stat.value.starttime >= previous_boot_ticks {
        stat.value.cpu_ticks()
    } else {
        0
    };
    let cached = Cached {
        info: Arc::new(ProcessInfo {
            pid,
            starttime: stat.value.starttime,
            container: tracked.container.clone(),
            cmdline,
            has_cmdline,
        }),
        stat,
        status,
        files,
        execs: tracked.execs,
        seen_in: 0,
        cmdline_age: 0,
        zombie_leader,
        last: None,
    };
    Ok(Some((cached, recent_ticks)))
}

/// Reads a known process again.
fn refresh(
    options: &SamplerOptions,
    pid: Pid,
    tracked: &Tracked,
    cached: &mut Cached,
    buf: &mut Vec<u8>,
) -> io::Result<Refreshed> {
    let root = &options.root;
    let files = cached.files.as_ref();
    match read(root, pid, "stat", files.map(|f| &f.0), buf) {
        Read::Text => {}
        Read::Gone => return Ok(Refreshed::Gone),
        Read::Failed(err) => return Err(err),
    }
    // An idle process reads the same texts as last time: its parsed values (and their memory)
    // are not touched at all.
    let old_stat = cached.stat.update(buf, Stat::parse).map_err(invalid)?;
    if let Some(old) = &old_stat
        && cached.stat.value.starttime != cached.info.starttime
    {
        cached.stat.value = old.clone();
        return Ok(Refreshed::Reused);
    }
    // Whether the status changed (or became readable or unreadable), and its previous value.
    let (status_changed, old_status) = match read(root, pid, "status", files.map(|f| &f.1), buf) {
        Read::Text => match &mut cached.status {
            Some(status) => match status.update(buf, Status::parse) {
                Ok(old) => (old.is_some(), old),
                Err(_) => (true, cached.status.take().map(|s| s.value)),
            },
            None => {
                cached.status = Parsed::new(buf, Status::parse).ok();
                (cached.status.is_some(), None)
            }
        },
        Read::Gone => return Ok(Refreshed::Gone),
        Read::Failed(_) => {
            let old = cached.status.take().map(|s| s.value);
            (old.is_some(), old)
        }
    };
    let was_zombie_leader = cached.zombie_leader.is_some();
    // Only a changed status can make the main thread a zombie; a zombie leader's view is the
    // live thread's status, read again each time.
    if status_changed || was_zombie_leader {
        cached.zombie_leader = cached.status.as_ref().and_then(|s| {
            let previous = cached.zombie_leader.as_ref().map(|(_, view)| view);
            zombie_leader_view(root, pid, &s.value, previous, buf)
        });
    }

    let ran = if old_stat.is_none() && !status_changed {
        false
    } else {
        let stat_before = old_stat.as_ref().unwrap_or(&cached.stat.value);
        let status_before = if status_changed {
            old_status.as_ref()
        } else {
            cached.status.as_ref().map(|s| &s.value)
        };
        match (status_before, &cached.status) {
            (Some(old), Some(new)) => {
                may_have_rewritten_cmdline(stat_before, old, &cached.stat.value, &new.value)
            }
            _ => true,
        }
    };
    cached.cmdline_age += 1;
    let cmdline_stale = ran
        || tracked.execs != cached.execs
        || was_zombie_leader != cached.zombie_leader.is_some()
        || cached.cmdline_age >= CMDLINE_REFRESH_SAMPLES;
    if cmdline_stale || cached.info.container != tracked.container {
        let (mut cmdline, has_cmdline) = if cmdline_stale {
            cached.cmdline_age = 0;
            let thread = cached.zombie_leader.as_ref().map(|(tid, _)| *tid);
            match read_cmdline(options, pid, thread, buf) {
                Some(read) => read,
                None => return Ok(Refreshed::Gone),
            }
        } else {
            (cached.info.cmdline.clone(), cached.info.has_cmdline)
        };
        if cmdline == cached.info.cmdline {
            cmdline = cached.info.cmdline.clone();
        }
        let info = ProcessInfo {
            pid,
            starttime: cached.info.starttime,
            container: tracked.container.clone(),
            cmdline,
            has_cmdline,
        };
        if info != *cached.info {
            cached.info = Arc::new(info);
        }
    }
    cached.execs = tracked.execs;
    let recent_ticks = old_stat.map_or(0, |old| {
        cached
            .stat
            .value
            .cpu_ticks()
            .saturating_sub(old.cpu_ticks())
    });
    Ok(Refreshed::Same { recent_ticks })
}

/// The command line as `--cmdline` keeps it and whether there is one; `None` when the process
/// is gone. An unreadable file gives an empty text and "unknown". `thread`: a live thread to read
/// it from when the main thread has exited (its own file is then empty).
fn read_cmdline(
    options: &SamplerOptions,
    pid: Pid,
    thread: Option<Pid>,
    buf: &mut Vec<u8>,
) -> Option<(Arc<str>, Option<bool>)> {
    let mut text = read(&options.root, pid, "cmdline", None, buf);
    if let (Read::Text, true, Some(tid)) = (&text, buf.is_empty(), thread) {
        text = match read(
            &options.root,
            pid,
            &format!("task/{tid}/cmdline"),
            None,
            buf,
        ) {
            // The thread ended meanwhile: the process has no command line now.
            Read::Gone => Read::Text,
            other => other,
        };
    }
    match text {
        Read::Text => Some((
            render_cmdline(buf, options.cmdline).into(),
            Some(has_cmdline(buf)),
        )),
        Read::Gone => None,
        Read::Failed(_) => Some((Arc::from(""), None)),
    }
}

/// What refreshing a known process found.
enum Refreshed {
    /// Still there: its CPU since the previous pass.
    Same {
        recent_ticks: u64,
    },
    Gone,
    Reused,
}

impl Cached {
    fn last_seen(&self) -> LastSeen {
        LastSeen {
            info: self.info.clone(),
            stat: self.stat.value.clone(),
            status: self.status.as_ref().map(|s| s.value.clone()),
        }
    }

    /// The process as this pass read it: the previous pass's entry when nothing changed.
    fn sample(&mut self) -> ProcessSample {
        let status = match &self.zombie_leader {
            Some((_, view)) => Some(view),
            None => self.status.as_ref().map(|s| &s.value),
        };
        let sample = ProcessSample::reuse(self.last.as_ref(), &self.info, &self.stat.value, status);
        self.last = Some(sample.clone());
        sample
    }
}

/// When the main thread of `pid` has exited while other threads run (`leader` is its status:
/// a zombie with more than one thread), the process is alive but its own status has no memory
/// lines: the status served is a live thread's, under the process's pid and name. Returns that
/// thread and the status (`previous` when it did not change, so samples keep sharing it).
fn zombie_leader_view(
    root: &ProcRoot,
    pid: Pid,
    leader: &Status,
    previous: Option<&Arc<Status>>,
    buf: &mut Vec<u8>,
) -> Option<(Pid, Arc<Status>)> {
    if !leader.state.starts_with('Z') || leader.threads <= 1 {
        return None;
    }
    let tid = procfs::live_thread(root, pid)?;
    root.read(pid, &format!("task/{tid}/status"), buf).ok()?;
    let mut status = Status::parse(buf).ok()?;
    status.pid = leader.pid;
    status.name.clone_from(&leader.name);
    let status = match previous {
        Some(previous) if **previous == status => previous.clone(),
        _ => Arc::new(status),
    };
    Some((tid, status))
}

/// The last text read from one proc file, as a digest, and what it parsed to.
///
/// Most processes are idle: their stat and status read the same from one sample to the next.
/// The text's digest is compared first, and only a changed text is parsed; an unchanged one
/// keeps sharing its parsed value with every earlier sample in the history. A 128-bit XXH3
/// digest rather than the text itself: status is about 1.4 KB, which kept for every process was
/// a third of the service's memory; two different texts share a digest with a chance of about
/// 2^-128 per comparison.
struct Parsed<T> {
    digest: u128,
    value: Arc<T>,
}

impl<T: PartialEq> Parsed<T> {
    fn new(
        text: &[u8],
        parse: impl Fn(&[u8]) -> Result<T, ParseError>,
    ) -> Result<Self, ParseError> {
        Ok(Parsed {
            digest: xxh3_128(text),
            value: Arc::new(parse(text)?),
        })
    }

    /// Takes a fresh read of the file. Returns the previous value when the text changed (the
    /// new value is the same `Arc` when it parses to an equal one), `None` when it did not.
    fn update(
        &mut self,
        text: &[u8],
        parse: impl Fn(&[u8]) -> Result<T, ParseError>,
    ) -> Result<Option<Arc<T>>, ParseError> {
        let digest = xxh3_128(text);
        if digest == self.digest {
            return Ok(None);
        }
        let value = parse(text)?;
        self.digest = digest;
        let previous = self.value.clone();
        if *self.value != value {
            self.value = Arc::new(value);
        }
        Ok(Some(previous))
    }
}

/// The command line is the process's own memory: it changes on exec (which the eBPF tracker
/// reports as `execs`, and which also replaces the memory layout shown by `arg_start`/`arg_end`)
/// or when the process itself rewrites it, which needs it to run. A process that did not run
/// since the last sample (same CPU time, same context-switch counts) and did not exec cannot
/// have changed it, so an idle process is never re-read.
fn may_have_rewritten_cmdline(
    old_stat: &Stat,
    old_status: &Status,
    stat: &Stat,
    status: &Status,
) -> bool {
    stat.arg_start != old_stat.arg_start
        || stat.arg_end != old_stat.arg_end
        || stat.cpu_ticks() != old_stat.cpu_ticks()
        || status.voluntary_ctxt_switches != old_status.voluntary_ctxt_switches
        || status.nonvoluntary_ctxt_switches != old_status.nonvoluntary_ctxt_switches
}

fn ns_to_ticks(ns: u64, ticks_per_second: u64) -> u64 {
    (u128::from(ns) * u128::from(ticks_per_second) / 1_000_000_000) as u64
}

fn invalid(err: ParseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use std::time::Instant;

    use super::*;
    use crate::tracker::{Exit, Processes, Stop, TrackerKind, TrackerStats};

    /// A tracker that returns what the test says.
    #[derive(Default)]
    struct Given {
        processes: Processes,
        exits: Vec<Exit>,
    }

    impl Tracker for Given {
        fn kind(&self) -> TrackerKind {
            TrackerKind::Procfs
        }
        fn refresh(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        fn processes(&self) -> &Processes {
            &self.processes
        }
        fn exits(&self) -> &[Exit] {
            &self.exits
        }
        fn wait_until(&mut self, _: Instant, _: &Stop) -> bool {
            false
        }
        fn stats(&self) -> TrackerStats {
            TrackerStats::default()
        }
    }

    const C: &str = "/docker/c";

    fn stat_text(pid: u32, utime: u64, starttime: u64) -> String {
        format!(
            "{pid} (app) S 1 {pid} {pid} 0 -1 4194304 100 0 0 0 {utime} 2 0 0 20 0 1 0 {starttime} \
             1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 \
             500 600 0 0 0\n"
        )
    }

    fn status_text(pid: u32, rss: u64, switches: u64) -> String {
        format!(
            "Name:\tapp\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\nVmRSS:\t{rss} kB\n\
             voluntary_ctxt_switches:\t{switches}\nnonvoluntary_ctxt_switches:\t0\n"
        )
    }

    struct FakeRoot {
        dir: tempfile::TempDir,
    }

    impl FakeRoot {
        fn new() -> FakeRoot {
            FakeRoot {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, pid: u32, name: &str, text: &str) {
            let file = self.dir.path().join(pid.to_string()).join(name);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }

        fn process(&self, pid: u32, utime: u64, starttime: u64, cmdline: &str) {
            self.write(pid, "stat", &stat_text(pid, utime, starttime));
            self.write(pid, "status", &status_text(pid, 100, 5));
            self.write(pid, "cmdline", cmdline);
            self.write(pid, "cgroup", &format!("1:cpu:{C}\n0::/\n"));
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn sampler(&self, descriptor_budget: usize) -> Sampler {
            self.sampler_on(descriptor_budget, 1)
        }

        /// A sampler that may hold the files of `descriptor_budget` processes.
        fn sampler_on(&self, descriptor_budget: usize, threads: u32) -> Sampler {
            Sampler::new(SamplerOptions {
                root: ProcRoot::new(self.path()),
                naming: Naming::V1Cpu,
                descriptors: Budget::new(2 * descriptor_budget),
                cmdline: CmdlineMode::Full,
                threads,
            })
        }
    }

    fn tracking(pids: &[u32], verified: bool) -> Given {
        let container: Arc<str> = C.into();
        Given {
            processes: pids
                .iter()
                .map(|&pid| {
                    (
                        pid,
                        Tracked {
                            container: container.clone(),
                            execs: 0,
                            verified,
                        },
                    )
                })
                .collect(),
            exits: Vec::new(),
        }
    }

    fn pids(sample: &Sample) -> Vec<u32> {
        sample.processes().iter().map(|p| p.info.pid).collect()
    }

    /// Everything a sample says of its processes, for comparing two samplers.
    fn contents(sample: &Sample) -> Vec<String> {
        let mut rows: Vec<String> = sample
            .processes()
            .iter()
            .map(|p| format!("{:?} {:?} {:?}", p.info, p.stat, p.status))
            .collect();
        rows.extend(sample.all_departed().iter().map(|d| format!("gone {d:?}")));
        rows
    }

    #[test]
    fn reads_split_over_threads_give_the_same_samples() {
        let root = FakeRoot::new();
        let all: Vec<u32> = (100..400).collect();
        for &pid in &all {
            root.process(pid, u64::from(pid % 7), 50, &format!("app\0{pid}\0"));
        }
        let mut tracker = tracking(&all, false);
        // A budget smaller than the host: some processes are read by path on either side.
        let mut one = root.sampler_on(120, 1);
        let mut four = root.sampler_on(120, 4);
        for round in 0..4u64 {
            let (a, b) = (
                one.sample(&mut tracker).unwrap(),
                four.sample(&mut tracker).unwrap(),
            );
            assert_eq!(one.threads_used(), 1);
            assert_eq!(
                four.threads_used(),
                4,
                "300 processes split four ways as asked"
            );
            assert_eq!(contents(&a), contents(&b), "round {round}");
            assert_eq!(a.processes().len(), all.len() - round as usize * 10);
            // Between rounds: some processes run, some exit, a pid is reused.
            for &pid in all.iter().step_by(3) {
                root.process(pid, round + 10, 50, &format!("app\0{pid}\0"));
            }
            for &pid in &all[round as usize * 10..round as usize * 10 + 10] {
                tracker.processes.remove(&pid);
            }
            root.process(399, 0, 60 + round, "newcomer\0");
        }
    }

    #[test]
    fn automatic_threads_follow_the_process_count() {
        let root = FakeRoot::new();
        let sampler = root.sampler_on(0, 0);
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_AUTOMATIC_THREADS);
        assert_eq!(sampler.threads_for(0), 1);
        assert_eq!(sampler.threads_for(PROCESSES_PER_THREAD), 1);
        assert_eq!(sampler.threads_for(PROCESSES_PER_THREAD + 1), 2.min(cores));
        assert_eq!(sampler.threads_for(100 * PROCESSES_PER_THREAD), cores);
        // Asked for: that many, whatever the count.
        assert_eq!(root.sampler_on(0, 3).threads_for(5), 3);
    }

    #[test]
    fn processes_read_by_path_get_descriptors_once_some_are_free() {
        let root = FakeRoot::new();
        for pid in [1, 2, 3, 4] {
            root.process(pid, 0, 50, "app\0");
        }
        let mut tracker = tracking(&[1, 2, 3, 4], true);
        let mut sampler = root.sampler(2);
        sampler.sample(&mut tracker).unwrap();
        assert_eq!(sampler.open_descriptors(), 2, "the budget is spent");
        let held = |s: &Sampler| s.cache.values().filter(|c| c.files.is_some()).count();
        assert_eq!(held(&sampler), 2);

        // One holder leaves: a process read by path takes its descriptors.
        let holder = *sampler
            .cache
            .iter()
            .find(|(_, c)| c.files.is_some())
            .unwrap()
            .0;
        tracker.processes.remove(&holder);
        sampler.sample(&mut tracker).unwrap();
        assert_eq!(sampler.open_descriptors(), 2);
        assert_eq!(held(&sampler), 2, "three processes, two held");
        // And reads through them give the file's current text.
        let upgraded = *sampler
            .cache
            .iter()
            .find(|(pid, c)| c.files.is_some() && **pid != holder)
            .unwrap()
            .0;
        root.write(upgraded, "stat", &stat_text(upgraded, 77, 50));
        let sample = sampler.sample(&mut tracker).unwrap();
        let read = sample
            .processes()
            .iter()
            .find(|p| p.info.pid == upgraded)
            .unwrap();
        assert_eq!(read.stat.utime, 77);
    }

    #[test]
    fn descriptors_taken_for_a_process_gone_before_its_read_go_back() {
        let root = FakeRoot::new();
        for pid in [2, 3] {
            root.process(pid, 0, 50, "app\0");
        }
        // Pid 1 is listed but gone: whatever it took returns, for the others.
        let mut tracker = tracking(&[1, 2, 3], true);
        let mut sampler = root.sampler(2);
        let sample = sampler.sample(&mut tracker).unwrap();
        assert_eq!(pids(&sample), [2, 3]);
        assert_eq!(sampler.open_descriptors(), 2);
        assert_eq!(sampler.options.descriptors.left(), 0);
        // Both leave: all four descriptors are free again.
        tracker.processes.clear();
        sampler.sample(&mut tracker).unwrap();
        assert_eq!(sampler.open_descriptors(), 0);
        assert_eq!(sampler.options.descriptors.left(), 4);
    }

    #[test]
    fn an_unchanged_process_is_one_shared_entry_across_samples() {
        let root = FakeRoot::new();
        root.process(10, 5, 100, "app\0");
        let mut tracker = tracking(&[10], true);
        let mut sampler = root.sampler(100);
        let first = sampler.sample(&mut tracker).unwrap();
        let second = sampler.sample(&mut tracker).unwrap();
        assert!(std::ptr::eq(
            &*first.processes()[0] as *const _,
            &*second.processes()[0] as *const _
        ));
        root.write(10, "stat", &stat_text(10, 6, 100));
        let third = sampler.sample(&mut tracker).unwrap();
        assert!(!std::ptr::eq(
            &*second.processes()[0] as *const _,
            &*third.processes()[0] as *const _
        ));
        assert_eq!(third.processes()[0].stat.utime, 6);
    }

    #[test]
    fn unchanged_files_share_one_parsed_value_across_samples() {
        let root = FakeRoot::new();
        root.process(10, 5, 100, "app\0--serve\0");
        let mut tracker = tracking(&[10], true);
        let mut sampler = root.sampler(100);
        let first = sampler.sample(&mut tracker).unwrap();
        let second = sampler.sample(&mut tracker).unwrap();
        let (a, b) = (&first.processes()[0], &second.processes()[0]);
        assert!(
            Arc::ptr_eq(&a.stat, &b.stat),
            "same text: the parsed stat is shared"
        );
        assert!(Arc::ptr_eq(
            a.status.as_ref().unwrap(),
            b.status.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&a.info, &b.info));
        assert_eq!(&*a.info.cmdline, "app --serve");

        // A changed file gives a new value, read through the descriptor kept open.
        root.write(10, "stat", &stat_text(10, 9, 100));
        let third = sampler.sample(&mut tracker).unwrap();
        assert_eq!(third.processes()[0].stat.utime, 9);
        assert!(!Arc::ptr_eq(
            &second.processes()[0].stat,
            &third.processes()[0].stat
        ));
        assert_eq!(sampler.open_descriptors(), 1);
    }

    /// The proof behind not re-reading command lines: a process that did not run since the last
    /// sample (same CPU time and context switches) and did not exec keeps its command line; as
    /// soon as it ran, or an exec is reported, the file is read again.
    #[test]
    fn cmdline_is_read_again_only_when_the_process_may_have_changed_it() {
        let root = FakeRoot::new();
        root.process(10, 5, 100, "old\0");
        let mut tracker = tracking(&[10], true);
        let mut sampler = root.sampler(100);
        sampler.sample(&mut tracker).unwrap();

        // A file that changed behind an idle process's back (only a remote write could) is not
        // read: the process did not run.
        root.write(10, "cmdline", "new\0");
        let idle = sampler.sample(&mut tracker).unwrap();
        assert_eq!(&*idle.processes()[0].info.cmdline, "old");

        // It ran (one more voluntary context switch): read again.
        root.write(10, "status", &status_text(10, 100, 6));
        let ran = sampler.sample(&mut tracker).unwrap();
        assert_eq!(&*ran.processes()[0].info.cmdline, "new");

        // An exec reported by the tracker: read again even without other change.
        root.write(10, "cmdline", "execd\0");
        tracker.processes.get_mut(&10).unwrap().execs += 1;
        let execd = sampler.sample(&mut tracker).unwrap();
        assert_eq!(&*execd.processes()[0].info.cmdline, "execd");
    }

    /// An idle process's command line changed behind its back (another thread, or a write to
    /// /proc/PID/mem): it shows within the refresh period, and the re-reads of many idle
    /// processes are spread, one share per sample, not all in one.
    #[test]
    fn idle_cmdlines_are_read_again_within_the_refresh_period_spread_over_samples() {
        let root = FakeRoot::new();
        let n = CMDLINE_REFRESH_SAMPLES;
        let pids: Vec<u32> = (100..100 + n).collect();
        for &pid in &pids {
            root.process(pid, 5, 100, "old\0");
        }
        let mut tracker = tracking(&pids, true);
        let mut sampler = root.sampler(100);
        sampler.sample(&mut tracker).unwrap();
        for &pid in &pids {
            root.write(pid, "cmdline", "new\0");
        }
        let mut updated_per_sample = Vec::new();
        let mut updated = 0;
        for _ in 0..n {
            let sample = sampler.sample(&mut tracker).unwrap();
            let now = sample
                .processes()
                .iter()
                .filter(|p| &*p.info.cmdline == "new")
                .count();
            updated_per_sample.push(now - updated);
            updated = now;
        }
        assert_eq!(
            updated_per_sample,
            vec![1; n as usize],
            "every idle process within {n} samples, one more per sample"
        );
    }

    /// A process exits and a newcomer takes its pid between two samples: the descriptor kept
    /// open answers ESRCH, and the newcomer is read in the same pass, its CPU since its start
    /// counted. Real processes behind a fake root's pid (a symbolic link into /proc), so the
    /// descriptor is a real /proc one.
    #[test]
    fn pid_reused_behind_an_open_descriptor_is_read_afresh_in_the_same_pass() {
        use std::{os::unix::fs::symlink, process::Command};
        let spawn = |script: &str| {
            Command::new("/bin/sh")
                .args(["-c", script])
                .spawn()
                .expect("spawning")
        };
        let root = FakeRoot::new();
        let link = root.path().join("10");
        let mut first = spawn("exec sleep 1000");
        symlink(format!("/proc/{}", first.id()), &link).unwrap();
        let mut tracker = tracking(&[10], true);
        let mut sampler = root.sampler(100);
        let before = sampler.sample(&mut tracker).unwrap();
        let old_start = before.processes()[0].info.starttime;
        assert_eq!(sampler.open_descriptors(), 1);

        // Start times are in clock ticks: the newcomer starts a few ticks later.
        std::thread::sleep(std::time::Duration::from_millis(50));
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = spawn("while :; do :; done");
        std::thread::sleep(std::time::Duration::from_millis(300));
        fs::remove_file(&link).unwrap();
        symlink(format!("/proc/{}", second.id()), &link).unwrap();
        let sample = sampler.sample(&mut tracker);
        second.kill().unwrap();
        second.wait().unwrap();
        let sample = sample.unwrap();

        let [newcomer] = sample.processes() else {
            panic!("the newcomer is missing: {:?}", pids(&sample));
        };
        assert_ne!(newcomer.info.starttime, old_start, "not its predecessor");
        assert!(newcomer.cpu_ticks() > 0, "it ran for 300 ms");
        let departed: Vec<u64> = sample
            .departed(C)
            .iter()
            .map(|d| d.info.starttime)
            .collect();
        assert_eq!(departed, [old_start], "the predecessor departs");
        let (_, _, totals) = sample.containers().next().unwrap();
        assert_eq!(
            totals.cpu_ticks,
            newcomer.cpu_ticks(),
            "all its CPU since its start counts"
        );
        assert_eq!(sampler.open_descriptors(), 1, "the old descriptor closed");
    }

    /// A cgroup name that is not UTF-8: an entry the tracker did not verify is confirmed by
    /// /proc all the same (the path read is named as the tracker names it).
    #[test]
    fn container_path_not_utf8_is_confirmed() {
        let root = FakeRoot::new();
        root.process(10, 1, 100, "app\0");
        fs::write(
            root.path().join("10/cgroup"),
            b"1:cpu:/odd-\xff\xfe\n0::/\n",
        )
        .unwrap();
        let container: Arc<str> = container_name(b"/odd-\xff\xfe").into();
        let mut tracker = Given::default();
        tracker.processes.insert(
            10,
            Tracked {
                container: container.clone(),
                execs: 0,
                verified: false,
            },
        );
        let sample = root.sampler(100).sample(&mut tracker).unwrap();
        assert_eq!(pids(&sample), [10]);
        assert_eq!(sample.processes()[0].info.container, container);
    }

    /// The main thread exited while another runs: /proc/PID shows a zombie with no memory, no
    /// command line and (on v1) the root cgroup; the live thread has them all.
    fn zombie_leader(root: &FakeRoot) {
        let stat = stat_text(10, 40, 100).replace(") S ", ") Z ");
        root.write(10, "stat", &stat);
        root.write(
            10,
            "status",
            "Name:\tapp\nState:\tZ (zombie)\nTgid:\t10\nPid:\t10\nPPid:\t1\nThreads:\t2\n\
             voluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t0\n",
        );
        root.write(10, "cmdline", "");
        root.write(10, "cgroup", "1:cpu:/\n0::/\n");
        root.write(10, "task/10/stat", &stat);
        root.write(
            10,
            "task/11/stat",
            &stat_text(11, 40, 100).replace(") S ", ") R "),
        );
        root.write(
            10,
            "task/11/status",
            "Name:\tworker\nState:\tR (running)\nTgid:\t10\nPid:\t11\nPPid:\t1\n\
             VmRSS:\t2048 kB\nThreads:\t2\n",
        );
        root.write(10, "task/11/cmdline", "app\0--serve\0");
        root.write(10, "task/11/cgroup", &format!("1:cpu:{C}\n0::/\n"));
    }

    #[test]
    fn process_whose_main_thread_exited_is_listed_from_a_live_thread() {
        let root = FakeRoot::new();
        zombie_leader(&root);
        // Not verified by the tracker: the sampler's own check must find the container.
        let mut tracker = tracking(&[10], false);
        let sample = root.sampler(0).sample(&mut tracker).unwrap();
        let [process] = sample.processes() else {
            panic!("not sampled: {:?}", pids(&sample));
        };
        assert!(process.listed());
        assert_eq!(&*process.info.cmdline, "app --serve");
        let status = process.status.as_ref().unwrap();
        assert_eq!((status.pid, status.tgid, status.vm_rss), (10, 10, 2048));
        assert_eq!(status.name, "app", "the process's name, not the thread's");
        assert_eq!(process.cpu_ticks(), 42, "the group's CPU, from its stat");

        // The /proc scan finds it in its container too.
        let mut names = crate::tracker::ContainerNames::default();
        let mut found = Vec::new();
        crate::tracker::procscan::scan(
            &ProcRoot::new(root.path()),
            Naming::V1Cpu,
            &mut names,
            &mut Vec::new(),
            |pid, tracked| found.push((pid, tracked.container.to_string())),
        )
        .unwrap();
        assert_eq!(found, [(10, C.to_owned())]);
    }

    #[test]
    fn reused_pid_without_descriptors_is_a_new_process() {
        let root = FakeRoot::new();
        root.process(10, 50, 100, "first\0");
        let mut tracker = tracking(&[10], true);
        // No descriptor budget: files are opened by path every time.
        let mut sampler = root.sampler(0);
        sampler.sample(&mut tracker).unwrap();
        root.process(10, 3, 900, "second\0");
        let sample = sampler.sample(&mut tracker).unwrap();
        let now = &sample.processes()[0];
        assert_eq!((now.info.starttime, &*now.info.cmdline), (900, "second"));
        let departed = sample.departed(C);
        assert_eq!(departed.len(), 1);
        assert_eq!(
            (departed[0].info.starttime, departed[0].cpu_ticks),
            (100, 52)
        );
    }

    #[test]
    fn vanished_and_malformed_processes_are_skipped_not_fatal() {
        let root = FakeRoot::new();
        for pid in [10, 11, 12] {
            root.process(pid, 1, 100, "app\0");
        }
        root.write(11, "stat", "11 no name here\n");
        let mut tracker = tracking(&[10, 11, 12, 13], true);
        // Read by path: a fake root's files stay readable through open descriptors after removal
        // (real /proc answers ESRCH there, which the end-to-end tests cover).
        let mut sampler = root.sampler(0);
        let sample = sampler.sample(&mut tracker).unwrap();
        assert_eq!(
            pids(&sample),
            [10, 12],
            "11 is malformed, 13 does not exist"
        );

        // 12 vanishes between samples (its files are gone): it departs, 10 stays.
        fs::remove_dir_all(root.path().join("12")).unwrap();
        let sample = sampler.sample(&mut tracker).unwrap();
        assert_eq!(pids(&sample), [10]);
        assert_eq!(
            sample
                .departed(C)
                .iter()
                .map(|d| d.info.pid)
                .collect::<Vec<_>>(),
            [12]
        );
    }

    #[test]
    fn status_unreadable_leaves_the_process_listed_with_zeros() {
        let root = FakeRoot::new();
        root.process(10, 1, 100, "app\0");
        // A directory where the file should be: reading fails with EISDIR, not "gone".
        fs::remove_file(root.path().join("10/status")).unwrap();
        fs::create_dir(root.path().join("10/status")).unwrap();
        let mut tracker = tracking(&[10], true);
        let sample = root.sampler(0).sample(&mut tracker).unwrap();
        let process = &sample.processes()[0];
        assert!(process.status.is_none());
        assert!(process.listed());
        assert_eq!(process.rss_kb(), 0);
    }

    #[test]
    fn unverified_entries_are_checked_against_proc() {
        let root = FakeRoot::new();
        root.process(10, 1, 100, "app\0");
        root.process(11, 1, 100, "host\0");
        root.write(11, "cgroup", "1:cpu:/\n0::/\n");
        let mut tracker = tracking(&[10, 11], false);
        let sample = root.sampler(100).sample(&mut tracker).unwrap();
        assert_eq!(pids(&sample), [10], "11 is not in the container /proc says");
    }

    #[test]
    fn exits_carry_cpu_into_departed() {
        let root = FakeRoot::new();
        root.process(10, 100, 100, "app\0");
        let mut tracker = tracking(&[10], true);
        let mut sampler = root.sampler(100);
        sampler.sample(&mut tracker).unwrap();
        // The tracker saw 10 exit with 1.5 s of CPU (150 ticks at 100 Hz), and 20, never sampled,
        // exit with 0.3 s.
        tracker.processes.clear();
        let container: Arc<str> = C.into();
        tracker.exits = vec![
            Exit {
                pid: 10,
                container: container.clone(),
                cpu_ns: Some(1_500_000_000 * 100 / sampler.ticks_per_second),
                ..Exit::default()
            },
            Exit {
                pid: 20,
                container,
                cpu_ns: Some(300_000_000 * 100 / sampler.ticks_per_second),
                ..Exit::default()
            },
        ];
        let sample = sampler.sample(&mut tracker).unwrap();
        let mut departed: Vec<(u32, u64)> = sample
            .departed(C)
            .iter()
            .map(|d| (d.info.pid, d.cpu_ticks))
            .collect();
        departed.sort_unstable();
        assert_eq!(departed, [(10, 150), (20, 30)]);
    }
}
