//! Carrying each agent's sequence accounting across a collector restart: `State::accounting`
//! takes the snapshot that `saved.rs` writes, `State::restore` takes it back at start.
//!
//! A restored agent is not shown until it is heard from again (its retained birth, replayed
//! on subscribe, is enough): until then its accounting waits in `State::restored`, and the
//! agent takes it over when it is admitted. So the window goes on where it stopped: numbers
//! sent while the collector was down are open gaps (missed once the window passes them, or
//! filled if the agent's outbox replays them), and a late message that fills a gap counts once.
//!
//! Bounded like the state itself: at most `max_agents` entries are restored (the most recently
//! active), and an entry whose agent stays away longer than `forget_after` is dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::saved::SavedAgent;
use super::sequence::SeqWindow;
use super::{Agent, Moment, State};

impl State {
    /// Every agent's accounting at `now`, followed agents and restored ones not heard from
    /// yet; drops restored entries older than `forget_after` first.
    pub fn accounting(&mut self, now: Moment) -> Vec<SavedAgent> {
        let now_ms = unix_ms(now.wall);
        self.prune_restored(now_ms);
        let mut saved: Vec<SavedAgent> = self
            .agents
            .iter()
            .map(|(id, agent)| {
                let idle = now.instant.saturating_duration_since(agent.last_activity);
                SavedAgent {
                    id: id.clone(),
                    site: agent.site.clone(),
                    last_activity_ms: now_ms.saturating_sub(millis(idle)),
                    window: agent.window.parts(),
                    online_connected_ms: agent.online_connected_ms,
                    messages_total: agent.messages_total,
                    duplicates_total: agent.duplicates_total,
                    late_total: agent.late_total,
                }
            })
            .collect();
        saved.extend(self.restored.values().cloned());
        saved.sort_by(|a, b| a.id.cmp(&b.id));
        saved
    }

    /// Takes back `saved` accounting at start: the `max_agents` most recently active entries
    /// not older than `forget_after`, each with a well-formed window. Returns how many.
    pub fn restore(&mut self, mut saved: Vec<SavedAgent>, now: Moment) -> usize {
        saved.sort_by_key(|agent| std::cmp::Reverse(agent.last_activity_ms));
        for agent in saved {
            if self.restored.len() >= self.max_agents {
                break;
            }
            if self.agents.contains_key(&agent.id)
                || SeqWindow::from_parts(agent.window.clone()).is_none()
            {
                continue;
            }
            self.restored.insert(agent.id.clone(), agent);
        }
        self.prune_restored(unix_ms(now.wall));
        self.restored.len()
    }

    /// Restored entries not taken over by an agent yet.
    #[cfg(test)]
    pub fn restored_len(&self) -> usize {
        self.restored.len()
    }

    fn prune_restored(&mut self, now_ms: i64) {
        let limit = millis(self.liveness.forget_after);
        self.restored
            .retain(|_, agent| now_ms.saturating_sub(agent.last_activity_ms) <= limit);
    }
}

/// Gives a newly admitted agent its restored accounting, if there is one.
pub(super) fn take_over(agent: &mut Agent, saved: SavedAgent) {
    if let Some(window) = SeqWindow::from_parts(saved.window) {
        agent.window = window;
        agent.online_connected_ms = saved.online_connected_ms;
        agent.messages_total = saved.messages_total;
        agent.duplicates_total = saved.duplicates_total;
        agent.late_total = saved.late_total;
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    millis(time.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
