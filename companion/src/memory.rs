//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps what the program frees for later use, and a heap fragmented by
//! short-lived allocations (processes that came and went, samples that left the history) is
//! never shrunk by itself: after a burst of container churn the service would keep its peak
//! size for good. Asking for a trim now and then returns the free pages.

/// Returns free heap memory of every arena to the system.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only hands free pages back; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
