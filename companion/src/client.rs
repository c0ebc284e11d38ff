//! `companion ps` and `companion top`: a `ps aux`-like table of one container's processes,
//! read from a running service (the original needed cAdvisor and a Python script for this).

use std::{fmt::Write as _, io::Write as _, time::Duration};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::{ExitsArgs, PsArgs, ServiceArgs, SortKey, TopArgs};

/// The fields of `/api/v2/host` the table needs.
#[derive(Debug, Deserialize)]
struct Host {
    memory_total_bytes: u64,
    boot_time_seconds: u64,
    clock_ticks_per_second: u64,
    sample_period_seconds: f64,
}

/// The fields of a container summary the table needs.
#[derive(Debug, Deserialize)]
struct Container {
    path: String,
    id: Option<String>,
    processes: usize,
    cpu_percent: f64,
    rss_bytes: u64,
    memory_limit_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    processes: Vec<Process>,
}

#[derive(Debug, Deserialize)]
struct Process {
    status: Status,
    stat: Stat,
    cmdline: String,
    relativecpuusage: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    real_uid: u64,
    vm_size: u64,
    #[serde(rename = "VmRSS")]
    vm_rss: u64,
}

#[derive(Debug, Deserialize)]
struct Stat {
    pid: u64,
    comm: String,
    state: String,
    pgrp: i64,
    session: i64,
    tpgid: i64,
    nice: i64,
    num_threads: i64,
    starttime: u64,
    utime: u64,
    stime: u64,
}

/// A connection to the service.
struct Service {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Service {
    fn new(args: &ServiceArgs) -> anyhow::Result<Service> {
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false);
        if let Some(path) = &args.ca_cert {
            use rustls_pki_types::{CertificateDer, pem::PemObject};
            let certs: Vec<ureq::tls::Certificate<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|cert| cert.map(|c| ureq::tls::Certificate::from_der(&c).to_owned()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {}", path.display()))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Service {
            agent: config.build().into(),
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The status and body of `GET path`.
    fn fetch(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().with_context(|| format!("GET {url}"))?;
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("GET {url}: reading the answer"))?;
        Ok((response.status().as_u16(), body))
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.fetch(path)?;
        if !(200..300).contains(&status) {
            bail!("GET {}{path}: {status}: {}", self.base, body.trim());
        }
        serde_json::from_str(&body)
            .with_context(|| format!("GET {}{path}: unexpected answer", self.base))
    }
}

/// `companion ps`.
pub fn ps(args: &PsArgs) -> anyhow::Result<()> {
    let service = Service::new(&args.service)?;
    let table = render(&service, args)?;
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(())
}

/// `companion top`.
pub fn top(args: &TopArgs) -> anyhow::Result<()> {
    let service = Service::new(&args.ps.service)?;
    let mut shown = 0;
    loop {
        let table = render(&service, &args.ps)?;
        // Home the cursor and clear the screen, like top.
        print!("\x1b[H\x1b[2J{table}");
        std::io::stdout().flush()?;
        shown += 1;
        if args.iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(args.refresh);
    }
}

/// `companion health`.
pub fn health(args: &ServiceArgs) -> anyhow::Result<()> {
    let (status, body) = Service::new(args)?.fetch("/healthz")?;
    println!("{}", body.trim());
    if status != 200 {
        bail!("unhealthy: {status}");
    }
    Ok(())
}

fn render(service: &Service, args: &PsArgs) -> anyhow::Result<String> {
    let host: Host = service.get("/api/v2/host")?;
    let container = find_container(service, &args.container)?;
    let interval = (args.interval.as_secs_f64() / host.sample_period_seconds)
        .round()
        .max(1.0) as u64;
    let mut query = format!("?interval={interval}");
    match args.sort {
        Some(SortKey::Cpu) => query.push_str("&sort=cpu"),
        Some(SortKey::Mem) => query.push_str("&sort=mem"),
        None => {}
    }
    if let Some(limit) = args.limit {
        query.push_str(&format!("&limit={limit}"));
    }
    let path = container.path.trim_start_matches('/');
    let encoded: String = path
        .split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let snapshots: Vec<Snapshot> = service.get(&format!("/api/v1.0/{encoded}/processes{query}"))?;
    let processes = snapshots
        .into_iter()
        .last()
        .map(|s| s.processes)
        .unwrap_or_default();
    Ok(table(&host, &container, &processes))
}

/// Bytes escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'@')
    .remove(b':')
    .remove(b'+');

fn find_container(service: &Service, name: &str) -> anyhow::Result<Container> {
    if name.starts_with('/') {
        let all: Vec<Container> = service.get("/api/v2/containers")?;
        return all
            .into_iter()
            .find(|c| c.path == name)
            .with_context(|| format!("no container {name} with listed processes"));
    }
    let encoded = percent_encoding::utf8_percent_encode(name, SEGMENT).to_string();
    service.get(&format!("/api/v2/containers/{encoded}"))
}

/// The table, with a summary line; %MEM is of the container's memory limit, or of the host's
/// memory when it has none.
fn table(host: &Host, container: &Container, processes: &[Process]) -> String {
    let memory = container
        .memory_limit_bytes
        .unwrap_or(host.memory_total_bytes)
        .max(1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}): {} processes, {:.1}% of a core, {} MiB resident of {} MiB{}",
        container.path,
        container
            .id
            .as_deref()
            .map_or("-", |id| &id[..id.len().min(12)]),
        container.processes,
        container.cpu_percent,
        container.rss_bytes >> 20,
        memory >> 20,
        if container.memory_limit_bytes.is_some() {
            " (limit)"
        } else {
            " (host)"
        },
    );
    let _ = writeln!(
        out,
        "{:>6} {:>7} {:>5} {:>5} {:>9} {:>8} {:<5} {:>5} {:>8} COMMAND",
        "UID", "PID", "%CPU", "%MEM", "VSZ", "RSS", "STAT", "START", "TIME"
    );
    let now = jiff::Timestamp::now();
    for p in processes {
        let started = host.boot_time_seconds as f64
            + p.stat.starttime as f64 / host.clock_ticks_per_second.max(1) as f64;
        let cpu_seconds = (p.stat.utime + p.stat.stime) / host.clock_ticks_per_second.max(1);
        let command = if p.cmdline.is_empty() {
            format!(
                "[{}]",
                p.stat.comm.trim_start_matches('(').trim_end_matches(')')
            )
        } else {
            p.cmdline.clone()
        };
        let _ = writeln!(
            out,
            "{:>6} {:>7} {:>5.1} {:>5.1} {:>9} {:>8} {:<5} {:>5} {:>8} {}",
            p.status.real_uid,
            p.stat.pid,
            p.relativecpuusage,
            100.0 * (p.status.vm_rss * 1024) as f64 / memory as f64,
            p.status.vm_size,
            p.status.vm_rss,
            state(&p.stat),
            start(started, now),
            format!("{}:{:02}", cpu_seconds / 60, cpu_seconds % 60),
            command.replace('\n', "\\n"),
        );
    }
    out
}

/// `ps`'s STAT: the state letter and its modifiers.
fn state(stat: &Stat) -> String {
    let mut text = stat.state.clone();
    if stat.nice < 0 {
        text.push('<');
    } else if stat.nice > 0 {
        text.push('N');
    }
    if stat.session == stat.pid as i64 {
        text.push('s');
    }
    if stat.num_threads > 1 {
        text.push('l');
    }
    if stat.tpgid == stat.pgrp && stat.tpgid > 0 {
        text.push('+');
    }
    text
}

/// `ps`'s START: the time of day for processes started in the last day, else month and day.
fn start(unix_seconds: f64, now: jiff::Timestamp) -> String {
    let Ok(started) = jiff::Timestamp::from_second(unix_seconds as i64) else {
        return "?".into();
    };
    let zone = jiff::tz::TimeZone::system();
    let local = started.to_zoned(zone);
    if now.duration_since(started).as_secs() < 24 * 3600 {
        local.strftime("%H:%M").to_string()
    } else {
        local.strftime("%b%d").to_string()
    }
}

/// An ended process, as `/api/v2/…/exits` lists it (the fields the table needs).
#[derive(Debug, Deserialize)]
struct Ended {
    container: String,
    pid: u32,
    ppid: Option<u32>,
    comm: String,
    cmdline: String,
    /// RFC 3339.
    ended_at: String,
    lifetime_seconds: Option<f64>,
    user_cpu_seconds: Option<f64>,
    system_cpu_seconds: Option<f64>,
    peak_rss_bytes: Option<u64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    core_dumped: Option<bool>,
    oom_killed: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ContainerExits {
    container: String,
    present: bool,
    exits_total: u64,
    nonzero_exits_total: u64,
    signaled_total: u64,
    oom_kills_total: u64,
    exits: Vec<Ended>,
}

#[derive(Debug, Deserialize)]
struct AllExits {
    exits: Vec<Ended>,
}

/// `companion exits`.
pub fn exits(args: &ExitsArgs) -> anyhow::Result<()> {
    let service = Service::new(&args.service)?;
    let mut query = format!("?limit={}", args.limit);
    if let Some(since) = args.since {
        let since = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(since)?)
            .context("--since reaches before 1970")?;
        query.push_str(&format!("&since={since}"));
    }
    let table = match &args.container {
        Some(container) => {
            let reference = percent_encoding::utf8_percent_encode(container, SEGMENT);
            let answer: ContainerExits =
                service.get(&format!("/api/v2/containers/{reference}/exits{query}"))?;
            let mut out = format!(
                "{}{}: {} ended, {} with a non-zero code, {} by a signal, {} OOM kills\n",
                answer.container,
                if answer.present { "" } else { " (removed)" },
                answer.exits_total,
                answer.nonzero_exits_total,
                answer.signaled_total,
                answer.oom_kills_total,
            );
            out.push_str(&exits_table(&answer.exits, false));
            out
        }
        None => {
            let answer: AllExits = service.get(&format!("/api/v2/exits{query}"))?;
            exits_table(&answer.exits, true)
        }
    };
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(())
}

fn exits_table(exits: &[Ended], with_container: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ENDED        PID    PPID HOW               LIFETIME      CPU  PEAK RSS {}COMMAND",
        if with_container { "CONTAINER " } else { "" },
    );
    let zone = jiff::tz::TimeZone::system();
    for e in exits {
        let seconds = |value: Option<f64>, precision: usize| {
            value.map_or("-".to_owned(), |v| format!("{v:.precision$}s"))
        };
        let cpu = match (e.user_cpu_seconds, e.system_cpu_seconds) {
            (Some(user), Some(system)) => Some(user + system),
            _ => None,
        };
        let command = if e.cmdline.is_empty() {
            format!("[{}]", e.comm)
        } else {
            e.cmdline.clone()
        };
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>7} {:<16} {:>9} {:>8} {:>9} {}{}",
            e.ended_at
                .parse::<jiff::Timestamp>()
                .map_or("?".to_owned(), |t| t
                    .to_zoned(zone.clone())
                    .strftime("%H:%M:%S")
                    .to_string()),
            e.pid,
            e.ppid.map_or("-".to_owned(), |p| p.to_string()),
            how(e),
            seconds(e.lifetime_seconds, 3),
            seconds(cpu, 2),
            e.peak_rss_bytes
                .map_or("-".to_owned(), |b| format!("{}K", b / 1024)),
            if with_container {
                format!("{} ", e.container)
            } else {
                String::new()
            },
            command.replace('\n', "\\n"),
        );
    }
    out
}

/// How a process ended, in a few words: `exit 3`, `SIGKILL (oom)`, `SIGSEGV (core)`, `gone`.
fn how(e: &Ended) -> String {
    match (e.exit_code, e.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => {
            let mut text = signal_name(signal);
            if e.oom_killed == Some(true) {
                text.push_str(" (oom)");
            } else if e.core_dumped == Some(true) {
                text.push_str(" (core)");
            }
            text
        }
        (None, None) => "gone".to_owned(),
    }
}

fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    match usize::try_from(signal)
        .ok()
        .and_then(|n| NAMES.get(n.checked_sub(1)?))
    {
        Some(name) => format!("SIG{name}"),
        None => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u64, cpu: f64, rss_kb: u64, cmdline: &str) -> Process {
        Process {
            status: Status {
                real_uid: 1000,
                vm_size: 2000,
                vm_rss: rss_kb,
            },
            stat: Stat {
                pid,
                comm: "(worker)".into(),
                state: "S".into(),
                pgrp: pid as i64,
                session: pid as i64,
                tpgid: -1,
                nice: 5,
                num_threads: 3,
                starttime: 100,
                utime: 6100,
                stime: 100,
            },
            cmdline: cmdline.into(),
            relativecpuusage: cpu,
        }
    }

    #[test]
    fn table_figures() {
        let host = Host {
            memory_total_bytes: 8 << 30,
            boot_time_seconds: 1_700_000_000,
            clock_ticks_per_second: 100,
            sample_period_seconds: 1.0,
        };
        let container = Container {
            path: "/docker/abcdef0123456789".into(),
            id: Some("abcdef0123456789".into()),
            processes: 2,
            cpu_percent: 99.5,
            rss_bytes: 300 << 20,
            memory_limit_bytes: Some(1 << 30),
        };
        let text = table(
            &host,
            &container,
            &[
                process(42, 97.25, 262_144, "python app.py"),
                process(7, 0.0, 1024, ""),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "/docker/abcdef0123456789 (abcdef012345): 2 processes, 99.5% of a core"
            )
        );
        assert!(lines[1].contains("%CPU") && lines[1].ends_with("COMMAND"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            &row[..7],
            ["1000", "42", "97.2", "25.0", "2000", "262144", "SNsl"]
        );
        assert_eq!(row[8], "1:02", "62 s of CPU");
        assert_eq!(&row[9..], ["python", "app.py"]);
        assert!(
            lines[3].ends_with("[worker]"),
            "no command line: the name in brackets"
        );
    }
}
