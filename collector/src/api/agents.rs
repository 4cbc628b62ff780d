//! `GET /api/v1/agents`, `GET /api/v1/agents/{id}` and `GET /api/v1/agents/{id}/events`: what
//! the collector knows of each agent. The JSON of an agent is `state::AgentView`, the same
//! view the exposition reads.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::{Path, State};
use pantau_protocol::validate_id;
use serde::Serialize;
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::state::{AgentView, EventRecord};

/// `GET /api/v1/agents`.
#[derive(Debug, Serialize)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// `GET /api/v1/agents/{id}/events`.
#[derive(Debug, Serialize)]
pub struct AgentEvents {
    pub agent: String,
    /// Newest first, at most `agents.max_events`.
    pub events: Vec<EventRecord>,
}

/// Every agent, sorted by id.
pub async fn list(State(app): State<AppState>) -> Json<AgentList> {
    let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
    Json(AgentList {
        agents: state.views(Instant::now()),
    })
}

/// One agent; 400 for an invalid id, 404 for an unknown one.
pub async fn one(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    check_id(&id)?;
    let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
    state
        .view(&id, Instant::now())
        .map(Json)
        .ok_or_else(|| unknown(&id))
}

/// One agent's recent events, newest first; 400 and 404 as for `one`.
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentEvents>, ApiError> {
    check_id(&id)?;
    let events = {
        let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
        state.events(&id).ok_or_else(|| unknown(&id))?
    };
    Ok(Json(AgentEvents { agent: id, events }))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    validate_id(id).map_err(|why| ApiError::BadRequest(format!("agent id '{id}': {why}")))
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("no agent '{id}'"))
}
