//! The eBPF tracker (`--tracker ebpf`) end to end: forks, execs, exits and cgroup moves followed
//! from kernel events, churn, lost events and their repair, and agreement with the /proc scan.
//! BPF works on the test hosts (root): a failure to load is a failure, never a skip.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use companion_tests::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, cpu_heavy, proc, spawn,
    wait_children, wait_for, wait_threads,
};

/// Reconciliation only when events are lost, never on schedule during a test: what the tests see
/// comes from the events.
const NO_SCHEDULED_RECONCILE: [&str; 2] = ["--reconcile-every", "1h"];

fn ebpf(extra: &[&str]) -> Service {
    let mut args = NO_SCHEDULED_RECONCILE.to_vec();
    args.extend_from_slice(extra);
    Service::with_tracker(Tracker::Ebpf, &args)
}

fn set(pids: &[Pid]) -> BTreeSet<Pid> {
    pids.iter().copied().collect()
}

/// Polls until `check` holds and returns how many samples were published meanwhile (an upper
/// bound of the samples it took).
fn samples_until(service: &Service, what: &str, mut check: impl FnMut(&Service) -> bool) -> u64 {
    let start = service.samples_taken();
    service.wait_until(what, service.patience(), |s| {
        if check(s) {
            Ok(())
        } else {
            Err(format!("{} samples so far", s.samples_taken() - start))
        }
    });
    service.samples_taken() - start
}

/// "By the next sample or two", plus one for the polling race.
const MAX_SAMPLES: u64 = 3;

fn listed_in(service: &Service, container: &Container) -> BTreeSet<Pid> {
    service.pids(&container.path).unwrap_or_default()
}

#[test]
fn exec_inside_a_container_appears_by_the_next_samples() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = ebpf(&[]);
    assert_eq!(service.pids(&c.path), None);

    // Moved in between fork and exec (an attach, then an exec).
    let direct = cg.spawn(&[&c], spawn::sleeper());
    let took = samples_until(&service, "the exec'd process", |s| {
        listed_in(s, &c).contains(&direct)
    });
    assert!(took <= MAX_SAMPLES, "listed after {took} samples");

    // A shell that moves itself in, then execs: the command line shown is the new program's.
    let procs = c.main_dir().join("cgroup.procs");
    let script = format!("echo $$ > {}; exec /bin/sleep 1001", procs.display());
    let moved_then_exec = cg.spawn_outside(spawn::shell(&script));
    let took = samples_until(&service, "the shell's exec", |s| {
        let snapshot = s.snapshots(&c.path, "").pop().unwrap();
        api::find(&snapshot, moved_then_exec).is_some_and(|p| p["cmdline"] == "/bin/sleep 1001")
    });
    assert!(
        took <= MAX_SAMPLES + 1,
        "listed with its new cmdline after {took} samples"
    );

    // A child forked and exec'd by a process already inside.
    let parent = cg.spawn(&[&c], spawn::shell("/bin/sleep 1002; :"));
    let child = wait_children(parent, 1)[0];
    let took = samples_until(&service, "the forked and exec'd child", |s| {
        let snapshot = s.snapshots(&c.path, "").pop().unwrap();
        api::find(&snapshot, child).is_some_and(|p| p["cmdline"] == "/bin/sleep 1002")
    });
    assert!(took <= MAX_SAMPLES, "listed after {took} samples");
    assert_eq!(
        listed_in(&service, &c),
        set(&[direct, moved_then_exec, parent, child])
    );
}

#[test]
fn forked_child_that_never_execs_appears() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = ebpf(&[]);
    let parent = cg.spawn(&[&c], spawn::forking_parent());
    let child = wait_children(parent, 1)[0];
    let took = samples_until(&service, "parent and child", |s| {
        listed_in(s, &c) == set(&[parent, child])
    });
    assert!(took <= MAX_SAMPLES, "listed after {took} samples");
    let snapshot = service.snapshots(&c.path, "").pop().unwrap();
    let (p, k) = (
        api::find(&snapshot, parent).unwrap(),
        api::find(&snapshot, child).unwrap(),
    );
    assert_eq!(
        k["cmdline"], p["cmdline"],
        "the child shows its parent's command line"
    );
    assert_eq!(k["status"]["PPid"], u64::from(parent));
}

/// Moves between two containers, out to the root and back, in one hierarchy.
fn moves(hierarchy: Hierarchy, extra: &[&str]) {
    let cg = TestCgroup::new();
    let a = cg.container(&[hierarchy]);
    let b = cg.container(&[hierarchy]);
    // Anchors keep both containers listed, so "not in A" is an answer, not a 500.
    let anchor_a = cg.spawn(&[&a], spawn::sleeper());
    let anchor_b = cg.spawn(&[&b], spawn::sleeper());
    let service = ebpf(extra);
    let mover = cg.spawn(&[&a], spawn::sleeper());
    samples_until(&service, "the mover in A", |s| {
        listed_in(s, &a) == set(&[anchor_a, mover]) && listed_in(s, &b) == set(&[anchor_b])
    });

    cg.move_to(mover, &b);
    let took = samples_until(&service, "the mover in B, not in A", |s| {
        listed_in(s, &a) == set(&[anchor_a]) && listed_in(s, &b) == set(&[anchor_b, mover])
    });
    assert!(took <= MAX_SAMPLES, "moved after {took} samples");
    let snapshot = service.snapshots(&b.path, "").pop().unwrap();
    assert_eq!(
        api::find(&snapshot, mover).unwrap()["cgroup"],
        b.path.as_str()
    );

    // Out of every container: listed nowhere.
    cg.move_to_root(mover, hierarchy);
    let took = samples_until(&service, "the mover gone from B", |s| {
        listed_in(s, &b) == set(&[anchor_b]) && listed_in(s, &a) == set(&[anchor_a])
    });
    assert!(took <= MAX_SAMPLES, "left after {took} samples");

    // Back in from the root, then bounced B → A between two samples: it ends in A.
    cg.move_to(mover, &b);
    cg.move_to(mover, &a);
    let took = samples_until(&service, "the mover back in A", |s| {
        listed_in(s, &a) == set(&[anchor_a, mover]) && listed_in(s, &b) == set(&[anchor_b])
    });
    assert!(took <= MAX_SAMPLES, "back after {took} samples");

    // Its children follow it: a child forked after the move is in A too.
    let forker = cg.spawn(&[&b], spawn::forking_parent());
    let child = wait_children(forker, 1)[0];
    cg.move_to(forker, &a);
    samples_until(&service, "forker in A, child in B", |s| {
        listed_in(s, &a) == set(&[anchor_a, mover, forker])
            && listed_in(s, &b) == set(&[anchor_b, child])
    });
}

#[test]
fn moved_process_follows_v1_cpu_naming() {
    moves(Hierarchy::Cpu, &[]);
}

#[test]
fn moved_process_follows_unified_naming() {
    moves(Hierarchy::Unified, &["--cgroup-hierarchy", "unified"]);
}

/// v1 lets single threads move (`tasks`): the leader's cgroup is the process's container.
#[test]
fn single_thread_moves_follow_the_leader() {
    let cg = TestCgroup::new();
    let a = cg.container(&[Hierarchy::Cpu]);
    let b = cg.container(&[Hierarchy::Cpu]);
    let service = ebpf(&[]);
    let process = cg.spawn(&[&a], spawn::threaded(3));
    let tids = wait_threads(process, 4);
    samples_until(&service, "the process in A", |s| {
        listed_in(s, &a) == set(&[process])
    });

    let thread = *tids.iter().find(|&&t| t != process).unwrap();
    cg.move_thread(thread, &b, Hierarchy::Cpu);
    service.wait_samples(MAX_SAMPLES);
    assert_eq!(
        proc::cgroup_path(process, "cpu").as_deref(),
        Some(a.path.as_str())
    );
    assert_eq!(
        listed_in(&service, &a),
        set(&[process]),
        "a thread moved, not the process"
    );
    assert_eq!(
        service.pids(&b.path),
        None,
        "a lone thread is no process of B"
    );

    cg.move_thread(process, &b, Hierarchy::Cpu);
    assert_eq!(
        proc::cgroup_path(process, "cpu").as_deref(),
        Some(b.path.as_str())
    );
    let took = samples_until(&service, "the process in B after its leader moved", |s| {
        s.pids(&a.path).is_none() && listed_in(s, &b) == set(&[process])
    });
    assert!(took <= MAX_SAMPLES, "moved after {took} samples");
}

#[test]
fn exited_and_killed_processes_are_gone() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = ebpf(&[]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let exit_now = cg.temp_dir().join("exit");
    let short = cg.spawn(&[&c], spawn::exits_when_file_exists(&exit_now));
    let victim = cg.spawn(&[&c], spawn::sleeper());
    samples_until(&service, "all three", |s| {
        listed_in(s, &c) == set(&[anchor, short, victim])
    });
    cg.kill(victim);
    let took = samples_until(&service, "the killed one gone", |s| {
        listed_in(s, &c) == set(&[anchor, short])
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
    std::fs::write(&exit_now, "").unwrap();
    assert!(
        cg.wait_exit(short, Duration::from_secs(10)),
        "the short one exited by itself"
    );
    let took = samples_until(&service, "the exited one gone", |s| {
        listed_in(s, &c) == set(&[anchor])
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
    // The last one leaves: the container is not found any more.
    cg.kill(anchor);
    let took = samples_until(&service, "the container gone", |s| {
        s.pids(&c.path).is_none()
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
}

/// The API's sets for these containers equal the ground truth read from /proc now.
fn matches_ground_truth(service: &Service, containers: &[Container]) -> Result<(), String> {
    for c in containers {
        let truth = c.listable();
        let listed = listed_in(service, c);
        if listed != truth {
            let missing: Vec<_> = truth.difference(&listed).collect();
            let extra: Vec<_> = listed.difference(&truth).collect();
            return Err(format!("{}: missing {missing:?}, extra {extra:?}", c.path));
        }
    }
    Ok(())
}

/// Runs `rounds` × (`/bin/true`, a 1 ms `sleep` in the background) in each container, then
/// leaves two sleepers there (the shell itself and one child); returns when all are settled.
fn churn(cg: &TestCgroup, containers: &[Container], rounds: usize) {
    let script = format!(
        "i=0; while [ $i -lt {rounds} ]; do /bin/true; /bin/sleep 0.001 & i=$((i+1)); done; \
         wait; /bin/sleep 1000 & exec /bin/sleep 1000"
    );
    let shells: Vec<Pid> = containers
        .iter()
        .map(|c| cg.spawn(&[c], spawn::shell(&script)))
        .collect();
    wait_for("the churn to finish", Duration::from_secs(120), || {
        for (c, shell) in containers.iter().zip(&shells) {
            let procs = c.procs();
            let settled = procs.contains(shell)
                && procs.len() == 2
                && procs
                    .iter()
                    .all(|&p| proc::cmdline(p).as_deref() == Some("/bin/sleep 1000"));
            if !settled {
                return Err(format!("{}: {procs:?}", c.path));
            }
        }
        Ok(())
    });
}

/// Thousands of short-lived processes across 20 containers: afterwards the tracked set is
/// exactly the truth, the events were received, and the memory came back.
#[test]
fn churn_leaves_the_exact_set_and_no_growth() {
    let _quiet = cpu_heavy();
    const CONTAINERS: usize = 20;
    const ROUNDS: usize = 100;
    const HISTORY: u64 = 10;
    let cg = TestCgroup::new();
    let first: Vec<Container> = (0..CONTAINERS)
        .map(|_| cg.container(&[Hierarchy::Cpu]))
        .collect();
    let second: Vec<Container> = (0..CONTAINERS)
        .map(|_| cg.container(&[Hierarchy::Cpu]))
        .collect();
    let service = ebpf(&["--history", &HISTORY.to_string()]);
    // The baseline is the steady state: a full history.
    service.wait_history(HISTORY as usize);
    service.wait_samples(2);
    let before = service.health();
    let rss_before = service.vm_rss_kb();

    churn(&cg, &first, ROUNDS);
    service.wait_until("the API to match /proc", service.patience(), |s| {
        matches_ground_truth(s, &first)
    });
    let after = service.health();
    let received =
        after["events_received"].as_u64().unwrap() - before["events_received"].as_u64().unwrap();
    let processes = CONTAINERS * (2 * ROUNDS + 2);
    eprintln!(
        "churn: {processes} processes, {received} events, lost {}, repairs {}",
        after["events_lost"], after["repairs"]
    );
    assert!(
        received >= processes as u64 * 2,
        "{received} events for {processes} processes (a fork and an exit each at least): {after}"
    );

    // Memory: once the history no longer holds any sample of the churn, back near the start.
    // A second churn tells a one-time high-water mark from growth per churn.
    service.wait_samples(HISTORY + 1);
    let rss_first = service.vm_rss_kb();
    churn(&cg, &second, ROUNDS);
    service.wait_until("the API to match /proc", service.patience(), |s| {
        matches_ground_truth(s, &first)?;
        matches_ground_truth(s, &second)
    });
    service.wait_samples(HISTORY + 1);
    let rss_second = service.vm_rss_kb();
    // The host's other containers may have grown meanwhile: their processes' share of memory
    // (the average per tracked process at the start) is allowed on top of the margin.
    let tracked = |h: &serde_json::Value| h["tracked_processes"].as_u64().unwrap();
    let tracked_before = tracked(&before);
    let tracked_after = tracked(&service.health());
    let per_process = rss_before / tracked_before.max(1);
    let margin =
        (rss_before / 4).max(8 * 1024) + tracked_after.saturating_sub(tracked_before) * per_process;
    eprintln!(
        "service VmRSS: {rss_before} kB, {rss_first} kB after one churn, {rss_second} kB after \
         two; tracked processes {tracked_before} → {tracked_after}; margin {margin} kB"
    );
    assert!(
        rss_first <= rss_before + margin && rss_second <= rss_before + margin,
        "service VmRSS {rss_before} kB before churn, {rss_first} kB after {processes} processes, \
         {rss_second} kB after twice that (margin {margin} kB, tracked processes \
         {tracked_before} → {tracked_after})"
    );
}

/// A 4 KiB ring buffer overflows while the service is held back (stopped) during a burst of
/// forks: the loss is counted, a /proc scan repairs the set, and the set is exact again.
#[test]
fn lost_events_are_detected_and_repaired() {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let anchor = cg.spawn(&[&c], spawn::sleeper());
    let service = ebpf(&["--bpf-ring-buffer", "4096"]);
    samples_until(&service, "the anchor", |s| {
        listed_in(s, &c) == set(&[anchor])
    });
    let before = service.health();
    let count = |h: &serde_json::Value, key: &str| h[key].as_u64().unwrap();

    // 1000 forks; most children exit at once (auto-reaped), every 10th stays. The file tells
    // when the burst is over. A stopped service drains nothing: a few dozen events fit in
    // 4 KiB, the rest is lost, among them the forks of most survivors.
    let done = cg.temp_dir().join("done");
    let burst = "import os, signal, sys, time\n\
                 signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
                 for i in range(1000):\n    \
                     if os.fork() == 0:\n        \
                         if i % 10 == 0:\n            time.sleep(1000)\n        \
                         os._exit(0)\n\
                 open(sys.argv[1], 'w').close()\n\
                 time.sleep(1000)\n";
    {
        let _paused = service.pause();
        let mut command = spawn::python_code(burst);
        command.arg(&done);
        cg.spawn(&[&c], command);
        wait_for("the burst", Duration::from_secs(60), || {
            if done.exists() {
                Ok(())
            } else {
                Err("running".into())
            }
        });
    }

    service.wait_until("the API to match /proc", service.patience(), |s| {
        matches_ground_truth(s, std::slice::from_ref(&c))
    });
    let after = service.health();
    eprintln!("lost events: before {before}\nafter {after}");
    let grew = |key: &str| count(&after, key) > count(&before, key);
    assert!(grew("events_lost"), "no loss counted: {after}");
    assert!(
        grew("reconciliations"),
        "no reconciliation after a loss: {after}"
    );
    assert!(
        count(&after, "repairs") >= count(&before, "repairs") + 50,
        "survivors whose fork events were lost must be repaired: {after}"
    );
    assert!(c.listable().len() > 100, "survivors are listed");
    // Repaired, the tracker is healthy again.
    service.wait_until("status ok", service.patience(), |s| {
        let h = s.health();
        if h["status"] == "ok" {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
}

/// The CPU of a process that exited inside the window stays in the denominator.
fn exited_cpu_stays_in_the_window(tracker: Tracker) {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let light = cg.spawn(&[&c], spawn::partly_busy(30));
    let service = Service::with_tracker(tracker, &NO_SCHEDULED_RECONCILE);
    samples_until(&service, "both", |s| {
        listed_in(s, &c) == set(&[busy, light])
    });
    service.wait_samples(11);

    // Before: the two split the whole container, the busy one more.
    let snapshot = service.snapshots(&c.path, "interval=10").pop().unwrap();
    let sum = api::share_sum(&snapshot);
    assert!((99.9..=100.0 + 1e-6).contains(&sum), "shares sum to {sum}");
    let share = |pid| api::share(api::find(&snapshot, pid).unwrap());
    assert!(
        share(busy) > share(light),
        "busy {} light {}",
        share(busy),
        share(light)
    );

    cg.kill(busy);
    // The first answers without the busy process, over a 2 s window that still holds most of
    // its last second of CPU.
    let after = service.wait_until("the busy one gone", service.patience(), |s| {
        let snapshot = s.snapshots(&c.path, "interval=10").pop().unwrap();
        if api::pids(&snapshot) == set(&[light]) {
            Ok(snapshot)
        } else {
            Err(format!("{:?}", api::pids(&snapshot)))
        }
    });
    let remaining = api::share_sum(&after);
    assert!(
        remaining < 75.0,
        "the exited busy process's CPU is missing from the denominator: the light one has \
         {remaining} % of a window in which the busy one ran most of the time"
    );
}

#[test]
fn exited_cpu_stays_in_the_window_ebpf() {
    exited_cpu_stays_in_the_window(Tracker::Ebpf);
}

#[test]
fn exited_cpu_stays_in_the_window_procfs() {
    exited_cpu_stays_in_the_window(Tracker::Procfs);
}

/// Both trackers, side by side on the same host state, list the same processes.
#[test]
fn both_trackers_list_the_same_processes() {
    let cg = TestCgroup::new();
    let containers: Vec<Container> = (0..5).map(|_| cg.container(&[Hierarchy::Cpu])).collect();
    // Some state before the services start (seeded from /proc)…
    cg.spawn(&[&containers[0]], spawn::sleeper());
    cg.spawn(&[&containers[0]], spawn::threaded(2));
    cg.spawn(&[&containers[1]], spawn::forking_parent());
    let zombie = cg.spawn(&[&containers[1]], spawn::command("/bin/true"));
    let mover = cg.spawn(&[&containers[2]], spawn::sleeper());
    let procfs = Service::with_tracker(Tracker::Procfs, &[]);
    let ebpf = ebpf(&[]);
    // …and some after (followed by events).
    let forker = cg.spawn(&[&containers[2]], spawn::forking_parent());
    cg.spawn(&[&containers[3]], spawn::one_char_cmdline());
    let short = cg.spawn(&[&containers[3]], spawn::exits_after_ms(300));
    let leaving = cg.spawn(&[&containers[4]], spawn::sleeper());
    cg.spawn(&[&containers[4]], spawn::sleeper());
    cg.move_to(mover, &containers[3]);
    cg.kill(leaving);
    wait_children(forker, 1);
    assert!(cg.wait_exit(short, Duration::from_secs(10)));
    wait_for(
        "the zombie",
        Duration::from_secs(5),
        || match proc::state(zombie).as_deref() {
            Some("Z") => Ok(()),
            s => Err(format!("{s:?}")),
        },
    );

    for service in [&procfs, &ebpf] {
        service.wait_until("the API to match /proc", service.patience(), |s| {
            matches_ground_truth(s, &containers)
        });
    }
    let view = |s: &Service| -> BTreeMap<String, BTreeMap<Pid, String>> {
        containers
            .iter()
            .map(|c| {
                let snapshot = s.snapshots(&c.path, "").pop().unwrap();
                let by_pid = api::processes(&snapshot)
                    .iter()
                    .map(|p| (api::pid(p), p["cmdline"].as_str().unwrap().to_owned()))
                    .collect();
                (c.path.clone(), by_pid)
            })
            .collect()
    };
    assert_eq!(view(&procfs), view(&ebpf), "procfs and ebpf disagree");
    assert!(!view(&ebpf)[&containers[1].path].contains_key(&zombie));
}
