//! The last H samples (see `model` for what one holds) and the CPU arithmetic over them.

use std::{collections::VecDeque, sync::Arc};

use crate::model::{ProcessInfo, ProcessSample, Sample};

/// Why a history query has no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// `count × interval` reaches past the history (the v1.0 wording is kept).
    #[error("Wrong offset and interval combination")]
    WrongOffset,
    #[error("Container {0} not found")]
    NotFound(String),
}

/// One snapshot of a container: a sample and its listed processes with their CPU share.
pub struct Snapshot<'a> {
    pub sample: &'a Sample,
    /// Listed processes by ascending pid, with their share of the container's CPU in percent.
    pub processes: Vec<(&'a ProcessSample, f64)>,
}

/// The samples, oldest first; an immutable value that the sampler replaces whole.
#[derive(Clone, Debug)]
pub struct History {
    samples: VecDeque<Arc<Sample>>,
    capacity: usize,
    next_seq: u64,
}

impl History {
    pub fn new(capacity: usize) -> History {
        assert!(capacity >= 1, "history holds at least one sample");
        History {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            next_seq: 1,
        }
    }

    /// A new history with `sample` appended and the oldest dropped when full.
    pub fn with(&self, mut sample: Sample) -> History {
        let mut next = self.clone();
        if next.samples.len() == next.capacity {
            next.samples.pop_front();
        }
        sample.seq = next.next_seq;
        next.next_seq += 1;
        next.samples.push_back(Arc::new(sample));
        next
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn newest(&self) -> Option<&Arc<Sample>> {
        self.samples.back()
    }

    pub fn samples(&self) -> impl DoubleEndedIterator<Item = &Arc<Sample>> {
        self.samples.iter()
    }

    /// `count` snapshots of `container`, `interval` samples apart, oldest first, the last being
    /// the newest sample; each with CPU shares over the `interval` samples before it.
    pub fn snapshots(
        &self,
        container: &str,
        count: usize,
        interval: usize,
    ) -> Result<Vec<Snapshot<'_>>, QueryError> {
        let reach = count.checked_mul(interval).ok_or(QueryError::WrongOffset)?;
        if reach > self.capacity - 1 {
            return Err(QueryError::WrongOffset);
        }
        let newest = self.samples.len().checked_sub(1);
        let Some(newest) = newest.filter(|&n| {
            self.samples[n]
                .container(container)
                .iter()
                .any(ProcessSample::listed)
        }) else {
            return Err(QueryError::NotFound(container.to_owned()));
        };
        Ok((0..count)
            .rev()
            .filter_map(|back| newest.checked_sub(back * interval))
            .map(|at| self.snapshot(container, at, at.saturating_sub(interval)))
            .collect())
    }

    /// The listed processes of `container` at sample `at`, with shares over `(base, at]`.
    fn snapshot(&self, container: &str, at: usize, base: usize) -> Snapshot<'_> {
        let sample = &*self.samples[at];
        let (deltas, total) = self.window(container, at, base);
        let processes = sample
            .container(container)
            .iter()
            .zip(deltas)
            .filter(|(p, _)| p.listed())
            .map(|(p, delta)| (p, share(delta, total)))
            .collect();
        Snapshot { sample, processes }
    }

    /// CPU ticks over the window `(base, at]`: each process of `container` present at `at`, in
    /// its order there, and the container's total, departed processes included.
    fn window(&self, container: &str, at: usize, base: usize) -> (Vec<u64>, u64) {
        let deltas: Vec<u64> = self.samples[at]
            .container(container)
            .iter()
            .map(|p| {
                p.cpu_ticks()
                    .saturating_sub(self.baseline(&p.info, base, at))
            })
            .collect();
        let departed: u64 = (base + 1..=at)
            .flat_map(|i| {
                self.samples[i]
                    .departed(container)
                    .iter()
                    .map(move |d| (i, d))
            })
            .map(|(i, d)| {
                d.cpu_ticks
                    .saturating_sub(self.baseline(&d.info, base, i - 1))
            })
            .sum();
        let total = deltas.iter().sum::<u64>() + departed;
        (deltas, total)
    }

    /// CPU use of every container from the sample numbered `since` (or the one before the
    /// newest, when `since` is not given or no longer held) to the newest; with the seconds
    /// between the two. `None` while there is no such window.
    pub fn usage(&self, since: Option<u64>) -> Option<Usage<'_>> {
        let at = self.samples.len().checked_sub(1)?;
        let base = since
            .and_then(|seq| self.samples.iter().position(|s| s.seq == seq))
            .unwrap_or(at.checked_sub(1)?);
        if base >= at {
            return None;
        }
        let newest = &*self.samples[at];
        let seconds = newest
            .timestamp
            .duration_since(self.samples[base].timestamp)
            .ok()?
            .as_secs_f64();
        let mut paths: Vec<&Arc<str>> = newest.containers().map(|(path, _, _)| path).collect();
        for i in base + 1..=at {
            paths.extend(
                self.samples[i]
                    .all_departed()
                    .iter()
                    .map(|d| &d.info.container),
            );
        }
        paths.sort_unstable();
        paths.dedup();
        let containers = paths
            .into_iter()
            .map(|path| {
                let (deltas, total_ticks) = self.window(path, at, base);
                ContainerUsage {
                    path: path.clone(),
                    total_ticks,
                    processes: newest.container(path).iter().zip(deltas).collect(),
                }
            })
            .collect();
        Some(Usage {
            newest,
            seconds,
            containers,
        })
    }

    /// The CPU ticks a process had when the window `(base, …]` opened: its value in the base
    /// sample; 0 if it was born after that sample began; otherwise (it joined the container
    /// later, or a sample missed it) its first value seen after the base, up to sample `last`.
    fn baseline(&self, info: &ProcessInfo, base: usize, last: usize) -> u64 {
        let base_sample = &self.samples[base];
        if let Some(cpu) = base_sample.cpu_of(info) {
            return cpu;
        }
        if info.starttime >= base_sample.boot_ticks {
            return 0;
        }
        (base + 1..=last)
            .find_map(|i| self.samples[i].cpu_of(info))
            .unwrap_or(u64::MAX)
    }
}

/// CPU use over a window, per container (see [`History::usage`]).
pub struct Usage<'a> {
    pub newest: &'a Sample,
    pub seconds: f64,
    /// Sorted by path; containers whose processes all left in the window are included.
    pub containers: Vec<ContainerUsage<'a>>,
}

pub struct ContainerUsage<'a> {
    pub path: Arc<str>,
    /// Clock ticks the container used in the window, departed processes included.
    pub total_ticks: u64,
    /// The processes of the newest sample, with the ticks each used in the window.
    pub processes: Vec<(&'a ProcessSample, u64)>,
}

/// `delta` as a percentage of `total`; 0 when nothing ran, never NaN or infinite.
fn share(delta: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * delta as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{Departed, Sampled, Totals},
        procfs::{Pid, Stat, Status},
    };
    use std::time::{Duration, UNIX_EPOCH};

    /// Builds samples by hand: `(pid, starttime, container, cpu ticks, listed)`.
    struct Builder {
        history: History,
        tick: u64,
        previous: Vec<ProcessSample>,
    }

    type Row<'a> = (Pid, u64, &'a str, u64);

    impl Builder {
        fn new(capacity: usize) -> Self {
            Builder {
                history: History::new(capacity),
                tick: 1000,
                previous: Vec::new(),
            }
        }

        fn process(&self, (pid, starttime, container, cpu): Row<'_>) -> ProcessSample {
            ProcessSample::new(
                Arc::new(ProcessInfo {
                    pid,
                    starttime,
                    container: container.into(),
                    cmdline: format!("proc{pid}").into(),
                    has_cmdline: Some(true),
                }),
                Arc::new(Stat {
                    pid: pid.into(),
                    utime: cpu,
                    starttime,
                    ..Stat::default()
                }),
                Some(Arc::new(Status {
                    vm_rss: 100 + u64::from(pid),
                    ..Status::default()
                })),
            )
        }

        /// Appends a sample 100 ticks after the previous one; processes missing from `rows`
        /// that were in the previous sample depart with `exit_cpu` if given.
        fn sample(&mut self, rows: &[Row<'_>], exit_cpu: &[(Pid, u64)]) {
            let processes: Vec<ProcessSample> = rows.iter().map(|r| self.process(*r)).collect();
            let previous_cpu = |info: &ProcessInfo| {
                self.previous
                    .iter()
                    .find(|old| old.info.same_process(info))
                    .map(ProcessSample::cpu_ticks)
            };
            let sampled = processes
                .iter()
                .map(|p| Sampled {
                    process: p.clone(),
                    recent_ticks: p.cpu_ticks() - previous_cpu(&p.info).unwrap_or(0),
                })
                .collect();
            let departed = self
                .previous
                .iter()
                .filter(|old| !processes.iter().any(|p| p.info.same_process(&old.info)))
                .map(|old| {
                    let at_exit = exit_cpu
                        .iter()
                        .find(|(pid, _)| *pid == old.info.pid)
                        .map_or(old.cpu_ticks(), |(_, cpu)| *cpu);
                    Departed {
                        info: old.info.clone(),
                        cpu_ticks: at_exit,
                        recent_ticks: at_exit - old.cpu_ticks(),
                    }
                })
                .collect();
            let sample = Sample::new(
                UNIX_EPOCH + Duration::from_secs(self.tick),
                self.tick,
                sampled,
                departed,
            );
            self.history = self.history.with(sample);
            self.previous = processes;
            self.tick += 100;
        }

        fn shares(&self, container: &str, count: usize, interval: usize) -> Vec<Vec<(Pid, f64)>> {
            self.history
                .snapshots(container, count, interval)
                .unwrap()
                .iter()
                .map(|s| {
                    s.processes
                        .iter()
                        .map(|(p, share)| (p.info.pid, *share))
                        .collect()
                })
                .collect()
        }
    }

    const C: &str = "/docker/c";

    #[test]
    fn idle_container_gives_zero_to_everyone() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 50), (2, 10, C, 70)], &[]);
        b.sample(&[(1, 10, C, 50), (2, 10, C, 70)], &[]);
        assert_eq!(b.shares(C, 1, 1), [[(1, 0.0), (2, 0.0)]]);
    }

    #[test]
    fn shares_of_the_container_total() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 0), (2, 10, C, 0), (3, 10, "/other", 0)], &[]);
        b.sample(
            &[(1, 10, C, 75), (2, 10, C, 25), (3, 10, "/other", 500)],
            &[],
        );
        assert_eq!(b.shares(C, 1, 1), [[(1, 75.0), (2, 25.0)]]);
        assert_eq!(b.shares("/other", 1, 1), [[(3, 100.0)]]);
    }

    #[test]
    fn new_process_counts_its_cpu_since_start_and_is_listed() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 100)], &[]);
        // pid 2 was born after the first sample began (tick 1000) and used 30 ticks.
        b.sample(&[(1, 10, C, 110), (2, 1050, C, 30)], &[]);
        assert_eq!(b.shares(C, 1, 1), [[(1, 25.0), (2, 75.0)]]);
    }

    #[test]
    fn reused_pid_is_a_new_process() {
        let mut b = Builder::new(60);
        b.sample(&[(7, 10, C, 500), (8, 10, C, 0)], &[]);
        // pid 7 exited and a new pid 7 was born; the new one ran 10 ticks, the old one none more.
        b.sample(&[(7, 1050, C, 10), (8, 10, C, 10)], &[]);
        assert_eq!(b.shares(C, 1, 1), [[(7, 50.0), (8, 50.0)]]);
    }

    #[test]
    fn departed_process_counts_in_the_total_but_is_not_listed() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 0), (2, 10, C, 0)], &[]);
        b.sample(&[(1, 10, C, 10), (2, 10, C, 40)], &[]);
        // pid 2 exits having used 90 ticks in all (50 after the last sample).
        b.sample(&[(1, 10, C, 20)], &[(2, 90)]);
        // Over the last interval: pid 1 ran 10, pid 2 ran 50 before exiting.
        assert_eq!(b.shares(C, 1, 1), [[(1, 100.0 * 10.0 / 60.0)]]);
        // Over two intervals: pid 1 ran 20, pid 2 ran 90.
        assert_eq!(b.shares(C, 1, 2), [[(1, 100.0 * 20.0 / 110.0)]]);
    }

    #[test]
    fn window_longer_than_the_history_starts_at_the_oldest_sample() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 0), (2, 10, C, 0)], &[]);
        b.sample(&[(1, 10, C, 30), (2, 10, C, 10)], &[]);
        // interval 30 reaches before the first sample: the window is clipped to it.
        assert_eq!(b.shares(C, 1, 30), [[(1, 75.0), (2, 25.0)]]);
    }

    #[test]
    fn snapshots_are_spaced_and_oldest_first() {
        let mut b = Builder::new(60);
        for i in 0..5 {
            b.sample(&[(1, 10, C, i * 10), (2, 10, C, i * 30)], &[]);
        }
        let snapshots = b.history.snapshots(C, 3, 2).unwrap();
        let times: Vec<u64> = snapshots.iter().map(|s| s.sample.boot_ticks).collect();
        assert_eq!(times, [1000, 1200, 1400]);
        // The first snapshot lies at the oldest sample: its window is empty.
        assert_eq!(b.shares(C, 3, 2)[0], [(1, 0.0), (2, 0.0)]);
        assert_eq!(b.shares(C, 3, 2)[2], [(1, 25.0), (2, 75.0)]);
        // Snapshots before the first sample are left out.
        assert_eq!(b.history.snapshots(C, 10, 2).unwrap().len(), 3);
    }

    #[test]
    fn offset_and_container_errors() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 0)], &[]);
        assert_eq!(
            b.history.snapshots(C, 60, 1).err(),
            Some(QueryError::WrongOffset)
        );
        assert_eq!(
            b.history.snapshots(C, 1, 60).err(),
            Some(QueryError::WrongOffset)
        );
        assert_eq!(
            b.history.snapshots(C, usize::MAX, 2).err(),
            Some(QueryError::WrongOffset)
        );
        assert!(b.history.snapshots(C, 59, 1).is_ok());
        assert_eq!(
            b.history.snapshots("/docker/none", 1, 1).err(),
            Some(QueryError::NotFound("/docker/none".into()))
        );
        // Exact match only: a parent path is another container.
        assert!(b.history.snapshots("/docker", 1, 1).is_err());
    }

    #[test]
    fn usage_totals_include_departed() {
        let mut b = Builder::new(60);
        assert!(b.history.usage(None).is_none());
        b.sample(
            &[
                (1, 10, C, 0),
                (2, 10, C, 0),
                (3, 10, "/other", 5),
                (4, 10, "/gone", 0),
            ],
            &[],
        );
        b.sample(&[(1, 10, C, 20), (3, 10, "/other", 5)], &[(2, 30), (4, 7)]);
        let usage = b.history.usage(None).unwrap();
        assert_eq!(usage.seconds, 100.0);
        let totals: Vec<(&str, u64)> = usage
            .containers
            .iter()
            .map(|c| (&*c.path, c.total_ticks))
            .collect();
        assert_eq!(totals, [(C, 50), ("/gone", 7), ("/other", 0)]);
        assert_eq!(usage.containers[0].processes.len(), 1);
        assert_eq!(usage.containers[0].processes[0].1, 20);
        // A window from an older sample covers both intervals.
        b.sample(&[(1, 10, C, 25), (3, 10, "/other", 5)], &[]);
        let first = b.history.samples().next().unwrap().seq;
        let usage = b.history.usage(Some(first)).unwrap();
        assert_eq!(usage.seconds, 200.0);
        assert_eq!(
            usage
                .containers
                .iter()
                .find(|c| &*c.path == C)
                .unwrap()
                .total_ticks,
            55
        );
    }

    #[test]
    fn totals_per_container() {
        let mut b = Builder::new(60);
        b.sample(
            &[
                (1, 10, C, 0),
                (2, 10, C, 0),
                (3, 10, "/other", 5),
                (4, 10, "/gone", 0),
            ],
            &[],
        );
        b.sample(&[(1, 10, C, 20), (3, 10, "/other", 5)], &[(2, 30), (4, 7)]);
        let newest = b.history.newest().unwrap();
        let totals: Vec<(&str, usize, Totals)> = newest
            .containers()
            .map(|(path, p, t)| (&**path, p.len(), t))
            .collect();
        assert_eq!(
            totals,
            [
                (
                    C,
                    1,
                    Totals {
                        listed: 1,
                        rss_kb: 101,
                        cpu_ticks: 50
                    }
                ),
                (
                    "/gone",
                    0,
                    Totals {
                        listed: 0,
                        rss_kb: 0,
                        cpu_ticks: 7
                    }
                ),
                (
                    "/other",
                    1,
                    Totals {
                        listed: 1,
                        rss_kb: 103,
                        cpu_ticks: 0
                    }
                ),
            ]
        );
        assert!(newest.container("/gone").is_empty());
    }

    #[test]
    fn history_keeps_only_its_capacity() {
        let mut b = Builder::new(3);
        for i in 0..10 {
            b.sample(&[(1, 10, C, i)], &[]);
        }
        assert_eq!(b.history.len(), 3);
        assert_eq!(b.history.newest().unwrap().boot_ticks, 1900);
    }

    #[test]
    fn unlisted_processes_count_but_are_not_listed() {
        let mut b = Builder::new(60);
        b.sample(&[(1, 10, C, 0), (2, 10, C, 0)], &[]);
        b.sample(&[(1, 10, C, 10), (2, 10, C, 30)], &[]);
        // Make pid 2 a zombie-like entry: no memory.
        let mut history = b.history.clone();
        let last = history.samples.pop_back().unwrap();
        let mut processes = last.processes().to_vec();
        let mut status = (**processes[1].status.as_ref().unwrap()).clone();
        status.vm_rss = 0;
        processes[1] = ProcessSample::new(
            processes[1].info.clone(),
            processes[1].stat.clone(),
            Some(Arc::new(status)),
        );
        let sampled = processes
            .into_iter()
            .map(|process| Sampled {
                process,
                recent_ticks: 0,
            })
            .collect();
        history = history.with(Sample::new(
            last.timestamp,
            last.boot_ticks,
            sampled,
            vec![],
        ));
        let snapshot = &history.snapshots(C, 1, 1).unwrap()[0];
        assert_eq!(snapshot.processes.len(), 1);
        assert_eq!(snapshot.processes[0].1, 25.0);
    }
}
