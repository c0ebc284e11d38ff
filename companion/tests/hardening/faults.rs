//! Faults: unreadable, malformed and vanishing proc files, removed cgroups, bad proc roots, a port
//! in use, a failing eBPF side, processes vanishing mid-read.

use super::*;

both_trackers!(
    removed_container_answers_not_found,
    processes_vanishing_mid_read
);

/// A fake proc root: the host's `cgroups`, `meminfo` and `stat`, and process directories made
/// from /proc/self with their pid and container changed.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn new(root: PathBuf) -> FakeProc {
        for name in ["cgroups", "meminfo", "stat"] {
            fs::write(
                root.join(name),
                fs::read(Path::new("/proc").join(name)).unwrap(),
            )
            .unwrap();
        }
        FakeProc { root }
    }

    fn dir(&self, pid: Pid) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// Adds process `pid` in `container` with command line `args`.
    fn add(&self, pid: Pid, container: &str, args: &[&str]) {
        let dir = self.dir(pid);
        fs::create_dir(&dir).unwrap();
        let me = std::process::id();
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let stat = stat.replacen(&format!("{me} "), &format!("{pid} "), 1);
        fs::write(dir.join("stat"), stat).unwrap();
        let status: String = fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .map(|line| match line.split_once(':') {
                Some(("Pid" | "Tgid", _)) => {
                    format!("{}:\t{pid}\n", line.split(':').next().unwrap())
                }
                _ => format!("{line}\n"),
            })
            .collect();
        fs::write(dir.join("status"), status).unwrap();
        let cgroup: String = fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, ':');
                let (id, controllers) = (parts.next().unwrap(), parts.next().unwrap());
                if controllers.split(',').any(|c| c == "cpu") {
                    format!("{id}:{controllers}:{container}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert!(cgroup.contains(container), "this host has no cpu hierarchy");
        fs::write(dir.join("cgroup"), cgroup).unwrap();
        let mut cmdline = Vec::new();
        for arg in args {
            cmdline.extend_from_slice(arg.as_bytes());
            cmdline.push(0);
        }
        fs::write(dir.join("cmdline"), cmdline).unwrap();
    }

    fn chmod(&self, pid: Pid, file: &str, mode: u32) {
        fs::set_permissions(self.dir(pid).join(file), fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// The listed processes of a container as raw JSON (no contract checks: a process with an
/// unreadable status breaks `stat.pid == status.Pid` on purpose).
fn raw_processes(service: &Service, container: &str) -> Result<Vec<Value>, String> {
    let r = service.get(&format!(
        "/api/v1.0{}/processes",
        http::encode_path(container)
    ));
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    let value = r.json();
    Ok(value.as_array().unwrap().last().unwrap()["processes"]
        .as_array()
        .unwrap()
        .clone())
}

/// `--proc-root` at a fake tree: a process whose `status` is unreadable (mode 000; the
/// service has no CAP_DAC_OVERRIDE after start) is listed with a zeroed status; one whose
/// `cmdline` is unreadable is listed with cmdline ""; one with a malformed `stat` is left out;
/// a removed process directory disappears while the container keeps answering.
/// Without the feature: the unreadable files hide their processes (or fail the container).
#[test]
fn fake_proc_root_with_unreadable_malformed_and_vanishing_files() {
    let cg = TestCgroup::new();
    let fake = FakeProc::new(cg.temp_dir());
    let container = format!("/docker/{}", unique_id());
    let (normal, no_status, no_cmdline, vanishing) = (4_000_001, 4_000_002, 4_000_003, 4_000_004);
    let (bad_number, no_parentheses) = (4_000_005, 4_000_006);
    for pid in [
        normal,
        no_status,
        no_cmdline,
        vanishing,
        bad_number,
        no_parentheses,
    ] {
        fake.add(pid, &container, &["fake", &format!("--n={pid}")]);
    }
    fake.chmod(no_status, "status", 0o000);
    fake.chmod(no_cmdline, "cmdline", 0o000);
    // Malformed stat files (fewer fields than this kernel's is not malformed: old kernels).
    let stat = fs::read_to_string(fake.dir(bad_number).join("stat")).unwrap();
    let (head, tail) = stat.rsplit_once(") ").unwrap();
    let mut fields: Vec<&str> = tail.split(' ').collect();
    fields[1] = "not-a-ppid";
    fs::write(
        fake.dir(bad_number).join("stat"),
        format!("{head}) {}", fields.join(" ")),
    )
    .unwrap();
    let stat = fs::read_to_string(fake.dir(no_parentheses).join("stat")).unwrap();
    fs::write(
        fake.dir(no_parentheses).join("stat"),
        stat.replace(['(', ')'], ""),
    )
    .unwrap();
    let service = Service::with_tracker(
        Tracker::Procfs,
        &["--proc-root", fake.root.to_str().unwrap()],
    );
    let listed =
        |service: &Service| -> Result<Vec<Value>, String> { raw_processes(service, &container) };
    let pids_of =
        |processes: &[Value]| -> BTreeSet<Pid> { processes.iter().map(api::pid).collect() };

    let processes = service.wait_until("the fake processes", service.patience(), |s| {
        let processes = listed(s)?;
        let pids = pids_of(&processes);
        if pids == pid_set(&[normal, no_status, no_cmdline, vanishing]) {
            Ok(processes)
        } else {
            Err(format!("listed {pids:?}"))
        }
    });
    let by_pid = |pid: Pid| processes.iter().find(|p| api::pid(p) == pid).unwrap();
    let p = by_pid(normal);
    api::check_process(p).unwrap();
    assert_eq!(p["cmdline"], format!("fake --n={normal}"));
    assert_eq!(p["status"]["Pid"], u64::from(normal));
    assert!(p["status"]["VmRSS"].as_u64().unwrap() > 0);

    let p = by_pid(no_status);
    assert_eq!(p["cmdline"], format!("fake --n={no_status}"));
    assert_eq!(p["stat"]["pid"], u64::from(no_status));
    for (key, value) in p["status"].as_object().unwrap() {
        let zero = match value {
            Value::Number(n) => n.as_u64() == Some(0) || n.as_i64() == Some(0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        assert!(
            zero,
            "unreadable status: {key} = {value}, expected a zero value"
        );
    }

    let p = by_pid(no_cmdline);
    api::check_process(p).unwrap();
    assert_eq!(p["cmdline"], "");
    assert_eq!(p["status"]["Pid"], u64::from(no_cmdline));

    // Gone between two samples.
    fs::remove_dir_all(fake.dir(vanishing)).unwrap();
    service.wait_until("the removed process gone", service.patience(), |s| {
        let pids = pids_of(&listed(s)?);
        if pids == pid_set(&[normal, no_status, no_cmdline]) {
            Ok(())
        } else {
            Err(format!("listed {pids:?}"))
        }
    });
    service.wait_samples(3);
    let pids = pids_of(&listed(&service).expect("the container still answers"));
    assert_eq!(pids, pid_set(&[normal, no_status, no_cmdline]));
    assert_eq!(service.healthz()["status"], "ok");
}

/// A container whose processes exit and whose cgroup is removed while a client queries it in a
/// loop: 200s, then `500 Container … not found`, nothing else; the service stays healthy.
/// Without the feature (removed cgroups handled): another status (404, 503, a dropped
/// connection) or a crash.
fn removed_container_answers_not_found(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu, Hierarchy::Cpuacct, Hierarchy::Unified]);
    let pids: Vec<Pid> = (0..3).map(|_| cg.spawn(&[&c], spawn::sleeper())).collect();
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &pids);

    let stop = AtomicBool::new(false);
    let not_found = format!("Container {} not found", c.path);
    let answers: Vec<(u16, String)> = thread::scope(|scope| {
        let querier = scope.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http::request(service.addr, "GET", &c.api_path(), "")
                    .unwrap_or_else(|e| panic!("the query failed: {e}"));
                if r.status == 200 {
                    let snapshots = api::check_answer(&r, &c.path, "");
                    assert!(!api::processes(snapshots.last().unwrap()).is_empty());
                }
                answers.push((r.status, r.text()));
                thread::sleep(Duration::from_millis(5));
            }
            answers
        });
        for &pid in &pids {
            thread::sleep(service.period);
            cg.kill(pid);
        }
        wait_for("not found", service.patience(), || {
            match service.pids(&c.path) {
                None => Ok(()),
                Some(p) => Err(format!("listed {p:?}")),
            }
        });
        for (_, dir) in &c.dirs {
            wait_for("removing the cgroup", Duration::from_secs(5), || {
                fs::remove_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))
            });
        }
        service.wait_samples(4);
        stop.store(true, Ordering::Relaxed);
        querier.join().unwrap()
    });
    let first_500 = answers
        .iter()
        .position(|(status, _)| *status != 200)
        .expect("no answer after the container went");
    assert!(first_500 > 0, "no 200 before the processes exited");
    for (status, text) in &answers[first_500..] {
        assert_eq!(
            (*status, text.as_str()),
            (500, not_found.as_str()),
            "after the container went"
        );
    }
    assert_alive_and_sampling(&service);
    assert!(
        service
            .get("/api/v2/containers")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .all(|summary| summary["path"] != c.path.as_str())
    );
}

/// A proc root that does not exist, or is an empty directory, refuses to start and names it.
/// Without the feature: the service starts and serves an empty host.
#[test]
fn bad_proc_roots_refuse_to_start() {
    let cg = TestCgroup::new();
    let missing = format!("/nonexistent-{}", unique_id());
    let empty = cg.temp_dir();
    for root in [missing.as_str(), empty.to_str().unwrap()] {
        let exit = run_to_exit(&["--tracker", "procfs", "--proc-root", root], REFUSAL);
        assert!(exit.code().is_some_and(|c| c != 0), "{root}: {exit:?}");
        assert!(
            exit.stderr.contains(root) && exit.stderr.contains("--proc-root"),
            "{root}: the message does not name the proc root:\n{}",
            exit.stderr
        );
    }
}

/// A port in use: non-zero exit, "cannot listen on …".
/// Without the feature: a hang or a panic instead of a clear refusal.
#[test]
fn port_in_use_refuses_to_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let exit = run_to_exit(&["--tracker", "procfs", "--port", &port], REFUSAL);
    assert!(exit.code().is_some_and(|c| c != 0), "{exit:?}");
    assert!(
        exit.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        exit.stderr
    );
}

/// `--test-fail-ebpf-after 3`: the eBPF side fails, /healthz says `degraded` with tracker
/// `procfs` and a reason, and the API keeps following the container.
/// Without the feature: the service stops sampling (stale) or exits.
#[test]
fn ebpf_failure_falls_back_to_the_proc_scan() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let before = cg.spawn(&[&c], spawn::sleeper());
    let period = format!("{}ms", test_period().as_millis());
    let service = Service::start(&[
        "--tracker",
        "ebpf",
        "--sample-period",
        &period,
        "--reconcile-every",
        "1h",
        "--test-fail-ebpf-after",
        "3",
    ]);
    let health = service.wait_until("degraded", service.patience(), |s| {
        let health = s.health();
        if health["degraded"].is_string() {
            Ok(health)
        } else {
            Err(format!("{health}"))
        }
    });
    // `degraded`, or `stale` (which wins) while a loaded host makes a sample overrun.
    assert!(
        health["status"] == "degraded" || health["status"] == "stale",
        "{health}"
    );
    assert_eq!(health["tracker"], "procfs", "{health}");
    assert!(
        health["degraded"].as_str().is_some_and(|r| !r.is_empty()),
        "no reason: {health}"
    );
    service.wait_listed(&c, &[before]);
    let after = cg.spawn(&[&c], spawn::sleeper());
    service.wait_listed(&c, &[before, after]);
    cg.kill(before);
    service.wait_listed(&c, &[after]);
    // `stale` wins over `degraded` while a loaded host makes a sample overrun.
    let health = service.health();
    assert!(
        health["status"] == "degraded" || health["status"] == "stale",
        "{health}"
    );
    assert_eq!(health["tracker"], "procfs", "{health}");
    assert!(health["degraded"].is_string(), "{health}");
}

/// Hundreds of short-lived processes a second in a container (most live 10–20 ms, so they exit
/// between the tracker's refresh and the reads, or between two reads; some live half a second,
/// so they are listed), polled for 5 s or more: only 200s (or the specified 500 when no process
/// is listed), every listed process consistent (stat.pid == status.Pid == status.Tgid, memory,
/// cgroup the container).
/// Without the feature: a process read half before and half after its exit is listed with a
/// zeroed status (Pid 0), or the request fails.
fn processes_vanishing_mid_read(tracker: Tracker) {
    let _heavy = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu, Hierarchy::Cpuacct, Hierarchy::Unified]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    // Sampling ten times as often as the other tests: more reads land on exiting processes.
    let period = format!("{}ms", (test_period() / 10).as_millis().max(20));
    let service = Service::with_tracker(tracker, &["--sample-period", &period]);
    service.wait_listed(&c, &[anchor]);
    let counters = cg.temp_dir();
    let mut loops = vec![anchor];
    for n in 0..3 {
        let script = format!(
            "i=0; while :; do /bin/sleep 0.01 & /bin/sleep 0.02 & /bin/true; /bin/true; wait; \
             i=$((i+1)); echo $i > {}/{n}; done",
            counters.display()
        );
        loops.push(cg.spawn(&[&c], spawn::shell(&script)));
    }
    for script in [
        "while :; do /bin/sleep 0.5 & /bin/sleep 1 & wait; done",
        "while :; do /bin/sleep 0.7 & /bin/sleep 1.4 & wait; done",
    ] {
        loops.push(cg.spawn(&[&c], spawn::shell(script)));
    }
    let not_found = format!("Container {} not found", c.path);
    let began = Instant::now();
    let polling = Duration::from_secs(5).max(service.period * 6);
    let (mut answers, mut seen) = (0, BTreeSet::new());
    while began.elapsed() < polling {
        let r = service.get(&c.api_path());
        match r.status {
            200 => {
                // check_answer: stat.pid == status.Pid, cgroup == the container, unique pids.
                let snapshots = api::check_answer(&r, &c.path, "");
                for process in api::processes(snapshots.last().unwrap()) {
                    assert_eq!(process["status"]["Tgid"], process["stat"]["pid"]);
                    assert!(process["status"]["VmRSS"].as_u64().unwrap() > 0);
                    seen.insert(api::pid(process));
                }
            }
            500 => assert_eq!(r.text(), not_found),
            other => panic!("status {other}: {}", r.text()),
        }
        answers += 1;
    }
    let elapsed = began.elapsed();
    let iterations: u64 = (0..3)
        .filter_map(|n| fs::read_to_string(counters.join(n.to_string())).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .sum();
    let churned: BTreeSet<Pid> = seen.difference(&pid_set(&loops)).copied().collect();
    eprintln!(
        "{answers} answers in {elapsed:?}; ~{:.0} short-lived processes a second; {} of them listed",
        (iterations * 4) as f64 / elapsed.as_secs_f64(),
        churned.len()
    );
    assert!(
        churned.len() >= 2,
        "only {} short-lived processes ever listed: the churn was not seen",
        churned.len()
    );
    assert_alive_and_sampling(&service);
}
