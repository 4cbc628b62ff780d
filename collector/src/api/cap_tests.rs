//! The per-agent cap on unexpired announcements (`announcements.max_unexpired_per_agent`),
//! through `app(state).oneshot(request)`: the API, the Alertmanager webhook, and what it
//! does not count (emergencies, stops, expired announcements).

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use serde_json::json;

use super::test_support::{Fixture, TOKEN, call, error, fixture_with_cap};

/// `pantau_collector_api_refused_announcements_total{reason="agent_cap"}` in a scrape.
async fn refused(f: &Fixture) -> f64 {
    let (_, text) = scrape(f).await;
    text.lines()
        .find(|line| {
            line.starts_with(
                "pantau_collector_api_refused_announcements_total{reason=\"agent_cap\"}",
            )
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(-1.0)
}

async fn scrape(f: &Fixture) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = super::app(f.app.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn announce(f: &Fixture, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn beyond_the_cap_an_agent_gets_no_more_announcements_but_emergencies_and_stops() {
    let f = fixture_with_cap(3);
    assert_eq!(refused(&f).await, 0.0, "the counter starts at zero");
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, value) = announce(
            &f,
            json!({"text": format!("pesan {n}"), "targets": ["aula"], "expires_in_seconds": 86_400}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        ids.push(value["id"].as_str().unwrap().to_owned());
    }
    let sent_before = f.sent.lock().unwrap().len();
    let (status, value) = announce(
        &f,
        json!({"text": "satu lagi", "targets": ["aula"], "expires_in_seconds": 86_400}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{value}");
    assert!(
        error(&value).contains("agent 'aula' has 3 unexpired announcements")
            && error(&value).contains("(3)"),
        "{value}"
    );
    assert_eq!(f.sent.lock().unwrap().len(), sent_before, "nothing sent");
    assert_eq!(refused(&f).await, 1.0);
    // A zone with a capped agent in it is refused whole, naming the agent.
    let (status, value) = announce(&f, json!({"text": "zona", "zones": ["lobby"]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{value}");
    assert!(error(&value).contains("'aula'"), "{value}");
    assert_eq!(refused(&f).await, 2.0);
    // Another agent is not affected.
    let (status, _) = announce(&f, json!({"text": "lobi", "targets": ["lobi"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    // Emergencies and stops are not counted nor capped.
    let (status, value) = announce(
        &f,
        json!({"text": "Evakuasi", "targets": ["aula"], "priority": "emergency"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let (status, value) = call(
        &f.app,
        "POST",
        &format!("/api/v1/announcements/{}/stop", ids[0]),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    // Expired ones are not counted: a day later there is room again.
    let later = SystemTime::now() + Duration::from_secs(86_401);
    let request = serde_json::from_value(json!({"text": "besok", "targets": ["aula"]})).unwrap();
    f.announcer.create("test", request, later).await.unwrap();
}

#[tokio::test]
async fn the_alertmanager_webhook_goes_through_the_same_cap() {
    let f = fixture_with_cap(2);
    for n in 0..2 {
        let (status, _) = announce(
            &f,
            json!({"text": format!("pesan {n}"), "targets": ["aula"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let webhook = json!({
        "version": "4", "status": "firing", "receiver": "pantau", "groupKey": "{}:{}",
        "alerts": [{
            "status": "firing", "fingerprint": "cap-1",
            "labels": {"alertname": "LinkDown", "severity": "critical", "link": "gor-dc"},
            "annotations": {}
        }]
    });
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(webhook),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert!(value["announced"].as_array().unwrap().is_empty(), "{value}");
    let reason = value["skipped"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("agent 'aula' has 2 unexpired announcements"),
        "{reason}"
    );
    assert_eq!(refused(&f).await, 1.0);
}
