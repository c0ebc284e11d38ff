//! Running commands: echo them, check their exit status, and say which one failed.

use std::{
    env,
    ffi::OsStr,
    io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

/// `target/release/companion`, or under `CARGO_TARGET_DIR` when that is set.
pub fn release_binary() -> PathBuf {
    let target = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    target.join("release").join("companion")
}

/// `cargo ARGS` from the workspace root (through the rustup proxy, so `+nightly` works).
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with inherited standard streams; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd.status().map_err(|err| start_error(err, cmd, &line))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Like [`run`], but the command's standard output goes to our standard error, so that it does
/// not mix with what a task prints on standard output.
pub fn run_to_stderr(cmd: &mut Command) -> Result<()> {
    run(cmd.stdout(io::stderr()))
}

/// Runs `cmd` quietly and returns its standard output; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd.output().map_err(|err| start_error(err, cmd, &line))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Why `cmd` did not start, naming the missing program in the common case.
fn start_error(err: io::Error, cmd: &Command, line: &str) -> anyhow::Error {
    if err.kind() == io::ErrorKind::NotFound {
        let program = cmd.get_program().to_string_lossy();
        anyhow!("could not start `{line}`: `{program}` is not on PATH")
    } else {
        anyhow::Error::new(err).context(format!("could not start `{line}`"))
    }
}

/// `VAR=value program args…`, for messages.
fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
    });
    let words = [cmd.get_program()]
        .into_iter()
        .chain(cmd.get_args())
        .map(|word| word.to_string_lossy().into_owned());
    envs.chain(words).collect::<Vec<_>>().join(" ")
}
