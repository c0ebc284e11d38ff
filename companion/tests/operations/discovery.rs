//! Containers discovered in each runtime's cgroup naming.

use super::*;

/// A container named in one runtime's style, and what /api/v2/containers must say about it.
struct Case {
    container: Container,
    runtime: &'static str,
    id: String,
    /// A unique prefix of the id to look it up by.
    prefix: String,
    pod_uid: Option<String>,
    qos_class: Option<&'static str>,
    memory_limit: Option<u64>,
    pids: Vec<Pid>,
}

/// Containers named as Docker (cgroupfs and systemd drivers), containerd and CRI-O under
/// Kubernetes (each QoS class), Podman, LXC and systemd-nspawn name them, at their real paths
/// (unique ids, no test prefix: Kubernetes is recognised by a first segment `kubepods*`): each
/// is listed with its runtime, id, pod UID, QoS class, processes, resident memory and v1 memory
/// limit; found by a unique id prefix, 409 for an ambiguous one, 404 for an unknown one; and
/// its v2 processes route answers as the v1.0 route does.
#[test]
fn discovery_by_runtime_naming() {
    let cg = TestCgroup::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |path: String,
                   hierarchies: &[Hierarchy],
                   runtime: &'static str,
                   id: &str,
                   pod: Option<(&str, &'static str)>,
                   memory_limit: Option<u64>| {
        let container = cg.container_at(&path, hierarchies);
        if let Some(limit) = memory_limit {
            set_memory_limit(&container, limit);
        }
        let prefix = if id.bytes().all(|b| b.is_ascii_hexdigit()) {
            id[..12].to_owned()
        } else {
            id.to_owned()
        };
        cases.push(Case {
            container,
            runtime,
            id: id.to_owned(),
            prefix,
            pod_uid: pod.map(|(uid, _)| uid.to_owned()),
            qos_class: pod.map(|(_, qos)| qos),
            memory_limit,
            pids: Vec::new(),
        });
    };
    let cpu = &[Hierarchy::Cpu][..];
    let cpu_memory = &[Hierarchy::Cpu, Hierarchy::Memory][..];

    let id = fresh_id(&random_hex(12));
    add(
        format!("/docker/{id}"),
        cpu_memory,
        "docker",
        &id,
        None,
        Some(128 * MIB),
    );
    let id = fresh_id(&random_hex(12));
    // In the memory hierarchy, without a limit: none reported.
    add(
        format!("/system.slice/docker-{id}.scope"),
        cpu_memory,
        "docker",
        &id,
        None,
        None,
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu_memory,
        "containerd",
        &id,
        Some((&uid, "burstable")),
        Some(64 * MIB),
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu,
        "cri-o",
        &id,
        Some((&uid, "besteffort")),
        None,
    );
    let (id, uid) = (fresh_id(&random_hex(12)), pod_uid());
    add(
        format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
        cpu,
        "containerd",
        &id,
        Some((&uid, "guaranteed")),
        None,
    );
    let id = fresh_id(&random_hex(12));
    add(
        format!("/machine.slice/libpod-{id}.scope"),
        cpu,
        "podman",
        &id,
        None,
        None,
    );
    let name = format!("web-{}", &unique_id()[..24]);
    add(
        format!("/lxc.payload.{name}"),
        cpu,
        "lxc",
        &name,
        None,
        None,
    );
    // systemd escapes `-` in unit names as `\x2d`.
    let name = format!("box-{}", &unique_id()[..24]);
    add(
        format!(
            "/machine.slice/systemd-nspawn@{}.service",
            name.replace('-', "\\x2d")
        ),
        cpu,
        "systemd-nspawn",
        &name,
        None,
        None,
    );
    // Two containers whose ids share a prefix (but not a 13th digit).
    let shared = random_hex(12);
    let twin_a = cg.container_at(&format!("/docker/{}", fresh_id(&format!("{shared}a"))), cpu);
    let twin_b = cg.container_at(
        &format!(
            "/system.slice/docker-{}.scope",
            fresh_id(&format!("{shared}b"))
        ),
        cpu,
    );

    for (i, case) in cases.iter_mut().enumerate() {
        case.pids
            .push(cg.spawn(&[&case.container], spawn::sleeper()));
        if i == 0 {
            case.pids
                .push(cg.spawn(&[&case.container], spawn::sleeper()));
        }
    }
    let twin_pids = [
        cg.spawn(&[&twin_a], spawn::sleeper()),
        cg.spawn(&[&twin_b], spawn::sleeper()),
    ];
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    for case in &cases {
        wait_listed(&service, &case.container, &case.pids);
    }
    wait_listed(&service, &twin_a, &twin_pids[..1]);
    wait_listed(&service, &twin_b, &twin_pids[1..]);

    let listed = service.wait_until(
        "every container in /api/v2/containers with its processes and memory",
        service.patience(),
        |s| {
            let containers = v2_containers(s);
            let mut found = Vec::new();
            for case in &cases {
                let path = &case.container.path;
                let e = entry(&containers, path).ok_or(format!("{path} not listed"))?;
                let rss = rss_bytes_of(&pid_set(&case.pids));
                if e["processes"] != json!(case.pids.len()) || e["rss_bytes"] != json!(rss) {
                    return Err(format!(
                        "{path}: {e}; expected {} processes, {rss} bytes",
                        case.pids.len()
                    ));
                }
                found.push(e.clone());
            }
            Ok(found)
        },
    );
    for (case, e) in cases.iter().zip(&listed) {
        let path = &case.container.path;
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "path",
                "runtime",
                "id",
                "pod_uid",
                "qos_class",
                "name",
                "image",
                "namespace",
                "pod",
                "container",
                "processes",
                "cpu_percent",
                "cpu_seconds_total",
                "rss_bytes",
                "limits",
                "throttling",
                "memory",
                "pressure",
                "exits_total",
                "nonzero_exits_total",
                "signaled_total",
                "oom_kills_total"
            ],
            "{path}"
        );
        assert_eq!(e["runtime"], case.runtime, "runtime of {path}");
        assert_eq!(e["id"], case.id.as_str(), "id of {path}");
        assert_eq!(e["pod_uid"], json!(case.pod_uid), "pod_uid of {path}");
        assert_eq!(e["qos_class"], json!(case.qos_class), "qos_class of {path}");
        assert_eq!(
            e["limits"]["memory_bytes"],
            json!(case.memory_limit),
            "memory limit of {path}"
        );
        assert!(
            e["cpu_percent"]
                .as_f64()
                .is_some_and(|v| (0.0..5.0).contains(&v))
        );
        assert!(e["cpu_seconds_total"].as_f64().is_some_and(|v| v >= 0.0));

        // By a unique prefix of its id.
        let r = service.get(&format!(
            "/api/v2/containers/{}",
            http::encode_path(&case.prefix)
        ));
        assert_eq!(r.status, 200, "{}: {}", case.prefix, r.text());
        assert_eq!(r.media_type().as_deref(), Some("application/json"));
        let one = r.json();
        for key in [
            "path",
            "runtime",
            "id",
            "pod_uid",
            "qos_class",
            "processes",
            "limits",
        ] {
            assert_eq!(
                one[key], e[key],
                "/api/v2/containers/{}: {key}",
                case.prefix
            );
        }
    }

    // An ambiguous prefix: 409, naming both; an unknown one: 404.
    let r = service.get(&format!("/api/v2/containers/{shared}"));
    assert_eq!(r.status, 409, "{}", r.text());
    let body = r.text();
    assert!(
        body.contains(&twin_a.path) && body.contains(&twin_b.path) && body.starts_with("2 "),
        "409 lists the matching paths: {body}"
    );
    for prefix in [format!("{shared}a"), format!("{shared}b")] {
        assert_eq!(
            service.get(&format!("/api/v2/containers/{prefix}")).status,
            200
        );
    }
    let unknown = random_hex(20);
    let r = service.get(&format!("/api/v2/containers/{unknown}"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains(&unknown), "{}", r.text());
    let r = service.get(&format!("/api/v2/containers/{unknown}/processes"));
    assert_eq!(r.status, 404, "{}", r.text());

    // The v2 processes route answers as v1.0 for the same container and parameters.
    let first = &cases[0];
    let v2_path = |query: &str| format!("/api/v2/containers/{}/processes?{query}", first.prefix);
    let stable = |snapshot: &Value| -> Vec<Value> {
        api::processes(snapshot)
            .iter()
            .map(|p| {
                json!([
                    p["stat"]["pid"],
                    p["cmdline"],
                    p["cgroup"],
                    p["status"]["Name"],
                    p["stat"]["starttime"],
                    p["status"]["VmRSS"]
                ])
            })
            .collect()
    };
    service.wait_history(5);
    for query in ["", "sort=mem&limit=1", "sort=cpu&count=2&interval=2"] {
        service.wait_until(
            &format!("v2 = v1.0 for ?{query}"),
            service.patience(),
            |s| {
                let r = s.get(&v2_path(query));
                if r.status != 200 {
                    return Err(format!("v2 ?{query}: {} {}", r.status, r.text()));
                }
                let v2 = api::check_answer(&r, &first.container.path, query);
                let v1 = s.snapshots(&first.container.path, query);
                if v2.len() != v1.len() {
                    return Err(format!("{} snapshots vs {}", v2.len(), v1.len()));
                }
                let (a, b) = (stable(v2.last().unwrap()), stable(v1.last().unwrap()));
                if a == b {
                    Ok(())
                } else {
                    Err(format!("v2 {a:?}\nv1.0 {b:?}"))
                }
            },
        );
    }
    for query in ["sort=bogus", "count=1000&interval=1000"] {
        let v2 = service.get(&v2_path(query));
        let v1 = service.get(&format!("{}?{query}", first.container.api_path()));
        assert_eq!(
            (v2.status, v2.text()),
            (v1.status, v1.text()),
            "the same error for ?{query}"
        );
        assert!(v2.status >= 400);
    }
}
