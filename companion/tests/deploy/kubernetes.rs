//! The Kubernetes DaemonSet.

use super::*;

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
    let unit_caps: BTreeSet<String> = systemd::service_settings(&read_deploy("companion.service"))
        ["CapabilityBoundingSet"][0]
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
