//! Real Docker containers for the runtime tests, through the `docker` command.
//!
//! - [`engine`]: the engine, or `None` with the reason printed (the tests then skip), unless
//!   `COMPANION_DOCKER_REQUIRED` is set (`cargo xtask test` sets it after starting an engine):
//!   then a missing engine fails the test.
//! - [`Docker::image`]: a small image made offline from the host's static busybox (`docker
//!   import` of a root file system), built once and reused across runs.
//! - [`Docker::run`]: a detached container with `--network none` under a unique name prefix;
//!   the returned [`RunningContainer`] removes it (`docker rm -f` by id) when dropped, also when
//!   the test fails.
//! - Ground truth: [`Docker::top`] (the pids `docker top` lists), [`Docker::inspect`].

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

/// The image the tests run: busybox only.
pub const IMAGE: &str = "companion-test-busybox:1";
/// Applets linked in the image.
const APPLETS: &[&str] = &[
    "sh", "sleep", "tail", "true", "yes", "cat", "ls", "ps", "echo", "kill",
];
/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// A reachable Docker engine.
pub struct Docker {
    _private: (),
}

/// The engine, or `None` after printing why the Docker tests skip. When
/// `COMPANION_DOCKER_REQUIRED` is set, a missing engine panics instead.
pub fn engine() -> Option<Docker> {
    let why = match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(_) => return Some(Docker { _private: () }),
        Err(why) => why,
    };
    if std::env::var_os("COMPANION_DOCKER_REQUIRED").is_some() {
        panic!("COMPANION_DOCKER_REQUIRED is set but no Docker engine answers: {why}");
    }
    eprintln!(
        "SKIPPED: no Docker engine answers ({why}); `cargo xtask test` starts one (dockerd)"
    );
    None
}

/// Runs `docker ARGS`; its standard output, or why it failed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out: Output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run docker: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|why| panic!("{why}"))
}

static IMAGE_BUILT: Mutex<bool> = Mutex::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Docker {
    /// The test image, imported from a busybox root file system when the engine lacks it.
    pub fn image(&self) -> &'static str {
        let mut built = IMAGE_BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if *built || docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]).is_ok() {
            *built = true;
            return IMAGE;
        }
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: install busybox-static (`cargo xtask setup`)"
        );
        let dir = tempfile_dir();
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("running tar");
        assert!(status.success(), "tar failed: {status}");
        must(&["import", tar.to_str().unwrap(), IMAGE]);
        let _ = std::fs::remove_dir_all(&dir);
        *built = true;
        IMAGE
    }

    /// `docker run -d --network none --name <unique>-<name> ARGS IMAGE COMMAND…`.
    pub fn run(&self, name: &str, args: &[&str], command: &[&str]) -> RunningContainer {
        let image = self.image();
        let name = format!("{}{name}", prefix());
        let mut all = vec!["run", "-d", "--network", "none", "--name", &name];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(command);
        let id = must(&all).trim().to_owned();
        assert_eq!(id.len(), 64, "docker run printed {id:?}, not an id");
        RunningContainer { id, name }
    }

    /// The pids `docker top` lists for a container (host pids).
    pub fn top(&self, id: &str) -> BTreeSet<u32> {
        must(&["top", id, "-eo", "pid"])
            .lines()
            .skip(1)
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// `docker inspect --format FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        must(&["inspect", "--format", format, id]).trim().to_owned()
    }

    /// The container's main process, as the host sees it.
    pub fn main_pid(&self, id: &str) -> u32 {
        let pid = self.inspect(id, "{{.State.Pid}}");
        pid.parse()
            .unwrap_or_else(|_| panic!("State.Pid of {id} is {pid:?}"))
    }

    /// Starts `command` inside the container in the background (`docker exec -d`).
    pub fn exec_detached(&self, id: &str, command: &[&str]) {
        let mut all = vec!["exec", "-d", id];
        all.extend_from_slice(command);
        must(&all);
    }

    pub fn rename(&self, id: &str, new_name: &str) {
        must(&["rename", id, new_name]);
    }
}

/// The name prefix of this test process's containers: unique per process, so parallel runs and
/// the leftovers of a crashed one never collide.
pub fn prefix() -> String {
    format!(
        "companion-test-{}-{}-",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "companion-test-image-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A container started by [`Docker::run`]; removed (`docker rm -f` by id) when dropped.
pub struct RunningContainer {
    pub id: String,
    /// The name it was started with (a `docker rename` does not change this field).
    pub name: String,
}

impl RunningContainer {
    /// `/docker/<id>`: its cgroup path with the cgroupfs driver, the v1.0 API's name for it.
    pub fn cgroup_path(&self) -> String {
        format!("/docker/{}", self.id)
    }

    /// Removes it now (`docker rm -f`).
    pub fn remove(&self) {
        must(&["rm", "-f", &self.id]);
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        // Already gone is fine: the test may have removed it.
        if let Err(why) = docker(&["rm", "-f", &self.id])
            && !why.contains("No such container")
        {
            eprintln!("cleanup: {why}");
        }
    }
}
