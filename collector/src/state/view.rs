//! `AgentView`: one agent as every reader sees it at one moment. The exposition turns it into
//! series and the API serializes it as JSON, so both always agree (an agent `online` in the
//! API is `pantau_agent_up 1`), and a new per-agent fact is added here once.

use std::sync::Arc;
use std::time::SystemTime;

use pantau_protocol::AgentState;
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use super::events::EventCounts;
use super::{Agent, Liveness, StoredFamily};

/// One agent, copied out of `State` so the lock is held only briefly. The serialized fields
/// are the API's JSON fields (README "What the collector serves").
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub site: String,
    /// Same as `pantau_agent_up`: online and heard from recently enough.
    pub online: bool,
    /// The last status the agent itself reported: `online` or `offline`.
    pub status: AgentState,
    /// The last message's arrival (RFC 3339 in JSON), or none since the collector started.
    #[serde(serialize_with = "serialize_rfc3339_option")]
    pub last_seen: Option<SystemTime>,
    pub last_sequence: Option<u64>,
    pub interval_seconds: u64,
    pub version: Option<String>,
    /// The roles named by the agent's last birth that named any.
    pub roles: Vec<String>,
    pub messages_total: u64,
    /// Sequence numbers the window moved past without their message.
    pub missed_messages_total: u64,
    pub duplicate_messages_total: u64,
    /// Messages accepted below the newest sequence number (a replayed backlog).
    pub late_messages_total: u64,
    /// Sequence numbers inside the window not received yet: they may still come.
    pub sequence_gaps: u64,
    /// Events received, by severity.
    #[serde(skip)]
    pub events_total: EventCounts,
    /// The latest samples, present only while the agent is up: a down agent's last values
    /// would be stale, so its relayed series disappear.
    #[serde(skip)]
    pub families: Option<Arc<Vec<StoredFamily>>>,
}

impl AgentView {
    pub(super) fn new(id: &str, agent: &Agent, liveness: &Liveness, now: Instant) -> Self {
        let online = agent.is_up(liveness, now);
        Self {
            id: id.to_owned(),
            site: agent.site.clone(),
            online,
            status: agent.status,
            last_seen: agent.last_seen.map(|seen| seen.wall),
            last_sequence: agent.window.newest(),
            interval_seconds: agent.interval.as_secs(),
            version: agent.version.clone(),
            roles: agent.roles.clone(),
            messages_total: agent.messages_total,
            missed_messages_total: agent.window.missed(),
            duplicate_messages_total: agent.duplicates_total,
            late_messages_total: agent.late_total,
            sequence_gaps: agent.window.open_gaps(),
            events_total: agent.events_total,
            families: online.then(|| agent.families.clone()),
        }
    }
}

/// RFC 3339 with milliseconds, in UTC: `2027-01-15T08:00:00.250Z`.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

pub(super) fn serialize_rfc3339<S: Serializer>(
    time: &SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*time))
}

fn serialize_rfc3339_option<S: Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serialize_rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}
