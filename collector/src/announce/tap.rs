//! The decoder's hook into announcements: `Tap::offer` passes births (site, clips) and the
//! events that answer announcements and schedules over a bounded channel, never waiting;
//! `apply_event` turns an agent's answer into its target's status.

use pantau_protocol::{COMMAND_COMPLETED, COMMAND_REJECTED, Decoded, Message};
use tokio::sync::mpsc;
use tracing::debug;

use super::store::scheduled::PlayEvent;
use super::{Store, StoreError, schedules};

/// Messages waiting between the decoder and the announcer; beyond it they are dropped (and
/// the resend picks up what a dropped answer would have stopped).
const TAP_CAPACITY: usize = 1024;

/// What the decoder passes on: births (site, clips) and events (announcement outcomes).
#[derive(Debug)]
pub enum Observation {
    Status {
        agent: String,
        site: String,
        clips: Vec<String>,
    },
    Events {
        agent: String,
        events: Vec<pantau_protocol::Event>,
    },
}

/// The decoder's end: offers what matters to announcements, never waiting.
#[derive(Debug, Clone)]
pub struct Tap(mpsc::Sender<Observation>);

impl Tap {
    pub fn channel() -> (Self, mpsc::Receiver<Observation>) {
        let (sender, receiver) = mpsc::channel(TAP_CAPACITY);
        (Self(sender), receiver)
    }

    /// What of `decoded` matters to announcements: a status, or the events that answer
    /// announcements and schedules.
    pub fn observe(decoded: &Decoded) -> Option<Observation> {
        let agent = decoded.topic.agent.clone();
        let observation = match &decoded.message {
            Message::Status(status) => Observation::Status {
                agent,
                site: status.site.clone(),
                clips: status.clips.clone(),
            },
            Message::Events(events) => {
                let events: Vec<_> = events
                    .events
                    .iter()
                    .filter(|event| {
                        event.kind.starts_with("announcement_")
                            || event.kind == COMMAND_REJECTED
                            || (event.kind == COMMAND_COMPLETED
                                && event.labels.get("command").map(String::as_str)
                                    == Some(pantau_protocol::sound::STOP))
                            || event.kind == schedules::SCHEDULE_APPLIED
                    })
                    .cloned()
                    .collect();
                if events.is_empty() {
                    return None;
                }
                Observation::Events { agent, events }
            }
            _ => return None,
        };
        Some(observation)
    }

    /// Passes `observation` on, or drops it if the announcer is that far behind.
    pub fn offer(&self, observation: Observation) {
        if self.0.try_send(observation).is_err() {
            debug!("announcement tap full: an observation was dropped");
        }
    }
}

/// Updates a target's status from one of its agent's events, records a scheduled play, or
/// takes an answered stop off the resend list. `scheduled_args` gives what a schedule entry
/// plays, by name, for a scheduled play's row.
pub(super) fn apply_event(
    store: &Store,
    agent: &str,
    event: &pantau_protocol::Event,
    now_ms: i64,
    scheduled_args: impl Fn(&str) -> serde_json::Value,
) -> Result<(), StoreError> {
    if let Some(outcome) = event.kind.strip_prefix("announcement_") {
        let Some(command_id) = event.labels.get("announcement") else {
            return Ok(());
        };
        match event.labels.get("schedule") {
            Some(schedule) => {
                let play = PlayEvent {
                    agent,
                    schedule,
                    play: command_id,
                    outcome,
                    detail: &event.message,
                };
                match store.record_scheduled(&play, &scheduled_args(schedule), now_ms) {
                    // Not from a Pantau sound agent's schedule: left out of the history, and
                    // the rest of the agent's events still count.
                    Err(StoreError::NotAPlay(id)) => {
                        debug!(agent, announcement = %id, "scheduled-play event with a foreign id ignored");
                    }
                    other => other?,
                }
            }
            None => {
                store.set_status_of(agent, command_id, outcome, &event.message, now_ms)?;
            }
        }
        return Ok(());
    }
    let Some(command_id) = event.labels.get("command_id") else {
        return Ok(());
    };
    // Any answer to a stop, even a refusal as a replay of one already carried out, means the
    // agent has it: it is not resent.
    if store.stop_answered(agent, command_id)? || event.kind == COMMAND_COMPLETED {
        return Ok(());
    }
    let Some(reason) = event.labels.get("reason") else {
        return Ok(());
    };
    // A resend that crossed the agent's answer is refused as a replay: the first answer stands.
    if reason == "replayed" {
        return Ok(());
    }
    store.set_status_of(
        agent,
        command_id,
        "rejected",
        &format!("{reason}: {}", event.message),
        now_ms,
    )?;
    Ok(())
}
