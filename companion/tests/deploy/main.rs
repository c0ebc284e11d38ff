//! The deployment files (deploy/), checked by tools that parse and validate them: the systemd
//! unit by `systemd-analyze verify` and `systemd-analyze security`, the DaemonSet by parsing it
//! into the Kubernetes API types, the Dockerfile by a Dockerfile parser. No Docker engine or
//! cluster is needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use dockerfile_parser::{Dockerfile, Instruction, StageParent};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, PodSpec, Probe},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize;
use testbed::{TestCgroup, service::companion_bin};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read_deploy(file: &str) -> String {
    let path = deploy_dir().join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

mod dockerfile;
mod kubernetes;
mod systemd;
