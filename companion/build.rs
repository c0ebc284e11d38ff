//! Builds the kernel programs (`companion-ebpf`) with the nightly toolchain and `bpf-linker`,
//! and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! Without that toolchain (`cargo xtask setup` installs it) the service is built without its
//! eBPF tracker, with a warning; it then scans /proc, and `--tracker ebpf` says why it cannot.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("companion");
    println!("cargo:rerun-if-env-changed=COMPANION_SKIP_EBPF");
    let skip = env::var_os("COMPANION_SKIP_EBPF").is_some_and(|v| v == "1");
    let linker = which::which("bpf-linker");
    if skip || linker.is_err() {
        let why = if skip {
            "COMPANION_SKIP_EBPF=1".to_owned()
        } else {
            "bpf-linker is not installed (run `cargo xtask setup`)".to_owned()
        };
        println!("cargo:warning=building without the eBPF tracker: {why}");
        fs::write(&object, [])?;
        return Ok(());
    }
    let root_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../companion-ebpf");
    let root_dir = root_dir.to_str().expect("UTF-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "companion-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
