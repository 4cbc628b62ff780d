//! `GET /api/v1/login-limits` lists the addresses and user names over their failed-login
//! threshold now; `DELETE /api/v1/login-limits[?address=A][&user=U]` clears one of them, or
//! everyone without a parameter. Admins only, audited in the log.

use std::net::IpAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::auth::Admin;
use super::{ApiError, AppState};

pub async fn list(State(app): State<AppState>, Admin(_): Admin) -> Json<Value> {
    Json(json!({ "limited": app.login.limiter.limited(Instant::now()) }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearQuery {
    address: Option<String>,
    user: Option<String>,
}

pub async fn clear(
    State(app): State<AppState>,
    Admin(admin): Admin,
    Query(query): Query<ClearQuery>,
) -> Result<Json<Value>, ApiError> {
    let address = query
        .address
        .as_deref()
        .map(|text| {
            text.parse::<IpAddr>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "address: '{}' is not an IP address",
                    text.escape_debug()
                ))
            })
        })
        .transpose()?;
    let cleared = app.login.limiter.clear(address, query.user.as_deref());
    info!(
        admin = %admin,
        address = ?query.address,
        user = ?query.user,
        cleared,
        "login limits cleared"
    );
    Ok(Json(json!({ "cleared": cleared })))
}
