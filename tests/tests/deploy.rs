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

use companion_tests::{TestCgroup, service::companion_bin};
use dockerfile_parser::{Dockerfile, Instruction, StageParent};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, PodSpec, Probe},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize;

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

// --- systemd ----------------------------------------------------------------------------------

/// The overall exposure `systemd-analyze security` may report, in its 0–100 `--threshold` scale
/// (it prints tenths: 40 is "4.0"). The unit is at about 3.5.
const EXPOSURE_THRESHOLD: u32 = 40;

/// The unit with `ExecStart` pointing at the binary under test (verify checks it is executable),
/// in a scratch directory: returns its path.
fn unit_copy(cg: &TestCgroup, name: &str, transform: impl Fn(&str) -> String) -> PathBuf {
    let unit = read_deploy("companion.service");
    let exec_starts = unit.lines().filter(|l| l.starts_with("ExecStart=")).count();
    assert_eq!(exec_starts, 1, "one ExecStart= line in the unit");
    let bin = companion_bin();
    let text: String = unit
        .lines()
        .map(|line| {
            if let Some(command) = line.strip_prefix("ExecStart=") {
                let mut words = command.split_whitespace();
                let program = words.next().expect("ExecStart names a program");
                assert!(
                    program.ends_with("/companion"),
                    "ExecStart runs companion: {line}"
                );
                let rest: Vec<&str> = words.collect();
                format!("ExecStart={} {}", bin.display(), rest.join(" "))
                    .trim_end()
                    .to_owned()
            } else {
                line.to_owned()
            }
        })
        .map(|line| transform(&line))
        .collect::<Vec<_>>()
        .join("\n");
    let path = cg.temp_dir().join(name);
    fs::write(&path, text + "\n").expect("writing the unit copy");
    path
}

/// Lines of `systemd-analyze verify` output that are about this unit file.
fn verify_complaints(unit: &Path) -> (Output, Vec<String>) {
    let out = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let complaints = text(&out.stdout)
        .lines()
        .chain(text(&out.stderr).lines())
        .filter(|line| line.contains(&name) || line.contains(&*unit.to_string_lossy()))
        .map(str::to_owned)
        .collect();
    (out, complaints)
}

/// `systemd-analyze verify` accepts the unit without a warning about it; a typo in a setting
/// would be reported (checked on a broken copy, so the check is known to bite).
#[test]
fn systemd_unit_verifies() {
    let cg = TestCgroup::new();
    let unit = unit_copy(&cg, "companion.service", str::to_owned);
    let (out, complaints) = verify_complaints(&unit);
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify {}: {}\nstdout: {}\nstderr: {}",
        unit.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    let broken = unit_copy(&cg, "broken.service", |line| {
        line.replace("NoNewPrivileges=", "NoNewPrivilege=")
    });
    let (_, complaints) = verify_complaints(&broken);
    assert!(
        complaints.iter().any(|l| l.contains("NoNewPrivilege")),
        "verify did not report a misspelt setting: {complaints:?}"
    );
}

/// The overall exposure of `systemd-analyze security --offline=yes` for one unit file, and the
/// exit status with `--threshold`.
fn security(unit: &Path, threshold: u32) -> (Output, f64) {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={threshold}"))
        .arg(unit));
    let stdout = text(&out.stdout);
    let exposure = stdout
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in the output: {stdout}\nstderr: {}",
                text(&out.stderr)
            )
        });
    (out, exposure)
}

/// `systemd-analyze security` rates the unit at or below the threshold, and a unit stripped of
/// its hardening fails the same threshold.
#[test]
fn systemd_unit_security_exposure() {
    let cg = TestCgroup::new();
    let unit = unit_copy(&cg, "companion.service", str::to_owned);
    let (out, exposure) = security(&unit, EXPOSURE_THRESHOLD);
    eprintln!("systemd-analyze security: overall exposure {exposure}");
    assert!(
        out.status.success(),
        "exposure {exposure} is over the threshold {EXPOSURE_THRESHOLD} (tenths): {}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(exposure <= f64::from(EXPOSURE_THRESHOLD) / 10.0);

    // Only [Unit], ExecStart and [Install]: the threshold must catch it.
    let bare = unit_copy(&cg, "bare.service", |line| {
        let keep = line.is_empty()
            || line.starts_with('[')
            || line.starts_with('#')
            || ["Description=", "ExecStart=", "Type=", "WantedBy="]
                .iter()
                .any(|k| line.starts_with(k));
        if keep { line.to_owned() } else { String::new() }
    });
    let (out, bare_exposure) = security(&bare, EXPOSURE_THRESHOLD);
    assert!(
        !out.status.success() && bare_exposure > exposure,
        "an unhardened unit passed the threshold ({bare_exposure})"
    );
}

/// The settings of `[Service]`, as `key → values` (a key may repeat).
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
        {
            settings
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    settings
}

/// The hardening the README promises, as written in the unit and as systemd reads it (the
/// per-setting verdicts of `systemd-analyze security --json`).
#[test]
fn systemd_unit_hardening_settings() {
    let unit = read_deploy("companion.service");
    let settings = service_settings(&unit);
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("[Service] {key}= once expected, found {other:?}"),
        }
    };
    let bounding: BTreeSet<&str> = one("CapabilityBoundingSet").split_whitespace().collect();
    let needed: BTreeSet<&str> = [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SETPCAP",
    ]
    .into();
    assert_eq!(
        bounding, needed,
        "the bounding set holds exactly what start-up needs (eBPF, tracefs, /proc, dropping)"
    );
    for never in [
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_MODULE",
        "CAP_DAC_OVERRIDE",
    ] {
        assert!(!bounding.contains(never), "{never} in the bounding set");
    }
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("AmbientCapabilities"), "");
    assert!(one("SystemCallFilter").contains("@system-service"));
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    assert!(
        nofile >= 65536,
        "LimitNOFILE={nofile}: two descriptors per container process"
    );

    // The same settings as systemd reads them.
    let cg = TestCgroup::new();
    let copy = unit_copy(&cg, "companion.service", str::to_owned);
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--json=short", "--no-pager"])
        .arg(&copy));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdicts: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("security --json is JSON");
    let verdicts: BTreeMap<String, serde_json::Value> = verdicts
        .as_array()
        .expect("an array of checks")
        .iter()
        .map(|v| {
            (
                v["json_field"].as_str().unwrap_or("").to_owned(),
                v["set"].clone(),
            )
        })
        .collect();
    for field in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectControlGroups",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectClock",
        "MemoryDenyWriteExecute",
        "RestrictSUIDSGID",
        "RestrictRealtime",
        "LockPersonality",
        "SystemCallArchitectures",
        "AmbientCapabilities",
        "RestrictNamespaces_user",
        "RestrictNamespaces_net",
        "RestrictAddressFamilies_AF_PACKET",
        "RestrictAddressFamilies_AF_NETLINK",
        "CapabilityBoundingSet_CAP_NET_ADMIN",
        "CapabilityBoundingSet_CAP_SYS_MODULE",
        "CapabilityBoundingSet_CAP_SYS_RAWIO",
        "CapabilityBoundingSet_CAP_SYS_TIME",
        "CapabilityBoundingSet_CAP_DAC_FOWNER_IPC_OWNER",
        "SystemCallFilter_module",
        "SystemCallFilter_reboot",
        "SystemCallFilter_raw_io",
    ] {
        assert_eq!(
            verdicts.get(field),
            Some(&serde_json::Value::Bool(true)),
            "systemd-analyze security: {field} is not satisfied"
        );
    }
}

// --- Kubernetes -------------------------------------------------------------------------------

/// Every document of the manifest, by kind.
fn manifest_documents() -> Vec<(String, serde_norway::Value)> {
    let text = read_deploy("kubernetes/daemonset.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_norway::Value::deserialize(document).expect("valid YAML");
            let kind = value["kind"].as_str().expect("every document has a kind");
            (kind.to_owned(), value)
        })
        .collect()
}

fn the_container(spec: &PodSpec) -> &Container {
    match spec.containers.as_slice() {
        [one] => one,
        many => panic!("one container expected, found {}", many.len()),
    }
}

/// The probe is `GET /healthz` on the container's HTTP port (by number or by its name).
fn assert_healthz_probe(what: &str, probe: Option<&Probe>, container: &Container) {
    let probe = probe.unwrap_or_else(|| panic!("no {what}"));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{what} is not an HTTP GET"));
    assert_eq!(get.path.as_deref(), Some("/healthz"), "{what} path");
    let ports = container.ports.as_deref().unwrap_or_default();
    let port = match &get.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("{what} names port {name:?}, which is not declared"))
                .container_port
        }
    };
    assert_eq!(port, 8801, "{what} port");
    assert!(
        get.scheme.as_deref().is_none_or(|s| s == "HTTP"),
        "{what} scheme"
    );
}

/// The DaemonSet, parsed into the Kubernetes API types: its namespace, host PID namespace,
/// read-only host mounts, capabilities, probes, port, scrape annotations and resources.
#[test]
fn kubernetes_daemonset() {
    let documents = manifest_documents();
    let kinds: Vec<&str> = documents.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "DaemonSet"],
        "documents of the manifest"
    );
    let namespace: Namespace =
        serde_norway::from_value(documents[0].1.clone()).expect("a v1 Namespace");
    let daemonset: DaemonSet =
        serde_norway::from_value(documents[1].1.clone()).expect("an apps/v1 DaemonSet");
    let namespace_name = namespace.metadata.name.as_deref().expect("namespace name");
    assert_eq!(
        daemonset.metadata.namespace.as_deref(),
        Some(namespace_name),
        "the DaemonSet lives in the manifest's namespace"
    );

    let spec = &daemonset.spec;
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    for (key, value) in selector {
        assert_eq!(
            template_labels.and_then(|l| l.get(key)),
            Some(value),
            "the selector matches the pod template ({key})"
        );
    }
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .expect("pod annotations");
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "8801"),
        ("prometheus.io/path", "/metrics"),
    ] {
        assert_eq!(
            annotations.get(key).map(String::as_str),
            Some(value),
            "annotation {key}"
        );
    }

    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_pid, Some(true), "hostPID: the node's processes");
    assert_ne!(pod.host_network, Some(true), "no host network needed");
    let container = the_container(pod);

    let ports = container.ports.as_deref().unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.container_port == 8801 && p.protocol.as_deref().unwrap_or("TCP") == "TCP"),
        "container port 8801/TCP: {ports:?}"
    );
    let args = container.args.clone().unwrap_or_default();
    let listen_port = args
        .iter()
        .position(|a| a == "--port")
        .map(|i| args[i + 1].as_str());
    assert!(
        listen_port.is_none_or(|p| p == "8801"),
        "the service listens on 8801: {args:?}"
    );
    assert_healthz_probe(
        "livenessProbe",
        container.liveness_probe.as_ref(),
        container,
    );
    assert_healthz_probe(
        "readinessProbe",
        container.readiness_probe.as_ref(),
        container,
    );

    let security = container
        .security_context
        .as_ref()
        .expect("a securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_ne!(security.privileged, Some(true), "not privileged");
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<&str> = capabilities
        .add
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    // eBPF programs (BPF, PERFMON), tracefs and the host's cgroup namespace (SYS_ADMIN), every
    // field of /proc/PID/stat (SYS_PTRACE), dropping the bounding set (SETPCAP): the unit's set.
    let unit_caps: BTreeSet<String> =
        service_settings(&read_deploy("companion.service"))["CapabilityBoundingSet"][0]
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_owned())
            .collect();
    let unit_caps: BTreeSet<&str> = unit_caps.iter().map(String::as_str).collect();
    assert_eq!(
        added,
        ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SETPCAP"].into(),
        "capabilities added"
    );
    assert_eq!(
        added, unit_caps,
        "the same capabilities as the systemd unit"
    );

    let resources = container.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("resource requests");
    let limits = resources.limits.as_ref().expect("resource limits");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    assert!(limits.contains_key("memory"), "a memory limit");

    // Every hostPath volume is mounted, and read-only.
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        host_paths.contains(&"cgroup"),
        "the host's cgroups as a hostPath volume: {host_paths:?}"
    );
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    for name in &host_paths {
        let mounted: Vec<_> = mounts.iter().filter(|m| m.name == *name).collect();
        assert!(!mounted.is_empty(), "hostPath volume {name} is not mounted");
        for mount in mounted {
            assert_eq!(
                mount.read_only,
                Some(true),
                "hostPath volume {name} mounted at {} must be readOnly",
                mount.mount_path
            );
        }
    }
    for volume in volumes.iter().filter_map(|v| v.host_path.as_ref()) {
        assert_ne!(
            volume.path, "/",
            "the whole host file system is not mounted"
        );
    }
}

// --- Dockerfile -------------------------------------------------------------------------------

/// The Dockerfile, parsed: multi-stage, a small runtime base, the binary copied from the build
/// stage, port, exec-form entrypoint, health check, and a locked build with bpf-linker.
#[test]
fn dockerfile() {
    let text = read_deploy("Dockerfile");
    let dockerfile = Dockerfile::parse(&text).expect("the Dockerfile parses");
    let stages = dockerfile.stages();
    let stages: Vec<_> = stages.iter().collect();
    let froms = dockerfile
        .instructions
        .iter()
        .filter(|i| matches!(i, Instruction::From(_)))
        .count();
    assert!(
        froms >= 2 && stages.len() >= 2,
        "multi-stage: {froms} FROMs"
    );
    let (build, runtime) = (stages[stages.len() - 2], stages[stages.len() - 1]);

    // The build stage: bpf-linker installed, a locked release build of the service.
    let build_runs: Vec<String> = build
        .instructions
        .iter()
        .filter_map(|i| i.as_run())
        .map(|run| match (run.as_shell(), run.as_exec()) {
            (Some(shell), _) => shell.to_string(),
            (_, Some(exec)) => exec.as_str_vec().join(" "),
            _ => String::new(),
        })
        .collect();
    let words = |run: &String| -> Vec<String> {
        run.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        build_runs.iter().any(|run| {
            let w = words(run);
            run.contains("cargo install")
                && w.iter().any(|x| x == "bpf-linker")
                && w.iter().any(|x| x == "--locked")
        }),
        "the build stage installs bpf-linker (--locked): {build_runs:#?}"
    );
    assert!(
        build_runs.iter().any(|run| {
            let w = words(run);
            run.contains("cargo build")
                && w.iter().any(|x| x == "--locked")
                && w.iter().any(|x| x == "--release")
        }),
        "the build stage builds with --release --locked: {build_runs:#?}"
    );

    // The runtime stage: a small image.
    let StageParent::Image(base) = runtime.parent else {
        panic!(
            "the runtime stage is based on an image, not {:?}",
            runtime.parent
        )
    };
    let base_text = base.to_string();
    assert!(
        base.image.contains("distroless")
            || base.tag.as_deref().is_some_and(|t| t.contains("slim")),
        "the runtime base {base_text} is distroless or slim"
    );

    // The binary comes from the build stage.
    let copies: Vec<_> = runtime
        .instructions
        .iter()
        .filter_map(|i| i.as_copy())
        .collect();
    let build_name = build.name.clone();
    let from_build = copies
        .iter()
        .find(|c| {
            c.flags.iter().any(|f| {
                f.name.content == "from"
                    && (Some(&f.value.content) == build_name.as_ref()
                        || f.value.content == build.index.to_string())
            })
        })
        .unwrap_or_else(|| panic!("no COPY --from=<build stage> in the runtime stage"));
    let binary = from_build.destination.content.clone();
    assert!(binary.ends_with("/companion"), "the binary is at {binary}");

    let misc = |name: &str| -> Vec<String> {
        runtime
            .instructions
            .iter()
            .filter_map(|i| i.as_misc())
            .filter(|m| m.instruction.content.eq_ignore_ascii_case(name))
            .map(|m| m.arguments.to_string().trim().to_owned())
            .collect()
    };
    let exposed: Vec<String> = misc("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        exposed.iter().any(|p| p == "8801" || p == "8801/tcp"),
        "EXPOSE 8801: {exposed:?}"
    );

    let entrypoints: Vec<_> = runtime
        .instructions
        .iter()
        .filter_map(|i| i.as_entrypoint())
        .collect();
    let entrypoint = entrypoints.last().expect("an ENTRYPOINT");
    let exec = entrypoint
        .as_exec()
        .expect("ENTRYPOINT in exec form (the service gets the signals)");
    assert_eq!(
        exec.as_str_vec(),
        [binary.as_str()],
        "ENTRYPOINT runs the binary"
    );

    let healthchecks = misc("HEALTHCHECK");
    let healthcheck = healthchecks.last().expect("a HEALTHCHECK");
    let (_, command) = healthcheck
        .split_once("CMD")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {healthcheck}"));
    let command: Vec<String> = serde_json::from_str(command.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD in exec form ({e}): {command}"));
    assert_eq!(
        command,
        [binary.as_str(), "health"],
        "the health check runs `companion health`"
    );
}
