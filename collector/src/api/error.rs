//! `ApiError`: client errors become a 4xx with a JSON body naming the problem; internal errors
//! are logged with their cause and become a plain 500.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;
use tracing::error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: known, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 409: exists already, or belongs to the config.
    #[error("{0}")]
    Conflict(String),
    /// 413: a request body over its route's limit.
    #[error("{0}")]
    TooLarge(String),
    /// 429: an agent has as many unexpired announcements as allowed; the message says how many.
    #[error("{0}")]
    TooManyAnnouncements(String),
    /// 503: the feature is switched off by the config.
    #[error("{0}")]
    Unavailable(String),
    /// 429: too many failed logins; try again after `retry_after`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 503: every password-checking thread is busy.
    #[error("{0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }
}

/// A JSON body that could not be read: 413 when it is over its route's limit, otherwise 400.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(rejection.body_text()),
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message),
            ApiError::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message),
            ApiError::TooManyAnnouncements(message) => (StatusCode::TOO_MANY_REQUESTS, message),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            ApiError::Unauthorized(message) => {
                // Both schemes are offered, one header each, so a browser asks for a user and
                // a script knows a token will do.
                let mut response =
                    (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
                let headers = response.headers_mut();
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"pantau\""),
                );
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pantau\", charset=\"UTF-8\""),
                );
                return response;
            }
            ApiError::TooManyRequests {
                message,
                retry_after,
            } => {
                let seconds = retry_after.as_secs().max(1).to_string();
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds)],
                    Json(json!({ "error": message })),
                )
                    .into_response();
            }
            ApiError::Busy(message) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({ "error": message })),
                )
                    .into_response();
            }
            ApiError::Internal(cause) => {
                error!(%cause, "request failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}
