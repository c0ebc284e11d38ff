//! Least privilege, hidden command-line arguments and private cgroup namespaces.

use super::*;

both_trackers!(
    least_privilege,
    private_cgroup_namespace_names_containers_as_the_host
);

/// `--cmdline argv0` and `none`: a process with a secret argument is listed, and the secret is in
/// no response. The same check on `--cmdline full` finds the secret (the check works).
/// Without the feature: the secret is in the v1.0 and v2 answers.
#[test]
fn cmdline_argv0_and_none_keep_arguments_out_of_responses() {
    let cg = TestCgroup::new();
    let id = unique_id();
    let c = cg.container_named(&format!("docker/{id}"), &[Hierarchy::Cpu]);
    let secret = secret();
    let mut command = spawn::python_code("import time; time.sleep(1000)");
    command.arg(format!("--password={secret}"));
    let pid = cg.spawn(&[&c], command);
    let program = spawn::python().to_str().unwrap().to_owned();

    for (mode, tracker, shown) in [
        ("full", Tracker::Procfs, None),
        ("argv0", Tracker::Ebpf, Some(program.as_str())),
        ("none", Tracker::Procfs, Some("")),
        ("argv0", Tracker::Procfs, Some(program.as_str())),
    ] {
        let service = Service::with_tracker(
            tracker,
            &["--cmdline", mode, "--metrics-top-processes", "1000"],
        );
        service.wait_listed(&c, &[pid]);
        let summary = wait_inventory(&service, &c.path);
        assert_eq!(summary["id"], id.as_str(), "{summary}");
        let snapshot = service.snapshots(&c.path, "").pop().unwrap();
        let cmdline = api::find(&snapshot, pid).unwrap()["cmdline"].clone();
        let bodies: Vec<(String, String)> = [
            c.api_path(),
            format!("{}?count=3&sort=cpu&limit=5", c.api_path()),
            "/api/v2/containers".to_owned(),
            format!("/api/v2/containers/{id}"),
            format!("/api/v2/containers/{id}/processes"),
            "/metrics".to_owned(),
        ]
        .into_iter()
        .map(|path| {
            let r = service.get(&path);
            assert_eq!(r.status, 200, "--cmdline {mode} {path}: {}", r.text());
            (path, r.text())
        })
        .collect();
        let leaks: Vec<&str> = bodies
            .iter()
            .filter(|(_, body)| body.contains(&secret))
            .map(|(path, _)| path.as_str())
            .collect();
        match shown {
            None => {
                assert!(
                    cmdline.as_str().is_some_and(|c| c.ends_with(&secret)),
                    "--cmdline full shows {cmdline}"
                );
                assert!(
                    leaks.contains(&c.api_path().as_str()),
                    "--cmdline full: the secret should be in the v1.0 answer"
                );
            }
            Some(shown) => {
                assert_eq!(cmdline, shown, "--cmdline {mode} ({tracker:?})");
                assert!(
                    leaks.is_empty(),
                    "--cmdline {mode} ({tracker:?}): the secret argument is in {leaks:?}"
                );
            }
        }
    }
}

const CAP_SYS_PTRACE: u64 = 1 << 19;

const CAP_BPF: u64 = 1 << 39;

/// Kernels before 6.5 check CAP_BPF on map reads: there the eBPF tracker keeps it.
fn kernel_before_6_5() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) < (6, 5)
}

/// After start every thread holds only CAP_SYS_PTRACE (effective, permitted, bounding) with
/// no-new-privileges, and no descriptor under /proc or /sys/fs/cgroup is open for writing.
/// Without the feature: the threads hold root's full capability sets, NoNewPrivs 0; a
/// descriptor opened for writing (a cgroup file, a proc file) fails the access-mode check.
fn least_privilege(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu, Hierarchy::Cpuacct, Hierarchy::Unified]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[pid]);
    // The inventory (cgroup files) and the metrics have run at least once.
    assert_eq!(service.get("/api/v2/containers").status, 200);
    assert_eq!(service.get("/metrics").status, 200);
    service.wait_samples(2);

    let allowed = if tracker == Tracker::Ebpf && kernel_before_6_5() {
        CAP_SYS_PTRACE | CAP_BPF
    } else {
        CAP_SYS_PTRACE
    };
    let tasks = proc::threads(service.pid());
    assert!(tasks.len() >= 3, "threads {tasks:?}");
    for tid in &tasks {
        let status = fs::read_to_string(format!("/proc/{}/task/{tid}/status", service.pid()))
            .expect("task status");
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no {key} in task {tid}"))
                .trim()
                .to_owned()
        };
        let caps = |key: &str| u64::from_str_radix(&field(key), 16).unwrap();
        let name = field("Name");
        for key in ["CapEff", "CapPrm"] {
            assert_eq!(
                caps(key) & !allowed,
                0,
                "thread {tid} ({name}): {key} {:#x}",
                caps(key)
            );
            assert_ne!(
                caps(key) & CAP_SYS_PTRACE,
                0,
                "thread {tid} ({name}): {key} lacks CAP_SYS_PTRACE"
            );
        }
        assert_eq!(
            caps("CapBnd") & !allowed,
            0,
            "thread {tid} ({name}): CapBnd {:#x}",
            caps("CapBnd")
        );
        assert_eq!(caps("CapInh"), 0, "thread {tid} ({name}): CapInh");
        assert_eq!(caps("CapAmb"), 0, "thread {tid} ({name}): CapAmb");
        assert_eq!(
            field("NoNewPrivs"),
            "1",
            "thread {tid} ({name}): NoNewPrivs"
        );
    }

    let fd_dir = format!("/proc/{}/fd", service.pid());
    let mut watched = Vec::new();
    for entry in fs::read_dir(&fd_dir).unwrap().flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        let target = target.to_string_lossy().into_owned();
        if !(target.starts_with("/proc") || target.starts_with("/sys/fs/cgroup")) {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", service.pid())) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .expect("flags in fdinfo");
        assert_eq!(
            flags & libc::O_ACCMODE as u32,
            libc::O_RDONLY as u32,
            "fd {fd} -> {target} is open for writing (flags {flags:o})"
        );
        watched.push(target);
    }
    // Not vacuous: the sampler keeps the files of the processes it samples open (those of
    // this test's process unless other sessions' processes used up its descriptor budget).
    assert!(
        watched.iter().any(|t| t.ends_with("/stat")),
        "no descriptor of a process's stat file is open: {} under /proc",
        watched.len()
    );
}

/// Started inside a private cgroup namespace rooted in a test cgroup, the service joins the
/// host's namespace and lists a container under its host path, as a service outside does.
/// Without the feature: the container is named relative to the namespace (`/../…`).
fn private_cgroup_namespace_names_containers_as_the_host(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container_named(
        &format!("docker/{}", unique_id()),
        &[Hierarchy::Cpu, Hierarchy::Cpuacct, Hierarchy::Unified],
    );
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let namespace_root = cg.container_named(
        "namespace-root",
        &[Hierarchy::Cpu, Hierarchy::Cpuacct, Hierarchy::Unified],
    );
    let moves: String = namespace_root
        .dirs
        .iter()
        .map(|(_, dir)| format!("echo $$ > {}; ", dir.join("cgroup.procs").display()))
        .collect();
    let script = format!("{moves}exec unshare --cgroup \"$0\" \"$@\"");
    let period = format!("{}ms", test_period().as_millis());
    let inside = Service::start_with(
        &["--tracker", tracker.name(), "--sample-period", &period],
        &StartOptions {
            wrapper: &["/bin/sh", "-c", &script],
            ..StartOptions::default()
        },
    );
    assert!(
        namespace_root.procs().contains(&inside.pid()),
        "the service is not in the namespace root cgroup"
    );
    let id = c.path.rsplit('/').next().unwrap();
    inside.wait_until(
        "the container under its host path",
        inside.patience(),
        |s| match s.pids(&c.path) {
            Some(pids) if pids == pid_set(&[pid]) => Ok(()),
            listed => {
                let containers = s.get("/api/v2/containers").json();
                let named: Vec<&str> = containers
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["path"].as_str())
                    .filter(|p| p.contains(id))
                    .collect();
                Err(format!(
                    "{} lists {listed:?}; the container is named {named:?}",
                    c.path
                ))
            }
        },
    );
    let log = inside.log_text();
    assert!(
        log.contains("joined the host's cgroup namespace"),
        "the service did not say it joined the host's cgroup namespace:\n{log}"
    );
    let outside = Service::with_tracker(tracker, &[]);
    outside.wait_listed(&c, &[pid]);
    for service in [&inside, &outside] {
        let snapshot = service.snapshots(&c.path, "").pop().unwrap();
        assert_eq!(
            api::find(&snapshot, pid).unwrap()["cgroup"],
            c.path.as_str()
        );
        wait_inventory(service, &c.path);
        let containers = service.get("/api/v2/containers").json();
        // Only the host path: no `/..`-relative name of the same container.
        let paths: Vec<&str> = containers
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["path"].as_str())
            .filter(|p| p.contains(cg.prefix()) || p.contains(".."))
            .filter(|p| !p.ends_with("/namespace-root"))
            .collect();
        assert_eq!(paths, [c.path.as_str()]);
    }
}
