//! `/api/v1/announcements`: create (signed `cmd/announce` to each target), follow (per-target
//! status from the agents' events), stop, and the history; `/api/v1/audit` for who did what.
//! Writes need a bearer token (`auth`); 503 while `announcements.key_file` is not set.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Writer;
use super::{ApiError, AppState};
use crate::announce::alerts::{Webhook, WebhookOutcome};
use crate::announce::{
    AnnounceError, AnnouncementRequest, AnnouncementRow, Announcer, HistoryFilter, unix_ms,
};

/// Most rows a history or audit request returns.
const MAX_LIMIT: u32 = 1000;

impl From<AnnounceError> for ApiError {
    fn from(error: AnnounceError) -> Self {
        match error {
            AnnounceError::Invalid(message) => ApiError::BadRequest(message),
            AnnounceError::NotFound(message) => ApiError::NotFound(message),
            AnnounceError::Conflict(message) => ApiError::Conflict(message),
            AnnounceError::TooMany(message) => ApiError::TooManyAnnouncements(message),
            AnnounceError::Store(error) => ApiError::internal(error),
        }
    }
}

pub(super) fn announcer(app: &AppState) -> Result<Arc<Announcer>, ApiError> {
    app.announcer.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "announcements are off: set announcements.key_file (the sound agents' key)".to_owned(),
        )
    })
}

/// `POST /api/v1/announcements`: 201 with the announcement and its targets, all `pending`.
pub async fn create(
    State(app): State<AppState>,
    Writer(who): Writer,
    body: Result<Json<AnnouncementRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<AnnouncementRow>), ApiError> {
    let announcer = announcer(&app)?;
    let Json(request) = body.map_err(ApiError::from)?;
    let row = announcer.create(&who, request, SystemTime::now()).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// `GET /api/v1/announcements/{id}`.
pub async fn one(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AnnouncementRow>, ApiError> {
    let announcer = announcer(&app)?;
    let row = announcer
        .store()
        .announcement(&id)
        .map_err(ApiError::internal)?;
    row.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no announcement '{id}'")))
}

/// `POST /api/v1/announcements/{id}/stop`.
pub async fn stop(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Writer(who): Writer,
) -> Result<Json<AnnouncementRow>, ApiError> {
    let announcer = announcer(&app)?;
    Ok(Json(announcer.stop(&who, &id, SystemTime::now()).await?))
}

/// Filters of `GET /api/v1/announcements`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// RFC 3339; default: the beginning.
    from: Option<String>,
    /// RFC 3339; default: now.
    to: Option<String>,
    /// Only announcements with this target agent.
    target: Option<String>,
    /// Only announcements with a target in this status (`finished`, `expired`, ...).
    outcome: Option<String>,
    /// Only the plays of this schedule.
    schedule: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct History {
    announcements: Vec<AnnouncementRow>,
}

fn parse_time(field: &str, value: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_rfc3339_weak(text)
            .map(unix_ms)
            .map_err(|error| {
                ApiError::BadRequest(format!(
                    "`{field}`: '{text}' is not an RFC 3339 time: {error}"
                ))
            }),
    }
}

fn check_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit`: {limit} must be 1 to {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// `GET /api/v1/announcements?from=&to=&target=&outcome=&schedule=&limit=`, newest first.
pub async fn history(
    State(app): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let announcer = announcer(&app)?;
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let from = parse_time("from", query.from.as_deref(), 0)?;
    let to = parse_time("to", query.to.as_deref(), i64::MAX)?;
    let limit = check_limit(query.limit)?;
    let announcements = announcer
        .store()
        .history(
            from,
            to,
            &HistoryFilter {
                agent: query.target.as_deref(),
                outcome: query.outcome.as_deref(),
                schedule: query.schedule.as_deref(),
            },
            limit,
        )
        .map_err(ApiError::internal)?;
    Ok(Json(History { announcements }))
}

/// `GET /api/v1/audit?limit=`: the newest writes, who and what.
pub async fn audit(
    State(app): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let announcer = announcer(&app)?;
    let limit = check_limit(query.limit)?;
    let entries = announcer
        .store()
        .audit_log(limit)
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "entries": entries })))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    limit: Option<u32>,
}

/// `POST /api/v1/alertmanager`: Alertmanager's webhook (version 4), announced by
/// `[[announcements.alert_rules]]`. Always 200 once read (with what was announced and what
/// was skipped, and why), so Alertmanager does not resend a notification forever.
pub async fn alertmanager(
    State(app): State<AppState>,
    Writer(who): Writer,
    body: Result<Json<Webhook>, JsonRejection>,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let announcer = announcer(&app)?;
    let Json(webhook) = body.map_err(ApiError::from)?;
    if webhook.version != "4" {
        return Err(ApiError::BadRequest(format!(
            "`version`: '{}' is not Alertmanager's webhook version 4",
            webhook.version
        )));
    }
    Ok(Json(
        announcer
            .alertmanager(&who, webhook, SystemTime::now())
            .await,
    ))
}
