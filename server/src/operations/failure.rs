//! Failures: how an error is told in one line ([`Chain`]), and whether a
//! serving core has panicked.
//!
//! A panicked core's `SO_REUSEPORT` sockets stay open, so the kernel would
//! keep sending it a share of the clients, who would time out. The panic
//! hook ([`super::metrics::count_panics`]) notes the panic here; the control
//! plane sees it, turns `/health` to 503 and stops the process, so that the
//! kubelet restarts it.

use std::sync::atomic::{AtomicBool, Ordering};

/// An error and its causes as one line, `outer: cause: cause`, for logs
/// and for `main`. A cause whose words its outer error already holds
/// (many errors repeat their source in their own message) is not told
/// twice. The only formatter of error chains in kubewire.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(inner) = cause {
            let inner_text = inner.to_string();
            if !text.contains(&inner_text) {
                text.push_str(": ");
                text.push_str(&inner_text);
            }
            cause = inner.source();
        }
        f.write_str(&text)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading the file")]
    struct Wraps(#[source] std::io::Error);

    #[test]
    fn a_chain_tells_each_cause_once() {
        let cause = || std::io::Error::other("disk on fire");
        assert_eq!(Chain(&Repeats(cause())).to_string(), "outer: disk on fire");
        assert_eq!(
            Chain(&Wraps(cause())).to_string(),
            "reading the file: disk on fire"
        );
    }
}
