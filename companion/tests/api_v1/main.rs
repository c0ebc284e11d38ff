//! The v1.0 API contract (docs/api-v1.0.md), end to end, for both trackers: every test body runs
//! once with `--tracker procfs` and once with `--tracker ebpf` (`<module>::procfs::<name>` and
//! `<module>::ebpf::<name>`).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant, SystemTime},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use testbed::{
    Hierarchy, Pid, Service, TestCgroup, Tracker, api, both_trackers, cpu_heavy,
    http::{self, Response},
    pid_set, proc, spawn, unique_id, wait_for, wait_threads,
};

fn assert_plain_text(r: &Response, what: &str) {
    assert_eq!(
        r.media_type().as_deref(),
        Some("text/plain"),
        "{what}: Content-Type {:?}, body {:?}",
        r.header("content-type"),
        r.text()
    );
}

mod errors;
mod lifecycle;
mod naming;
mod queries;
mod reliability;
mod schema;
