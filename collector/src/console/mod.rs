//! The web console under `/console/`: office staff log in, see what plays where, send and stop
//! announcements, edit schedules and read the history, from a phone or a desk, with no
//! internet (CSS and JS are in the binary). Pages call the same `Announcer` functions as the
//! API handlers and apply the same roles: a viewer sees, an operator sends, stops and plays
//! test tones, an admin edits schedules.
//!
//! Templates are askama's (compiled in, HTML-escaped by default): agent ids, clip names and
//! texts come from untrusted senders. Every POST carries the session's CSRF token.

mod csrf;
mod history;
pub mod i18n;
mod login;
mod now;
mod page;
mod schedules;
mod send;
pub mod session;
mod users;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use serde::Deserialize;
use tracing::{error, warn};

use crate::announce::{AnnounceError, Announcer};
use crate::api::AppState;
use crate::api::accounts::Role;
pub use i18n::Lang;
pub use page::{ConsoleError, Page, render};
pub use session::{ConsoleConfig, Session, Sessions};

const SESSION_COOKIE: &str = "pantau_session";
const LANG_COOKIE: &str = "pantau_lang";

/// What the console keeps: sessions, and whether cookies are `Secure` (the collector serves
/// TLS).
pub struct Console {
    pub sessions: Sessions,
    pub secure: bool,
    refusals_log: LogLimiter,
}

impl Console {
    pub fn new(config: ConsoleConfig, secure: bool) -> Self {
        Self {
            sessions: Sessions::new(config),
            secure,
            refusals_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// A cookie with the console's attributes; `max_age` 0 deletes it.
    fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let age = max_age.map_or(String::new(), |age| format!("; Max-Age={age}"));
        let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}{secure}");
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new(ConsoleConfig::default(), false)
    }
}

/// The console's routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/now") }))
        .route("/console", get(|| async { Redirect::to("/console/now") }))
        .route("/console/", get(|| async { Redirect::to("/console/now") }))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/lang/{lang}", get(set_lang))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/now", get(now::page))
        .route("/console/now/stop/{id}", post(now::stop))
        .route("/console/now/tone/{agent}", post(now::tone))
        .route("/console/now/site/{agent}", post(now::site))
        .route("/console/send", get(send::page).post(send::submit))
        .route(
            "/console/schedules",
            get(schedules::page).post(schedules::create),
        )
        .route("/console/schedules/new", get(schedules::new_form))
        .route(
            "/console/schedules/{name}",
            get(schedules::edit_form).post(schedules::edit),
        )
        .route(
            "/console/schedules/{name}/{action}",
            post(schedules::action),
        )
        .route("/console/history", get(history::page))
        .route("/console/users", get(users::page).post(users::add))
        .route("/console/users/{name}", post(users::edit))
        .route("/console/users/{name}/remove", post(users::remove))
}

async fn css() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("static/console.css"),
    )
}

async fn js() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("static/console.js"),
    )
}

fn static_asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Back {
    back: Option<String>,
}

/// `GET /console/lang/{id|en}?back=/console/...`: sets `pantau_lang` and goes back.
async fn set_lang(
    State(app): State<AppState>,
    Path(lang): Path<String>,
    Query(back): Query<Back>,
) -> Response {
    let lang = if lang == "en" { "en" } else { "id" };
    // Only back into the console: never an open redirect.
    let back = back
        .back
        .filter(|back| back.starts_with("/console/") && !back.contains("//"))
        .unwrap_or_else(|| "/console/now".to_owned());
    let cookie = app.console.cookie(LANG_COOKIE, lang, Some(365 * 86_400));
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_cookie(cookie(headers, LANG_COOKIE))
}

/// The remote address (for the login rate limit); unspecified when the server was not started
/// with connect info (the router tests).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip()),
        ))
    }
}

/// A logged-in visitor; without a live session every page redirects to the login.
pub struct Visitor {
    pub session: Session,
    pub session_id: String,
    pub lang: Lang,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ConsoleError> {
        let lang = lang_of(&parts.headers);
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::Login)?;
        let session = app
            .console
            .sessions
            .get(id, Instant::now())
            .ok_or(ConsoleError::Login)?;
        Ok(Visitor {
            session,
            session_id: id.to_owned(),
            lang,
        })
    }
}

impl Visitor {
    pub fn page(&self, active: &'static str) -> Page {
        Page {
            lang: self.lang,
            user: self.session.user.clone(),
            role: self.session.role,
            csrf: self.session.csrf.clone(),
            active,
        }
    }

    /// Refuses (403, counted, logged) unless the role is at least `needed`.
    pub fn require(&self, app: &AppState, needed: Role, what: &str) -> Result<(), ConsoleError> {
        if self.session.role >= needed {
            return Ok(());
        }
        app.telemetry
            .api_auth_failures
            .with_label_values(&["forbidden"])
            .inc();
        if let Verdict::Log { suppressed } = app.console.refusals_log.check("forbidden") {
            warn!(user = %self.session.user, role = %self.session.role, what, suppressed,
                "console: role may not do this");
        }
        Err(self.refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} ({}: {}, {what})",
                i18n::t(self.lang, "error.forbidden"),
                self.session.user,
                self.session.role
            ),
        ))
    }

    /// Refuses (403, counted, logged) a form without the session's CSRF token.
    pub fn check_csrf(
        &self,
        app: &AppState,
        fields: &[(String, String)],
    ) -> Result<(), ConsoleError> {
        if csrf::matches(&self.session.csrf, field(fields, "csrf")) {
            return Ok(());
        }
        app.telemetry
            .api_auth_failures
            .with_label_values(&["csrf"])
            .inc();
        if let Verdict::Log { suppressed } = app.console.refusals_log.check("csrf") {
            warn!(user = %self.session.user, suppressed,
                "console: form refused, CSRF token missing or wrong");
        }
        Err(self.refuse(
            StatusCode::FORBIDDEN,
            i18n::t(self.lang, "error.csrf").to_owned(),
        ))
    }

    pub fn refuse(&self, status: StatusCode, message: String) -> ConsoleError {
        ConsoleError::Refused {
            status,
            page: Box::new(self.page("")),
            message,
        }
    }

    /// The announcer, or a page saying announcements are off.
    pub fn announcer(&self, app: &AppState) -> Result<Arc<Announcer>, ConsoleError> {
        app.announcer.clone().ok_or_else(|| {
            self.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                i18n::t(self.lang, "error.off").to_owned(),
            )
        })
    }

    /// An announcer refusal as a page: client errors with their message, the rest a 500.
    pub fn announce_error(&self, error: AnnounceError) -> ConsoleError {
        match error {
            AnnounceError::Invalid(message) => self.refuse(StatusCode::BAD_REQUEST, message),
            AnnounceError::NotFound(message) => self.refuse(StatusCode::NOT_FOUND, message),
            AnnounceError::Conflict(message) => self.refuse(StatusCode::CONFLICT, message),
            AnnounceError::TooMany(message) => self.refuse(StatusCode::TOO_MANY_REQUESTS, message),
            AnnounceError::Store(cause) => {
                error!(%cause, "console: store failed");
                self.refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        }
    }
}

/// The first value of form field `name`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Every non-empty value of form field `name` (checkboxes).
pub fn values(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.clone())
        .collect()
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` in WIB (Asia/Jakarta).
pub fn wib(ms: i64) -> String {
    let zone = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::from_millisecond(ms)
        .map(|at| {
            at.to_zoned_datetime(zone)
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Statuses after which a target plays no more.
pub fn is_final(status: &str) -> bool {
    matches!(
        status,
        "finished" | "failed" | "expired" | "preempted" | "pre-empted" | "stopped" | "rejected"
    )
}

/// What an announcement plays, in a few words.
pub fn summary(args: &serde_json::Value) -> String {
    if let Some(text) = args["text"].as_str() {
        return text.to_owned();
    }
    if let Some(clip) = args["clip"].as_str() {
        return format!("🔊 {clip}");
    }
    if let Some(hz) = args["tone"]["frequency_hz"].as_f64() {
        return format!("♪ {hz} Hz");
    }
    String::new()
}

#[cfg(test)]
mod page_tests;
#[cfg(test)]
mod site_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
