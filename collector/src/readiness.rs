//! What `/readyz` answers. Ready means subscribed to the broker and every essential task
//! running: the MQTT task sets and clears the first, the supervisor's failure hook records the
//! second, at the moment it happens and for good, so a load balancer or systemd sees a
//! collector that is about to exit as not ready rather than serving stale data until then.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use pantau_runtime::supervise::{Supervisor, TaskFailure};
use tokio_util::sync::CancellationToken;

/// Shared readiness; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    subscribed: AtomicBool,
    /// The first essential task failure; never cleared, the process is on its way out.
    failure: OnceLock<String>,
}

/// Why the collector is not ready: the body of a 503 from `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    NotSubscribed,
    /// An essential task stopped; the text names it and says why.
    TaskFailed(String),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::NotSubscribed => f.write_str("not subscribed to the broker"),
            NotReady::TaskFailed(failure) => f.write_str(failure),
        }
    }
}

impl Readiness {
    /// Ready, or why not. A task failure outweighs a live subscription.
    pub fn check(&self) -> Result<(), NotReady> {
        if let Some(failure) = self.0.failure.get() {
            return Err(NotReady::TaskFailed(failure.clone()));
        }
        if !self.0.subscribed.load(Ordering::Relaxed) {
            return Err(NotReady::NotSubscribed);
        }
        Ok(())
    }

    /// Called by the MQTT task on SubAck (true) and on losing the connection (false).
    pub fn set_subscribed(&self, subscribed: bool) {
        self.0.subscribed.store(subscribed, Ordering::Relaxed);
    }

    /// Not ready from now on, with `failure` as the reason.
    pub fn record_failure(&self, failure: &TaskFailure) {
        let _ = self.0.failure.set(failure.to_string());
    }

    /// A supervisor for the essential tasks whose first failure is recorded here, at the
    /// moment it is found, before the other tasks are asked to stop.
    pub fn supervisor(&self, shutdown: CancellationToken) -> Supervisor {
        let readiness = self.clone();
        Supervisor::new(shutdown).on_failure(move |failure| readiness.record_failure(failure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_failure_outweighs_the_subscription_and_stays() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(), Err(NotReady::NotSubscribed));
        readiness.set_subscribed(true);
        assert_eq!(readiness.check(), Ok(()));
        readiness.record_failure(&TaskFailure {
            task: "decoder".to_owned(),
            why: "panicked: boom".to_owned(),
        });
        readiness.record_failure(&TaskFailure {
            task: "sweeper".to_owned(),
            why: "ended before shutdown".to_owned(),
        });
        let why = readiness.check().unwrap_err().to_string();
        assert_eq!(why, "essential task 'decoder' panicked: boom");
    }
}
