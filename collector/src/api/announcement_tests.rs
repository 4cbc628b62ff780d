//! `/api/v1/announcements` and `/api/v1/audit` through `app(state).oneshot(request)`, with a
//! SQLite store in a temp dir and a fake broker that acknowledges every publish.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pantau_protocol::{Event, Severity};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::test_support::{TOKEN, basic, call, error, fixture, verify_sent};
use super::*;
use crate::announce::Observation;

#[tokio::test]
async fn users_log_in_with_basic_and_their_role_decides() {
    let f = fixture();
    let body = json!({"text": "halo", "targets": ["aula"]});
    let post = |authorization: String| {
        let app = f.app.clone();
        let body = body.clone();
        async move {
            let request = Request::post("/api/v1/announcements")
                .header("authorization", authorization)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let response = super::app(app).oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, value) = post(basic("tamu:rahasia-tamu")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error(&value),
        "user 'tamu' is a viewer; this needs an operator or admin"
    );
    let (status, value) = post(basic("rina:salah-salah")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&value), "wrong user name or password");
    let (status, value) = post("Digest x".to_owned()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error(&value),
        "the Authorization header is neither Bearer nor Basic"
    );
    let (status, value) = post(basic("rina:rahasia-rina")).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    assert_eq!(value["created_by"], "rina");
    let failures = &f.app.telemetry.api_auth_failures;
    assert_eq!(failures.with_label_values(&["forbidden"]).get(), 1);
    assert_eq!(failures.with_label_values(&["wrong"]).get(), 2);
}

#[tokio::test]
async fn writes_need_a_valid_token_and_failures_are_counted() {
    let f = fixture();
    let body = json!({"text": "halo", "targets": ["aula"]});
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error(&value),
        "this needs a bearer token (Authorization: Bearer ...) or a user (HTTP Basic)"
    );
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some("0123456789abcdef-xxx"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&value), "the bearer token is not valid");
    let (status, _) = call(&f.app, "POST", "/api/v1/announcements/x/stop", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let failures = &f.app.telemetry.api_auth_failures;
    assert_eq!(failures.with_label_values(&["missing"]).get(), 2);
    assert_eq!(failures.with_label_values(&["wrong"]).get(), 1);
    assert!(f.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_announcement_is_signed_per_target_and_followed_by_events() {
    let f = fixture();
    let body = json!({"text": "Mohon tetap memakai masker", "zones": ["lobby"], "repeat": 2, "expires_in_seconds": 60});
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let id = value["id"].as_str().unwrap().to_owned();
    assert_eq!(value["targets"].as_array().unwrap().len(), 2);
    assert_eq!(value["targets"][0]["status"], "pending");
    assert!(value["created_by"].as_str().unwrap().starts_with("token:"));

    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let (topic, message, retain) = &sent[0];
    assert_eq!(topic, "pantau/v1/dc/aula/cmd/announce");
    assert!(!retain);
    assert_eq!(message.id, format!("{id}-0"));
    assert_eq!(message.args["text"], "Mohon tetap memakai masker");
    assert_eq!(message.args["priority"], "operator");
    verify_sent(topic, message);
    let expires = message.expires_ms.unwrap() - message.timestamp_ms;
    assert!((59_000..=60_000).contains(&expires), "{expires}");

    let event = |kind: &str, command_id: &str| Event {
        kind: kind.to_owned(),
        severity: Severity::Info,
        message: kind.to_owned(),
        labels: [("announcement".to_owned(), command_id.to_owned())].into(),
    };
    let rejected = Event {
        kind: "command_rejected".to_owned(),
        severity: Severity::Warning,
        message: "replayed".to_owned(),
        labels: [
            ("command_id".to_owned(), format!("{id}-0")),
            ("reason".to_owned(), "replayed".to_owned()),
        ]
        .into(),
    };
    // Another agent cannot change aula's target.
    f.announcer.observe(
        Observation::Events {
            agent: "lobi".to_owned(),
            events: vec![event("announcement_failed", &format!("{id}-0"))],
        },
        SystemTime::now(),
    );
    f.announcer.observe(
        Observation::Events {
            agent: "aula".to_owned(),
            events: vec![
                event("announcement_queued", &format!("{id}-0")),
                rejected,
                event("announcement_finished", &format!("{id}-0")),
            ],
        },
        SystemTime::now(),
    );
    let (status, value) = call(
        &f.app,
        "GET",
        &format!("/api/v1/announcements/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["targets"][0]["agent"], "aula");
    assert_eq!(value["targets"][0]["status"], "finished");
    assert_eq!(value["targets"][1]["status"], "pending");

    // Only the pending target is sent again; an expired one is marked, not sent.
    f.announcer.resend(SystemTime::now()).await;
    assert_eq!(f.sent.lock().unwrap().len(), 3);
    assert_eq!(
        f.sent.lock().unwrap()[2].0,
        "pantau/v1/dc/lobi/cmd/announce"
    );
    f.announcer
        .resend(SystemTime::now() + Duration::from_secs(61))
        .await;
    assert_eq!(f.sent.lock().unwrap().len(), 3);
    let (_, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements?outcome=expired",
        None,
        None,
    )
    .await;
    assert_eq!(value["announcements"][0]["targets"][1]["status"], "expired");
    let (_, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements?target=nobody",
        None,
        None,
    )
    .await;
    assert_eq!(value["announcements"], json!([]));
    let (_, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
        None,
        None,
    )
    .await;
    assert_eq!(value["announcements"], json!([]));

    let (_, value) = call(&f.app, "GET", "/api/v1/audit", None, None).await;
    assert_eq!(value["entries"][0]["action"], "announce");
    assert_eq!(value["entries"][0]["subject"], id.as_str());
}

#[tokio::test]
async fn bad_requests_name_what_is_wrong() {
    let f = fixture();
    let cases = [
        (
            json!({"targets": ["aula"]}),
            "give one of `text`, `clip` or `tone`",
        ),
        (
            json!({"text": "x"}),
            "give at least one of `targets` or `zones`",
        ),
        (
            json!({"text": "x", "targets": ["ghost"]}),
            "`targets`: unknown agent 'ghost' (no birth message seen from it)",
        ),
        (
            json!({"text": "x", "zones": ["kantin"]}),
            "`zones`: unknown zone 'kantin'",
        ),
        (
            json!({"clip": "sirene.wav", "targets": ["aula"]}),
            "`clip`: agent 'aula' has no clip 'sirene.wav'",
        ),
        (
            json!({"text": "x", "targets": ["aula"], "repeat": 11}),
            "`repeat` must be 1 to 10",
        ),
        (
            json!({"text": "x", "targets": ["aula"], "volume": 2.0}),
            "`volume` must be 0.0 to 1.0",
        ),
        (
            json!({"text": "x", "targets": ["aula"], "expires_in_seconds": 0}),
            "`expires_in_seconds`: 0 must be 1 to 86400",
        ),
    ];
    for (body, message) in cases {
        let (status, value) = call(
            &f.app,
            "POST",
            "/api/v1/announcements",
            Some(TOKEN),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&value), message, "{body}");
    }
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "x", "targets": ["aula"], "colour": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&value).contains("unknown field `colour`"), "{value}");
    let (status, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements?from=yesterday",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&value).starts_with("`from`: 'yesterday' is not an RFC 3339 time"),
        "{value}"
    );
    let (status, value) = call(&f.app, "GET", "/api/v1/announcements/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&value), "no announcement 'nope'");
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements/nope/stop",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&value), "no announcement 'nope'");
    assert!(f.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_clip_the_agent_has_is_sent() {
    let f = fixture();
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"clip": "bel.wav", "targets": ["lobi"], "priority": "emergency"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(
        sent[0].1.args,
        json!({"clip": "bel.wav", "priority": "emergency", "on_preempt": "resume"})
    );
}

#[tokio::test]
async fn stop_sends_a_signed_stop_and_ends_pending_targets() {
    let f = fixture();
    let (_, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "x", "targets": ["aula"]})),
    )
    .await;
    let id = value["id"].as_str().unwrap().to_owned();
    let (status, value) = call(
        &f.app,
        "POST",
        &format!("/api/v1/announcements/{id}/stop"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["targets"][0]["status"], "stopped");
    assert!(value["stopped_ms"].is_i64());
    let sent = f.sent.lock().unwrap().clone();
    let (topic, message, _) = &sent[1];
    assert_eq!(topic, "pantau/v1/dc/aula/cmd/stop");
    assert_eq!(message.args, json!({"announcement": format!("{id}-0")}));
    verify_sent(topic, message);
    assert!(
        message.id.starts_with(&format!("{id}-0-stop-")),
        "{}",
        message.id
    );
    // Stopped targets are not sent again (the unanswered stop is: stop_tests.rs).
    f.announcer.resend(SystemTime::now()).await;
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].1.id, sent[1].1.id, "{:?}", sent[2]);
    // A second stop is a new command, not a replay of the first.
    f.announcer
        .stop(
            "token:x",
            &id,
            SystemTime::now() + std::time::Duration::from_secs(1),
        )
        .await
        .unwrap();
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    assert_ne!(sent[3].1.id, sent[1].1.id);
}

#[tokio::test]
async fn without_a_key_announcements_are_off() {
    let f = fixture();
    let app = AppState {
        announcer: None,
        ..f.app.clone()
    };
    let (status, value) = call(&app, "GET", "/api/v1/announcements", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        error(&value),
        "announcements are off: set announcements.key_file (the sound agents' key)"
    );
}
