//! Least privilege: after start-up the service keeps only the capabilities it still uses.
//!
//! It needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN for tracefs) only to load and attach
//! its kernel programs. Afterwards it reads /proc, which anyone may, except that the kernel hides
//! some fields of /proc/PID/stat (code and stack addresses, `arg_start`…) of other users'
//! processes from readers without CAP_SYS_PTRACE; that capability is kept so every field is
//! reported (`--ptrace false` drops it too: those fields then read as 0, or 1). Nothing the service
//! does later can gain capabilities back (no-new-privileges,
//! a bounding set holding only what is kept).

use caps::{CapSet, Capability, CapsHashSet};
use tracing::{debug, info};

use crate::tracker::TrackerKind;

/// The capabilities the service keeps when running with `tracker`; CAP_SYS_PTRACE only with
/// `ptrace` (`--ptrace`).
pub fn needed(tracker: TrackerKind, ptrace: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if ptrace {
        keep.insert(Capability::CAP_SYS_PTRACE);
    }
    if tracker == TrackerKind::Ebpf && !map_access_is_unprivileged() {
        // Kernels before 6.5 check CAP_BPF on every bpf() call, map reads included, when
        // unprivileged BPF is disabled.
        keep.insert(Capability::CAP_BPF);
    }
    keep
}

/// Since Linux 6.5 operations on an already-open map need no capability.
fn map_access_is_unprivileged() -> bool {
    let release = rustix::system::uname();
    let release = release.release().to_string_lossy();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 5)
}

/// Drops every capability but `keep` from this thread's sets (call it before starting other
/// threads), shrinks the bounding set to `keep`, empties the ambient one, and sets
/// no-new-privileges.
pub fn keep_only(keep: &CapsHashSet) -> anyhow::Result<()> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // The bounding set can only shrink while CAP_SETPCAP is still held: do it first.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    rustix::thread::set_no_new_privs(true)?;
    if permitted.is_empty() {
        debug!("running without capabilities");
    } else {
        let mut kept: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
        kept.sort();
        info!(kept = %kept.join(","), "dropped the other capabilities");
    }
    Ok(())
}
