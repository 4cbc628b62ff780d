//! `/console/login` and `/console/logout`. Passwords go through the API's `login`: the same
//! limiter (per address and per user name) and the same bounded Argon2 pool as HTTP Basic.
//! Failures are counted in `pantau_collector_api_auth_failures_total{reason}` (`wrong`,
//! `rate_limited`, `busy`) and logged at a limited rate, an unknown name never in clear.

use std::time::Instant;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};

use pantau_runtime::ratelimit::Verdict;

use super::session::random_token;
use super::{ClientAddr, Page, SESSION_COOKIE, Visitor, cookie, csrf, field, lang_of, render};
use crate::api::AppState;
use crate::api::accounts::Role;
use crate::api::login::{Refusal, loggable_user};

/// The double-submit cookie of the login form.
const LOGIN_COOKIE: &str = "pantau_login";

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    page: Page,
    error: Option<&'static str>,
    user: String,
}

fn login_page(
    app: &AppState,
    headers: &HeaderMap,
    error: Option<&'static str>,
    user: String,
) -> Response {
    let token = random_token();
    let page = Page {
        lang: lang_of(headers),
        user: String::new(),
        role: Role::Viewer,
        csrf: token.clone(),
        active: "login",
    };
    let error = error.map(|key| page.t(key));
    let mut response = render(&LoginPage { page, error, user });
    let cookie = app.console.cookie(LOGIN_COOKIE, &token, Some(3600));
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `GET /console/login`.
pub async fn form(State(app): State<AppState>, headers: HeaderMap) -> Response {
    login_page(&app, &headers, None, String::new())
}

/// `POST /console/login`: a session and on to the Now page, or the form again with why.
pub async fn submit(
    State(app): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let now = Instant::now();
    let user = field(&fields, "user").unwrap_or_default().to_owned();
    let failures = &app.telemetry.api_auth_failures;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !csrf::matches(expected, field(&fields, "csrf")) {
        failures.with_label_values(&["csrf"]).inc();
        warn!(%address, "console: login form without its CSRF token");
        let mut response = login_page(&app, &headers, Some("login.expired"), user);
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    let password = field(&fields, "password").unwrap_or_default().to_owned();
    let accounts = &app.credentials.accounts;
    let refused = match app.login.check(accounts, address, &user, password).await {
        Ok(role) => Ok(role),
        Err(Refusal::Limited { retry_after }) => Err(("rate_limited", Some(retry_after))),
        Err(Refusal::Wrong) => Err(("wrong", None)),
        Err(Refusal::Busy) => Err(("busy", None)),
    };
    let role = match refused {
        Ok(role) => role,
        Err((reason, retry_after)) => {
            failures.with_label_values(&[reason]).inc();
            if let Verdict::Log { suppressed } = app.auth_log.check(&format!("console:{reason}")) {
                warn!(%address, user = %loggable_user(accounts, &user), reason, suppressed,
                    "console: login refused");
            }
            let (status, message) = match reason {
                "rate_limited" => (StatusCode::TOO_MANY_REQUESTS, "login.limited"),
                "busy" => (StatusCode::SERVICE_UNAVAILABLE, "login.limited"),
                _ => (StatusCode::UNAUTHORIZED, "login.wrong"),
            };
            let mut response = login_page(&app, &headers, Some(message), user);
            *response.status_mut() = status;
            let retry = retry_after.map_or(1, |wait| wait.as_secs().max(1));
            if status != StatusCode::UNAUTHORIZED
                && let Ok(value) = header::HeaderValue::from_str(&retry.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    };
    let id = app.console.sessions.create(&user, role, now);
    info!(user = %user, %role, "console: logged in");
    let mut response = Redirect::to("/console/now").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        app.console.cookie(SESSION_COOKIE, &id, None),
    );
    headers.append(
        header::SET_COOKIE,
        app.console.cookie(LOGIN_COOKIE, "", Some(0)),
    );
    response
}

/// `POST /console/logout`: ends the session.
pub async fn logout(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, super::ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    app.console.sessions.remove(&visitor.session_id);
    info!(user = %visitor.session.user, "console: logged out");
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        app.console.cookie(SESSION_COOKIE, "", Some(0)),
    );
    Ok(response)
}
