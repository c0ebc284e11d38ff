//! Real containers for the runtime tests, through the `docker` command (and `podman`, which
//! takes the same commands).
//!
//! - [`engine`]: the Docker engine, or `None` with the reason printed (the tests then skip),
//!   unless `COMPANION_DOCKER_REQUIRED` is set (`cargo xtask test` sets it after starting an
//!   engine): then a missing engine fails the test. [`podman`]: the same for Podman.
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
/// The same image as Podman names it.
pub const PODMAN_IMAGE: &str = "localhost/companion-test-busybox:1";
/// Applets linked in the image.
const APPLETS: &[&str] = &[
    "sh", "sleep", "tail", "true", "yes", "cat", "ls", "ps", "echo", "kill",
];
/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// A container runtime's command line that works here.
pub struct Docker {
    /// `docker` or `podman`.
    cli: &'static str,
}

/// The Docker engine, or `None` after printing why the Docker tests skip. When
/// `COMPANION_DOCKER_REQUIRED` is set, a missing engine panics instead.
pub fn engine() -> Option<Docker> {
    available(
        "docker",
        &["version", "--format", "{{.Server.Version}}"],
        "`cargo xtask test` starts one (dockerd)",
    )
}

/// Podman (no daemon), or `None` after printing why the Podman tests skip (panics when
/// `COMPANION_DOCKER_REQUIRED` is set).
pub fn podman() -> Option<Docker> {
    available(
        "podman",
        &["version", "--format", "{{.Client.Version}}"],
        "`cargo xtask setup` installs podman",
    )
}

fn available(cli: &'static str, probe: &[&str], hint: &str) -> Option<Docker> {
    let why = match run_cli(cli, probe) {
        Ok(_) => return Some(Docker { cli }),
        Err(why) => why,
    };
    if std::env::var_os("COMPANION_DOCKER_REQUIRED").is_some() {
        panic!("COMPANION_DOCKER_REQUIRED is set but {cli} does not work: {why}");
    }
    eprintln!("SKIPPED: {cli} does not work here ({why}); {hint}");
    None
}

/// Runs `docker ARGS`; its standard output, or why it failed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    run_cli("docker", args)
}

fn run_cli(cli: &str, args: &[&str]) -> Result<String, String> {
    let out: Output = Command::new(cli)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run docker: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cli} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

static IMAGE_BUILT: Mutex<[bool; 2]> = Mutex::new([false; 2]);
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Docker {
    fn must(&self, args: &[&str]) -> String {
        run_cli(self.cli, args).unwrap_or_else(|why| panic!("{why}"))
    }

    /// The test image, imported from a busybox root file system when the runtime lacks it.
    /// Podman names an imported image `localhost/NAME`.
    pub fn image(&self) -> &'static str {
        let (slot, image) = match self.cli {
            "podman" => (1, PODMAN_IMAGE),
            _ => (0, IMAGE),
        };
        let mut built = IMAGE_BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if built[slot]
            || run_cli(
                self.cli,
                &["image", "inspect", "--format", "{{.Id}}", image],
            )
            .is_ok()
        {
            built[slot] = true;
            return image;
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
        self.must(&["import", tar.to_str().unwrap(), IMAGE]);
        let _ = std::fs::remove_dir_all(&dir);
        built[slot] = true;
        image
    }

    /// `docker run -d --network none --name <unique>-<name> ARGS IMAGE COMMAND…`.
    pub fn run(&self, name: &str, args: &[&str], command: &[&str]) -> RunningContainer {
        let image = self.image();
        let name = format!("{}{name}", prefix());
        let mut all = vec!["run", "-d", "--network", "none", "--name", &name];
        if self.cli == "podman" {
            // Podman raises RLIMIT_NOFILE and RLIMIT_NPROC to its defaults (1048576, 4194304)
            // for root, beyond this sandbox's hard limits: the runtime's setrlimit fails with
            // EPERM (also with `--ulimit host`). Limits within them work.
            all.extend([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        }
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(command);
        let id = self.must(&all).trim().to_owned();
        assert_eq!(id.len(), 64, "{} run printed {id:?}, not an id", self.cli);
        RunningContainer {
            id,
            name,
            cli: self.cli,
        }
    }

    /// The pids `docker top` lists for a container (host pids; Podman's `hpid`).
    pub fn top(&self, id: &str) -> BTreeSet<u32> {
        let args: &[&str] = match self.cli {
            "podman" => &["top", id, "hpid"],
            _ => &["top", id, "-eo", "pid"],
        };
        self.must(args)
            .lines()
            .skip(1)
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// `docker inspect --format FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.must(&["inspect", "--format", format, id])
            .trim()
            .to_owned()
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
        self.must(&all);
    }

    pub fn rename(&self, id: &str, new_name: &str) {
        self.must(&["rename", id, new_name]);
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
    cli: &'static str,
}

impl RunningContainer {
    /// `/docker/<id>`: its cgroup path with the cgroupfs driver, the v1.0 API's name for it.
    pub fn cgroup_path(&self) -> String {
        format!("/docker/{}", self.id)
    }

    /// Removes it now (`docker rm -f`).
    pub fn remove(&self) {
        if let Err(why) = run_cli(self.cli, &["rm", "-f", &self.id]) {
            panic!("{why}");
        }
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        // Already gone is fine: the test may have removed it.
        if let Err(why) = run_cli(self.cli, &["rm", "-f", &self.id])
            && !why.to_lowercase().contains("no such container")
        {
            eprintln!("cleanup: {why}");
        }
    }
}
