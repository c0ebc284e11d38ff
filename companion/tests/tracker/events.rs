//! Exec, fork, exit and cgroup moves followed from kernel events.

use super::*;

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
        pid_set(&[direct, moved_then_exec, parent, child])
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
        listed_in(s, &c) == pid_set(&[parent, child])
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
        listed_in(s, &a) == pid_set(&[anchor_a, mover]) && listed_in(s, &b) == pid_set(&[anchor_b])
    });

    cg.move_to(mover, &b);
    let took = samples_until(&service, "the mover in B, not in A", |s| {
        listed_in(s, &a) == pid_set(&[anchor_a]) && listed_in(s, &b) == pid_set(&[anchor_b, mover])
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
        listed_in(s, &b) == pid_set(&[anchor_b]) && listed_in(s, &a) == pid_set(&[anchor_a])
    });
    assert!(took <= MAX_SAMPLES, "left after {took} samples");

    // Back in from the root, then bounced B → A between two samples: it ends in A.
    cg.move_to(mover, &b);
    cg.move_to(mover, &a);
    let took = samples_until(&service, "the mover back in A", |s| {
        listed_in(s, &a) == pid_set(&[anchor_a, mover]) && listed_in(s, &b) == pid_set(&[anchor_b])
    });
    assert!(took <= MAX_SAMPLES, "back after {took} samples");

    // Its children follow it: a child forked after the move is in A too.
    let forker = cg.spawn(&[&b], spawn::forking_parent());
    let child = wait_children(forker, 1)[0];
    cg.move_to(forker, &a);
    samples_until(&service, "forker in A, child in B", |s| {
        listed_in(s, &a) == pid_set(&[anchor_a, mover, forker])
            && listed_in(s, &b) == pid_set(&[anchor_b, child])
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
        listed_in(s, &a) == pid_set(&[process])
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
        pid_set(&[process]),
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
        s.pids(&a.path).is_none() && listed_in(s, &b) == pid_set(&[process])
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
        listed_in(s, &c) == pid_set(&[anchor, short, victim])
    });
    cg.kill(victim);
    let took = samples_until(&service, "the killed one gone", |s| {
        listed_in(s, &c) == pid_set(&[anchor, short])
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
    std::fs::write(&exit_now, "").unwrap();
    assert!(
        cg.wait_exit(short, Duration::from_secs(10)),
        "the short one exited by itself"
    );
    let took = samples_until(&service, "the exited one gone", |s| {
        listed_in(s, &c) == pid_set(&[anchor])
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
    // The last one leaves: the container is not found any more.
    cg.kill(anchor);
    let took = samples_until(&service, "the container gone", |s| {
        s.pids(&c.path).is_none()
    });
    assert!(took <= MAX_SAMPLES, "gone after {took} samples");
}
