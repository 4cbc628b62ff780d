//! Bounded polling: the only way a test waits for something.

use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`poll_until`] try again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `f` every 50 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// After `timeout`, with a message naming `what` ("timed out after 5s waiting for {what}").
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Like [`wait_until`], but returns `None` on timeout instead of panicking: for asserting that
/// something does *not* happen within a time, or for falling back to another check.
///
/// `f` is always called at least once, and once more at the deadline.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}
