//! `/api/v1/schedules`: the reminder schedules (config ones read-only) and each sound agent's
//! schedule version, published and applied. Changes need an admin.

use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::announcements::announcer;
use super::auth::Admin;
use super::{ApiError, AppState};
use crate::announce::schedules::{AgentSchedule, ScheduleSpec, ScheduleView};

/// `GET /api/v1/schedules`.
#[derive(Debug, Serialize)]
pub struct Schedules {
    schedules: Vec<ScheduleView>,
    agents: Vec<AgentSchedule>,
}

pub async fn list(State(app): State<AppState>) -> Result<Json<Schedules>, ApiError> {
    let announcer = announcer(&app)?;
    Ok(Json(Schedules {
        schedules: announcer.schedule_views(SystemTime::now())?,
        agents: announcer.agent_schedules()?,
    }))
}

fn body(body: Result<Json<ScheduleSpec>, JsonRejection>) -> Result<ScheduleSpec, ApiError> {
    body.map(|Json(spec)| spec).map_err(ApiError::from)
}

/// `POST /api/v1/schedules`: 201, 409 if the name is taken.
pub async fn create(
    State(app): State<AppState>,
    Admin(who): Admin,
    spec: Result<Json<ScheduleSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<ScheduleSpec>), ApiError> {
    let announcer = announcer(&app)?;
    let spec = announcer
        .put_schedule(&who, body(spec)?, true, SystemTime::now())
        .await?;
    Ok((StatusCode::CREATED, Json(spec)))
}

/// `PUT /api/v1/schedules/{name}`: replaces it whole.
pub async fn edit(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Admin(who): Admin,
    spec: Result<Json<ScheduleSpec>, JsonRejection>,
) -> Result<Json<ScheduleSpec>, ApiError> {
    let announcer = announcer(&app)?;
    let spec = body(spec)?;
    if spec.name != name {
        return Err(ApiError::BadRequest(format!(
            "`name`: '{}' differs from the path's '{name}'",
            spec.name
        )));
    }
    Ok(Json(
        announcer
            .put_schedule(&who, spec, false, SystemTime::now())
            .await?,
    ))
}

/// `POST /api/v1/schedules/{name}/pause`.
pub async fn pause(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Admin(who): Admin,
) -> Result<Json<ScheduleSpec>, ApiError> {
    let announcer = announcer(&app)?;
    Ok(Json(
        announcer
            .pause_schedule(&who, &name, true, SystemTime::now())
            .await?,
    ))
}

/// `POST /api/v1/schedules/{name}/resume`.
pub async fn resume(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Admin(who): Admin,
) -> Result<Json<ScheduleSpec>, ApiError> {
    let announcer = announcer(&app)?;
    Ok(Json(
        announcer
            .pause_schedule(&who, &name, false, SystemTime::now())
            .await?,
    ))
}

/// `DELETE /api/v1/schedules/{name}`: 204.
pub async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Admin(who): Admin,
) -> Result<StatusCode, ApiError> {
    let announcer = announcer(&app)?;
    announcer
        .delete_schedule(&who, &name, SystemTime::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
