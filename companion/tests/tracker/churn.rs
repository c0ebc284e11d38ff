//! Churn, lost events and their repair.

use super::*;

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
        listed_in(s, &c) == pid_set(&[anchor])
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
