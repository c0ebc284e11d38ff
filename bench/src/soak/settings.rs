//! The soak's flags (`companion-bench soak --help`) and their resolved settings: the defaults
//! and the `--quick` values.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;

use super::host::HostOptions;
use crate::kit::{Tracker, flags::RunFlags};

/// Flags of `companion-bench soak`. Defaults in brackets; `--quick` changes the ones marked
/// (quick: …).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The run: containers and their long-lived processes are created, the service started, API load \
begins and lasts until the end; after a full history, a \"cold\" window, a --warmup churn and \
drain, and a baseline window (the \"before\" memory), the host churns for --minutes; then the churn stops, the soak waits until the history \
holds no churn-era sample (history × period, plus a little) and an \"after\" window, and checks: \
no crash (alive throughout, exit 0 on SIGTERM), no answer outside the specified ones, RSS back \
within --rss-tolerance of before, the tracked set equal to a /proc scan. Each check is printed \
with PASS or FAIL; any FAIL makes the exit status non-zero.

Examples:
  cargo xtask soak --minutes 10                      # the default soak, about 18 minutes
  cargo xtask soak --quick                           # CI: about two minutes
  cargo xtask soak --minutes 30 --tracker procfs
  cargo xtask soak --minutes 0.5 --history 20 --sample-period 250ms --churn-rate 500

Needs root: it creates cgroups and the service loads eBPF. Machines are shared: the report \
gives the load average and the machine's CPU use during the churn.")]
pub struct SoakArgs {
    /// Minutes of churn; fractions allowed (0.5) [10] (quick: 0.5).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// The service's tracker.
    #[arg(long, value_enum, default_value_t = Tracker::Ebpf)]
    pub tracker: Tracker,
    /// The service's --sample-period [1s] (quick: 250ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sample_period: Option<Duration>,
    /// The service's --history [60] (quick: 20).
    #[arg(long)]
    pub history: Option<u32>,
    /// Containers (cgroups) alive at any time, each with one long-lived process [200]
    /// (quick: 100).
    #[arg(long)]
    pub cgroups: Option<usize>,
    /// Processes started per second during the churn, forked children included; each exits by
    /// itself [300] (quick: 200).
    #[arg(long)]
    pub churn_rate: Option<f64>,
    /// Longest life of a churned `sleep` (lives are uniform from 50 ms to this; a forking
    /// shell's child lives at most 500 ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,
    /// Fraction of churn jobs that are `true` (exits at once).
    #[arg(long, default_value_t = 0.3)]
    pub true_fraction: f64,
    /// Fraction of churn jobs that are a shell forking two children (`sleep X & true & wait`:
    /// three processes); the rest are `sleep`s.
    #[arg(long, default_value_t = 0.2)]
    pub fork_fraction: f64,
    /// Processes moved between containers per second during the churn: half of them
    /// long-lived movers, half churned `sleep`s [20] (quick: 10).
    #[arg(long)]
    pub moves_per_second: Option<f64>,
    /// Long-lived processes carried between containers by the moves [cgroups / 4].
    #[arg(long)]
    pub movers: Option<usize>,
    /// Containers removed, and as many created, per minute during the churn [60] (quick: 120).
    #[arg(long)]
    pub cgroup_turnover: Option<f64>,
    /// Concurrent API clients, for the whole run [20] (quick: 10).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Total request rate over all clients; 0 sends back to back.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub load_threads: usize,
    /// Length of the baseline window (after the history is full) and of the after window, over
    /// which RSS (median of readings) and CPU are measured [20s] (quick: 8s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub baseline: Option<Duration>,
    /// Churn before the baseline window, then a drain; 0 disables it [the longer of history ×
    /// period and the time the turnover takes to replace every container, plus 30s] (quick:
    /// plus 15s). An allocator keeps part of the memory of a workload's peak, and slabs stay
    /// partly filled by long-lived objects allocated amid churn; it reuses that memory later.
    /// With a warm-up that reaches both (a full history of churn-era samples, every container
    /// replaced once), "before" is that steady state and before/after measures growth, i.e.
    /// leaks. The RSS before the warm-up ("cold") is reported too.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// The RSS after the churn must be at most this many percent above the RSS before.
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance: f64,
    /// How long a new container may stay unknown to the service: a v1.0 "not found" for a
    /// container whose process joined it less than this before the request is expected
    /// [3 × sample period + 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// More flags for the service, one per use: `--service-arg=--reconcile-every=1m`.
    #[arg(long, allow_hyphen_values = true)]
    pub service_arg: Vec<String>,
    #[command(flatten)]
    pub run: RunFlags,
    /// A CI run of about two minutes: 30 s of churn, history 20 at 250 ms (see the marks above).
    #[arg(long)]
    pub quick: bool,
    /// After the soak, an adversarial phase this long (silent connections, slowloris, HTTP/2
    /// window-0 streams, rapid-reset reconnects) while healthy clients ask (see adversary.rs).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub adversary: Option<Duration>,
    /// The adversarial phase fails when the service's RSS grows by more than this many MiB
    /// (the default --max-buffered-bytes of 64 MiB and the hostile connections' own state).
    #[arg(long, default_value_t = 128)]
    pub adversary_memory_bound: u64,
}

/// The flags with their defaults resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub churn: Duration,
    pub tracker: Tracker,
    pub period: Duration,
    pub history: u32,
    pub host: HostOptions,
    pub clients: usize,
    pub rate: Option<f64>,
    pub load_threads: usize,
    pub baseline: Duration,
    pub warmup: Duration,
    pub rss_tolerance: f64,
    pub grace: Duration,
    pub service_args: Vec<String>,
    pub bin: PathBuf,
    pub work_dir: PathBuf,
    pub quick: bool,
    pub command: String,
}

impl Settings {
    pub(super) fn resolve(args: &SoakArgs) -> anyhow::Result<Settings> {
        let q = args.quick;
        let minutes = args.minutes.unwrap_or(if q { 0.5 } else { 10.0 });
        if !(minutes.is_finite() && minutes > 0.0) {
            bail!("--minutes must be above 0");
        }
        let period = args.sample_period.unwrap_or(if q {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        });
        if period < Duration::from_millis(10) {
            bail!("--sample-period must be at least 10ms");
        }
        let history = args.history.unwrap_or(if q { 20 } else { 60 });
        if history < 2 {
            bail!("--history must be at least 2");
        }
        let cgroups = args.cgroups.unwrap_or(if q { 100 } else { 200 });
        if cgroups < 2 {
            bail!("--cgroups must be at least 2");
        }
        let fractions = [args.true_fraction, args.fork_fraction];
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || fractions.iter().sum::<f64>() > 1.0
        {
            bail!("--true-fraction and --fork-fraction are fractions with a sum of at most 1");
        }
        if args.max_lifetime < Duration::from_millis(60) {
            bail!("--max-lifetime must be at least 60ms");
        }
        let pick =
            |v: Option<f64>, normal: f64, quick: f64| v.unwrap_or(if q { quick } else { normal });
        let churn_rate = pick(args.churn_rate, 300.0, 200.0);
        let moves = pick(args.moves_per_second, 20.0, 10.0);
        let turnover = pick(args.cgroup_turnover, 60.0, 120.0);
        if [churn_rate, moves, turnover]
            .iter()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            bail!("--churn-rate, --moves-per-second and --cgroup-turnover must be 0 or more");
        }
        let run = args.run.resolve("soak")?;
        Ok(Settings {
            churn: Duration::from_secs_f64(minutes * 60.0),
            tracker: args.tracker,
            period,
            history,
            host: HostOptions {
                cgroups,
                churn_rate,
                max_lifetime: args.max_lifetime,
                true_fraction: args.true_fraction,
                fork_fraction: args.fork_fraction,
                moves_per_second: moves,
                movers: args.movers.unwrap_or(cgroups / 4),
                turnover_per_minute: turnover,
            },
            clients: args.clients.unwrap_or(if q { 10 } else { 20 }),
            rate: (args.rate > 0.0).then_some(args.rate),
            load_threads: args.load_threads.max(1),
            baseline: args
                .baseline
                .unwrap_or(Duration::from_secs(if q { 8 } else { 20 })),
            // Until the history is full of churn-era samples (the churn's peak footprint) and
            // every container has been replaced once (its long-lived process then lives in
            // memory allocated amid churn): the allocator's state after any longer churn.
            warmup: args.warmup.unwrap_or_else(|| {
                let replaced = if turnover > 0.0 {
                    Duration::from_secs_f64((60.0 * cgroups as f64 / turnover).min(3600.0))
                } else {
                    Duration::ZERO
                };
                (period * history).max(replaced) + Duration::from_secs(if q { 15 } else { 30 })
            }),
            rss_tolerance: args.rss_tolerance,
            grace: args.grace.unwrap_or(period * 3 + Duration::from_secs(1)),
            service_args: args.service_arg.clone(),
            bin: run.bin,
            work_dir: run.work_dir,
            quick: q,
            command: run.command,
        })
    }
}
