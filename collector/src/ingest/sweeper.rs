//! The liveness sweep: once a second, notes agents going up and down and forgets those down
//! for longer than `agents.forget_after_seconds`, with one log line per change. Whether an
//! agent is up is decided from its timestamps at read time; the sweep only reports it.

use std::sync::PoisonError;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::{SharedState, Transition};

/// Sweeps until `shutdown`.
pub async fn run(state: SharedState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let transitions = {
            let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
            state.sweep(tokio::time::Instant::now())
        };
        for transition in transitions {
            match transition {
                Transition::Up { agent } => info!(agent = %agent, "agent up"),
                Transition::Down { agent } => warn!(agent = %agent, "agent down"),
                Transition::Forgotten { agent } => info!(agent = %agent, "agent forgotten"),
            }
        }
    }
}
