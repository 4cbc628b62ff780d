//! Console pages through the router (`app(state).oneshot(request)`): redirects without a
//! session, cookie attributes, CSRF, the roles per page, escaping and the languages.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::api::AppState;
use crate::api::test_support::{Fixture, TOKEN, call, fixture};

struct Reply {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn request(
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

fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 64].to_owned()
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

/// Logs in; returns the Cookie header and the session's CSRF token.
async fn login(app: &AppState, user: &str, password: &str) -> (String, String) {
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

fn failures(f: &Fixture, reason: &str) -> u64 {
    f.app
        .telemetry
        .api_auth_failures
        .with_label_values(&[reason])
        .get()
}

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

#[tokio::test]
async fn an_operator_sends_stops_and_confirms_an_emergency_but_does_not_edit_schedules() {
    let f = fixture();
    let (cookie, csrf) = login(&f.app, "rina", "rahasia-rina").await;
    let form = format!("csrf={csrf}&text=Evakuasi&targets=aula&priority=emergency");
    let confirm = request(&f.app, "POST", "/console/send", &cookie, Some(&form)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("id=\"confirm\""));
    assert!(
        f.sent.lock().unwrap().is_empty(),
        "not before the confirmation"
    );
    let sent = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("{form}&confirm=yes")),
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let id = sent.location.rsplit('=').next().unwrap().to_owned();
    let stop = request(
        &f.app,
        "POST",
        &format!("/console/now/stop/{id}"),
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(stop.status, StatusCode::SEE_OTHER, "{}", stop.body);
    let tone = request(
        &f.app,
        "POST",
        "/console/now/tone/aula",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(tone.status, StatusCode::SEE_OTHER, "{}", tone.body);
    let tone_sent = f.sent.lock().unwrap().last().unwrap().1.args.clone();
    assert_eq!(tone_sent["tone"]["frequency_hz"], 1000.0);
    let clip = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=&clip=bel.wav&zones=lobby")),
    )
    .await;
    assert_eq!(clip.status, StatusCode::SEE_OTHER, "{}", clip.body);
    let clip_sent = f.sent.lock().unwrap().last().unwrap().1.args.clone();
    assert_eq!(clip_sent["clip"], "bel.wav");
    let unknown = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=x&targets=nowhere")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.body.contains("unknown agent &#39;nowhere&#39;")
            || unknown.body.contains("unknown agent &#x27;nowhere&#x27;"),
        "{}",
        unknown.body
    );
    let new = request(
        &f.app,
        "POST",
        "/console/schedules",
        &cookie,
        Some(&format!(
            "csrf={csrf}&name=x&text=y&times=08:00&targets=aula"
        )),
    )
    .await;
    assert_eq!(new.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_creates_pauses_and_deletes_a_schedule_with_its_next_run_in_wib() {
    let f = fixture();
    let (cookie, csrf) = login(&f.app, "adi", "rahasia-adi").await;
    let form = format!(
        "csrf={csrf}&name=masker-pagi&text=Pakai+masker&times=07%3A30&weekdays=mon&weekdays=fri&targets=aula&priority=scheduled"
    );
    let created = request(&f.app, "POST", "/console/schedules", &cookie, Some(&form)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let list = request(
        &f.app,
        "GET",
        "/console/schedules?done=saved",
        &cookie,
        None,
    )
    .await;
    assert!(list.body.contains("id=\"sched-masker-pagi\""));
    assert!(list.body.contains("07:30 WIB"), "{}", list.body);
    assert!(
        list.body.contains("dari berkas konfigurasi"),
        "the config schedule is read-only"
    );
    let edit = request(
        &f.app,
        "GET",
        "/console/schedules/masker-pagi",
        &cookie,
        None,
    )
    .await;
    assert!(edit.body.contains("value=\"07:30\""));
    let paused = request(
        &f.app,
        "POST",
        "/console/schedules/masker-pagi/pause",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    let list = request(&f.app, "GET", "/console/schedules", &cookie, None).await;
    assert!(list.body.contains("dijeda"));
    let bad = request(
        &f.app,
        "POST",
        "/console/schedules",
        &cookie,
        Some(&format!(
            "csrf={csrf}&name=salah&text=y&times=25:00&targets=aula"
        )),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let deleted = request(
        &f.app,
        "POST",
        "/console/schedules/masker-pagi/delete",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let list = request(&f.app, "GET", "/console/schedules", &cookie, None).await;
    assert!(!list.body.contains("id=\"sched-masker-pagi\""));
}

#[tokio::test]
async fn untrusted_text_is_escaped_and_english_is_selectable() {
    let f = fixture();
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "<script>alert(1)</script>", "targets": ["aula"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (cookie, _) = login(&f.app, "rina", "rahasia-rina").await;
    for uri in ["/console/now", "/console/history"] {
        let page = request(&f.app, "GET", uri, &cookie, None).await;
        assert!(
            page.body
                .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{uri}"
        );
        assert!(!page.body.contains("<script>alert"), "{uri}");
        assert!(page.body.contains(">Keluar<"), "Indonesian by default");
    }
    let switch = request(
        &f.app,
        "GET",
        "/console/lang/en?back=/console/history",
        &cookie,
        None,
    )
    .await;
    assert_eq!(switch.location, "/console/history");
    assert!(switch.cookies[0].starts_with("pantau_lang=en"));
    let evil = request(
        &f.app,
        "GET",
        "/console/lang/en?back=https://evil.example/",
        &cookie,
        None,
    )
    .await;
    assert_eq!(evil.location, "/console/now", "never an open redirect");
    let page = request(
        &f.app,
        "GET",
        "/console/history?outcome=pending",
        &format!("{cookie}; pantau_lang=en"),
        None,
    )
    .await;
    assert!(page.body.contains(">Log out<"));
    assert!(page.body.contains("Targets and outcome") || page.body.contains("pending"));
    let bad = request(
        &f.app,
        "GET",
        "/console/history?from=kemarin",
        &cookie,
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Filters: a day long ago, another target, an outcome nobody has.
    for query in [
        "from=2000-01-01&to=2000-01-02",
        "target=lobi",
        "outcome=finished",
    ] {
        let page = request(
            &f.app,
            "GET",
            &format!("/console/history?{query}"),
            &cookie,
            None,
        )
        .await;
        assert!(page.body.contains("id=\"empty\""), "{query}");
    }
    let page = request(
        &f.app,
        "GET",
        "/console/history?target=aula&outcome=pending",
        &cookie,
        None,
    )
    .await;
    assert!(page.body.contains("alert(1)"), "matches");
}
