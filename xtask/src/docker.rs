//! A Docker engine for the real-runtime tests: the running one when there is one, else a
//! `dockerd` started here and stopped again by the run that started it.
//!
//! It leaves the host's network alone (no iptables rules, no bridge, no forwarding, no
//! masquerading: the tests run containers with `--network none`) and keeps its own pid file and
//! log under the target directory.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// How long a starting engine may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping engine may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// An engine the tests can use. Dropping it stops the daemon if this run started it.
pub struct Engine {
    /// The pid of the dockerd this run started, if it did.
    started: Option<u32>,
}

/// Whether a Docker engine answers on the default socket.
fn answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn state_dir() -> PathBuf {
    cmd::release_binary()
        .parent()
        .and_then(|release| release.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("dockerd")
}

/// The running engine, or a new one.
pub fn start() -> Result<Engine> {
    if answers() {
        eprintln!("docker: using the engine that already runs");
        return Ok(Engine { started: None });
    }
    let dir = state_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("dockerd.log");
    let pid_path = dir.join("dockerd.pid");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut dockerd = Command::new("dockerd");
    dockerd
        .args([
            "--iptables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
            "--pidfile",
        ])
        .arg(&pid_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: a Ctrl-C meant for the tests does not reach it first.
    std::os::unix::process::CommandExt::process_group(&mut dockerd, 0);
    let mut child = dockerd
        .spawn()
        .context("could not start dockerd (is docker.io installed? `cargo xtask setup`)")?;
    let pid = child.id();
    let engine = Engine { started: Some(pid) };
    let began = Instant::now();
    loop {
        if answers() {
            eprintln!(
                "docker: started dockerd (pid {pid}) in {:.1}s; log {}",
                began.elapsed().as_secs_f64(),
                log_path.display()
            );
            return Ok(engine);
        }
        let exited = child.try_wait()?;
        if exited.is_some() || began.elapsed() > START_TIMEOUT {
            let why = match exited {
                Some(status) => format!("dockerd exited ({status})"),
                None => format!("dockerd did not answer within {START_TIMEOUT:?}"),
            };
            drop(engine);
            bail!(
                "{why}; the end of {}:\n{}",
                log_path.display(),
                tail(&log_path, 30)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Engine {
    /// Stops the engine if this run started it (its containers stop with it).
    pub fn stop(mut self) -> Result<()> {
        self.stop_started()
    }

    fn stop_started(&mut self) -> Result<()> {
        let Some(pid) = self.started.take() else {
            return Ok(());
        };
        let alive = || fs::metadata(format!("/proc/{pid}")).is_ok() && !zombie(pid);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let began = Instant::now();
        while alive() {
            if began.elapsed() > STOP_TIMEOUT {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                bail!("dockerd (pid {pid}) did not stop within {STOP_TIMEOUT:?}: killed");
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("docker: stopped dockerd (pid {pid})");
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(err) = self.stop_started() {
            eprintln!("docker: {err:#}");
        }
    }
}

/// Whether `pid` has exited but not been reaped (it is our child until the `Child` is dropped).
fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(true)
}
