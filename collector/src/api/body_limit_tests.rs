//! Request bodies are capped per route: small for the JSON API and the console's forms, larger
//! for the Alertmanager webhook.

use axum::http::StatusCode;
use serde_json::json;

use super::test_support::{TOKEN, call, fixture};
use super::{MAX_BODY_BYTES, MAX_WEBHOOK_BODY_BYTES};

#[tokio::test]
async fn an_api_body_over_the_limit_is_refused_with_413() {
    let f = fixture();
    let text = "a".repeat(MAX_BODY_BYTES);
    let body = json!({"text": text, "targets": ["aula"]});
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{value}");
    assert!(f.sent.lock().unwrap().is_empty());
    // The same route under the limit is read (and refused for its content instead).
    let body = json!({"text": "a".repeat(3000), "targets": ["aula"]});
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_webhook_takes_more_than_the_api_but_not_without_limit() {
    let f = fixture();
    let alert = |i: usize| {
        json!({
            "status": "firing", "fingerprint": format!("f{i}"),
            "labels": {"alertname": "Other", "severity": "info", "n": i.to_string()},
            "annotations": {"description": "x".repeat(900)},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": ""
        })
    };
    let webhook = |alerts: usize| {
        json!({
            "version": "4", "status": "firing", "receiver": "pantau", "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
            "truncatedAlerts": 0, "alerts": (0..alerts).map(alert).collect::<Vec<_>>()
        })
    };
    // About 100 KiB: over the API's limit, within the webhook's.
    let medium = webhook(100);
    assert!(medium.to_string().len() > MAX_BODY_BYTES);
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(medium),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let huge = webhook(MAX_WEBHOOK_BODY_BYTES / 900 + 10);
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(huge),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{value}");
}
