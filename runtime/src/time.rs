//! Small time helpers for `select!` loops.

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none: a `select!` branch that is armed
/// only while a deadline is set.
pub async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
