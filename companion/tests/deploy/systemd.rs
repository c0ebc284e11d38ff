//! The systemd unit: verifies, its exposure score, its hardening settings.

use super::*;

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
pub(crate) fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
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
