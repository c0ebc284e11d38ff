//! What a container's cgroup path says about it: the runtime that made it, its id, and for
//! Kubernetes its pod and QoS class. Container runtimes name cgroups by fixed patterns; this
//! recognises Docker, containerd, CRI-O, Podman, LXC and systemd-nspawn, in both the cgroupfs
//! and the systemd layouts.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `docker`, `containerd`, `cri-o`, `podman`, `lxc`, `systemd-nspawn`; `None` when the path
    /// follows no known pattern.
    pub runtime: Option<&'static str>,
    /// The container id (what `docker ps` shows the start of) or, for LXC and nspawn, its name.
    pub id: Option<String>,
    /// Kubernetes pod UID.
    pub pod_uid: Option<String>,
    /// Kubernetes QoS class: `guaranteed`, `burstable` or `besteffort`.
    pub qos_class: Option<&'static str>,
}

impl Identity {
    pub fn of(path: &str) -> Identity {
        let mut identity = Identity::default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        kubernetes(&segments, &mut identity);
        let Some(last) = segments.last() else {
            return identity;
        };
        let parent = segments.len().checked_sub(2).map(|i| segments[i]);
        let scoped = |prefix: &str| {
            last.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".scope"))
                .map(str::to_owned)
        };
        let (runtime, id) = if let Some(id) = scoped("docker-") {
            ("docker", id)
        } else if let Some(id) = scoped("cri-containerd-") {
            ("containerd", id)
        } else if let Some(id) = scoped("crio-") {
            ("cri-o", id)
        } else if let Some(id) = scoped("libpod-") {
            ("podman", id)
        } else if let (Some("libpod_parent"), Some(id)) = (
            parent,
            last.strip_prefix("libpod-").filter(|id| is_hex_id(id)),
        ) {
            // Podman's cgroupfs manager (no systemd): /libpod_parent/libpod-<id>.
            ("podman", id.to_owned())
        } else if let Some(name) = last
            .strip_prefix("systemd-nspawn@")
            .and_then(|rest| rest.strip_suffix(".service"))
        {
            ("systemd-nspawn", unescape_systemd(name))
        } else if let (Some("machine.slice"), Some(name)) = (
            parent,
            last.strip_prefix("machine-")
                .and_then(|rest| rest.strip_suffix(".scope")),
        ) {
            ("systemd-nspawn", unescape_systemd(name))
        } else if let Some(name) = last.strip_prefix("lxc.payload.") {
            ("lxc", name.to_owned())
        } else if parent == Some("lxc") {
            ("lxc", (*last).to_owned())
        } else if parent == Some("docker") && is_hex_id(last) {
            ("docker", (*last).to_owned())
        } else if identity.pod_uid.is_some() && is_hex_id(last) {
            // cgroupfs layout of Kubernetes: /kubepods/<qos>/pod<uid>/<container id>.
            ("containerd", (*last).to_owned())
        } else {
            return identity;
        };
        identity.runtime = Some(runtime);
        identity.id = Some(id);
        identity
    }

    /// Whether `prefix` names this container: a prefix of its id (`docker ps` style).
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.id.as_deref().is_some_and(|id| id.starts_with(prefix))
    }
}

/// Pod UID and QoS class, from `kubepods-burstable-pod<uid>.slice` (systemd driver, with `_`
/// for `-` in the UID) or `/kubepods/burstable/pod<uid>` (cgroupfs driver).
fn kubernetes(segments: &[&str], identity: &mut Identity) {
    if !segments.first().is_some_and(|s| s.starts_with("kubepods")) {
        return;
    }
    identity.qos_class = Some("guaranteed");
    for segment in segments {
        let segment = segment.strip_suffix(".slice").unwrap_or(segment);
        for (marker, class) in [("besteffort", "besteffort"), ("burstable", "burstable")] {
            if segment.ends_with(marker) || segment.contains(&format!("{marker}-pod")) {
                identity.qos_class = Some(class);
            }
        }
        if let Some(at) = segment.rfind("pod") {
            let uid = &segment[at + 3..];
            if uid.len() >= 32
                && uid
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
            {
                identity.pod_uid = Some(uid.replace('_', "-"));
            }
        }
    }
}

fn is_hex_id(text: &str) -> bool {
    text.len() >= 12 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// systemd escapes unit names: `\x2d` is `-`.
fn unescape_systemd(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8847cf9188b478d504615fc0ab2d15943e24bfab7c643f1de34d898034587200";

    fn check(path: &str, runtime: &str, id: &str) -> Identity {
        let identity = Identity::of(path);
        assert_eq!(identity.runtime, Some(runtime), "{path}");
        assert_eq!(identity.id.as_deref(), Some(id), "{path}");
        identity
    }

    #[test]
    fn docker() {
        check(&format!("/docker/{ID}"), "docker", ID);
        check(&format!("/system.slice/docker-{ID}.scope"), "docker", ID);
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
        );
        let identity = check(&path, "containerd", ID);
        assert_eq!(
            identity.pod_uid.as_deref(),
            Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d")
        );
        assert_eq!(identity.qos_class, Some("burstable"));

        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-{ID}.scope"
        );
        let identity = check(&guaranteed, "cri-o", ID);
        assert_eq!(identity.qos_class, Some("guaranteed"));
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(Identity::of(&besteffort).qos_class, Some("besteffort"));
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let path = format!("/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/{ID}");
        let identity = check(&path, "containerd", ID);
        assert_eq!(identity.qos_class, Some("besteffort"));
        assert_eq!(
            identity.pod_uid.as_deref(),
            Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d")
        );
    }

    #[test]
    fn podman_lxc_nspawn() {
        check(&format!("/machine.slice/libpod-{ID}.scope"), "podman", ID);
        check(&format!("/libpod_parent/libpod-{ID}"), "podman", ID);
        check("/lxc/web01", "lxc", "web01");
        check("/lxc.payload.web01", "lxc", "web01");
        check(
            "/machine.slice/systemd-nspawn@my\\x2dbox.service",
            "systemd-nspawn",
            "my-box",
        );
        check(
            "/machine.slice/machine-my\\x2dbox.scope",
            "systemd-nspawn",
            "my-box",
        );
    }

    #[test]
    fn unknown_paths_have_no_runtime() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-2.scope",
            "/docker",
            "/docker/not-an-id",
            "/libpod_parent/conmon",
            "/libpod_parent/libpod-conmon",
            "/foo",
        ] {
            assert_eq!(Identity::of(path).runtime, None, "{path}");
        }
    }

    #[test]
    fn prefixes() {
        let identity = Identity::of(&format!("/docker/{ID}"));
        assert!(identity.matches_prefix("8847cf"));
        assert!(identity.matches_prefix(ID));
        assert!(!identity.matches_prefix(""));
        assert!(!identity.matches_prefix("8847cg"));
    }
}
