//! Container names, images and pods, read from the container runtimes' own files under the host
//! root: no runtime socket, no API server, no network.
//!
//! The cgroup path gives a container's runtime and id ([`crate::cgroup::Identity`]); the runtime
//! wrote what operators call the container in a file named after that id:
//!
//! - Docker: `<data-root>/containers/<id>/config.v2.json` (`Name`, `Config.Image`,
//!   `Config.Labels`).
//! - containerd (Kubernetes): the task bundle's OCI spec,
//!   `/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`, whose annotations
//!   the CRI plugin sets (`io.kubernetes.cri.container-name`, `…sandbox-name`,
//!   `…sandbox-namespace`, `…image-name`).
//! - CRI-O: the OCI spec it saves in the container's storage directory,
//!   `overlay-containers/<id>/userdata/config.json` under the run root or the graph root of
//!   `containers/storage`, with the kubelet's labels copied into its annotations
//!   (`io.kubernetes.pod.name`, `…pod.namespace`, `…container.name`) and
//!   `io.kubernetes.cri-o.ImageName`.
//! - Podman: `containers/storage`'s container list, `overlay-containers/containers.json`: each
//!   entry's `names` and, in its `metadata` string, `image-name`.
//!
//! A file is read when its container is first seen and again only when it changes (inode, size or
//! modification time), checked at most every [`RECHECK`]. A missing, unreadable, oversized or
//! malformed file leaves the fields absent; it never fails a sample or a request.

mod files;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tracing::debug;

use crate::cgroup::Identity;

pub use files::RuntimeFiles;

/// How often a known container's file is checked for changes (a `docker rename`).
pub const RECHECK: Duration = Duration::from_secs(1);

/// Longest file read: a Docker or OCI config of a normal container is a few KiB.
const MAX_FILE_BYTES: u64 = 4 << 20;
/// `containers.json` lists every Podman/CRI-O container of the host.
const MAX_LIST_BYTES: u64 = 64 << 20;
/// Longest name, image or label value kept; longer ones are dropped as absent.
const MAX_VALUE_BYTES: usize = 1024;
/// Most labels kept per container.
const MAX_LABELS: usize = 256;

/// What the runtime calls a container. Every field is `None` when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeNames {
    /// Docker's or Podman's container name; for Kubernetes `namespace/pod/container`.
    pub name: Option<String>,
    /// The image as the user named it (`busybox:1.36`, `registry.k8s.io/pause:3.9`).
    pub image: Option<String>,
    /// Kubernetes namespace, pod name and container name.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The runtime's labels (Docker's `Config.Labels`, CRI-O's container labels); shown with
    /// `?labels=true`.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl RuntimeNames {
    /// Whether `reference` names this container exactly: its name or, for Kubernetes,
    /// `namespace/pod/container` or `pod/container`.
    pub fn is_named(&self, reference: &str) -> bool {
        if reference.is_empty() {
            return false;
        }
        if self.name.as_deref() == Some(reference) {
            return true;
        }
        match (&self.namespace, &self.pod, &self.container) {
            (namespace, Some(pod), Some(container)) => {
                let short = reference
                    .strip_prefix(pod.as_str())
                    .and_then(|rest| rest.strip_prefix('/'));
                if short == Some(container.as_str()) {
                    return true;
                }
                namespace.as_deref().is_some_and(|namespace| {
                    reference
                        .strip_prefix(namespace)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .and_then(|rest| rest.strip_prefix(pod.as_str()))
                        .and_then(|rest| rest.strip_prefix('/'))
                        == Some(container.as_str())
                })
            }
            _ => false,
        }
    }

    /// Sets the Kubernetes fields found; with both a pod and a container, the name becomes
    /// `namespace/pod/container` (a pod's sandbox has no container: it keeps its name).
    fn kubernetes(
        &mut self,
        namespace: Option<String>,
        pod: Option<String>,
        container: Option<String>,
    ) {
        if let (Some(pod), Some(container)) = (&pod, &container) {
            self.name = Some(match &namespace {
                Some(namespace) => format!("{namespace}/{pod}/{container}"),
                None => format!("{pod}/{container}"),
            });
        }
        self.namespace = namespace.or(self.namespace.take());
        self.pod = pod.or(self.pod.take());
        self.container = container.or(self.container.take());
    }
}

/// Identifies one version of a file: a rewrite (Docker replaces the file on every change)
/// changes the inode, an edit in place the size or modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = fs::metadata(path).ok()?;
        meta.is_file().then(|| Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

struct Entry {
    runtime: &'static str,
    /// The file the names came from and its version, or `None` when no file was found.
    source: Option<(PathBuf, Stamp)>,
    names: Arc<RuntimeNames>,
    checked: Instant,
}

/// The names of the containers seen, by runtime and id, with the file versions they came from.
pub struct NameCache {
    files: RuntimeFiles,
    /// By container id.
    entries: HashMap<String, Entry>,
    /// `containers.json`, parsed once per version: id → names.
    storage_list: Option<(Stamp, HashMap<String, Arc<RuntimeNames>>)>,
    unknown: Arc<RuntimeNames>,
}

impl NameCache {
    pub fn new(files: RuntimeFiles) -> NameCache {
        NameCache {
            files,
            entries: HashMap::new(),
            storage_list: None,
            unknown: Arc::default(),
        }
    }

    /// The names of the container `identity` describes (all absent when its runtime is unknown
    /// or wrote nothing readable).
    pub fn names(&mut self, identity: &Identity, now: Instant) -> Arc<RuntimeNames> {
        let (Some(runtime), Some(id)) = (identity.runtime, identity.id.as_deref()) else {
            return self.unknown.clone();
        };
        if let Some(entry) = self.entries.get(id)
            && entry.runtime == runtime
            && now.duration_since(entry.checked) < RECHECK
        {
            return entry.names.clone();
        }
        self.refresh(runtime, id, identity.pod_uid.is_some(), now)
    }

    fn refresh(
        &mut self,
        runtime: &'static str,
        id: &str,
        kubernetes: bool,
        now: Instant,
    ) -> Arc<RuntimeNames> {
        let (source, names) = if runtime == "podman" {
            (None, self.podman_names(id))
        } else {
            let found = self
                .files
                .candidates(runtime, id, kubernetes)
                .into_iter()
                .find_map(|(format, path)| Stamp::of(&path).map(|stamp| (format, path, stamp)));
            match found {
                Some((format, path, stamp)) => {
                    let source = Some((path, stamp));
                    let unchanged = self
                        .entries
                        .get(id)
                        .filter(|entry| entry.runtime == runtime && entry.source == source)
                        .map(|entry| entry.names.clone());
                    let names = unchanged.unwrap_or_else(|| {
                        let path = &source.as_ref().expect("found").0;
                        Arc::new(read(format, path).unwrap_or_default())
                    });
                    (source, names)
                }
                None => (None, self.unknown.clone()),
            }
        };
        self.entries.insert(
            id.to_owned(),
            Entry {
                runtime,
                source,
                names: names.clone(),
                checked: now,
            },
        );
        names
    }

    /// Podman's names, from `containers.json` (parsed again only when it changed).
    fn podman_names(&mut self, id: &str) -> Arc<RuntimeNames> {
        let path = self.files.storage_list();
        let Some(stamp) = Stamp::of(&path) else {
            self.storage_list = None;
            return self.unknown.clone();
        };
        if self
            .storage_list
            .as_ref()
            .is_none_or(|(seen, _)| *seen != stamp)
        {
            let list = read_bounded(&path, MAX_LIST_BYTES)
                .and_then(|bytes| files::parse_storage_list(&bytes))
                .unwrap_or_default();
            self.storage_list = Some((stamp, list));
        }
        self.storage_list
            .as_ref()
            .and_then(|(_, list)| list.get(id).cloned())
            .unwrap_or_else(|| self.unknown.clone())
    }

    /// Forgets the containers whose ids are not in `present`.
    pub fn retain(&mut self, present: &HashSet<&str>) {
        self.entries.retain(|id, _| present.contains(id.as_str()));
    }
}

/// Which layout a file follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Docker's `config.v2.json`.
    Docker,
    /// An OCI runtime spec with containerd's CRI annotations.
    ContainerdBundle,
    /// An OCI runtime spec with CRI-O's annotations.
    CrioUserdata,
}

/// Reads and parses one file; `None` (logged) when it cannot.
fn read(format: Format, path: &Path) -> Option<RuntimeNames> {
    let bytes = read_bounded(path, MAX_FILE_BYTES)?;
    let parsed = match format {
        Format::Docker => files::parse_docker(&bytes),
        Format::ContainerdBundle => files::parse_containerd(&bytes),
        Format::CrioUserdata => files::parse_crio(&bytes),
    };
    if parsed.is_none() {
        debug!(path = %path.display(), "runtime file is not in the expected format; names left absent");
    }
    parsed
}

fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|file| file.take(max + 1).read_to_end(&mut bytes));
    match read {
        Ok(n) if n as u64 > max => {
            debug!(path = %path.display(), max, "runtime file too large; names left absent");
            None
        }
        Ok(_) => Some(bytes),
        Err(err) => {
            debug!(path = %path.display(), "cannot read runtime file: {err}");
            None
        }
    }
}

/// A string value, kept only when it is non-empty and of bounded length.
fn bounded(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_BYTES)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
