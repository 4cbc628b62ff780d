//! Console pages through the router (`app(state).oneshot(request)`): redirects without a
//! session, cookie attributes, login failures, CSRF and a viewer's refusals.

use axum::http::StatusCode;
use serde_json::json;

use super::test_support::{cookie_value, csrf_of, failures, login, request};
use crate::api::test_support::{TOKEN, call, fixture};

#[tokio::test]
async fn without_a_session_every_page_goes_to_the_login() {
    let f = fixture();
    for uri in [
        "/console/now",
        "/console/send",
        "/console/schedules",
        "/console/schedules/new",
        "/console/history",
    ] {
        let reply = request(&f.app, "GET", uri, "", None).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(reply.location, "/console/login", "{uri}");
        let forged = request(&f.app, "GET", uri, "pantau_session=00ff", None).await;
        assert_eq!(
            forged.location, "/console/login",
            "{uri} with a made-up session"
        );
    }
    let post = request(&f.app, "POST", "/console/send", "", Some("text=x")).await;
    assert_eq!(post.location, "/console/login");
    let root = request(&f.app, "GET", "/", "", None).await;
    assert_eq!(root.location, "/console/now");
}

#[tokio::test]
async fn wrong_passwords_are_counted_and_limited() {
    let f = fixture();
    let form = request(&f.app, "GET", "/console/login", "", None).await;
    let token = csrf_of(&form.body);
    let cookie = format!(
        "pantau_login={}",
        cookie_value(&form.cookies, "pantau_login")
    );
    let body = format!("csrf={token}&user=rina&password=salah");
    for _ in 0..10 {
        let reply = request(&f.app, "POST", "/console/login", &cookie, Some(&body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.body.contains("Nama pengguna atau kata sandi salah."));
    }
    assert_eq!(failures(&f, "wrong"), 10);
    let right = format!("csrf={token}&user=rina&password=rahasia-rina");
    let reply = request(&f.app, "POST", "/console/login", &cookie, Some(&right)).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "limited even when right"
    );
    assert_eq!(failures(&f, "rate_limited"), 1);
    let no_token = request(
        &f.app,
        "POST",
        "/console/login",
        &cookie,
        Some("user=rina&password=rahasia-rina"),
    )
    .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused() {
    let f = fixture();
    let (cookie, csrf) = login(&f.app, "rina", "rahasia-rina").await;
    for form in [
        "text=Halo&targets=aula",
        "csrf=&text=Halo&targets=aula",
        &format!("csrf={}x&text=Halo&targets=aula", &csrf[..63]),
    ] {
        let reply = request(&f.app, "POST", "/console/send", &cookie, Some(form)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{form}");
        assert!(
            reply
                .body
                .contains("Token keamanan formulir hilang atau salah"),
            "{}",
            reply.body
        );
    }
    assert_eq!(failures(&f, "csrf"), 3);
    assert!(f.sent.lock().unwrap().is_empty(), "nothing was sent");
    let reply = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=Halo+semua&targets=aula")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(
        reply.location.starts_with("/console/now?sent=a"),
        "{}",
        reply.location
    );
    assert_eq!(f.sent.lock().unwrap().len(), 1);
    // Logging out ends the session.
    let out = request(
        &f.app,
        "POST",
        "/console/logout",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(out.location, "/console/login");
    let after = request(&f.app, "GET", "/console/now", &cookie, None).await;
    assert_eq!(after.location, "/console/login");
}

#[tokio::test]
async fn a_viewer_sees_but_may_not_send_stop_or_edit() {
    let f = fixture();
    let (status, created) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "Rapat dimulai", "targets": ["aula"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    let (cookie, csrf) = login(&f.app, "tamu", "rahasia-tamu").await;
    let send = request(&f.app, "GET", "/console/send", &cookie, None).await;
    assert_eq!(send.status, StatusCode::OK);
    assert!(!send.body.contains("id=\"send-button\""));
    assert!(send.body.contains("id=\"viewer-note\""));
    let now = request(&f.app, "GET", "/console/now", &cookie, None).await;
    assert!(now.body.contains("Rapat dimulai"));
    assert!(!now.body.contains(&format!("id=\"stop-{id}\"")));
    let before = f.sent.lock().unwrap().len();
    let forged = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=Palsu&targets=aula")),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let stop = request(
        &f.app,
        "POST",
        &format!("/console/now/stop/{id}"),
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(stop.status, StatusCode::FORBIDDEN);
    let tone = request(
        &f.app,
        "POST",
        "/console/now/tone/aula",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(tone.status, StatusCode::FORBIDDEN);
    let new = request(&f.app, "GET", "/console/schedules/new", &cookie, None).await;
    assert_eq!(new.status, StatusCode::FORBIDDEN);
    assert_eq!(f.sent.lock().unwrap().len(), before, "nothing was sent");
    assert_eq!(failures(&f, "forbidden"), 4);
}

#[test]
fn cookies_are_secure_when_the_collector_serves_tls() {
    let tls = super::Console::new(super::ConsoleConfig::default(), true);
    let cookie = tls.cookie("pantau_session", "abc", None);
    assert_eq!(
        cookie.to_str().unwrap(),
        "pantau_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
    );
    let plain = super::Console::default().cookie("pantau_lang", "en", Some(60));
    assert_eq!(
        plain.to_str().unwrap(),
        "pantau_lang=en; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
    );
}
