//! `Agent`: everything the collector knows about one agent, and the rule applied to it alone:
//! whether it counts as up. Its sequence numbers are checked by its `SeqWindow`.

use std::sync::Arc;
use std::time::Duration;

use pantau_protocol::AgentState;
use tokio::time::Instant;

use super::events::{EventCounts, RecentEvents};
use super::sequence::SeqWindow;
use super::series::StoredFamily;
use super::{Liveness, Moment};

/// How many of the collector's own rejection events an agent keeps. Apart from the agent's
/// events, so that a flood of forged messages cannot push those out.
pub const MAX_REJECTIONS: usize = 16;

/// Everything known about one agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub site: String,
    /// From the last status message, or `Online` once the agent sends data.
    pub status: AgentState,
    pub interval: Duration,
    pub version: Option<String>,
    /// The roles of the last birth that named any: a last will names none, and forgetting the
    /// roles whenever the agent goes down would make them flicker.
    pub roles: Vec<String>,
    /// When a message from the agent last arrived (a retained status replayed by the broker is
    /// not a sign of life and does not count).
    pub last_seen: Option<Moment>,
    /// When anything about the agent last changed, retained messages included; drives forgetting.
    pub last_activity: Instant,
    /// Sequence numbers seen, and the missed ones.
    pub window: SeqWindow,
    pub messages_total: u64,
    pub duplicates_total: u64,
    /// Messages accepted below the newest sequence number (a replayed backlog).
    pub late_total: u64,
    /// Every event ever received, by severity.
    pub events_total: EventCounts,
    /// The most recent events themselves, bounded.
    pub recent_events: RecentEvents,
    /// The collector's most recent rejections of this agent's messages, bounded.
    pub rejections: RecentEvents,
    /// Latest samples; shared with scrapes in progress, replaced whole on each message.
    pub families: Arc<Vec<StoredFamily>>,
    /// Whether the last sweep saw the agent up, to log transitions once.
    pub was_up: bool,
    /// `connected_ms` of the last `online` status: an `offline` from an older connection is
    /// stale.
    pub online_connected_ms: Option<i64>,
}

impl Agent {
    pub(super) fn new(site: &str, liveness: &Liveness, max_events: usize, now: Instant) -> Self {
        Self {
            site: site.to_owned(),
            status: AgentState::Offline,
            interval: liveness.default_interval,
            version: None,
            roles: Vec::new(),
            last_seen: None,
            last_activity: now,
            window: SeqWindow::default(),
            messages_total: 0,
            duplicates_total: 0,
            late_total: 0,
            events_total: EventCounts::default(),
            recent_events: RecentEvents::new(max_events),
            rejections: RecentEvents::new(MAX_REJECTIONS.min(max_events)),
            families: Arc::new(Vec::new()),
            was_up: false,
            online_connected_ms: None,
        }
    }

    /// Whether the agent counts as up at `now`.
    pub fn is_up(&self, liveness: &Liveness, now: Instant) -> bool {
        let deadline = self.interval.saturating_mul(liveness.silent_intervals);
        self.status == AgentState::Online
            && self
                .last_seen
                .is_some_and(|seen| now.saturating_duration_since(seen.instant) <= deadline)
    }
}
