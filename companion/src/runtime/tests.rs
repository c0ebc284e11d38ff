//! The readers against files laid out as each runtime writes them (fixtures: a real Docker 20.10
//! `config.v2.json`; OCI specs with the annotations containerd's CRI plugin and CRI-O set; a
//! `containers.json` as containers/storage writes it for Podman).

use std::{fs, path::Path, time::Duration};

use super::*;

const ID: &str = "de293db7772dbcee157e843548d990fd708085bd6c8a58008e342b557560d3a7";
const POD: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/runtime")
        .join(name);
    fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn place(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn cache(root: &Path) -> NameCache {
    NameCache::new(RuntimeFiles {
        host_root: root.to_owned(),
        docker_root: "/var/lib/docker".into(),
    })
}

fn docker_path(id: &str) -> String {
    format!("var/lib/docker/containers/{id}/config.v2.json")
}

#[test]
fn docker_name_image_labels() {
    let root = tempfile::tempdir().unwrap();
    place(
        root.path(),
        &docker_path(ID),
        &fixture("docker-config.v2.json"),
    );
    let names = cache(root.path()).names(&Identity::of(&format!("/docker/{ID}")), Instant::now());
    assert_eq!(names.name.as_deref(), Some("drtest-web2"));
    assert_eq!(names.image.as_deref(), Some("companion-test-busybox:1"));
    assert_eq!(names.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        (&names.namespace, &names.pod, &names.container),
        (&None, &None, &None)
    );
    // The systemd layout names the same container.
    let scoped = cache(root.path()).names(
        &Identity::of(&format!("/system.slice/docker-{ID}.scope")),
        Instant::now(),
    );
    assert_eq!(scoped, names);
}

#[test]
fn docker_data_root_is_configurable() {
    let root = tempfile::tempdir().unwrap();
    place(
        root.path(),
        &format!("srv/docker/containers/{ID}/config.v2.json"),
        &fixture("docker-config.v2.json"),
    );
    let mut cache = NameCache::new(RuntimeFiles {
        host_root: root.path().to_owned(),
        docker_root: "/srv/docker".into(),
    });
    let names = cache.names(&Identity::of(&format!("/docker/{ID}")), Instant::now());
    assert_eq!(names.name.as_deref(), Some("drtest-web2"));
}

#[test]
fn a_changed_file_is_read_again_after_the_recheck_period() {
    let root = tempfile::tempdir().unwrap();
    let identity = Identity::of(&format!("/docker/{ID}"));
    place(
        root.path(),
        &docker_path(ID),
        &fixture("docker-config.v2.json"),
    );
    let mut cache = cache(root.path());
    let start = Instant::now();
    assert_eq!(
        cache.names(&identity, start).name.as_deref(),
        Some("drtest-web2")
    );

    // `docker rename` rewrites the file (a new inode).
    let text = String::from_utf8(fixture("docker-config.v2.json")).unwrap();
    let renamed = text.replace("\"/drtest-web2\"", "\"/web-renamed\"");
    assert_ne!(text, renamed);
    let tmp = root.path().join("tmp.json");
    fs::write(&tmp, &renamed).unwrap();
    fs::rename(&tmp, root.path().join(docker_path(ID))).unwrap();
    // Within the recheck period the cached names stand; after it, the new file is read.
    assert_eq!(
        cache.names(&identity, start + RECHECK / 2).name.as_deref(),
        Some("drtest-web2")
    );
    let later = start + RECHECK + Duration::from_millis(1);
    assert_eq!(
        cache.names(&identity, later).name.as_deref(),
        Some("web-renamed")
    );

    // An unchanged file is not parsed again: the same names are handed out.
    let again = cache.names(&identity, later + RECHECK * 2);
    assert!(Arc::ptr_eq(
        &again,
        &cache.names(&identity, later + RECHECK * 2)
    ));
    assert_eq!(again.name.as_deref(), Some("web-renamed"));

    // Removed: the names go.
    fs::remove_file(root.path().join(docker_path(ID))).unwrap();
    assert_eq!(
        *cache.names(&identity, later + RECHECK * 4),
        RuntimeNames::default()
    );
}

#[test]
fn missing_malformed_oversized_or_unreadable_files_leave_the_fields_absent() {
    let root = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..5).map(|i| format!("{i}{}", &ID[1..])).collect();
    place(root.path(), &docker_path(&ids[1]), b"{\"Name\": \"/trunc");
    place(root.path(), &docker_path(&ids[2]), b"[1, 2, 3]");
    place(
        root.path(),
        &docker_path(&ids[3]),
        format!(
            "{{\"Name\": \"/big\", \"Pad\": \"{}\"}}",
            "x".repeat(MAX_FILE_BYTES as usize)
        )
        .as_bytes(),
    );
    // A directory where the file should be.
    fs::create_dir_all(root.path().join(docker_path(&ids[4]))).unwrap();
    let mut cache = cache(root.path());
    for id in &ids {
        let names = cache.names(&Identity::of(&format!("/docker/{id}")), Instant::now());
        assert_eq!(*names, RuntimeNames::default(), "{id}");
    }
    // Well-formed, but with odd fields: what can be used is.
    place(
        root.path(),
        &docker_path(&ids[0]),
        br#"{"Name": 7, "Config": {"Image": "img:1", "Labels": {"a": "b", "n": 1}}}"#,
    );
    let names = cache.names(
        &Identity::of(&format!("/docker/{}", ids[0])),
        Instant::now() + RECHECK * 2,
    );
    assert_eq!(names.name, None);
    assert_eq!(names.image.as_deref(), Some("img:1"));
    assert_eq!(names.labels.len(), 1);
    // An overlong name is dropped, not cut.
    let long = format!(r#"{{"Name": "/{}"}}"#, "n".repeat(MAX_VALUE_BYTES + 1));
    assert_eq!(files::parse_docker(long.as_bytes()).unwrap().name, None);
}

#[test]
fn containerd_kubernetes_bundle() {
    let root = tempfile::tempdir().unwrap();
    place(
        root.path(),
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
        &fixture("containerd-bundle-config.json"),
    );
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
        POD.replace('-', "_")
    );
    let names = cache(root.path()).names(&Identity::of(&path), Instant::now());
    assert_eq!(names.name.as_deref(), Some("shop/web-7d4b9c-x2x9z/nginx"));
    assert_eq!(names.namespace.as_deref(), Some("shop"));
    assert_eq!(names.pod.as_deref(), Some("web-7d4b9c-x2x9z"));
    assert_eq!(names.container.as_deref(), Some("nginx"));
    assert_eq!(names.image.as_deref(), Some("docker.io/library/nginx:1.27"));
    assert!(names.is_named("shop/web-7d4b9c-x2x9z/nginx"));
    assert!(names.is_named("web-7d4b9c-x2x9z/nginx"));
    assert!(!names.is_named("nginx"));
    assert!(!names.is_named("other/web-7d4b9c-x2x9z/nginx"));
    assert!(!names.is_named("web-7d4b9c-x2x9z/"));
    assert!(!names.is_named(""));

    // The cgroupfs driver's layout does not say which CRI runtime: the bundle is found too.
    let cgroupfs = format!("/kubepods/burstable/pod{POD}/{ID}");
    let names = cache(root.path()).names(&Identity::of(&cgroupfs), Instant::now());
    assert_eq!(names.container.as_deref(), Some("nginx"));
}

#[test]
fn containerd_sandbox_has_a_pod_but_no_container() {
    let names = files::parse_containerd(&fixture("containerd-sandbox-config.json")).unwrap();
    assert_eq!(names.pod.as_deref(), Some("web-7d4b9c-x2x9z"));
    assert_eq!(names.namespace.as_deref(), Some("shop"));
    assert_eq!(
        (names.name.as_deref(), names.container.as_deref()),
        (None, None)
    );
    // A spec without annotations names nothing, and is no error.
    assert_eq!(
        files::parse_containerd(br#"{"ociVersion": "1.0.2"}"#),
        Some(RuntimeNames::default())
    );
    assert_eq!(files::parse_containerd(br#"{"annotations": 5}"#), None);
}

#[test]
fn crio_userdata_under_the_run_root_or_the_graph_root() {
    let systemd = format!(
        "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
        POD.replace('-', "_")
    );
    for root_dir in [
        "run/containers/storage/overlay-containers",
        "var/lib/containers/storage/overlay-containers",
    ] {
        let root = tempfile::tempdir().unwrap();
        place(
            root.path(),
            &format!("{root_dir}/{ID}/userdata/config.json"),
            &fixture("crio-userdata-config.json"),
        );
        let names = cache(root.path()).names(&Identity::of(&systemd), Instant::now());
        assert_eq!(
            names.name.as_deref(),
            Some("payments/checkout-5f7c8d-abcde/api"),
            "{root_dir}"
        );
        assert_eq!(names.namespace.as_deref(), Some("payments"));
        assert_eq!(names.pod.as_deref(), Some("checkout-5f7c8d-abcde"));
        assert_eq!(names.container.as_deref(), Some("api"));
        assert_eq!(names.image.as_deref(), Some("quay.io/shop/api:2.4.1"));
        assert_eq!(
            names
                .labels
                .get("io.kubernetes.pod.uid")
                .map(String::as_str),
            Some("aaaa2b4a-f398-41c0-928b-049e1cc4ec40")
        );
        // The cgroupfs layout finds CRI-O's file when there is no containerd bundle.
        let cgroupfs = format!("/kubepods/pod{POD}/{ID}");
        let names = cache(root.path()).names(&Identity::of(&cgroupfs), Instant::now());
        assert_eq!(names.container.as_deref(), Some("api"));
    }
}

#[test]
fn podman_names_from_the_storage_list() {
    let root = tempfile::tempdir().unwrap();
    let id = format!("f00d{}", "1".repeat(60));
    place(
        root.path(),
        "var/lib/containers/storage/overlay-containers/containers.json",
        &fixture("podman-containers.json"),
    );
    let mut cache = cache(root.path());
    let identity = Identity::of(&format!("/machine.slice/libpod-{id}.scope"));
    let names = cache.names(&identity, Instant::now());
    assert_eq!(names.name.as_deref(), Some("db1"));
    assert_eq!(
        names.image.as_deref(),
        Some("docker.io/library/postgres:16")
    );
    // Another container, not in the list.
    let other = Identity::of(&format!("/machine.slice/libpod-{ID}.scope"));
    assert_eq!(
        *cache.names(&other, Instant::now()),
        RuntimeNames::default()
    );
}

#[test]
fn ids_cannot_climb_out_of_the_runtime_directories() {
    let root = tempfile::tempdir().unwrap();
    let files = RuntimeFiles {
        host_root: root.path().to_owned(),
        docker_root: "/var/lib/docker".into(),
    };
    for id in ["..", ".", "", "../../etc", "a/b"] {
        assert!(files.candidates("docker", id, false).is_empty(), "{id:?}");
    }
    assert_eq!(files.candidates("lxc", "web01", false).len(), 0);
}

#[test]
fn unknown_runtimes_and_forgotten_containers() {
    let root = tempfile::tempdir().unwrap();
    place(
        root.path(),
        &docker_path(ID),
        &fixture("docker-config.v2.json"),
    );
    let mut cache = cache(root.path());
    assert_eq!(
        *cache.names(&Identity::of("/lxc/web01"), Instant::now()),
        RuntimeNames::default()
    );
    assert_eq!(
        *cache.names(&Identity::of("/user.slice"), Instant::now()),
        RuntimeNames::default()
    );
    cache.names(&Identity::of(&format!("/docker/{ID}")), Instant::now());
    assert_eq!(cache.entries.len(), 2);
    cache.retain(&HashSet::from([ID]));
    assert_eq!(cache.entries.len(), 1);
    cache.retain(&HashSet::new());
    assert!(cache.entries.is_empty());
}
