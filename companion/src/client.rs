//! `companion ps` and `companion top`: a `ps aux`-like table of one container's processes,
//! read from a running service (the original needed cAdvisor and a Python script for this).

use std::{
    fmt::Write as _,
    io::{BufRead, Write as _},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::{CpuOf, ExitsArgs, PsArgs, ServiceArgs, SortKey, TopArgs};

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
    /// What the runtime calls it (absent from services older than names).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    processes: usize,
    cpu_percent: f64,
    rss_bytes: u64,
    #[serde(default)]
    limits: Limits,
    throttling: Option<Throttling>,
    memory: Option<Memory>,
    pressure: Option<Pressure>,
}

#[derive(Debug, Default, Deserialize)]
struct Limits {
    cpu_cores: Option<f64>,
    memory_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Throttling {
    throttled_periods: u64,
    throttled_percent: f64,
    throttled_seconds: f64,
}

#[derive(Debug, Deserialize)]
struct Memory {
    usage_bytes: Option<u64>,
    percent_of_limit: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Pressure {
    cpu: Option<ResourcePressure>,
    memory: Option<ResourcePressure>,
}

#[derive(Debug, Deserialize)]
struct ResourcePressure {
    some: Stall,
}

#[derive(Debug, Deserialize)]
struct Stall {
    avg10: f64,
    interval_percent: Option<f64>,
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
    /// For the event stream: no limit on the whole exchange, only on silence.
    streaming: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// The service sends a comment every 5 s of silence: three missed mean it is gone.
const STREAM_SILENCE: Duration = Duration::from_secs(15);

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
        let mut tls = None;
        if let Some(path) = &args.ca_cert {
            use rustls_pki_types::{CertificateDer, pem::PemObject};
            let certs: Vec<ureq::tls::Certificate<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|cert| cert.map(|c| ureq::tls::Certificate::from_der(&c).to_owned()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {}", path.display()))?;
            tls = Some(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let config = || {
            let config = ureq::Agent::config_builder().http_status_as_error(false);
            match &tls {
                Some(tls) => config.tls_config(tls.clone()),
                None => config,
            }
        };
        let streaming = config()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(STREAM_SILENCE))
            .build()
            .into();
        let agent = config()
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Ok(Service {
            agent,
            streaming,
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

    /// A channel that receives one message per `sample` event of the service's event stream,
    /// read by a thread. It disconnects when the stream is not available (an older service,
    /// an error) or ends.
    fn samples(&self, container: &str) -> mpsc::Receiver<()> {
        let (send, receive) = mpsc::sync_channel(16);
        let encoded = percent_encoding::utf8_percent_encode(container, SEGMENT).to_string();
        let url = format!("{}/api/v2/events?container={encoded}", self.base);
        let mut request = self.streaming.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let Ok(response) = request.call() else {
                    return;
                };
                if response.status() != 200 {
                    return;
                }
                let reader = std::io::BufReader::new(response.into_body().into_reader());
                for line in reader.lines() {
                    let Ok(line) = line else { return };
                    if line.trim_end() == "event: sample" {
                        match send.try_send(()) {
                            Ok(()) | Err(mpsc::TrySendError::Full(())) => {}
                            Err(mpsc::TrySendError::Disconnected(())) => return,
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::debug!("no event stream thread: {err}");
        }
        receive
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

/// `companion top`: redraws when the service announces a new sample on its event stream, at
/// most once per `--refresh`; polls every `--refresh` when the stream is not available.
pub fn top(args: &TopArgs) -> anyhow::Result<()> {
    let service = Service::new(&args.ps.service)?;
    let samples = service.samples(&args.ps.container);
    let mut streaming = true;
    let mut shown = 0;
    loop {
        let began = Instant::now();
        let table = render(&service, &args.ps)?;
        // Home the cursor and clear the screen, like top.
        print!("\x1b[H\x1b[2J{table}");
        std::io::stdout().flush()?;
        shown += 1;
        if args.iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(args.refresh.saturating_sub(began.elapsed()));
        if streaming {
            streaming = wait_for_sample(&samples, args.refresh);
        }
    }
}

/// Returns at once when a sample was announced since the last call, else waits for the next
/// one (at most `patience` and a few seconds). False when the stream is gone.
fn wait_for_sample(samples: &mpsc::Receiver<()>, patience: Duration) -> bool {
    let mut announced = false;
    loop {
        match samples.try_recv() {
            Ok(()) => announced = true,
            Err(mpsc::TryRecvError::Empty) => break,
            Err(mpsc::TryRecvError::Disconnected) => return false,
        }
    }
    if announced {
        return true;
    }
    match samples.recv_timeout(patience + Duration::from_secs(5)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => true,
        Err(mpsc::RecvTimeoutError::Disconnected) => false,
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
    let interval = (args.interval.as_secs_f64() / host.sample_period_seconds)
        .round()
        .max(1.0) as u64;
    let container = find_container(service, &args.container, interval)?;
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
    Ok(table(&host, &container, &processes, args.cpu_of))
}

/// Bytes escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'@')
    .remove(b':')
    .remove(b'+');

/// The container a `ps`/`top` argument names: a cgroup path, or what the service resolves (a
/// name or an id prefix; a Kubernetes `namespace/pod/container` travels as one path segment).
fn find_container(service: &Service, name: &str, interval: u64) -> anyhow::Result<Container> {
    if name.starts_with('/') {
        let all: Vec<Container> =
            service.get(&format!("/api/v2/containers?interval={interval}"))?;
        return all
            .into_iter()
            .find(|c| c.path == name)
            .with_context(|| format!("no container {name} with listed processes"));
    }
    let encoded = percent_encoding::utf8_percent_encode(name, SEGMENT).to_string();
    service.get(&format!("/api/v2/containers/{encoded}?interval={interval}"))
}

/// The table, with a summary line; %MEM is of the container's memory limit, or of the host's
/// memory when it has none; %CPU as `--cpu-of` says.
fn table(host: &Host, container: &Container, processes: &[Process], cpu_of: CpuOf) -> String {
    let memory = container
        .limits
        .memory_bytes
        .unwrap_or(host.memory_total_bytes)
        .max(1);
    let mut out = String::new();
    let _ = writeln!(out, "{}", summary(container, memory));
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
            cpu_of_process(p.relativecpuusage, container, cpu_of),
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

/// The summary line: processes, CPU against the limit and its throttling, pressure, memory
/// against the limit (`memory` is the limit, or the host's memory without one).
fn summary(c: &Container, memory: u64) -> String {
    // `(id, name, image IMAGE)`: what `docker ps` would show of it.
    let mut known = vec![
        c.id.as_deref()
            .map_or("-", |id| &id[..id.len().min(12)])
            .to_owned(),
    ];
    known.extend(c.name.clone());
    known.extend(c.image.as_ref().map(|image| format!("image {image}")));
    let mut line = format!(
        "{} ({}): {} processes, {:.1}% of a core",
        c.path,
        known.join(", "),
        c.processes,
        c.cpu_percent,
    );
    if let Some(cores) = c.limits.cpu_cores {
        let _ = write!(line, ", limit {cores:.2} cores");
    }
    if let Some(t) = &c.throttling
        && (c.limits.cpu_cores.is_some() || t.throttled_periods > 0)
    {
        let _ = write!(
            line,
            ", throttled {:.0}% of periods ({:.2} s)",
            t.throttled_percent, t.throttled_seconds
        );
    }
    let stall = |r: &Option<ResourcePressure>| {
        r.as_ref()
            .map(|r| r.some.interval_percent.unwrap_or(r.some.avg10))
    };
    if let Some(p) = &c.pressure {
        let shown: Vec<String> = [("cpu", stall(&p.cpu)), ("memory", stall(&p.memory))]
            .into_iter()
            .filter_map(|(name, percent)| Some(format!("{name} {:.1}%", percent?)))
            .collect();
        if !shown.is_empty() {
            let _ = write!(line, ", pressure {}", shown.join(" "));
        }
    }
    let _ = write!(line, ", {} MiB resident", c.rss_bytes >> 20);
    if let Some(usage) = c.memory.as_ref().and_then(|m| m.usage_bytes) {
        let _ = write!(line, ", {} MiB used", usage >> 20);
        if let Some(percent) = c.memory.as_ref().and_then(|m| m.percent_of_limit) {
            let _ = write!(line, " ({percent:.0}%)");
        }
    }
    let whose = if c.limits.memory_bytes.is_some() {
        "limit"
    } else {
        "host"
    };
    let _ = write!(line, " of {} MiB ({whose})", memory >> 20);
    line
}

/// A process's %CPU: `share` is its percent of the container's CPU over the interval.
fn cpu_of_process(share: f64, container: &Container, cpu_of: CpuOf) -> f64 {
    let of_a_core = share * container.cpu_percent / 100.0;
    match cpu_of {
        CpuOf::Container => share,
        CpuOf::Core => of_a_core,
        CpuOf::Limit => match container.limits.cpu_cores {
            Some(cores) if cores > 0.0 => of_a_core / cores,
            _ => of_a_core,
        },
    }
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
            name: Some("web1".into()),
            image: Some("nginx:1.27".into()),
            processes: 2,
            cpu_percent: 99.5,
            rss_bytes: 300 << 20,
            limits: Limits {
                cpu_cores: None,
                memory_bytes: Some(1 << 30),
            },
            throttling: None,
            memory: None,
            pressure: None,
        };
        let text = table(
            &host,
            &container,
            &[
                process(42, 97.25, 262_144, "python app.py"),
                process(7, 0.0, 1024, ""),
            ],
            CpuOf::Container,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "/docker/abcdef0123456789 (abcdef012345, web1, image nginx:1.27): 2 processes, \
                 99.5% of a core"
            ),
            "{}",
            lines[0]
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

    fn limited() -> Container {
        serde_json::from_value(serde_json::json!({
            "path": "/docker/abc", "id": "abc", "processes": 3, "cpu_percent": 19.9,
            "rss_bytes": 45u64 << 20,
            "limits": {"cpu_cores": 0.2, "memory_bytes": 64u64 << 20},
            "throttling": {"periods": 10, "throttled_periods": 9, "throttled_percent": 90.0,
                           "throttled_seconds": 0.81},
            "memory": {"usage_bytes": 48u64 << 20, "percent_of_limit": 75.0},
            "pressure": {"cpu": {"some": {"avg10": 50.0, "interval_percent": 78.14}},
                         "memory": {"some": {"avg10": 0.0, "interval_percent": null}}, "io": null}
        }))
        .unwrap()
    }

    #[test]
    fn summary_with_limits_throttling_and_pressure() {
        assert_eq!(
            summary(&limited(), 64 << 20),
            "/docker/abc (abc): 3 processes, 19.9% of a core, limit 0.20 cores, throttled 90% of \
             periods (0.81 s), pressure cpu 78.1% memory 0.0%, 45 MiB resident, 48 MiB used (75%) \
             of 64 MiB (limit)"
        );
        // No limits, no cgroup figures (an older service, or --cgroup-stats false).
        let bare: Container = serde_json::from_value(serde_json::json!({
            "path": "/docker/abc", "id": null, "processes": 1, "cpu_percent": 100.0,
            "rss_bytes": 1u64 << 20
        }))
        .unwrap();
        assert_eq!(
            summary(&bare, 8 << 30),
            "/docker/abc (-): 1 processes, 100.0% of a core, 1 MiB resident of 8192 MiB (host)"
        );
    }

    #[test]
    fn cpu_of_container_core_or_limit() {
        let c = limited();
        assert_eq!(cpu_of_process(50.0, &c, CpuOf::Container), 50.0);
        assert!((cpu_of_process(50.0, &c, CpuOf::Core) - 9.95).abs() < 1e-9);
        assert!((cpu_of_process(50.0, &c, CpuOf::Limit) - 49.75).abs() < 1e-9);
        let mut unlimited = limited();
        unlimited.limits.cpu_cores = None;
        assert!((cpu_of_process(50.0, &unlimited, CpuOf::Limit) - 9.95).abs() < 1e-9);
    }
}
