//! The flags the benchmark and the soak share: which service binary, and where its logs go.

use std::{fs, path::PathBuf};

use anyhow::bail;

use super::workspace_root;

#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    /// The service binary [$COMPANION_BIN, else <workspace>/target/release/companion].
    #[arg(long, env = "COMPANION_BIN")]
    pub companion_bin: Option<PathBuf>,
    /// Where the service's logs go [/tmp/companion-<bench|soak>-<pid>].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// [`RunFlags`] resolved, and the command line of the run (for the report).
#[derive(Clone, Debug)]
pub struct Run {
    pub bin: PathBuf,
    pub work_dir: PathBuf,
    pub command: String,
}

impl RunFlags {
    /// Resolves the defaults; `mode` names the default work directory. Fails when the binary
    /// is missing.
    pub fn resolve(&self, mode: &str) -> anyhow::Result<Run> {
        let bin = match &self.companion_bin {
            Some(bin) => bin.clone(),
            None => workspace_root().join("target/release/companion"),
        };
        if !bin.is_file() {
            bail!(
                "the service binary {} does not exist: build it (cargo build --release -p companion) \
                 or set COMPANION_BIN / --companion-bin",
                bin.display()
            );
        }
        Ok(Run {
            bin: fs::canonicalize(&bin).unwrap_or(bin),
            work_dir: self.work_dir.clone().unwrap_or_else(|| {
                PathBuf::from(format!("/tmp/companion-{mode}-{}", std::process::id()))
            }),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        })
    }
}
