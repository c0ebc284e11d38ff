//! `cargo xtask setup`: installs what building and testing need on a Debian 12 machine.
//!
//! Every step first checks whether it is already satisfied and then does nothing, so a second
//! run only checks. Steps that need root say what is missing when run by another user. See
//! shared/notes/ebpf-toolchain.md for why these exact versions.

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{self, run_to_stderr};

/// LLVM 22 matches the LLVM of the nightly rustc that builds the eBPF crate; bpf-linker links
/// against it.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// What bpf-linker's build needs (llvm-sys links libLLVM, libclang, polly and their libraries),
/// then what the end-to-end tests run: `systemd-analyze` (checks the systemd unit), the
/// Prometheus client's strict OpenMetrics parser (reads /metrics), a real container runtime:
/// Docker (engine, containerd, runc), Podman, and a static busybox to make their test image from
/// offline, and a headless browser with its WebDriver (the web tests drive the page); the
/// density benchmark's peer, Debian's process exporter.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libxml2-dev",
    "systemd",
    "python3-prometheus-client",
    "docker.io",
    "busybox-static",
    "podman",
    "chromium",
    "chromium-driver",
    "prometheus-process-exporter",
];
/// Components of the nightly toolchain: `rust-src` for `-Z build-std=core`, `clippy` for `lint`.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Classic tracepoints need tracefs; the service mounts it itself, the tests expect it mounted.
const TRACEFS: &str = "/sys/kernel/tracing";

/// What a step did.
enum Done {
    AlreadyPresent,
    Did(String),
}

type Step = fn(bool) -> Result<Done>;

/// Runs every step, even after one fails, then fails if any did.
pub fn setup() -> Result<()> {
    let root = is_root()?;
    let steps: [(&str, Step); 4] = [
        ("apt packages", apt_packages),
        ("nightly components", nightly_components),
        ("bpf-linker", bpf_linker),
        ("tracefs", tracefs),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        let start = Instant::now();
        match step(root) {
            Ok(Done::AlreadyPresent) => eprintln!("setup: {name}: ok (already present)"),
            Ok(Done::Did(what)) => {
                eprintln!(
                    "setup: {name}: {what} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(err) => {
                eprintln!("setup: {name}: FAILED: {err:#}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("setup incomplete: {}", failed.join(", "));
    }
    Ok(())
}

/// The LLVM 22 development packages and the tests' tools, from Debian's (or apt.llvm.org's)
/// archive.
fn apt_packages(root: bool) -> Result<Done> {
    let llvm_config = Path::new(LLVM_PREFIX).join("bin/llvm-config");
    let mut missing = Vec::new();
    for package in APT_PACKAGES {
        if !dpkg_installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() && llvm_config.exists() {
        return Ok(Done::AlreadyPresent);
    }
    if missing.is_empty() {
        // Installed, yet llvm-config is gone: reinstall them all.
        missing = APT_PACKAGES.to_vec();
    }
    let packages = missing.join(" ");
    ensure!(
        root,
        "missing {packages}; run `cargo xtask setup` as root, or as root: \
         apt-get install --no-install-recommends {packages}"
    );
    run_to_stderr(apt_get().arg("update"))?;
    run_to_stderr(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    ensure!(
        llvm_config.exists(),
        "{} is still missing after installing {packages}",
        llvm_config.display()
    );
    Ok(Done::Did(format!("installed {packages}")))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Whether dpkg has `package` fully installed (not merely known, or only its config files left).
fn dpkg_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg")
        .args(["-s", package])
        .output()
        .context("could not run dpkg (setup supports Debian 12 only)")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line == "Status: install ok installed"))
}

/// rust-src and clippy for the nightly toolchain (the machine has nightly, not always rust-src).
fn nightly_components(_root: bool) -> Result<Done> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("listing the nightly toolchain's components (is nightly installed? see `rustup toolchain list`)")?;
    // Lines are `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
    let has = |component: &str| {
        installed.lines().any(|line| {
            line.strip_prefix(component)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
    };
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .iter()
        .copied()
        .filter(|component| !has(component))
        .collect();
    if missing.is_empty() {
        return Ok(Done::AlreadyPresent);
    }
    run_to_stderr(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    )?;
    Ok(Done::Did(format!("added {}", missing.join(" "))))
}

/// bpf-linker, built with the stable toolchain against the apt LLVM 22.
fn bpf_linker(_root: bool) -> Result<Done> {
    let before = bpf_linker_version();
    if before == BPF_LINKER_VERSION {
        return Ok(Done::AlreadyPresent);
    }
    run_to_stderr(
        cmd::cargo([
            "+stable",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
            "--locked",
            // Also replaces a binary of the right version that no longer runs.
            "--force",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )?;
    let after = bpf_linker_version();
    ensure!(
        after == BPF_LINKER_VERSION,
        "installed bpf-linker {BPF_LINKER_VERSION}, but `bpf-linker --version` finds {after}: \
         is cargo's bin directory (~/.cargo/bin) on PATH?"
    );
    Ok(Done::Did(format!(
        "installed bpf-linker {BPF_LINKER_VERSION} (was: {before})"
    )))
}

/// The version that `bpf-linker --version` prints (`bpf-linker 0.13.0`), or why there is none.
fn bpf_linker_version() -> String {
    let Ok(out) = Command::new("bpf-linker").arg("--version").output() else {
        return "no bpf-linker on PATH".to_owned();
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.split_whitespace().last() {
        Some(version) if out.status.success() => version.to_owned(),
        _ => format!("a bpf-linker that fails to run ({})", out.status),
    }
}

/// tracefs at /sys/kernel/tracing, for the classic tracepoints the tests exercise.
fn tracefs(root: bool) -> Result<Done> {
    let mounted = Command::new("mountpoint")
        .args(["-q", TRACEFS])
        .status()
        .context("could not run mountpoint (util-linux)")?
        .success();
    if mounted {
        return Ok(Done::AlreadyPresent);
    }
    ensure!(
        root,
        "{TRACEFS} is not mounted; as root: mount -t tracefs nodev {TRACEFS}"
    );
    run_to_stderr(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    Ok(Done::Did(format!("mounted tracefs at {TRACEFS}")))
}

/// Whether we run as root (effective uid 0), from /proc/self/status.
fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(euid == "0")
}
