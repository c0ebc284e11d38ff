//! The client subcommands: `companion ps`, `top` and `health`.

use super::*;

/// MemTotal of /proc/meminfo in bytes.
fn mem_total_bytes() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    kb * 1024
}

/// How a finished client command ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary as a client (`ps`, `top`, `health`) without `COMPANION_*` variables; kills it
/// (by pid) when it has not ended within 30 s.
fn companion(args: &[&str]) -> Ran {
    let mut command = Command::new(companion_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMPANION_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the companion binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => {
            let out = out.expect("waiting for the client");
            Ran {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("companion {args:?} did not end within 30 s");
        }
    }
}

fn url(service: &Service) -> String {
    format!("http://{}", service.addr)
}

/// One row of the `ps` table.
#[derive(Clone, Debug)]
struct Row {
    uid: u64,
    pid: Pid,
    cpu: f64,
    mem: f64,
    vsz: u64,
    rss_kb: u64,
    stat: String,
    time: String,
    command: String,
}

/// A `ps` table: the summary line, the header columns, the rows.
#[derive(Debug)]
struct Table {
    summary: String,
    header: Vec<String>,
    rows: Vec<Row>,
}

const HEADER: [&str; 10] = [
    "UID", "PID", "%CPU", "%MEM", "VSZ", "RSS", "STAT", "START", "TIME", "COMMAND",
];

fn parse_table(text: &str) -> Table {
    let mut lines = text.lines();
    let summary = lines.next().expect("a summary line").to_owned();
    let header: Vec<String> = lines
        .next()
        .expect("a header line")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = Vec::new();
            let mut rest = line;
            for _ in 0..9 {
                rest = rest.trim_start();
                let end = rest
                    .find(' ')
                    .unwrap_or_else(|| panic!("short row {line:?}"));
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let number = |i: usize| -> f64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("column {} of {line:?}", HEADER[i]))
            };
            Row {
                uid: number(0) as u64,
                pid: number(1) as Pid,
                cpu: number(2),
                mem: number(3),
                vsz: number(4) as u64,
                rss_kb: number(5) as u64,
                stat: fields[6].to_owned(),
                time: fields[8].to_owned(),
                command: rest.trim_start().to_owned(),
            }
        })
        .collect();
    Table {
        summary,
        header,
        rows,
    }
}

/// `companion ps ARGS --url URL`, which must succeed; its table.
fn ps(service: &Service, args: &[&str]) -> Table {
    let url = url(service);
    let mut all = vec!["ps"];
    all.extend_from_slice(args);
    all.extend(["--url", &url]);
    let ran = companion(&all);
    assert_eq!(ran.code, Some(0), "companion {all:?}: {ran:?}");
    let table = parse_table(&ran.stdout);
    assert_eq!(table.header, HEADER, "header of {all:?}:\n{}", ran.stdout);
    table
}

fn pids_of(table: &Table) -> Vec<Pid> {
    table.rows.iter().map(|r| r.pid).collect()
}

/// `%MEM` printed with one decimal: within rounding of `rss_kb × 1024 / memory`.
fn assert_mem_percent(row: &Row, memory: u64, what: &str) {
    let expected = 100.0 * (row.rss_kb * 1024) as f64 / memory as f64;
    assert!(
        (row.mem - expected).abs() <= 0.05 + 1e-9,
        "{what}: pid {} %MEM {} but RSS {} kB of {memory} bytes is {expected:.3} %",
        row.pid,
        row.mem,
        row.rss_kb
    );
}

/// `companion ps` on a container with a memory limit: the columns, the busy process first with
/// --sort cpu at ~100 %, %MEM of the limit, --sort mem, --limit, a cgroup path as the container.
#[test]
fn ps_table_of_a_limited_container() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(
        &format!("/docker/{id}"),
        &[Hierarchy::Cpu, Hierarchy::Memory],
    );
    let limit = 512 * MIB;
    set_memory_limit(&c, limit);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let hog = spawn_memory_hog(&cg, &c, 48);
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &[busy, idle, hog]);
    service.wait_samples(6);
    let prefix = &id[..12];

    let table = service.wait_until(
        "ps --sort cpu to show the busy process first near 100 %",
        service.patience() * 2,
        |s| {
            let table = ps(s, &[prefix, "--sort", "cpu"]);
            match table.rows.first() {
                Some(row) if row.pid == busy && row.cpu > 90.0 => Ok(table),
                _ => Err(format!("{table:#?}")),
            }
        },
    );
    assert!(
        table
            .summary
            .starts_with(&format!("{} ({}): 3 processes", c.path, &id[..12])),
        "summary: {}",
        table.summary
    );
    assert!(
        table
            .summary
            .ends_with(&format!("of {} MiB (limit)", limit >> 20)),
        "summary: {}",
        table.summary
    );
    assert_eq!(pid_set(&pids_of(&table)), pid_set(&[busy, idle, hog]));
    for row in &table.rows[1..] {
        assert!(row.cpu < 5.0, "idle pid {} at {} %CPU", row.pid, row.cpu);
    }
    for row in &table.rows {
        assert_mem_percent(row, limit, "of the limit");
        assert_eq!(row.uid, 0);
        let truth = proc::vm_rss_kb(row.pid).unwrap();
        assert!(
            row.rss_kb.abs_diff(truth) <= truth / 20,
            "pid {} RSS {} kB, /proc {truth} kB",
            row.pid,
            row.rss_kb
        );
        let vsz: u64 = proc::status_field(row.pid, "VmSize")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(row.vsz, vsz, "VSZ of {}", row.pid);
        assert_eq!(
            Some(row.command.clone()),
            proc::cmdline(row.pid).map(|c| c.replace('\n', "\\n"))
        );
        let (minutes, seconds) = row.time.split_once(':').expect("TIME m:ss");
        assert!(minutes.parse::<u64>().is_ok() && seconds.len() == 2);
    }
    let row = |pid: Pid| table.rows.iter().find(|r| r.pid == pid).unwrap();
    assert!(
        row(busy).stat.starts_with('R'),
        "busy STAT {}",
        row(busy).stat
    );
    assert!(
        row(idle).stat.starts_with('S'),
        "idle STAT {}",
        row(idle).stat
    );
    assert!(row(hog).mem > 5.0, "48 MiB of 512 MiB: {}", row(hog).mem);

    // --sort mem: descending RSS; --limit.
    let by_mem = ps(&service, &[prefix, "--sort", "mem"]);
    assert_eq!(by_mem.rows[0].pid, hog);
    assert!(
        by_mem.rows.windows(2).all(|w| w[0].rss_kb >= w[1].rss_kb),
        "{by_mem:#?}"
    );
    let limited = ps(&service, &[prefix, "--sort", "mem", "--limit", "2"]);
    assert_eq!(limited.rows.len(), 2, "{limited:#?}");
    assert_eq!(limited.rows[0].pid, hog);
    let one = ps(
        &service,
        &[prefix, "--sort", "cpu", "--limit", "1", "--interval", "1s"],
    );
    assert_eq!(pids_of(&one), [busy]);

    // The cgroup path as the container.
    let by_path = ps(&service, &[&c.path]);
    assert!(by_path.summary.starts_with(&c.path));
    let mut pids = pids_of(&by_path);
    assert!(pids.is_sorted(), "by pid without --sort: {pids:?}");
    pids.sort_unstable();
    assert_eq!(pid_set(&pids), pid_set(&[busy, idle, hog]));
}

/// Without a memory limit, %MEM is of the host's memory (MemTotal).
#[test]
fn ps_memory_of_the_host_without_a_limit() {
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]);
    let hog = spawn_memory_hog(&cg, &c, 64);
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &[hog, idle]);
    let host = service.get("/api/v2/host").json();
    let total = mem_total_bytes();
    assert_eq!(host["memory_total_bytes"], total, "/api/v2/host memory");

    let table = ps(&service, &[&id[..12], "--sort", "mem"]);
    assert!(
        table
            .summary
            .ends_with(&format!("of {} MiB (host)", total >> 20)),
        "summary: {}",
        table.summary
    );
    assert_eq!(pids_of(&table), [hog, idle]);
    for row in &table.rows {
        assert_mem_percent(row, total, "of the host");
    }
    assert!(table.rows[0].mem >= 0.1, "{:?}", table.rows[0]);
}

/// Unknown containers fail clearly; `top` prints one table per refresh; `health` is 0 against
/// a healthy service and non-zero against a closed port.
#[test]
fn ps_errors_top_and_health() {
    let cg = TestCgroup::new();
    let id = fresh_id(&random_hex(12));
    let c = cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]);
    let pids = [
        cg.spawn(&[&c], spawn::sleeper()),
        cg.spawn(&[&c], spawn::sleeper()),
    ];
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &pids);
    let url = url(&service);

    let unknown = random_hex(16);
    let ran = companion(&["ps", &unknown, "--url", &url]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(
        ran.stderr.contains("no container") && ran.stderr.contains(&unknown),
        "a clear message: {ran:?}"
    );
    assert!(ran.stdout.is_empty(), "{ran:?}");
    let path = format!("/docker/{}", fresh_id(&random_hex(12)));
    let ran = companion(&["ps", &path, "--url", &url]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(
        ran.stderr.contains("no container") && ran.stderr.contains(&path),
        "a clear message: {ran:?}"
    );

    let ran = companion(&[
        "top",
        &id[..12],
        "--iterations",
        "2",
        "--refresh",
        "200ms",
        "--url",
        &url,
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let screens: Vec<&str> = ran.stdout.split("\x1b[H\x1b[2J").skip(1).collect();
    assert_eq!(screens.len(), 2, "two refreshes: {:?}", ran.stdout);
    for screen in screens {
        let table = parse_table(screen);
        assert_eq!(table.header, HEADER);
        assert_eq!(pid_set(&pids_of(&table)), pid_set(&pids));
    }

    // A loaded machine can make the service stale (503) for a moment: then the client must say
    // so and fail; it must succeed once the service is healthy.
    let ran = service.wait_until("companion health to pass", service.patience() * 2, |s| {
        let ran = companion(&["health", "--url", &url]);
        let health: Value = serde_json::from_str(ran.stdout.trim())
            .unwrap_or_else(|e| panic!("health prints the /healthz JSON ({e}): {ran:?}"));
        match (ran.code, health["status"].as_str()) {
            (Some(0), Some("ok")) => Ok(ran),
            (Some(code), Some("stale")) if code != 0 => {
                assert!(ran.stderr.contains("503"), "{ran:?}");
                Err(format!("stale: {ran:?} ({})", s.period.as_secs_f64()))
            }
            _ => panic!("exit status and /healthz disagree: {ran:?}"),
        }
    });
    assert!(ran.stderr.is_empty(), "{ran:?}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let ran = companion(&["health", "--url", &closed]);
    assert!(ran.code.is_some_and(|c| c != 0), "{ran:?}");
    assert!(!ran.stderr.trim().is_empty(), "says why: {ran:?}");
}
