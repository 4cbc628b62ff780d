//! The HTTP side: `/metrics` for Prometheus, `/healthz` and `/readyz` for supervisors, and the
//! JSON API under `/api/v1/`, which needs a login (`auth`). Every response is counted by route
//! and status code; client errors get a JSON body saying what was wrong and an info line at a
//! limited rate.

pub mod accounts;
mod agents;
mod announcements;
mod auth;
pub mod credentials;
mod error;
mod limits;
pub mod login;
mod schedules;
mod sites;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info};

pub use auth::{ApiConfig, Tokens};
pub use credentials::{CredentialFiles, Credentials};
pub use error::ApiError;
pub use login::Login;

use crate::announce::Announcer;
use crate::console::Console;
use crate::exposition::{Scope, Telemetry};
use crate::readiness::Readiness;
use crate::state::SharedState;

/// Scrapes rendered at once at most; more wait for a turn. Each holds a few chunks of text and
/// an index of the families, so this bounds the memory scrapes take.
pub const MAX_CONCURRENT_RENDERS: usize = 2;

/// Renders at once on this machine: one core is always left to the async workers, so
/// `/healthz` and the API answer at once while big scrapes run.
fn concurrent_renders() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores.saturating_sub(1).clamp(1, MAX_CONCURRENT_RENDERS)
}

/// The largest request body of the JSON API and the console's forms: an announcement's text
/// is at most 2,000 bytes, a schedule a few KiB. A bigger body is refused with 413 before it
/// is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest Alertmanager webhook body: a group of many alerts with their labels and
/// annotations.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// Chunks of a scrape waiting to be sent, per scrape: the renderer waits while they are.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub state: SharedState,
    pub telemetry: Arc<Telemetry>,
    pub readiness: Readiness,
    /// Tokens and users (reloaded on SIGHUP); the console's Users page edits the users.
    pub credentials: Arc<Credentials>,
    /// The one login limiter and password pool of every route that checks a password.
    pub login: Arc<Login>,
    /// Failed logins are logged at a limited rate: anyone can cause them.
    pub auth_log: Arc<LogLimiter>,
    /// `None` while `announcements.key_file` is not set.
    pub announcer: Option<Arc<Announcer>>,
    /// The web console's sessions.
    pub console: Arc<Console>,
    client_error_log: Arc<LogLimiter>,
    renders: Arc<Semaphore>,
}

impl AppState {
    pub fn new(state: SharedState, telemetry: Arc<Telemetry>, readiness: Readiness) -> Self {
        Self {
            state,
            telemetry,
            readiness,
            credentials: Arc::new(Credentials::default()),
            login: Arc::new(default_login()),
            auth_log: Arc::new(LogLimiter::new(Duration::from_secs(10))),
            announcer: None,
            console: Arc::new(Console::default()),
            client_error_log: Arc::new(LogLimiter::new(Duration::from_secs(10))),
            renders: Arc::new(Semaphore::new(concurrent_renders())),
        }
    }

    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Arc::new(credentials);
        self
    }

    #[cfg(test)]
    pub fn with_users_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.credentials = Arc::new(self.credentials.saving_users_to(path));
        self
    }

    pub fn with_login(mut self, login: Login) -> Self {
        self.login = Arc::new(login);
        self
    }

    pub fn with_console(mut self, console: Console) -> Self {
        self.console = Arc::new(console);
        self
    }

    pub fn with_announcer(mut self, announcer: Arc<Announcer>) -> Self {
        self.announcer = Some(announcer);
        self
    }
}

/// Login settings for an `AppState` made without a config (tests): the defaults of `[api]`.
fn default_login() -> Login {
    let config = ApiConfig::default();
    // Starting two threads only fails when the process cannot make threads at all.
    Login::new(
        config.thresholds(),
        config.password_threads(),
        Duration::from_secs(config.password_check_wait_seconds),
    )
    .unwrap_or_else(|error| panic!("cannot start the password-checking threads: {error}"))
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api_routes(state.clone()))
        .merge(crate::console::routes())
        .fallback(not_found)
        // Every route's limit unless its own layer (inside this one) sets another.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Everything under `/api/v1/`: each route needs a login (at least a viewer).
fn api_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/agents/{id}", get(agents::one))
        .route("/api/v1/agents/{id}/events", get(agents::events))
        .route("/api/v1/agents/{id}/site", get(sites::one))
        .route(
            "/api/v1/announcements",
            get(announcements::history).post(announcements::create),
        )
        .route("/api/v1/announcements/{id}", get(announcements::one))
        .route("/api/v1/announcements/{id}/stop", post(announcements::stop))
        .route("/api/v1/audit", get(announcements::audit))
        .route(
            "/api/v1/alertmanager",
            post(announcements::alertmanager).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY_BYTES)),
        )
        .route(
            "/api/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/api/v1/schedules/{name}",
            put(schedules::edit).delete(schedules::delete),
        )
        .route("/api/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/api/v1/schedules/{name}/resume", post(schedules::resume))
        .route(
            "/api/v1/login-limits",
            get(limits::list).delete(limits::clear),
        )
        .route_layer(middleware::from_fn_with_state(state, auth::require_login))
}

/// Renders on a blocking thread, never on the async workers (which must keep answering
/// `/healthz` and the API), and streams the text as it is produced.
async fn metrics(
    State(app): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    auth::check_metrics_token(&parts, &app)?;
    let Query(query) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map_err(|error| ApiError::BadRequest(error.body_text()))?;
    let scope = Scope::parse(&query).map_err(|error| {
        app.telemetry
            .bad_scrapes
            .with_label_values(&[error.reason()])
            .inc();
        ApiError::BadRequest(error.to_string())
    })?;
    let permit = app
        .renders
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let (chunks, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let telemetry = app.telemetry.clone();
    tokio::task::spawn_blocking(move || {
        // Held until the last chunk is queued: the next render starts when this one is done.
        let _permit = permit;
        let result = telemetry.render_chunks(&scope, |chunk| {
            chunks.blocking_send(Ok(chunk.into())).is_ok()
        });
        if let Err(cause) = result {
            error!(%cause, "rendering /metrics failed");
            let _ = chunks.blocking_send(Err(std::io::Error::other(cause.to_string())));
        }
    });
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn count_requests(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let handler = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    app.telemetry
        .http_requests
        .with_label_values(&[handler.as_str(), status.as_str()])
        .inc();
    if status.is_client_error()
        && let Verdict::Log { suppressed } = app.client_error_log.check(status.as_str())
    {
        info!(%method, path = ?path, status = status.as_u16(), suppressed, "client error");
    }
    response
}

#[cfg(test)]
mod alert_tests;
#[cfg(test)]
mod announcement_tests;
#[cfg(test)]
mod body_limit_tests;
#[cfg(test)]
mod cap_tests;
#[cfg(test)]
mod login_tests;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod stop_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
