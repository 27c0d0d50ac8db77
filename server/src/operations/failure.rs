//! Whether a serving core has panicked.
//!
//! A panicked core's `SO_REUSEPORT` sockets stay open, so the kernel would
//! keep sending it a share of the clients, who would time out. The panic
//! hook ([`super::metrics::count_panics`]) notes the panic here; the control
//! plane sees it, turns `/health` to 503 and stops the process, so that the
//! kubelet restarts it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Every serving core's thread name starts with this.
pub const CORE_THREAD_PREFIX: &str = "kubewire-core-";

/// Set when a serving core panics.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Called from the panic hook: notes a panic on a serving core's thread.
pub fn note_panic() {
    if std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with(CORE_THREAD_PREFIX))
    {
        FAILED.store(true, Ordering::Release);
    }
}

/// Whether a serving core has panicked.
pub fn core_failed() -> bool {
    FAILED.load(Ordering::Acquire)
}
