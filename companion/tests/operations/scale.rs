//! What lets one service follow a host with tens of thousands of container processes: reads
//! split over threads (`--sampler-threads`) and the open-file limit raised at start.

use super::*;

/// Every value a process entry carries that an idle process keeps from one sample to the next.
fn stable_view(service: &Service, containers: &[Container]) -> Vec<(String, Vec<Value>)> {
    containers
        .iter()
        .map(|c| {
            let snapshot = service.snapshots(&c.path, "").pop().unwrap();
            let processes = api::processes(&snapshot)
                .iter()
                .map(|p| json!([p["cmdline"], p["stat"], p["status"]]))
                .collect();
            (c.path.clone(), processes)
        })
        .collect()
}

/// Two services on the same host, one reading on one thread and one on two, serve the same
/// processes with the same stat, status and command line, and say how many threads they used.
/// (The default filter of system calls is on: the reading threads run under it.)
#[test]
fn reads_split_over_threads_serve_the_same_processes() {
    let cg = TestCgroup::new();
    let containers: Vec<Container> = (0..4).map(|_| cg.container(&[Hierarchy::Cpu])).collect();
    for c in &containers {
        for _ in 0..25 {
            cg.spawn(&[c], spawn::sleeper());
        }
    }
    let one = Service::with_tracker(Tracker::Ebpf, &["--sampler-threads", "1"]);
    let two = Service::with_tracker(Tracker::Ebpf, &["--sampler-threads", "2"]);
    for service in [&one, &two] {
        for c in &containers {
            service.wait_pids(&c.path, Some(&c.listable()), service.patience());
        }
    }
    assert_eq!(one.health()["sampler_threads"], json!(1));
    assert_eq!(two.health()["sampler_threads"], json!(2));
    let (a, b) = (
        stable_view(&one, &containers),
        stable_view(&two, &containers),
    );
    assert_eq!(a.iter().map(|(_, p)| p.len()).sum::<usize>(), 100);
    assert_eq!(a, b, "one thread and two disagree");
    // Further samples on two threads keep serving them.
    two.wait_samples(3);
    assert_eq!(stable_view(&two, &containers), b);
}

/// The service raises its soft open-file limit at start — to `fs.nr_open` when it may pass the
/// hard limit (CAP_SYS_RESOURCE), else to the hard limit — and says what it did and why.
#[test]
fn the_open_file_limit_is_raised_and_explained() {
    let wrapper = ["prlimit", "--nofile=512:4096", "--"];
    let service = Service::start_with(
        &["--tracker", "procfs"],
        &testbed::service::StartOptions {
            wrapper: &wrapper,
            ..Default::default()
        },
    );
    let health = service.health();
    let files = &health["open_files"];
    assert_eq!(files["initial_limit"], json!(512), "{files}");
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(files["kernel_max"], json!(nr_open));
    let limit = files["limit"].as_u64().unwrap();
    let reason = files["reason"].as_str().unwrap();
    let own = fs::read_to_string(format!("/proc/{}/limits", service.pid())).unwrap();
    let soft: u64 = own
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(soft, limit, "/healthz tells the limit in effect");
    if limit == nr_open {
        assert!(reason.contains("fs.nr_open"), "{reason}");
    } else {
        // No CAP_SYS_RESOURCE (as in this sandbox): the hard limit, and what would raise it.
        assert_eq!(limit, 4096, "{files}");
        assert!(reason.contains("CAP_SYS_RESOURCE"), "{reason}");
    }
    assert_eq!(
        files["budget"],
        json!(limit - 2048),
        "all but the reserve: {files}"
    );
    let left = files["left"].as_u64().unwrap();
    assert!(left <= limit - 2048, "{files}");
    assert!(
        service.log_text().contains("open-file limit"),
        "the log says it: {}",
        service.log_text()
    );
}
