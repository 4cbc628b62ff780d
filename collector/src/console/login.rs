//! `/console/login` and `/console/logout`. Passwords are checked by the API's accounts
//! (Argon2id, on a blocking thread); failures are counted in
//! `pantau_collector_api_auth_failures_total{reason="wrong"}` and limited per remote address
//! (`reason="rate_limited"` once over the limit).

use std::time::Instant;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};

use super::session::random_token;
use super::{ClientAddr, Page, SESSION_COOKIE, Visitor, cookie, csrf, field, lang_of, render};
use crate::api::AppState;
use crate::api::accounts::Role;

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
    if app.console.sessions.login_blocked(address, now) {
        failures.with_label_values(&["rate_limited"]).inc();
        warn!(%address, "console: login refused, too many failures from this address");
        let mut response = login_page(&app, &headers, Some("login.limited"), user);
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return response;
    }
    let password = field(&fields, "password").unwrap_or_default().to_owned();
    let accounts = app.accounts.clone();
    let name = user.clone();
    // Argon2 takes tens of milliseconds on purpose: not on the async workers.
    let role = tokio::task::spawn_blocking(move || {
        accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verify(&name, &password)
    })
    .await
    .ok()
    .flatten();
    let Some(role) = role else {
        failures.with_label_values(&["wrong"]).inc();
        app.console.sessions.login_failed(address, now);
        warn!(%address, user = %user, "console: wrong user name or password");
        let mut response = login_page(&app, &headers, Some("login.wrong"), user);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
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
