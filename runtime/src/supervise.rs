//! Supervision of a binary's essential tasks (and threads, such as the embedded broker's).
//!
//! Every essential task runs until shutdown. If one ends early or panics, the process must not
//! go on serving stale data: the supervisor reports which task and why (through the callback,
//! at once, so `/readyz` can turn 503 before anything else happens), cancels the shutdown token
//! so the other tasks stop and flush, waits for them for a bounded time, and `run` returns the
//! error; `main` exits non-zero and systemd restarts the process.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// How long the other tasks may take to stop after the first failure or after shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// An essential task that did not run until shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("essential task '{task}' {why}")]
pub struct TaskFailure {
    pub task: String,
    pub why: String,
}

/// What an essential task returns: `()` or a `Result` whose error says why it gave up.
pub trait TaskResult: Send + 'static {
    /// `Err` with the reason when the task failed.
    fn into_result(self) -> Result<(), String>;
}

impl TaskResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display + Send + 'static> TaskResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|error| error.to_string())
    }
}

type FailureHook = Box<dyn Fn(&TaskFailure) + Send + Sync>;

/// Runs named essential tasks and watches them.
pub struct Supervisor {
    tasks: JoinSet<Result<(), String>>,
    names: HashMap<Id, String>,
    shutdown: CancellationToken,
    grace: Duration,
    on_failure: Option<FailureHook>,
}

impl Supervisor {
    /// Tasks are expected to stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            grace: DEFAULT_GRACE,
            on_failure: None,
        }
    }

    /// How long to wait for the remaining tasks once stopping.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Called once, at the moment the first essential task is found to have failed.
    pub fn on_failure(mut self, hook: impl Fn(&TaskFailure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Box::new(hook));
        self
    }

    /// The token every task stops on; a role that starts background work selects on it.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Spawns `task` on the runtime as essential task `name`.
    pub fn spawn<T: TaskResult>(
        &mut self,
        name: &str,
        task: impl Future<Output = T> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(async move { task.await.into_result() });
        self.names.insert(handle.id(), name.to_owned());
    }

    /// Runs `body` on a dedicated OS thread (for code that blocks or builds its own runtime)
    /// as essential task `name`. The thread is not joined at shutdown: such code has no stop
    /// call and ends with the process.
    pub fn spawn_thread<T: TaskResult>(
        &mut self,
        name: &str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // On a panic the sender is dropped unsent, which the watcher reads as a panic.
                let _ = done_tx.send(body().into_result());
            })?;
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            tokio::select! {
                // At shutdown the thread is left to end with the process.
                _ = shutdown.cancelled() => Ok(()),
                result = done_rx => match result {
                    Ok(result) => result.and(Err("thread returned".to_owned())),
                    Err(_) => Err("thread panicked".to_owned()),
                },
            }
        });
        Ok(())
    }

    /// Waits until shutdown and for every task to finish, or until an essential task fails.
    pub async fn run(mut self) -> Result<(), TaskFailure> {
        let mut first_failure = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let (name, outcome) = self.identify(joined);
            let failure = match outcome {
                Err(why) => Some(why),
                Ok(()) if !self.shutdown.is_cancelled() => Some("ended before shutdown".to_owned()),
                Ok(()) => None,
            };
            if let Some(why) = failure {
                let failure = TaskFailure { task: name, why };
                if first_failure.is_none() {
                    error!(task = %failure.task, why = %failure.why, "essential task stopped; shutting down");
                    if let Some(hook) = &self.on_failure {
                        hook(&failure);
                    }
                    first_failure = Some(failure);
                    self.shutdown.cancel();
                } else {
                    warn!(task = %failure.task, why = %failure.why, "task failed while stopping");
                }
            }
            if self.shutdown.is_cancelled() {
                // From here on only wait a bounded time for the rest.
                return self.drain(first_failure).await;
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// The name of a finished task and how it ended (a panic as an error).
    fn identify(
        &mut self,
        joined: Result<(Id, Result<(), String>), JoinError>,
    ) -> (String, Result<(), String>) {
        let (id, outcome) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => (error.id(), Err(panic_text(error))),
        };
        let name = self
            .names
            .remove(&id)
            .unwrap_or_else(|| "unnamed".to_owned());
        (name, outcome)
    }

    async fn drain(mut self, first_failure: Option<TaskFailure>) -> Result<(), TaskFailure> {
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut first_failure = first_failure;
        loop {
            let joined = tokio::select! {
                joined = self.tasks.join_next_with_id() => joined,
                _ = tokio::time::sleep_until(deadline) => {
                    let waiting: Vec<&String> = self.names.values().collect();
                    warn!(?waiting, grace = ?self.grace, "tasks did not stop in time");
                    self.tasks.abort_all();
                    break;
                }
            };
            let Some(joined) = joined else { break };
            let (name, outcome) = self.identify(joined);
            if let Err(why) = outcome {
                warn!(task = %name, %why, "task failed while stopping");
                first_failure.get_or_insert(TaskFailure { task: name, why });
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

fn panic_text(error: JoinError) -> String {
    if error.is_cancelled() {
        return "was cancelled".to_owned();
    }
    let message = match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text payload".to_owned()),
        Err(_) => "an unknown cause".to_owned(),
    };
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_early_fails_the_run_and_stops_the_others() {
        let shutdown = CancellationToken::new();
        let seen = Arc::new(Mutex::new(None));
        let hook_seen = seen.clone();
        let mut supervisor = Supervisor::new(shutdown.clone()).on_failure(move |failure| {
            *hook_seen.lock().unwrap() = Some(failure.task.clone());
        });
        let token = shutdown.clone();
        supervisor.spawn("http", async move { token.cancelled().await });
        supervisor.spawn("decoder", async {});
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(failure.task, "decoder");
        assert_eq!(
            failure.to_string(),
            "essential task 'decoder' ended before shutdown"
        );
        assert!(shutdown.is_cancelled());
        assert_eq!(seen.lock().unwrap().as_deref(), Some("decoder"));
    }

    #[tokio::test]
    async fn a_panicking_task_is_named_with_its_message() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let token = shutdown.clone();
        supervisor.spawn("sweeper", async move { token.cancelled().await });
        supervisor.spawn("decoder", async {
            tokio::task::yield_now().await;
            if true {
                panic!("overflow in seq arithmetic");
            }
        });
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(failure.task, "decoder");
        assert_eq!(failure.why, "panicked: overflow in seq arithmetic");
    }

    #[tokio::test]
    async fn an_error_result_gives_the_reason() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor.spawn("http", async {
            Err::<(), _>("cannot accept: too many open files")
        });
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(
            failure.to_string(),
            "essential task 'http' cannot accept: too many open files"
        );
    }

    #[tokio::test]
    async fn a_clean_shutdown_is_ok() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        for name in ["a", "b"] {
            let token = shutdown.clone();
            supervisor.spawn(name, async move { token.cancelled().await });
        }
        let stopper = shutdown.clone();
        tokio::spawn(async move { stopper.cancel() });
        assert_eq!(supervisor.run().await, Ok(()));
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_abandoned_after_the_grace() {
        let shutdown = CancellationToken::new();
        let mut supervisor =
            Supervisor::new(shutdown.clone()).with_grace(Duration::from_millis(50));
        supervisor.spawn("stuck", std::future::pending::<()>());
        supervisor.spawn("quits", async {});
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(failure.task, "quits");
    }

    #[tokio::test]
    async fn a_thread_that_panics_or_returns_fails_the_run() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor
            .spawn_thread("mqtt-broker", || -> () { panic!("bind failed") })
            .unwrap();
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(
            failure.to_string(),
            "essential task 'mqtt-broker' thread panicked"
        );

        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor
            .spawn_thread("mqtt-broker", || Err::<(), _>("address in use"))
            .unwrap();
        let failure = supervisor.run().await.unwrap_err();
        assert_eq!(failure.why, "address in use");
    }
}
