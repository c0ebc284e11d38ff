//! What operators use beside the v1.0 API, end to end on real cgroups: /metrics read by a real
//! OpenMetrics parser and checked against the API, container discovery for each runtime's cgroup
//! naming (with v1 memory limits), `companion ps`/`top`/`health` run as a client, response
//! compression, and the served OpenAPI document.

use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid as NixPid};
use serde_json::{Value, json};
use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, cpu_heavy,
    http::{self, Response},
    openmetrics::{self, Exposition},
    pid_set, proc,
    service::{companion_bin, free_port},
    spawn, unique_id, wait_for,
};

const MIB: u64 = 1 << 20;

/// Waits until the service lists exactly these processes in the newest sample of `container`,
/// and /api/v2/containers (computed in the background after each sample) lists it with as many.
fn wait_listed(service: &Service, container: &Container, pids: &[Pid]) {
    service.wait_pids(&container.path, Some(&pid_set(pids)), service.patience());
    let began = Instant::now();
    service.wait_until(
        &format!("{} in /api/v2/containers", container.path),
        service.patience(),
        |s| {
            let containers = v2_containers(s);
            match entry(&containers, &container.path) {
                Some(e) if e["processes"] == json!(pids.len()) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let lag = began.elapsed();
    if lag > service.period {
        eprintln!(
            "{} reached /api/v2/containers {lag:?} after the v1.0 route (period {:?})",
            container.path, service.period
        );
    }
}

/// `n` random hex digits.
fn random_hex(n: usize) -> String {
    assert!(n <= 32);
    let r: u128 = rand::random();
    format!("{r:032x}")[..n].to_owned()
}

/// A 64-hex container id starting with `head`, then [`unique_id`] (so leftovers of a crashed run
/// are recognised and removed by the harness). A random `head` makes its first 12 digits a
/// unique prefix, as `docker ps` shows it.
fn fresh_id(head: &str) -> String {
    format!("{head}{}", unique_id())[..64].to_owned()
}

/// A Kubernetes pod UID (a UUID).
fn pod_uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Sets the v1 memory limit of a container created in [`Hierarchy::Memory`].
fn set_memory_limit(container: &Container, bytes: u64) {
    let file = container
        .dir(Hierarchy::Memory)
        .join("memory.limit_in_bytes");
    fs::write(&file, bytes.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let read: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    assert_eq!(read, bytes, "the kernel kept another limit");
}

/// Starts `python3` in `container`, holding `mib` MiB of written (resident) memory, and waits
/// until it has allocated them and sleeps (it creates a file then): its memory stays put.
fn spawn_memory_hog(cg: &TestCgroup, container: &Container, mib: u64) -> Pid {
    let ready = cg.temp_dir().join("allocated");
    let mut command = spawn::python_code(&format!(
        "import sys, time\nb = b'x' * ({mib} << 20)\nopen(sys.argv[1], 'w').close()\ntime.sleep(1000)\n"
    ));
    command.arg(&ready);
    let pid = cg.spawn(&[container], command);
    wait_for(
        &format!("python {pid} to allocate {mib} MiB"),
        Duration::from_secs(30),
        || match proc::vm_rss_kb(pid) {
            Some(rss) if ready.exists() && rss >= mib * 1024 => Ok(()),
            other => Err(format!("VmRSS {other:?} kB, ready {}", ready.exists())),
        },
    );
    pid
}

/// The resident memory of these processes now, in bytes (as the API adds it: VmRSS × 1024).
fn rss_bytes_of(pids: &BTreeSet<Pid>) -> u64 {
    pids.iter()
        .map(|&p| proc::vm_rss_kb(p).unwrap_or(0) * 1024)
        .sum()
}

fn scrape(service: &Service) -> (Response, Exposition) {
    let r = service.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    let exposition = openmetrics::parse(&r.text()).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- exposition ---\n{}",
            http::truncate(&r.text(), 6000)
        )
    });
    (r, exposition)
}

/// `/api/v2/containers`, as an array.
fn v2_containers(service: &Service) -> Vec<Value> {
    let r = service.get("/api/v2/containers");
    assert_eq!(r.status, 200, "/api/v2/containers: {}", r.text());
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    r.json().as_array().expect("an array").clone()
}

fn entry<'a>(containers: &'a [Value], path: &str) -> Option<&'a Value> {
    containers.iter().find(|c| c["path"] == path)
}

mod cli;
mod compression;
mod discovery;
mod metrics;
mod metrics_api;
mod openapi;
mod scale;
