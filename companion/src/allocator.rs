//! The heap as jemalloc (the binary's global allocator, see `main.rs`) sees it: figures for
//! `/metrics`, and giving freed memory back at once after start-up.
//!
//! Where jemalloc is linked but not the global allocator (the library's unit tests), the
//! figures are None and the purge does nothing that matters.

use tikv_jemalloc_ctl::{epoch, stats};

/// What the service holds against what that costs.
#[derive(Clone, Copy, Debug)]
pub struct HeapFigures {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of resident pages: the allocations plus allocator metadata, partly used slabs and
    /// free pages not yet returned.
    pub resident: u64,
}

/// The figures now; None when jemalloc serves no allocations in this process.
pub fn heap_figures() -> Option<HeapFigures> {
    // The statistics are cached by jemalloc until the epoch moves.
    epoch::advance().ok()?;
    let (allocated, resident) = (
        stats::allocated::read().ok()?,
        stats::resident::read().ok()?,
    );
    (resident > 0).then_some(HeapFigures {
        allocated: allocated as u64,
        resident: resident as u64,
    })
}

/// Returns every free page of every arena to the system now.
///
/// Freed pages normally go back after `dirty_decay_ms`, but only as their arena sees new
/// activity: the start-up thread frees the eBPF loader's ~15 MB (BTF, object parsing) and then
/// mostly waits, so without this its arena would keep them resident for a long while.
pub fn release_freed() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge" takes and returns nothing.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name and no old/new values, as this control requires.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(rc, "the allocator's purge was refused");
    }
}
