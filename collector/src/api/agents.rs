//! `GET /api/v1/agents` and `GET /api/v1/agents/{id}`: what the collector knows of each agent.

use std::sync::PoisonError;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use pantau_protocol::{AgentState, validate_id};
use serde::Serialize;
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::state::{Agent, Liveness};

/// One agent as the API shows it.
#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: String,
    pub site: String,
    /// Same as `pantau_agent_up`: online and heard from recently enough.
    pub online: bool,
    /// The last status the agent itself reported: `online` or `offline`.
    pub status: AgentState,
    /// RFC 3339 time of the last message, or null if none arrived since the collector started.
    pub last_seen: Option<String>,
    pub last_sequence: Option<u64>,
    pub interval_seconds: u64,
    pub version: Option<String>,
    pub messages_total: u64,
    pub missed_messages_total: u64,
    pub duplicate_messages_total: u64,
}

#[derive(Debug, Serialize)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

pub async fn list(State(app): State<AppState>) -> Json<AgentList> {
    let now = Instant::now();
    let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
    let mut agents: Vec<AgentView> = state
        .agents()
        .map(|(id, agent)| view(id, agent, state.liveness(), now))
        .collect();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    Json(AgentList { agents })
}

pub async fn one(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    validate_id(&id).map_err(|why| ApiError::BadRequest(format!("agent id '{id}': {why}")))?;
    let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
    let agent = state
        .agent(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no agent '{id}'")))?;
    Ok(Json(view(&id, agent, state.liveness(), Instant::now())))
}

fn view(id: &str, agent: &Agent, liveness: &Liveness, now: Instant) -> AgentView {
    AgentView {
        id: id.to_owned(),
        site: agent.site.clone(),
        online: agent.is_up(liveness, now),
        status: agent.status,
        last_seen: agent.last_seen.map(|seen| rfc3339(seen.wall)),
        last_sequence: agent.last_seq,
        interval_seconds: agent.interval.as_secs(),
        version: agent.version.clone(),
        messages_total: agent.messages_total,
        missed_messages_total: agent.missed_total,
        duplicate_messages_total: agent.duplicates_total,
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
