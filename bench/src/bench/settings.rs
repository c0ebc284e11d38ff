//! The benchmark's flags (`companion-bench bench --help`) and their resolved settings: the
//! defaults, the `--quick` values, and the plan of host shapes.

use std::{fmt, path::PathBuf, time::Duration};

use anyhow::bail;
use clap::ValueEnum;

use super::{Tracker, host::Shape};
use crate::kit::{flags::RunFlags, workspace_root};

/// Flags of `companion-bench bench`. Defaults in brackets; `--quick` changes the ones marked
/// (quick: …).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Default: the default scenario (1,000 containers × 5 idle processes, 5,000 host processes) with \
both trackers, API load (back to back, then paced) and the exec-to-visible probe; then the \
sweeps, CPU and memory only, over container processes (1k, 5k, 10k, 20k, 35k, 50k in 1k to 10k \
containers) and host processes (0, 5k, 10k), with the service's base memory (no container \
processes), the cadence floor, the peer (prometheus-process-exporter) at each container-sweep \
point, and at the largest point the sampler's speed-up (--sampler-threads 1, 2) and paced API \
load: about 50 minutes. The default scenario alone (`--sweep none`): about 7 minutes.

Examples:
  cargo xtask bench                                    # the full run
  cargo xtask bench --sweep none                       # the default scenario only
  cargo xtask bench --quick                            # a 1-minute smoke run, no report
  cargo xtask bench --sweep containers --sizes 1000,5000 --trackers ebpf
  cargo xtask bench --sweep none --busy-fraction 0.1 --churn 20

Needs root: it creates cgroups, the service loads eBPF, and it may raise kernel.pid_max \
(restored at the end, also on Ctrl-C).")]
pub struct BenchArgs {
    /// Containers in the default scenario [1000] (quick: 50).
    #[arg(long)]
    pub containers: Option<usize>,
    /// Idle processes per container [5] (quick: 4).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Host processes outside any container [5000] (quick: 200).
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Fraction of container processes that are busy (wake every --busy-every, spin for
    /// --busy-work) instead of idle `sleep`s.
    #[arg(long, default_value_t = 0.0)]
    pub busy_fraction: f64,
    /// CPU a busy process burns per wake-up.
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    pub busy_work: Duration,
    /// Time between a busy process's wake-ups.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub busy_every: Duration,
    /// Processes started (and ended) per second inside random containers, during every
    /// measurement. Each lives --churn-lifetime.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// How long each churned process lives (a `sleep`).
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub churn_lifetime: Duration,

    /// Tracker modes to run, one after the other against the same host.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ebpf,procfs")]
    pub trackers: Vec<Tracker>,
    /// The service's --sample-period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_period: Duration,
    /// The service's --history.
    #[arg(long, default_value_t = 60)]
    pub history: u32,
    /// Before measuring: `full` waits until the history is full (samples_in_history ==
    /// history), a duration waits that long instead [full] (quick: 5s).
    #[arg(long)]
    pub warmup: Option<Warmup>,
    /// Measurement window, rounded to whole samples [30s] (quick: 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub measure: Option<Duration>,
    /// /healthz polling interval during measurements.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub health_poll: Duration,

    /// Concurrent API clients in the load test [100] (quick: 20).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Duration of each load phase (back to back, then paced); 0s skips the load test [20s]
    /// (quick: 3s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub load_duration: Option<Duration>,
    /// Fraction of monitoring-check queries (`sort=cpu&limit=5&interval=30`); the rest are
    /// history queries (`count=10`).
    #[arg(long, default_value_t = 0.9)]
    pub load_mix: f64,
    /// A second load phase at this total rate (requests per second over all clients, latency
    /// counted from the scheduled send); 0 skips it. The first phase sends back to back.
    #[arg(long, default_value_t = 5000.0)]
    pub load_rate: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub load_threads: usize,
    /// Exec-to-visible trials per tracker; 0 skips the probe [20] (quick: 5).
    #[arg(long)]
    pub probe_trials: Option<usize>,
    /// The probe's polling interval.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub probe_poll: Duration,
    /// Rounds of each floor measurement; the floor is measured before and after the service
    /// runs of each host shape and the median of all rounds taken [10] (quick: 3).
    #[arg(long)]
    pub floor_rounds: Option<usize>,
    /// Rounds of the cadence floor (pread on held descriptors, one round per --floor-gap), split
    /// between the measurements before and after the service runs [10] (quick: 2).
    #[arg(long)]
    pub cadence_rounds: Option<usize>,
    /// Time between the starts of the cadence floor's rounds [the sample period]: the service
    /// reads each process once per period, when the kernel's data of it is no longer
    /// cache-warm.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub floor_gap: Option<Duration>,

    /// Sweeps after the default scenario (CPU and memory only): `containers`, `hosts`, both
    /// (`all`) or `none` [all] (quick: none).
    #[arg(long, value_enum)]
    pub sweep: Option<Sweep>,
    /// Sizes of the selected sweep: container processes for `containers` and `all`, host
    /// processes for `hosts` (shorthand for the two flags below).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Container-process counts of the container sweep: size / --processes containers, but
    /// never fewer than the default scenario's (fewer processes each instead), so the default
    /// 1,000 to 50,000 processes run in 1,000 to 10,000 containers
    /// [1000,5000,10000,20000,35000,50000].
    #[arg(long, value_delimiter = ',')]
    pub container_sizes: Option<Vec<usize>>,
    /// Host-process counts of the host sweep [0,5000,10000].
    #[arg(long, value_delimiter = ',')]
    pub host_sizes: Option<Vec<usize>>,

    /// Set kernel.pid_max to this during the run (default: raised only when the plan needs
    /// it; restored at the end).
    #[arg(long)]
    pub pid_max: Option<u64>,
    /// At the largest host shape, run the eBPF service once per value with
    /// `--sampler-threads N` to show the sampler's speed-up; the flag without values skips it
    /// [1,2].
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub speedup_threads: Option<Vec<usize>>,
    /// The peer measured at each point of the container sweep (and the default scenario):
    /// Debian's prometheus-process-exporter, one group per process, scraped once a period;
    /// `none` skips it [prometheus-process-exporter].
    #[arg(long)]
    pub peer: Option<String>,
    /// Run the paced API load phase with the eBPF tracker at the largest host shape too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub load_at_largest: bool,
    /// Turn on the kernel's BPF run-time statistics (BPF_ENABLE_STATS, off again when the
    /// benchmark exits) to report the time of the service's kernel-side programs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub bpf_stats: bool,
    #[command(flatten)]
    pub run: RunFlags,
    /// Append the results to this Markdown file [<workspace>/BENCHMARKS.md] (quick: none).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Do not append to the report.
    #[arg(long)]
    pub no_report: bool,
    /// Write the cost plot here, when the container sweep ran
    /// [<workspace>/docs/bench-cost.svg].
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// A smoke run: small host, short phases, no sweep, no report (see the marks above).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sweep {
    Containers,
    Hosts,
    All,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmup {
    Full,
    For(Duration),
}

impl std::str::FromStr for Warmup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Warmup::Full);
        }
        humantime::parse_duration(s)
            .map(Warmup::For)
            .map_err(|e| format!("`full` or a duration: {e}"))
    }
}

impl fmt::Display for Warmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmup::Full => f.write_str("full history"),
            Warmup::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// The flags with their defaults resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub shape: Shape,
    pub busy_fraction: f64,
    pub churn: f64,
    pub churn_lifetime: Duration,
    pub trackers: Vec<Tracker>,
    pub period: Duration,
    pub history: u32,
    pub warmup: Warmup,
    pub measure: Duration,
    pub health_poll: Duration,
    pub clients: usize,
    pub load_duration: Duration,
    pub load_mix: f64,
    pub load_rate: f64,
    pub probe_trials: usize,
    pub probe_poll: Duration,
    pub floor_rounds: usize,
    pub cadence_rounds: usize,
    pub floor_gap: Duration,
    pub speedup_threads: Vec<usize>,
    /// The peer's binary, when it is to be measured.
    pub peer: Option<PathBuf>,
    pub load_at_largest: bool,
    pub sweep: Sweep,
    pub container_sizes: Vec<usize>,
    pub host_sizes: Vec<usize>,
    pub bin: PathBuf,
    pub report: Option<PathBuf>,
    pub svg: PathBuf,
    pub work_dir: PathBuf,
    pub quick: bool,
    /// The command line, for the report.
    pub command: String,
}

impl Settings {
    pub(super) fn resolve(args: &BenchArgs) -> anyhow::Result<Settings> {
        let q = args.quick;
        let pick = |value: Option<usize>, normal: usize, quick: usize| {
            value.unwrap_or(if q { quick } else { normal })
        };
        let workspace = workspace_root();
        let shape = Shape {
            containers: pick(args.containers, 1000, 50),
            per_container: pick(args.processes, 5, 4),
            hosts: pick(args.hosts, 5000, 200),
        };
        if shape.containers == 0 || shape.per_container == 0 {
            bail!("--containers and --processes must be at least 1");
        }
        if !(0.0..=1.0).contains(&args.busy_fraction) || !(0.0..=1.0).contains(&args.load_mix) {
            bail!("--busy-fraction and --load-mix are fractions (0 to 1)");
        }
        if args.history < 2 {
            bail!("--history must be at least 2");
        }
        let sweep = args
            .sweep
            .unwrap_or(if q { Sweep::None } else { Sweep::All });
        let mut trackers = args.trackers.clone();
        trackers.dedup();
        let report = if args.no_report {
            None
        } else {
            match (&args.report, q) {
                (Some(path), _) => Some(path.clone()),
                (None, true) => None,
                (None, false) => Some(workspace.join("BENCHMARKS.md")),
            }
        };
        let run = args.run.resolve("bench")?;
        Ok(Settings {
            shape,
            busy_fraction: args.busy_fraction,
            churn: args.churn,
            churn_lifetime: args.churn_lifetime,
            trackers,
            period: args.sample_period,
            history: args.history,
            warmup: args.warmup.unwrap_or(if q {
                Warmup::For(Duration::from_secs(5))
            } else {
                Warmup::Full
            }),
            measure: args
                .measure
                .unwrap_or(Duration::from_secs(if q { 5 } else { 30 })),
            health_poll: args.health_poll,
            clients: pick(args.clients, 100, 20),
            load_duration: args.load_duration.unwrap_or(Duration::from_secs(if q {
                3
            } else {
                20
            })),
            load_mix: args.load_mix,
            load_rate: args.load_rate,
            probe_trials: pick(args.probe_trials, 20, 5),
            probe_poll: args.probe_poll,
            floor_rounds: pick(args.floor_rounds, 10, 3),
            cadence_rounds: pick(args.cadence_rounds, 10, 2),
            floor_gap: args.floor_gap.unwrap_or(args.sample_period),
            speedup_threads: args.speedup_threads.clone().unwrap_or_else(|| vec![1, 2]),
            peer: match args.peer.as_deref() {
                Some("none") => None,
                Some(bin) => Some(PathBuf::from(bin)),
                None => Some(PathBuf::from("prometheus-process-exporter")),
            },
            load_at_largest: args.load_at_largest,
            sweep,
            container_sizes: args
                .container_sizes
                .clone()
                .or_else(|| args.sizes.clone().filter(|_| sweep != Sweep::Hosts))
                .unwrap_or_else(|| vec![1000, 5000, 10000, 20000, 35000, 50000]),
            host_sizes: args
                .host_sizes
                .clone()
                .or_else(|| args.sizes.clone().filter(|_| sweep == Sweep::Hosts))
                .unwrap_or_else(|| vec![0, 5000, 10000]),
            bin: run.bin,
            report,
            svg: args
                .svg
                .clone()
                .unwrap_or_else(|| workspace.join("docs/bench-cost.svg")),
            work_dir: run.work_dir,
            quick: q,
            command: run.command,
        })
    }

    /// The host shapes to run: the service's base (no container processes: its memory above
    /// it is what the processes cost) when a sweep runs, the default scenario (full suite),
    /// then the sweep points.
    pub fn plan(&self) -> Vec<(Shape, bool)> {
        let mut plan = Vec::new();
        if self.sweep != Sweep::None {
            plan.push((
                Shape {
                    containers: 0,
                    ..self.shape
                },
                false,
            ));
        }
        plan.push((self.shape, true));
        let mut add = |shape: Shape| {
            if !plan.iter().any(|(s, _)| *s == shape) {
                plan.push((shape, false));
            }
        };
        if matches!(self.sweep, Sweep::Hosts | Sweep::All) {
            for &hosts in &self.host_sizes {
                add(Shape {
                    hosts,
                    ..self.shape
                });
            }
        }
        if matches!(self.sweep, Sweep::Containers | Sweep::All) {
            let mut sizes = self.container_sizes.clone();
            sizes.sort_unstable();
            for size in sizes {
                add(self.container_shape(size));
            }
        }
        plan
    }

    /// The warm-up of the `--sampler-threads` runs: the sample's duration and CPU need no full
    /// history, ten samples at most.
    pub fn threads_warmup(&self) -> Warmup {
        match self.warmup {
            Warmup::Full => Warmup::For(self.period * 10),
            short => short,
        }
    }

    /// The host shape of a container-sweep size: size / --processes containers, at least as
    /// many as the default scenario's (up to one per process).
    pub fn container_shape(&self, size: usize) -> Shape {
        let size = size.max(1);
        let containers = (size / self.shape.per_container)
            .max(self.shape.containers.min(size))
            .max(1);
        Shape {
            containers,
            per_container: size.div_ceil(containers),
            ..self.shape
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn settings(args: &[&str]) -> Settings {
        let cli = Cli::parse_from(std::iter::once("bench").chain(args.iter().copied()));
        Settings::resolve(&cli.bench).expect("valid flags")
    }

    #[test]
    fn container_sweep_holds_1000_to_10000_containers() {
        let s = settings(&[]);
        let shapes: Vec<(usize, usize)> = [1000, 5000, 50000]
            .iter()
            .map(|&n| {
                let shape = s.container_shape(n);
                (shape.containers, shape.per_container)
            })
            .collect();
        assert_eq!(shapes, [(1000, 1), (1000, 5), (10000, 5)]);
        let plan = s.plan();
        assert_eq!(plan[0].0.containers, 0, "the base comes first");
        assert_eq!(plan[1], (s.shape, true));
        let last = plan.last().expect("points").0;
        assert_eq!(last.container_processes(), 50000);
    }

    #[test]
    fn cadence_floor_defaults_to_the_period() {
        let s = settings(&["--sample-period", "2s"]);
        assert_eq!(s.floor_gap, Duration::from_secs(2));
        assert_eq!(s.speedup_threads, [1, 2]);
        let s = settings(&["--quick", "--peer", "none", "--speedup-threads"]);
        assert_eq!(s.plan().len(), 1);
        assert!(s.peer.is_none());
        assert!(s.speedup_threads.is_empty());
    }
}
