//! How containers and processes are named: v1 `cpu` and unified hierarchies, odd names, threads.

use super::*;

both_trackers!(
    naming_v1_cpu,
    naming_unified,
    odd_names_and_short_cmdline,
    threads_are_not_processes
);

/// Container names on the v1 `cpu` hierarchy: Docker, systemd, Kubernetes, odd characters;
/// exact match only; other hierarchies do not name the container.
fn naming_v1_cpu(tracker: Tracker) {
    let cg = TestCgroup::new();
    let id = unique_id();
    // A pod uid as systemd escapes it (dashes become underscores), carrying the id's marker.
    let uid = format!(
        "{}_{}_{}_{}_{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    let docker = cg.container_at(&format!("/docker/{}", unique_id()), &[Hierarchy::Cpu]);
    let systemd = cg.container_at(
        &format!("/system.slice/docker-{}.scope", unique_id()),
        &[Hierarchy::Cpu],
    );
    let pod = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice");
    let k8s = cg.container_at(
        &format!("{pod}/cri-containerd-{}.scope", unique_id()),
        &[Hierarchy::Cpu],
    );
    let odd = cg.container_named("svc@1:x+y_z-w.scope", &[Hierarchy::Cpu]);
    let parent = cg.container_named("parent", &[Hierarchy::Cpu]);
    let child = cg.container_named("parent/child", &[Hierarchy::Cpu]);
    // One process in four hierarchies under four different paths: only `cpu` names it.
    let in_cpu = cg.container_named("in-cpu", &[Hierarchy::Cpu]);
    let in_cpuacct = cg.container_named("in-cpuacct", &[Hierarchy::Cpuacct]);
    let in_cpuset = cg.container_named("in-cpuset", &[Hierarchy::Cpuset]);
    let in_unified = cg.container_named("in-unified", &[Hierarchy::Unified]);

    let mut expected = Vec::new();
    for c in [&docker, &systemd, &k8s, &odd, &parent, &child] {
        expected.push((c, cg.spawn(&[c], spawn::sleeper())));
    }
    let spread = cg.spawn(
        &[&in_cpuset, &in_cpuacct, &in_unified, &in_cpu],
        spawn::sleeper(),
    );
    expected.push((&in_cpu, spread));
    assert_eq!(
        proc::cgroup_path(spread, "cpuset").as_deref(),
        Some(in_cpuset.path.as_str())
    );

    let service = Service::with_tracker(tracker, &[]);
    for (c, pid) in &expected {
        service.wait_listed(c, &[*pid]);
        let snapshot = service.snapshots(&c.path, "").pop().unwrap();
        assert_eq!(api::processes(&snapshot)[0]["cgroup"], c.path.as_str());
    }
    // Parents list nothing of their children; other hierarchies name no container.
    for path in [
        pod.as_str(),
        "/kubepods.slice",
        in_cpuacct.path.as_str(),
        in_cpuset.path.as_str(),
        in_unified.path.as_str(),
    ] {
        assert_eq!(service.pids(path), None, "{path} must be not found");
    }
    // The same with the naming forced to v1-cpu.
    drop(service);
    let service = Service::with_tracker(tracker, &["--cgroup-hierarchy", "v1-cpu"]);
    service.wait_listed(&in_cpu, &[spread]);
    assert_eq!(service.pids(&in_cpuset.path), None);
    assert_eq!(service.pids(&in_unified.path), None);
}

/// `--cgroup-hierarchy unified`: the v2 path names the container, even on a hybrid host.
fn naming_unified(tracker: Tracker) {
    let cg = TestCgroup::new();
    let v2 = cg.container(&[Hierarchy::Unified]);
    let v1 = cg.container(&[Hierarchy::Cpu]);
    let v2_only = cg.container(&[Hierarchy::Unified]);
    let v1_only = cg.container(&[Hierarchy::Cpu]);
    let parent = cg.container_named("parent", &[Hierarchy::Unified]);
    let child = cg.container_named("parent/child", &[Hierarchy::Unified]);
    let both = cg.spawn(&[&v1, &v2], spawn::sleeper());
    let only_v2 = cg.spawn(&[&v2_only], spawn::sleeper());
    let only_v1 = cg.spawn(&[&v1_only], spawn::sleeper());
    let in_parent = cg.spawn(&[&parent], spawn::sleeper());
    let in_child = cg.spawn(&[&child], spawn::sleeper());
    let service = Service::with_tracker(tracker, &["--cgroup-hierarchy", "unified"]);
    service.wait_listed(&v2, &[both]);
    service.wait_listed(&v2_only, &[only_v2]);
    service.wait_listed(&parent, &[in_parent]);
    service.wait_listed(&child, &[in_child]);
    let snapshot = service.snapshots(&v2.path, "").pop().unwrap();
    assert_eq!(api::processes(&snapshot)[0]["cgroup"], v2.path.as_str());
    assert_eq!(service.pids(&v1.path), None, "the v1 path names nothing");
    assert_eq!(service.pids(&v1_only.path), None);
    // A process only in a v1 cgroup is at the v2 root here: a host process, never listed.
    assert_eq!(
        proc::cgroup_path(only_v1, "").as_deref(),
        Some(proc::cgroup_path(std::process::id(), "").unwrap().as_str())
    );
}

/// A name with a newline and `) (`, a name that is not UTF-8, a one-character command line.
fn odd_names_and_short_cmdline(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let other = cg.container(&[Hierarchy::Cpu]);
    let dir = cg.temp_dir();
    let (weird_cmd, weird_path) = spawn::weird_name_sleeper(&dir);
    let weird = cg.spawn(&[&c], weird_cmd);
    let (latin_cmd, _) = spawn::named_sleeper(&dir, b"x\xffy");
    let latin = cg.spawn(&[&c], latin_cmd);
    let short = cg.spawn(&[&c], spawn::one_char_cmdline());
    let normal = cg.spawn(&[&other], spawn::sleeper());
    assert_eq!(proc::cmdline(short).as_deref(), Some("c"));

    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[weird, latin, short]);
    let snapshot = service.snapshots(&c.path, "").pop().unwrap();

    let w = api::find(&snapshot, weird).unwrap();
    assert_eq!(
        w["stat"]["comm"], "(a) (b\nc)",
        "comm between the first ( and the last )"
    );
    assert_eq!(
        w["stat"]["state"], "S",
        "fields after the comm are parsed right"
    );
    assert_eq!(w["stat"]["ppid"], u64::from(std::process::id()));
    assert_eq!(
        w["stat"]["starttime"],
        proc::stat_field(weird, 22).unwrap().parse::<u64>().unwrap()
    );
    assert_eq!(
        w["status"]["Name"], "a) (b\nc",
        "status.Name is the real name (the kernel's escaping undone), as stat.comm shows it"
    );
    assert_eq!(
        w["cmdline"],
        format!("{} 1000", weird_path.display()).as_str()
    );

    let l = api::find(&snapshot, latin).unwrap();
    let comm = l["stat"]["comm"].as_str().unwrap();
    assert!(
        comm.starts_with("(x") && comm.ends_with("y)") && comm.contains('\u{fffd}'),
        "a non-UTF-8 name is replaced, not dropped: {comm:?}"
    );
    assert_eq!(l["stat"]["state"], "S");

    let s = api::find(&snapshot, short).unwrap();
    assert_eq!(
        s["cmdline"], "c",
        "a single one-character argument is listed"
    );

    // The service keeps serving, and serves the right data.
    assert_eq!(service.healthz()["status"], "ok");
    for _ in 0..3 {
        assert_eq!(service.pids(&other.path), Some(pid_set(&[normal])));
        assert_eq!(service.pids(&c.path), Some(pid_set(&[weird, latin, short])));
        service.wait_samples(1);
    }
}

/// Only thread-group leaders are listed; threads never appear as processes.
fn threads_are_not_processes(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let before = cg.spawn(&[&c], spawn::threaded(4));
    let service = Service::with_tracker(tracker, &[]);
    let after = cg.spawn(&[&c], spawn::threaded(4));
    let tids_before = wait_threads(before, 5);
    let tids_after = wait_threads(after, 5);
    let all_threads_started = SystemTime::now();
    service.wait_listed(&c, &[before, after]);
    service.wait_samples(4);
    let snapshots = service.snapshots(&c.path, "count=3");
    for snapshot in &snapshots {
        let complete = api::timestamp(snapshot) > all_threads_started;
        for p in api::processes(snapshot) {
            let pid = api::pid(p);
            assert_eq!(proc::tgid(pid), Some(pid), "listed pid {pid} is a thread");
            if complete {
                assert_eq!(p["status"]["Threads"], 5);
                assert_eq!(p["stat"]["num_threads"], 5);
            }
        }
        let listed = api::pids(snapshot);
        for tid in tids_before.iter().chain(&tids_after) {
            if *tid != before && *tid != after {
                assert!(!listed.contains(tid), "thread {tid} listed as a process");
            }
        }
    }
    assert!(api::timestamp(&snapshots[0]) > all_threads_started);
}
