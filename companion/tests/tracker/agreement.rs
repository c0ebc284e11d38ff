//! The two trackers agree: exited CPU in the window, the same processes listed.

use super::*;

/// The CPU of a process that exited inside the window stays in the denominator.
fn exited_cpu_stays_in_the_window(tracker: Tracker) {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let light = cg.spawn(&[&c], spawn::partly_busy(30));
    let service = Service::with_tracker(tracker, &NO_SCHEDULED_RECONCILE);
    samples_until(&service, "both", |s| {
        listed_in(s, &c) == pid_set(&[busy, light])
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
        if api::pids(&snapshot) == pid_set(&[light]) {
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
