//! `cargo xtask lint`: formatting and clippy, warnings denied.

use anyhow::{Result, bail};

use crate::cmd;

/// Runs every check, even after one fails, then fails if any did.
pub fn lint() -> Result<()> {
    let checks: [(&str, &[&str]); 3] = [
        ("rustfmt", &["fmt", "--all", "--", "--check"]),
        (
            // `--workspace` would include the no_std eBPF crate, which only builds for BPF.
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "companion-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (eBPF)",
            &[
                "+nightly",
                "clippy",
                "--package",
                "companion-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (name, args) in checks {
        if let Err(err) = cmd::run(&mut cmd::cargo(args)) {
            eprintln!("lint: {name}: FAILED: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}
