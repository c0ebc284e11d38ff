//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`).

use std::{
    ffi::OsString,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{bench, build, cmd, docker, lint, setup};

/// setup → lint → release build → `cargo test --workspace --release EXTRA` (the end-to-end
/// tests are test targets of `companion`: Cargo builds the binary they run and hands them its
/// path) → a short soak of each tracker (`companion-bench soak --quick`, about two minutes each; skipped when EXTRA filters
/// the tests), then a summary.
///
/// A lint failure does not stop the run (the tests still say something), but it fails it; a
/// failed setup or build stops it.
pub fn test(extra: &[OsString]) -> Result<()> {
    let start = Instant::now();
    let mut phases = Phases::default();
    // A failed setup or build ends the run early; it is recorded like any failed phase.
    let _ = run_phases(&mut phases, extra);
    phases.print_summary(start.elapsed());
    let failed = phases.failed();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_phases(phases: &mut Phases, extra: &[OsString]) -> Result<()> {
    phases.run("setup", setup::setup)?;
    let _ = phases.run("lint", lint::lint);
    let bin = phases.run("build", build::build_release)?;
    // The real-runtime tests need an engine; they skip (loudly) without one, and then this phase
    // has failed the run already.
    let engine = phases.run("docker", docker::start).ok();
    let _ = phases.run("test", || {
        let mut test = cmd::cargo([
            "test",
            "--workspace",
            // Only builds for BPF; the service's build script builds it.
            "--exclude",
            "companion-ebpf",
            "--release",
        ]);
        if engine.is_some() {
            test.env("COMPANION_DOCKER_REQUIRED", "1");
        }
        cmd::run(test.args(extra))
    });
    if let Some(engine) = engine {
        let _ = phases.run("docker stop", || engine.stop());
    }
    // A filtered run (extra arguments) is someone iterating on some tests: no soak then.
    if extra.is_empty() {
        for (phase, tracker) in [("soak ebpf", "ebpf"), ("soak procfs", "procfs")] {
            let _ = phases.run(phase, || {
                let args = ["--quick", "--tracker", tracker];
                bench::run_companion_bench(&bin, "soak", &args.map(OsString::from))
            });
        }
    }
    Ok(())
}

/// Outcome and duration of each phase, in order.
#[derive(Default)]
struct Phases(Vec<(&'static str, bool, Duration)>);

impl Phases {
    /// Runs one phase under a header, and records how it went.
    fn run<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let result = phase();
        if let Err(err) = &result {
            eprintln!("==> {name} FAILED: {err:#}");
        }
        self.0.push((name, result.is_ok(), start.elapsed()));
        result
    }

    fn failed(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(name, _, _)| *name)
            .collect()
    }

    fn print_summary(&self, total: Duration) {
        eprintln!("\n==> summary");
        for (name, ok, elapsed) in &self.0 {
            let outcome = if *ok { "ok" } else { "FAILED" };
            eprintln!("  {name:<11} {outcome:<7} {:>7.1}s", elapsed.as_secs_f64());
        }
        eprintln!("  {:<11} {:<7} {:>7.1}s", "total", "", total.as_secs_f64());
    }
}
