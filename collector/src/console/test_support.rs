//! What the console's router tests share: one request through `app(state).oneshot`, a login
//! through the real form, and the CSRF token and cookies of an answer.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::api::AppState;
use crate::api::test_support::Fixture;

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) location: String,
    pub(super) cookies: Vec<String>,
    pub(super) body: String,
}

pub(super) async fn request(
    app: &AppState,
    method: &str,
    uri: &str,
    cookie: &str,
    form: Option<&str>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    if !cookie.is_empty() {
        builder = builder.header(header::COOKIE, cookie);
    }
    let body = match form {
        Some(form) => {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = crate::api::app(app.clone())
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        cookies,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub(super) fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 64].to_owned()
}

pub(super) fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

/// Logs in; returns the Cookie header and the session's CSRF token.
pub(super) async fn login(app: &AppState, user: &str, password: &str) -> (String, String) {
    let form = request(app, "GET", "/console/login", "", None).await;
    let token = csrf_of(&form.body);
    let login_cookie = format!(
        "pantau_login={}",
        cookie_value(&form.cookies, "pantau_login")
    );
    let reply = request(
        app,
        "POST",
        "/console/login",
        &login_cookie,
        Some(&format!("csrf={token}&user={user}&password={password}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.location, "/console/now");
    let session = reply
        .cookies
        .iter()
        .find(|c| c.starts_with("pantau_session="))
        .unwrap()
        .clone();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP here");
    let cookie = format!(
        "pantau_session={}",
        cookie_value(&reply.cookies, "pantau_session")
    );
    let page = request(app, "GET", "/console/now", &cookie, None).await;
    assert_eq!(page.status, StatusCode::OK);
    (cookie, csrf_of(&page.body))
}

pub(super) fn failures(f: &Fixture, reason: &str) -> u64 {
    f.app
        .telemetry
        .api_auth_failures
        .with_label_values(&[reason])
        .get()
}
