//! Command-line flags, each defined and documented once. Every flag can also be set by the
//! environment variable named after it (`--sample-period` is `COMPANION_SAMPLE_PERIOD`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{cgroup::Naming, procfs::CmdlineMode};

#[derive(Debug, Parser)]
#[command(
    name = "companion",
    version,
    about = "Which processes run inside each container of this host, with their share of the \
             container's CPU: the cAdvisor-companion v1.0 API, served from an eBPF-tracked set.",
    after_help = "Example: companion --listen-ip 0.0.0.0 --port 8801\n\
                  then: curl 'http://HOST:8801/api/v1.0/docker/<id>/processes?sort=cpu&limit=5'\n\
                  or:   companion ps <container name or id prefix> --sort cpu",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Without a command, companion runs the service.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Log format: human-readable text or one JSON object per line. Filter with RUST_LOG
    /// (default `info`).
    #[arg(long, env = "COMPANION_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a `ps aux`-like table of a container's processes, from a running service.
    Ps(PsArgs),
    /// Like `ps`, refreshed until interrupted.
    Top(TopArgs),
    /// Print the processes that ended in a container (or in all), newest first: exit code or
    /// signal, OOM kills, lifetime, CPU and peak memory.
    Exits(ExitsArgs),
    /// Ask a running service whether it is healthy (for container health checks): prints its
    /// /healthz answer, exits 0 when healthy.
    Health(ServiceArgs),
}

/// How a client command reaches the service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service's address.
    #[arg(long, env = "COMPANION_URL", default_value = "http://127.0.0.1:8801")]
    pub url: String,

    /// File holding the bearer token, when the service requires one.
    #[arg(long, env = "COMPANION_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate(s) to trust for an https URL signed by a private CA.
    #[arg(long, env = "COMPANION_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// What `companion ps` asks a running service.
#[derive(Debug, Clone, clap::Args)]
pub struct PsArgs {
    /// The container: its name (Docker's or Podman's; `namespace/pod/container` or
    /// `pod/container` in Kubernetes), a unique prefix of its id (as `docker ps` shows it), or
    /// its cgroup path (starting with `/`).
    pub container: String,

    /// Order by CPU share or resident memory (descending); by PID when absent.
    #[arg(long, value_enum)]
    pub sort: Option<SortKey>,

    /// Show only the first N processes (with --sort).
    #[arg(long)]
    pub limit: Option<u32>,

    /// Window of the %CPU, throttling and pressure figures (e.g. 1s, 10s, 1m); rounded to whole
    /// sample periods.
    #[arg(long, default_value = "1s", value_parser = parse_period)]
    pub interval: Duration,

    /// What a process's %CPU is a share of: `container`, all CPU the container used (the v1.0
    /// `relativecpuusage`); `core`, one core (as ps and top show it); `limit`, the
    /// container's CPU limit (of one core when it has none).
    #[arg(long, value_enum, default_value_t = CpuOf::Container)]
    pub cpu_of: CpuOf,

    #[command(flatten)]
    pub service: ServiceArgs,
}

/// What `companion exits` asks a running service.
#[derive(Debug, Clone, clap::Args)]
pub struct ExitsArgs {
    /// The container: a unique prefix of its id or its cgroup path (starting with `/`); a
    /// removed container is found while the ledger holds its entries. All containers when
    /// absent.
    pub container: Option<String>,

    /// Only processes that ended within this time (e.g. 10m, 1h).
    #[arg(long, value_parser = parse_period)]
    pub since: Option<Duration>,

    /// Show at most N processes.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,

    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub ps: PsArgs,

    /// Time between refreshes.
    #[arg(long, default_value = "2s", value_parser = parse_period)]
    pub refresh: Duration,

    /// Stop after this many refreshes (default: until interrupted).
    #[arg(long)]
    pub iterations: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Cpu,
    Mem,
}

/// The whole a process's %CPU is a share of (`companion ps --cpu-of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuOf {
    Container,
    Core,
    Limit,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. The default only accepts local clients; use 0.0.0.0 (or a
    /// specific address) to serve other hosts.
    #[arg(long, env = "COMPANION_LISTEN_IP", default_value = "127.0.0.1")]
    pub listen_ip: IpAddr,

    /// TCP port to listen on (the original service's port by default). 0 picks a free port and
    /// logs it.
    #[arg(long, env = "COMPANION_PORT", default_value_t = 8801)]
    pub port: u16,

    /// The host's proc file system. Default: /rootfs/proc when /rootfs is a directory (the
    /// original's container deployment mounts the host at /rootfs), otherwise /proc.
    #[arg(long, env = "COMPANION_PROC_ROOT")]
    pub proc_root: Option<PathBuf>,

    /// The host's root file system, where the container runtimes' files are read (container
    /// names, images, pods). Default: /rootfs when it is a directory (the container deployment),
    /// otherwise /.
    #[arg(long, env = "COMPANION_HOST_ROOT")]
    pub host_root: Option<PathBuf>,

    /// Docker's data root on the host (`data-root` of dockerd), read under --host-root for
    /// container names, images and labels (`containers/<id>/config.v2.json`).
    #[arg(long, env = "COMPANION_DOCKER_ROOT", default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,

    /// Time between two samples (e.g. 1s, 500ms, 2s).
    #[arg(long, env = "COMPANION_SAMPLE_PERIOD", default_value = "1s", value_parser = parse_period)]
    pub sample_period: Duration,

    /// Samples kept. `count × interval` of a request must stay below it.
    #[arg(long, env = "COMPANION_HISTORY", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(2..=86_400))]
    pub history: u32,

    /// Threads that share a sample's reads of /proc. `0` (the default) chooses per sample: one
    /// thread per 10,000 container processes, at most one per core and 8 in all, so a small host
    /// pays no coordination and a large one keeps its period. Results do not depend on it.
    #[arg(long, env = "COMPANION_SAMPLER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub sampler_threads: u32,

    /// How container processes are found: `ebpf` follows the kernel's process events, `procfs`
    /// scans all of /proc every sample, `auto` uses eBPF when it loads and says why not otherwise.
    #[arg(long, env = "COMPANION_TRACKER", value_enum, default_value_t = TrackerChoice::Auto)]
    pub tracker: TrackerChoice,

    /// Which cgroup names a container: `auto` takes the cgroup v1 hierarchy with the cpu
    /// controller when the host has one, else the cgroup v2 path (cAdvisor's names);
    /// `v1-cpu` and `unified` force one of them.
    #[arg(long, env = "COMPANION_CGROUP_HIERARCHY", value_enum, default_value_t = Naming::Auto)]
    pub cgroup_hierarchy: Naming,

    /// Read each container's limits and what enforcing them costs with every sample: CPU
    /// quota, shares and CFS throttling (cpu.stat), memory limit, usage, swap, failures and
    /// OOM kills, and pressure stall information (cpu/memory/io.pressure) where the kernel keeps
    /// it (cgroup v2, or the unified hierarchy of a hybrid host). About a dozen small reads per
    /// container and sample, through descriptors kept open; `false` leaves these figures null.
    #[arg(long, env = "COMPANION_CGROUP_STATS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroup_stats: bool,

    /// eBPF tracker: how often a full /proc scan checks the tracked set (it also runs at once
    /// when the kernel reports lost events).
    #[arg(long, env = "COMPANION_RECONCILE_EVERY", default_value = "5m", value_parser = parse_period)]
    pub reconcile_every: Duration,

    /// What the API shows of each command line: `full`; `argv0`, the program alone, keeping
    /// arguments (which often carry secrets) out of responses; or `none`. Applied when sampling,
    /// so hidden arguments are never kept in memory either.
    #[arg(long, env = "COMPANION_CMDLINE", value_enum, default_value_t = CmdlineMode::Full)]
    pub cmdline: CmdlineMode,

    #[command(flatten)]
    pub http: HttpArgs,

    /// Keep CAP_SYS_PTRACE after start-up, so every field of other users' /proc/PID/stat is
    /// reported. With `--ptrace false` the kernel hides the fields it guards of processes of
    /// other users (and of non-dumpable ones): `startstack`, `kstkesp`, `kstkeip`, `wchan`,
    /// `start_data`, `end_data`, `start_brk`, `arg_start`, `arg_end`, `env_start`, `env_end` and
    /// `exit_code` read as 0, `startcode` and `endcode` as 1. Nothing else changes.
    #[arg(long, env = "COMPANION_PTRACE", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub ptrace: bool,

    /// Install a system call filter (seccomp, an allow-list of what the running service uses)
    /// after start-up; other calls fail with EPERM. `--seccomp false` skips it.
    #[arg(long, env = "COMPANION_SECCOMP", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub seccomp: bool,

    /// Export the N busiest processes of the host as their own /metrics series (CPU and
    /// memory). 0, the default, keeps /metrics to per-container series, so label cardinality
    /// stays bounded by the number of containers.
    #[arg(long, env = "COMPANION_METRICS_TOP_PROCESSES", default_value_t = 0)]
    pub metrics_top_processes: usize,

    /// Exit ledger: processes that ended kept per container (newest; see `GET
    /// /api/v2/containers/{ref}/exits`). About 330 bytes plus the name and command line each.
    #[arg(long, env = "COMPANION_EXITS_PER_CONTAINER", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub exits_per_container: u32,

    /// Exit ledger: processes that ended kept in all containers, removed ones included; the
    /// oldest go first beyond it. Bounds the ledger's memory whatever the container churn.
    #[arg(long, env = "COMPANION_EXITS_TOTAL", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub exits_total: u32,

    /// Test seam: make the eBPF tracker fail after this many samples, to exercise the fall-back
    /// to the /proc scan.
    #[arg(long, env = "COMPANION_TEST_FAIL_EBPF_AFTER", hide = true)]
    pub test_fail_ebpf_after: Option<u32>,

    /// eBPF tracker: ring buffer size in bytes (a power of two, at least one page). Events that
    /// do not fit are counted as lost and repaired by a /proc scan.
    #[arg(long, env = "COMPANION_BPF_RING_BUFFER", default_value_t = 1 << 20, value_parser = parse_ring_buffer)]
    pub bpf_ring_buffer: u32,
}

/// How the HTTP endpoint is exposed and protected (see README, "Security").
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Require `Authorization: Bearer <token>` on every request but /healthz; the token is the
    /// file's one line (surrounding whitespace ignored; a file of several lines is refused). Use
    /// at least 16 random bytes, in a file only its owner can read (warned otherwise). Without
    /// it anyone who reaches the port can list every container's processes.
    #[arg(long, env = "COMPANION_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// With --auth-token-file, require the token for /healthz as well.
    #[arg(long, env = "COMPANION_AUTH_HEALTHZ", requires = "auth_token_file")]
    pub auth_healthz: bool,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "COMPANION_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "COMPANION_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by these PEM CA certificates (mutual TLS).
    #[arg(long, env = "COMPANION_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Open connections served at once; further ones are refused until one closes.
    #[arg(long, env = "COMPANION_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Requests handled at once, each until its answer is fully sent (an HTTP/2 stream counts
    /// like a request; at most 8 per connection); beyond that the service answers 503 at once
    /// rather than queueing without bound.
    #[arg(long, env = "COMPANION_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Longest time a connection may take, from its acceptance (TLS handshake included), to
    /// send a complete request head, and longest idle time of a kept-alive connection (silent,
    /// slow or idle clients cannot hold connections).
    #[arg(long, env = "COMPANION_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_period)]
    pub header_timeout: Duration,

    /// Serve the web page at `/` (`--ui false` turns it off). The page holds no data and is
    /// served without the token; it asks for the token and sends it with each request.
    #[arg(long, env = "COMPANION_UI", default_value_t = true, action = clap::ArgAction::Set)]
    pub ui: bool,

    /// Longest time to answer a request (503 past it); a connection whose answers make no
    /// progress for this long (the client stopped reading) is closed, its streams reset.
    #[arg(long, env = "COMPANION_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_period)]
    pub request_timeout: Duration,

    /// Bytes of built answers waiting to be sent to clients, in all; one connection may hold a
    /// quarter of it. An answer that does not fit gets 503 (a larger one waits for the whole
    /// budget to be free). Bounds the memory clients that do not read can pin.
    #[arg(long, env = "COMPANION_MAX_BUFFERED_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u32).range(65_536..))]
    pub max_buffered_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrackerChoice {
    Auto,
    Ebpf,
    Procfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if period < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(period)
}

fn parse_ring_buffer(text: &str) -> Result<u32, String> {
    let size: u32 = text.parse().map_err(|err| format!("{err}"))?;
    if !size.is_power_of_two() || size < 4096 {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["companion"]).unwrap();
        assert_eq!(cli.serve.port, 8801);
        assert_eq!(cli.serve.listen_ip.to_string(), "127.0.0.1");
        assert_eq!(cli.serve.sample_period, Duration::from_secs(1));
        assert_eq!(cli.serve.history, 60);
        assert_eq!(cli.serve.tracker, TrackerChoice::Auto);
        assert!(cli.serve.ptrace && cli.serve.seccomp);
        let cli =
            Cli::try_parse_from(["companion", "--ptrace", "false", "--seccomp=false"]).unwrap();
        assert!(!cli.serve.ptrace && !cli.serve.seccomp);
        assert!(cli.serve.http.ui);
        let off = Cli::try_parse_from(["companion", "--ui", "false"]).unwrap();
        assert!(!off.serve.http.ui);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["companion", "--history", "1"][..],
            &["companion", "--sample-period", "1ms"],
            &["companion", "--bpf-ring-buffer", "5000"],
            &["companion", "--tracker", "magic"],
            &["companion", "--listen-ip", "localhost"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
