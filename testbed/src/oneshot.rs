//! Runs of the binary that are expected to end by themselves: a refused start-up (bad flags,
//! a bad proc root, a port in use), with its exit status and what it logged.

use std::{
    io::Read,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::service::{companion_bin, free_port};

/// How a run ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Exited {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the binary with `args` (plus `--port` on a free port unless `args` name one), no
/// `COMPANION_*` variables and no `RUST_LOG`, and waits up to `timeout` for it to exit. Panics,
/// after killing it, when it is still running then: the caller expected it to stop by itself.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Exited {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if !args
        .iter()
        .any(|a| *a == "--port" || a.starts_with("--port="))
    {
        all.extend(["--port".into(), free_port().to_string()]);
    }
    let mut command = Command::new(companion_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMPANION_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(&all)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the companion binary");
    // Read stderr on another thread, so a chatty child never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = pipe.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if began.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap_or_default();
            panic!("companion {all:?} still ran after {timeout:?}; it logged:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Exited {
        status,
        stderr: reader.join().unwrap_or_default(),
    }
}
