//! `GET /api/v1/agents/{id}/site`: where a sound agent's commands go (its pinned site, and
//! whether the config or its first status set it) and the move its status claims, waiting for
//! an admin. An admin settles a claim in the console.

use axum::Json;
use axum::extract::{Path, State};
use pantau_protocol::validate_id;

use super::announcements::announcer;
use super::{ApiError, AppState};
use crate::announce::sites::SiteView;

/// One agent's pinned site; 400 for an invalid id, 404 if no status of it was ever heard.
pub async fn one(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SiteView>, ApiError> {
    validate_id(&id).map_err(|why| ApiError::BadRequest(format!("agent id '{id}': {why}")))?;
    let announcer = announcer(&app)?;
    announcer
        .sites()?
        .into_iter()
        .find(|view| view.pinned.agent == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no sound agent '{id}'")))
}
