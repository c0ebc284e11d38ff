//! The hardening of README "Security", end to end: the bearer token, TLS and mutual TLS, the
//! start-up warning, hidden command-line arguments, the HTTP limits (slow, idle and flooding
//! clients, long URLs, bodies), least privilege, faults (unreadable, malformed and vanishing
//! proc files, removed cgroups, bad proc roots, a port in use, a failing eBPF side), private
//! cgroup namespaces and processes vanishing mid-read.
//!
//! Each test says in a `Without the feature:` line what would fail if the feature were absent.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Hierarchy, Pid, Service, TestCgroup, Tracker, api, both_trackers, cpu_heavy,
    http::{self, Response},
    oneshot::run_to_exit,
    pid_set, proc,
    service::{StartOptions, test_period},
    spawn, unique_id, wait_for,
};

/// Time a refused start may take (it fails before the first sample).
const REFUSAL: Duration = Duration::from_secs(20);

/// The service is up and still sampling after a test's abuse: /healthz answers, neither
/// degraded nor failing, and new samples keep coming. (`stale` is accepted: on a host loaded
/// by other sessions' thousands of container processes, one sample can take longer than three
/// periods; that is the host's load, not the abuse.)
fn assert_alive_and_sampling(service: &Service) {
    let health = service.health();
    assert!(
        health["status"] == "ok" || health["status"] == "stale",
        "{health}"
    );
    assert!(health["degraded"].is_null(), "{health}");
    service.wait_samples(1);
    assert_eq!(service.get("/api/v2/host").status, 200);
}

/// Waits until /api/v2/containers (made in the background after each sample) lists `path`;
/// returns its summary.
fn wait_inventory(service: &Service, path: &str) -> Value {
    service.wait_until(
        &format!("{path} in /api/v2/containers"),
        service.patience(),
        |s| {
            let r = s.get("/api/v2/containers");
            if r.status != 200 {
                return Err(format!("{} {}", r.status, r.text()));
            }
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .find(|summary| summary["path"] == path)
                .cloned()
                .ok_or_else(|| "not listed".to_owned())
        },
    )
}

/// A random token-like secret, unique to the test.
fn secret() -> String {
    format!("s3cr3t{:032x}", rand::random::<u128>())
}

mod auth;
mod connections;
mod exposure;
mod faults;
mod limits;
mod privileges;
mod tls;
