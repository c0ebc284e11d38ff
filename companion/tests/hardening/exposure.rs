//! A compromised process and careless set-ups, end to end: `//` paths and bad escapes, token
//! files, the system call filter and running without CAP_SYS_PTRACE.
//!
//! Each test says in a `Without the fix:` line what fails without it.

use std::{fs, net::SocketAddr, os::unix::fs::PermissionsExt, time::Duration};

use serde_json::Value;
use testbed::{
    Hierarchy, Pid, Service, TestCgroup, Tracker, api,
    oneshot::run_to_exit,
    proc,
    service::{StartOptions, test_period},
    spawn, tls, wait_for,
};

// --- 8. `//` paths and bad escapes -------------------------------------------------------------

/// `//api/v1.0/…` (a base URL ending in `/`) is redirected with 301 to the cleaned path, query
/// kept, and the redirect leads to the answer; a malformed percent-escape gets 400.
/// Without the fix: 404 for the `//` path, 500 ("not found") for `%zz`.
#[test]
fn double_slash_redirects_and_bad_escapes_are_refused() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    service.wait_pids(&c.path, Some(&[pid].into()), service.patience());

    let path = c.api_path();
    let r = service.get(&format!("/{path}?count=1&sort=cpu"));
    assert_eq!(r.status, 301, "{}", r.text());
    let location = r.header("location").expect("a Location").to_owned();
    assert_eq!(location, format!("{path}?count=1&sort=cpu"));
    let followed = service.get(&location);
    assert_eq!(followed.status, 200);
    let snapshots = api::check_answer(&followed, &c.path, "count=1&sort=cpu");
    assert!(api::pids(&snapshots[0]).contains(&pid));
    let r = service.get("///healthz");
    assert_eq!((r.status, r.header("location")), (301, Some("/healthz")));

    for bad in [
        "/api/v1.0/docker/%zz/processes",
        "/api/v1.0/docker/abc%/processes",
        "/api/v2/containers/%g1",
    ] {
        let r = service.get(bad);
        assert_eq!(r.status, 400, "{bad}: {} {}", r.status, r.text());
        assert!(r.text().contains("percent-escape"), "{bad}: {}", r.text());
    }
    // A well-formed escape is still decoded.
    let at = "/api/v1.0/".len();
    let encoded = format!(
        "{}%{:02X}{}",
        &path[..at],
        path.as_bytes()[at],
        &path[at + 1..]
    );
    assert_eq!(service.get(&encoded).status, 200, "{encoded}");
}

// --- 10. token files ---------------------------------------------------------------------------

/// A token file of several lines refuses the start; a short token, a file others can read, and
/// listening beyond loopback with a token but without TLS each start with a warning.
/// Without the fix: all start silently (the two-line file's whole text is the token).
#[test]
fn token_file_checks() {
    let cg = TestCgroup::new();
    let dir = cg.temp_dir();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let good = "6c1b1f0e5a6d4e1f9a3b2c7d";

    let lines = write("lines", &format!("{good}\n{good}\n"), 0o600);
    let exited = run_to_exit(
        &[
            "--tracker",
            "procfs",
            "--auth-token-file",
            lines.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_ne!(exited.code(), Some(0));
    assert!(exited.stderr.contains("several lines"), "{}", exited.stderr);

    let with_token = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--auth-token-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let service = Service::with_tracker(Tracker::Procfs, &args);
        let log = service.log_text();
        log.lines()
            .filter(|l| l.contains("WARN"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let warnings = with_token(&write("short", "s3cret\n", 0o600), &[]);
    assert!(
        warnings.iter().any(|w| w.contains("6 bytes")),
        "{warnings:?}"
    );
    let warnings = with_token(&write("open", good, 0o644), &[]);
    assert!(
        warnings.iter().any(|w| w.contains("mode 644")),
        "{warnings:?}"
    );
    let fine = write("fine", good, 0o600);
    let warnings = with_token(&fine, &[]);
    assert!(
        !warnings.iter().any(|w| w.contains("token")),
        "{warnings:?}"
    );
    let warnings = with_token(&fine, &["--listen-ip", "0.0.0.0"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without TLS") && w.contains("clear text")),
        "{warnings:?}"
    );
}

// --- 11. system call filter, no CAP_SYS_PTRACE -------------------------------------------------

fn status_field(pid: Pid, key: &str) -> String {
    proc::status_field(pid, key).unwrap_or_else(|| panic!("{key} of {pid}"))
}

/// The service installs its own seccomp filter (one, in filter mode) and keeps working under it
/// in both trackers, through the eBPF tracker's fall-back to the /proc scan, with TLS and
/// HTTP/2, compressed answers and /metrics.
/// Without the fix: `Seccomp: 0` (no filter of its own).
#[test]
fn the_service_runs_under_its_system_call_filter() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let pki = tls::Pki::new(&cg.temp_dir());
    let config = tls::client_config(&[pki.ca.cert()], None);
    let probe = {
        let config = config.clone();
        move |addr: SocketAddr| tls::get(addr, config.clone(), "/healthz", "")
    };
    let period = format!("{}ms", test_period().as_millis());
    for (tracker, extra) in [
        ("procfs", &[][..]),
        ("ebpf", &["--test-fail-ebpf-after", "5"][..]),
    ] {
        let mut args = vec![
            "--tracker",
            tracker,
            "--sample-period",
            &period,
            "--tls-cert",
            pki.cert_file.to_str().unwrap(),
            "--tls-key",
            pki.key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let service = Service::start_with(
            &args,
            &StartOptions {
                probe: Some(&probe),
                ..StartOptions::default()
            },
        );
        // One filter more than this test process runs under (a CI runner may have its own).
        let own: u32 = status_field(std::process::id(), "Seccomp_filters")
            .parse()
            .unwrap();
        assert_eq!(status_field(service.pid(), "Seccomp"), "2", "{tracker}");
        assert_eq!(
            status_field(service.pid(), "Seccomp_filters"),
            (own + 1).to_string(),
            "{tracker}"
        );
        let path = format!("{}?count=2", c.api_path());
        wait_for(
            &format!("{tracker}: the process listed over TLS"),
            service.patience(),
            || {
                let r = tls::get(
                    service.addr,
                    config.clone(),
                    &path,
                    "Accept-Encoding: gzip\r\n",
                )
                .map_err(|e| e.to_string())?;
                if r.status == 200 && r.header("content-encoding") == Some("gzip") {
                    Ok(())
                } else {
                    Err(format!("{} {:?}", r.status, r.header("content-encoding")))
                }
            },
        );
        let r = tls::get(service.addr, config.clone(), "/metrics", "").unwrap();
        assert_eq!(r.status, 200);
        if tracker == "ebpf" {
            wait_for(
                "the fall-back to the /proc scan",
                service.patience(),
                || {
                    let r = tls::get(service.addr, config.clone(), "/healthz", "")
                        .map_err(|e| e.to_string())?;
                    let health: Value =
                        serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                    (health["tracker"] == "procfs")
                        .then_some(())
                        .ok_or(health.to_string())
                },
            );
        }
        // Still sampling under the filter (the fall-back included): a new process shows.
        let late = cg.spawn(&[&c], spawn::sleeper());
        wait_for(
            &format!("{tracker}: a new process listed"),
            service.patience(),
            || {
                let r = tls::get(service.addr, config.clone(), &c.api_path(), "")
                    .map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("{}", r.status));
                }
                let snapshots: Vec<Value> = r.json().as_array().cloned().unwrap_or_default();
                let pids = snapshots.last().map(api::pids).unwrap_or_default();
                (pids.contains(&pid) && pids.contains(&late))
                    .then_some(())
                    .ok_or(format!("{pids:?}"))
            },
        );
        cg.kill(late);
        let log = service.log_text();
        assert!(log.contains("system call filter installed"), "{log}");
        assert!(
            !log.contains("os error 1)") && !log.contains("not permitted"),
            "{tracker}: something was refused:\n{log}"
        );
    }
}

/// `--ptrace false`: CAP_SYS_PTRACE is gone after start-up, and the stat fields the kernel
/// guards with it read as 0 (`startcode`, `endcode` as 1, the kernel's mark of a hidden value)
/// for another user's process; with the default they do not.
/// Without the fix: the flag does not exist (the service refuses to start).
#[test]
fn without_ptrace_the_guarded_stat_fields_read_zero() {
    const CAP_SYS_PTRACE: u32 = 19;
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let mut other_user = spawn::command("setpriv");
    other_user.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/bin/sleep",
        "1000",
    ]);
    let pid = cg.spawn(&[&c], other_user);
    wait_for("the other user's sleep", Duration::from_secs(5), || {
        (proc::status_field(pid, "Uid").is_some_and(|u| u.starts_with("65534"))
            && proc::cmdline(pid).is_some_and(|c| c.starts_with("/bin/sleep")))
        .then_some(())
        .ok_or("not yet".to_owned())
    });
    let guarded = [
        "startcode",
        "endcode",
        "startstack",
        "start_data",
        "arg_start",
        "env_start",
    ];
    for ptrace in ["true", "false"] {
        let service = Service::with_tracker(Tracker::Procfs, &["--ptrace", ptrace]);
        let caps = u64::from_str_radix(&status_field(service.pid(), "CapEff"), 16).unwrap();
        assert_eq!(
            caps & (1 << CAP_SYS_PTRACE) != 0,
            ptrace == "true",
            "--ptrace {ptrace}: CapEff {caps:x}"
        );
        service.wait_pids(&c.path, Some(&[pid].into()), service.patience());
        let snapshots = service.snapshots(&c.path, "");
        let process = api::find(snapshots.last().unwrap(), pid).expect("listed");
        for field in guarded {
            let value = process["stat"][field].as_u64().unwrap();
            let hidden = if field.ends_with("code") { 1 } else { 0 };
            if ptrace == "true" {
                assert!(value > 1, "--ptrace true: {field} is {value}");
            } else {
                assert_eq!(value, hidden, "--ptrace false: {field} is {value}");
            }
        }
        assert!(process["status"]["VmRSS"].as_u64().unwrap() > 0);
    }
}
