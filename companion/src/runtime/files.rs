//! Where each runtime keeps a container's file, and what the file says.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::{Map, Value};

use super::{Format, MAX_LABELS, MAX_VALUE_BYTES, RuntimeNames, bounded};

/// containerd's state directory and the runtime v2 plugin's part of it; a task's bundle is
/// `<state>/io.containerd.runtime.v2.task/<namespace>/<id>` (containerd `core/runtime/v2/bundle.go`).
const CONTAINERD_TASKS: &str = "run/containerd/io.containerd.runtime.v2.task";
/// The containerd namespace of the CRI plugin (Kubernetes).
const CONTAINERD_K8S_NAMESPACE: &str = "k8s.io";
/// `containers/storage`'s default run root and graph root (CRI-O, Podman), with the overlay
/// driver's container directory (`<root>/<driver>-containers/<id>/userdata`).
const STORAGE_RUN_ROOT: &str = "run/containers/storage/overlay-containers";
const STORAGE_GRAPH_ROOT: &str = "var/lib/containers/storage/overlay-containers";

/// Where the runtimes' files are: the host's root as this process sees it, and Docker's data root
/// on the host.
#[derive(Clone, Debug)]
pub struct RuntimeFiles {
    pub host_root: PathBuf,
    /// An absolute path on the host (`/var/lib/docker`), looked up under `host_root`.
    pub docker_root: PathBuf,
}

impl RuntimeFiles {
    fn under_host(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The files that may hold the names of container `id` of `runtime`, in the order tried.
    /// A Kubernetes container in the cgroupfs layout does not name its runtime: both CRI
    /// runtimes' files are tried.
    pub(super) fn candidates(
        &self,
        runtime: &str,
        id: &str,
        kubernetes: bool,
    ) -> Vec<(Format, PathBuf)> {
        if !safe_id(id) {
            return Vec::new();
        }
        let docker = || {
            (
                Format::Docker,
                self.under_host(
                    self.docker_root
                        .join("containers")
                        .join(id)
                        .join("config.v2.json"),
                ),
            )
        };
        let containerd = || {
            (
                Format::ContainerdBundle,
                self.under_host(CONTAINERD_TASKS)
                    .join(CONTAINERD_K8S_NAMESPACE)
                    .join(id)
                    .join("config.json"),
            )
        };
        let crio = |root: &str| {
            (
                Format::CrioUserdata,
                self.under_host(root).join(id).join("userdata/config.json"),
            )
        };
        match runtime {
            "docker" => vec![docker()],
            "containerd" if kubernetes => vec![
                containerd(),
                crio(STORAGE_RUN_ROOT),
                crio(STORAGE_GRAPH_ROOT),
            ],
            "containerd" => vec![containerd()],
            "cri-o" => vec![crio(STORAGE_RUN_ROOT), crio(STORAGE_GRAPH_ROOT)],
            _ => Vec::new(),
        }
    }

    /// `containers/storage`'s list of containers (Podman's names).
    pub(super) fn storage_list(&self) -> PathBuf {
        self.under_host(STORAGE_GRAPH_ROOT).join("containers.json")
    }
}

/// Container ids become path components: nothing that could climb out of the directory.
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// The string entries of a JSON object, bounded in number and length.
fn labels(object: Option<&Map<String, Value>>) -> BTreeMap<String, String> {
    object
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let value = value.as_str()?;
            (key.len() <= MAX_VALUE_BYTES && value.len() <= MAX_VALUE_BYTES)
                .then(|| (key.clone(), value.to_owned()))
        })
        .take(MAX_LABELS)
        .collect()
}

/// Docker's `config.v2.json`: `Name` (with a leading `/`), `Config.Image` (the image as the user
/// named it; the top-level `Image` is its digest), `Config.Labels`. A Kubernetes container run by
/// dockershim carries the kubelet's labels.
pub(super) fn parse_docker(bytes: &[u8]) -> Option<RuntimeNames> {
    let root: Value = serde_json::from_slice(bytes).ok()?;
    let root = root.as_object()?;
    let config = root.get("Config").and_then(Value::as_object);
    let mut names = RuntimeNames {
        name: bounded(string(root, "Name").map(|name| name.trim_start_matches('/'))),
        image: bounded(config.and_then(|c| string(c, "Image"))),
        labels: labels(
            config
                .and_then(|c| c.get("Labels"))
                .and_then(Value::as_object),
        ),
        ..RuntimeNames::default()
    };
    let label = |key: &str| bounded(names.labels.get(key).map(String::as_str));
    let (namespace, pod, container) = (
        label("io.kubernetes.pod.namespace"),
        label("io.kubernetes.pod.name"),
        label("io.kubernetes.container.name"),
    );
    names.kubernetes(namespace, pod, container);
    Some(names)
}

/// An OCI spec's annotations.
fn annotations(bytes: &[u8]) -> Option<Map<String, Value>> {
    let root: Value = serde_json::from_slice(bytes).ok()?;
    match root.as_object()?.get("annotations") {
        Some(Value::Object(annotations)) => Some(annotations.clone()),
        // A spec without annotations is well-formed; it names nothing.
        None | Some(Value::Null) => Some(Map::new()),
        Some(_) => None,
    }
}

/// A containerd task bundle's `config.json`: the CRI plugin's annotations
/// (containerd `pkg/cri/annotations`: `DefaultCRIAnnotations`). A pod's sandbox has no container
/// name or image.
pub(super) fn parse_containerd(bytes: &[u8]) -> Option<RuntimeNames> {
    let annotations = annotations(bytes)?;
    let get = |key: &str| bounded(string(&annotations, key));
    let mut names = RuntimeNames {
        // A sandbox's (pause) image has its own key.
        image: get("io.kubernetes.cri.image-name")
            .or_else(|| get("io.kubernetes.cri.podsandbox.image-name")),
        ..RuntimeNames::default()
    };
    names.kubernetes(
        get("io.kubernetes.cri.sandbox-namespace"),
        get("io.kubernetes.cri.sandbox-name"),
        get("io.kubernetes.cri.container-name"),
    );
    Some(names)
}

/// CRI-O's `userdata/config.json`: it copies the kubelet's container labels into the spec's
/// annotations, adds its own (`io.kubernetes.cri-o.ImageName`, the image as named; `…Image`, its
/// id) and the labels again as one JSON string (`io.kubernetes.cri-o.Labels`).
pub(super) fn parse_crio(bytes: &[u8]) -> Option<RuntimeNames> {
    let annotations = annotations(bytes)?;
    let get = |key: &str| bounded(string(&annotations, key));
    let labels = string(&annotations, "io.kubernetes.cri-o.Labels")
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .map(|value| labels(value.as_object()))
        .unwrap_or_default();
    let mut names = RuntimeNames {
        image: get("io.kubernetes.cri-o.ImageName").or_else(|| get("io.kubernetes.cri-o.Image")),
        labels,
        ..RuntimeNames::default()
    };
    names.kubernetes(
        get("io.kubernetes.pod.namespace"),
        get("io.kubernetes.pod.name"),
        get("io.kubernetes.container.name"),
    );
    Some(names)
}

/// `containers/storage`'s `containers.json`: an array of `{id, names, metadata}`; Podman's
/// `metadata` is a JSON string with `image-name` and `name` (libpod `RuntimeContainerMetadata`).
pub(super) fn parse_storage_list(bytes: &[u8]) -> Option<HashMap<String, Arc<RuntimeNames>>> {
    let root: Value = serde_json::from_slice(bytes).ok()?;
    let mut list = HashMap::new();
    for entry in root.as_array()?.iter().filter_map(Value::as_object) {
        let Some(id) = string(entry, "id") else {
            continue;
        };
        let metadata =
            string(entry, "metadata").and_then(|text| serde_json::from_str::<Value>(text).ok());
        let metadata = metadata.as_ref().and_then(Value::as_object);
        let first_name = entry
            .get("names")
            .and_then(Value::as_array)
            .and_then(|names| names.first())
            .and_then(Value::as_str);
        let names = RuntimeNames {
            name: bounded(first_name.or_else(|| metadata.and_then(|m| string(m, "name")))),
            image: bounded(metadata.and_then(|m| string(m, "image-name"))),
            ..RuntimeNames::default()
        };
        list.insert(id.to_owned(), Arc::new(names));
    }
    Some(list)
}
