//! The service under test: started on a free port, waited for, queried, stopped.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid as NixPid};
use serde_json::Value;

use crate::{
    Container, api,
    http::{self, Response},
    proc::Pid,
    wait_for,
};

/// Which tracker a service runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracker {
    Procfs,
    Ebpf,
}

impl Tracker {
    pub fn name(self) -> &'static str {
        match self {
            Tracker::Procfs => "procfs",
            Tracker::Ebpf => "ebpf",
        }
    }
}

/// The sample period tests use unless they say otherwise: 200 ms, longer on a host with so
/// many container processes that sampling them all takes a good part of that (the machines are
/// shared: another session's benchmark may run thousands). About 0.1 ms a process is allowed.
pub fn test_period() -> Duration {
    let processes = crate::proc::host_container_processes() as u64;
    let ms = (processes / 10).div_ceil(100) * 100;
    let period = Duration::from_millis(ms.clamp(200, 2000));
    if period > Duration::from_millis(200) {
        eprintln!("{processes} container processes on this host: sample period {period:?}");
    }
    period
}

/// The binary under test: the one Cargo built for this test run (`CARGO_BIN_EXE_companion`,
/// which Cargo sets for the test targets of the `companion` package), never whatever happens to
/// lie in `target/`.
pub fn companion_bin() -> PathBuf {
    let bin = std::env::var_os("CARGO_BIN_EXE_companion").map(PathBuf::from);
    match bin {
        Some(bin) if bin.is_absolute() && bin.exists() => bin,
        _ => panic!(
            "CARGO_BIN_EXE_companion does not name the binary: run the end-to-end tests with \
             `cargo test -p companion` (add --release for the eBPF tracker)"
        ),
    }
}

/// A port nobody listens on right now (the service may still lose a race for it: retried).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Whether process `pid` holds a socket listening on TCP `port` (IPv4 or IPv6).
fn listens_on(pid: Pid, port: u16) -> bool {
    let port = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[1].ends_with(&port) && fields[3] == "0A" {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten().any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            })
        })
        .unwrap_or(false)
}

static LOGS: AtomicU32 = AtomicU32::new(0);

/// How [`Service::start_with`] starts the binary and tells it is ready.
#[derive(Default)]
pub struct StartOptions<'a> {
    /// A program and its arguments that run the binary: the binary's path and its arguments are
    /// appended (`["sh", "-c", "…; exec \"$0\" \"$@\""]`). The wrapper must exec the binary,
    /// so that the child's pid is the service's.
    pub wrapper: &'a [&'a str],
    /// Fetches `/healthz` from the service's address when the plain-HTTP GET cannot (TLS, a
    /// token required for /healthz); ready when it answers 200 with the health JSON.
    pub probe: Option<&'a dyn Fn(SocketAddr) -> std::io::Result<Response>>,
}

/// A running service. Dropping it stops it (SIGTERM, then SIGKILL); when the test is failing,
/// its log (stderr) is printed.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    pub args: Vec<String>,
    log: PathBuf,
    /// The sample period, from /healthz.
    pub period: Duration,
    /// The history capacity, from /healthz.
    pub history: usize,
    exited: Option<ExitStatus>,
}

impl Service {
    /// Starts the binary with `args` (plus `--port`), waits until /healthz answers (200, or 503
    /// `stale` on an overloaded host).
    pub fn start(args: &[&str]) -> Service {
        Service::start_with(args, &StartOptions::default())
    }

    /// [`Service::start`] through a wrapper command and/or with another readiness probe (see
    /// [`StartOptions`]).
    pub fn start_with(args: &[&str], options: &StartOptions<'_>) -> Service {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Service::try_start(args, options) {
                Ok(service) => return service,
                Err((log, retry)) if retry && attempts < 5 => {
                    eprintln!("service start failed (retrying on another port):\n{log}");
                }
                Err((log, _)) => panic!("the service did not start with {args:?}:\n{log}"),
            }
        }
    }

    /// Starts a service with this tracker and the test sample period, plus `extra` flags.
    pub fn with_tracker(tracker: Tracker, extra: &[&str]) -> Service {
        let mut args = vec!["--tracker", tracker.name()];
        let period;
        if !extra.iter().any(|a| a.starts_with("--sample-period")) {
            period = format!("{}ms", test_period().as_millis());
            args.extend(["--sample-period", &period]);
        }
        args.extend_from_slice(extra);
        let service = Service::start(&args);
        let health = service.health();
        assert_eq!(
            health["tracker"],
            tracker.name(),
            "/healthz names another tracker than --tracker {}: {health}",
            tracker.name()
        );
        service
    }

    /// One start attempt: `Err((log, retry))`, `retry` when the port was taken.
    fn try_start(args: &[&str], options: &StartOptions<'_>) -> Result<Service, (String, bool)> {
        let port = free_port();
        let n = LOGS.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "companion-test-{}-service-{n}.log",
            std::process::id()
        ));
        let stderr = fs::File::create(&log).expect("creating the service log");
        let mut all_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all_args.extend(["--port".into(), port.to_string()]);
        let mut command = match options.wrapper {
            [] => Command::new(companion_bin()),
            [program, wrapper_args @ ..] => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(companion_bin());
                command
            }
        };
        // Every flag has an environment variable (COMPANION_PORT…): only the arguments count.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("COMPANION_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(&all_args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting the companion binary");
        let mut service = Service {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            args: all_args,
            log,
            period: Duration::from_millis(200),
            history: 60,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                service.exited = Some(status);
                let log = service.log_text();
                let retry = log.contains("cannot listen") || log.contains("in use");
                return Err((format!("exited with {status}; log:\n{log}"), retry));
            }
            let probe = match options.probe {
                Some(probe) => probe(service.addr),
                None => http::request(service.addr, "GET", "/healthz", ""),
            };
            // Serving: 200, or 503 `stale` when a host crowded with other container processes
            // makes a sample overrun three periods.
            // And from this child: another test's service may have taken the port first (this
            // one then fails to bind, and is retried).
            if let Ok(r) = probe
                && (r.status == 200
                    || (r.status == 503
                        && serde_json::from_slice::<Value>(&r.body)
                            .is_ok_and(|h| h["status"] == "stale")))
                && listens_on(service.child.id(), port)
            {
                let health = r.json();
                service.period =
                    Duration::from_secs_f64(health["sample_period_seconds"].as_f64().unwrap());
                service.history = health["history_capacity"].as_u64().unwrap() as usize;
                return Ok(service);
            }
            if Instant::now() >= deadline {
                return Err((
                    format!("not ready within 30s; log:\n{}", service.log_text()),
                    false,
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How long a change may take to show in the API: a few samples, with room for a loaded
    /// machine (5 s + 10 periods).
    pub fn patience(&self) -> Duration {
        Duration::from_secs(5) + self.period * 10
    }

    pub fn pid(&self) -> Pid {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service's resident memory in kB.
    pub fn vm_rss_kb(&self) -> u64 {
        crate::proc::vm_rss_kb(self.pid()).expect("the service is running")
    }

    /// Sends `raw` bytes on a new connection and reads the response.
    pub fn exchange(&self, raw: &[u8]) -> std::io::Result<Response> {
        http::exchange(self.addr, raw)
    }

    /// `method path` with `extra` raw header lines; panics when the exchange fails.
    pub fn request(&self, method: &str, path: &str, extra: &str) -> Response {
        http::request(self.addr, method, path, extra).unwrap_or_else(|err| {
            panic!("{method} {path}: {err} (service {})", self.describe_state())
        })
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, "")
    }

    fn describe_state(&self) -> String {
        match fs::metadata(format!("/proc/{}", self.pid())) {
            Ok(_) => format!("pid {} running", self.pid()),
            Err(_) => format!("pid {} gone", self.pid()),
        }
    }

    /// GET /healthz, asserted 200 and JSON.
    pub fn healthz(&self) -> Value {
        let r = self.get("/healthz");
        assert_eq!(r.status, 200, "/healthz: {}", r.text());
        r.json()
    }

    /// GET /healthz for its counters: 200, or 503 when the service is stale (a sample overran
    /// three periods on a busy host); either way JSON.
    pub fn health(&self) -> Value {
        let r = self.get("/healthz");
        assert!(
            r.status == 200 || r.status == 503,
            "/healthz: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// The processes route of `container` with `query` (without `?`; may be empty). A 200 answer
    /// is checked against the contract's invariants ([`api::check_answer`]) and returned as its
    /// snapshots; any other answer is returned as `Err`.
    pub fn processes(&self, container: &str, query: &str) -> Result<Vec<Value>, Response> {
        let mut path = format!("/api/v1.0{}/processes", http::encode_path(container));
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let r = self.get(&path);
        if r.status != 200 {
            return Err(r);
        }
        Ok(api::check_answer(&r, container, query))
    }

    /// The snapshots of a query that must succeed.
    pub fn snapshots(&self, container: &str, query: &str) -> Vec<Value> {
        self.processes(container, query).unwrap_or_else(|r| {
            panic!(
                "{container}?{query}: status {} body {:?}",
                r.status,
                r.text()
            )
        })
    }

    /// The pids listed in the newest sample for `container`; `None` when it is "not found"
    /// (500). Panics on any other answer.
    pub fn pids(&self, container: &str) -> Option<BTreeSet<Pid>> {
        match self.processes(container, "") {
            Ok(snapshots) => Some(api::pids(snapshots.last().expect("one snapshot"))),
            Err(r) if r.status == 500 => {
                assert_eq!(
                    r.text(),
                    format!("Container {container} not found"),
                    "500 for {container}"
                );
                None
            }
            Err(r) => panic!("{container}: status {} body {:?}", r.status, r.text()),
        }
    }

    /// Waits until the service lists exactly these processes in the newest sample of
    /// `container`.
    pub fn wait_listed(&self, container: &Container, pids: &[Pid]) {
        self.wait_pids(
            &container.path,
            Some(&crate::pid_set(pids)),
            self.patience(),
        );
    }

    /// Polls until the listed pids of `container` equal `expected` (`None`: not found).
    pub fn wait_pids(
        &self,
        container: &str,
        expected: Option<&BTreeSet<Pid>>,
        timeout: Duration,
    ) -> Duration {
        let began = Instant::now();
        wait_for(&format!("pids of {container}"), timeout, || {
            let now = self.pids(container);
            if now.as_ref() == expected {
                Ok(())
            } else {
                Err(format!("listed {now:?}, expected {expected:?}"))
            }
        });
        began.elapsed()
    }

    /// Polls `check` against this service until it returns `Ok`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Service) -> Result<T, String>,
    ) -> T {
        wait_for(what, timeout, || check(self))
    }

    /// `samples_taken` from /healthz.
    pub fn samples_taken(&self) -> u64 {
        self.health()["samples_taken"]
            .as_u64()
            .expect("samples_taken")
    }

    /// Waits until `n` more samples were published.
    pub fn wait_samples(&self, n: u64) {
        let start = self.samples_taken();
        let timeout = self.period * (n as u32 * 3 + 10);
        self.wait_until(&format!("{n} more samples"), timeout, |s| {
            let now = s.samples_taken();
            if now >= start + n {
                Ok(())
            } else {
                Err(format!("{} of {n}", now - start))
            }
        });
    }

    /// Waits until the history holds at least `n` samples.
    pub fn wait_history(&self, n: usize) {
        let timeout = self.period * (n as u32 * 3 + 10);
        self.wait_until(&format!("{n} samples in history"), timeout, |s| {
            let have = s.health()["samples_in_history"].as_u64().unwrap_or(0) as usize;
            if have >= n {
                Ok(())
            } else {
                Err(format!("{have} samples"))
            }
        });
    }

    /// Sends `signal` and waits up to `timeout` for the exit; returns the status and how long it
    /// took, or `None` when it did not exit in time (it is then killed by the drop).
    pub fn stop_with(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> Option<(ExitStatus, Duration)> {
        let began = Instant::now();
        nix::sys::signal::kill(NixPid::from_raw(self.pid() as i32), signal).expect("signalling");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some((status, began.elapsed()));
            }
            if began.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the service (SIGSTOP) until the guard drops (SIGCONT): a consumer that fell
    /// behind, while the kernel keeps producing events.
    pub fn pause(&self) -> Paused<'_> {
        let pid = NixPid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        wait_for(
            "the service to stop",
            Duration::from_secs(5),
            || match crate::proc::state(self.pid()).as_deref() {
                Some("T") => Ok(()),
                state => Err(format!("state {state:?}")),
            },
        );
        Paused(self)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A stopped service; dropping it lets the service continue.
pub struct Paused<'a>(&'a Service);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(NixPid::from_raw(self.0.pid() as i32), Signal::SIGCONT);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.exited.is_none()
            && self
                .stop_with(Signal::SIGTERM, Duration::from_secs(5))
                .is_none()
        {
            eprintln!(
                "service pid {} ignored SIGTERM for 5s: killing it",
                self.pid()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "---- companion {:?} log ({} lines, last {}) ----\n{}\n---- end of log ----",
                self.args,
                lines.len(),
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = fs::remove_file(&self.log);
    }
}
