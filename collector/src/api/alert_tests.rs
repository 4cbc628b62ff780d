//! `POST /api/v1/alertmanager` through `app(state).oneshot(request)`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::test_support::{TOKEN, call, error, fixture};

fn webhook(status: &str, alertname: &str) -> Value {
    json!({
        "version": "4", "status": status, "receiver": "pantau", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [{
            "status": status, "fingerprint": "abc123",
            "labels": {"alertname": alertname, "severity": "critical", "link": "gor-dc"},
            "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": ""
        }]
    })
}

#[tokio::test]
async fn a_firing_alert_is_announced_once_per_interval_and_its_resolution_too() {
    let f = fixture();
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        None,
        Some(webhook("firing", "LinkDown")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");

    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(webhook("firing", "LinkDown")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["announced"].as_array().unwrap().len(), 1, "{value}");
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent[0].0, "pantau/v1/dc/aula/cmd/announce");
    assert_eq!(
        sent[0].1.args["text"],
        "Perhatian: jaringan gor-dc terputus"
    );
    assert_eq!(sent[0].1.args["priority"], "alert");

    let (_, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(webhook("firing", "LinkDown")),
    )
    .await;
    assert_eq!(value["announced"], json!([]));
    assert_eq!(value["skipped"][0]["reason"], "rate_limited");
    assert_eq!(value["skipped"][0]["rule"], "link-down");

    let (_, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(webhook("resolved", "LinkDown")),
    )
    .await;
    assert_eq!(value["announced"].as_array().unwrap().len(), 1, "{value}");
    assert_eq!(
        f.sent.lock().unwrap()[1].1.args["text"],
        "Jaringan gor-dc sudah pulih"
    );

    let (_, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(webhook("firing", "DiskFull")),
    )
    .await;
    assert_eq!(value, json!({"announced": [], "skipped": []}));
    assert_eq!(f.sent.lock().unwrap().len(), 2);

    let (_, value) = call(&f.app, "GET", "/api/v1/audit", None, None).await;
    let alert = value["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "alert")
        .unwrap()
        .clone();
    assert_eq!(
        alert["detail"],
        "rule 'link-down': alert LinkDown resolved (fingerprint abc123)"
    );
    assert!(alert["who"].as_str().unwrap().starts_with("token:"));
}

#[tokio::test]
async fn a_webhook_of_another_version_or_shape_is_refused() {
    let f = fixture();
    let mut old = webhook("firing", "LinkDown");
    old["version"] = json!("3");
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(old),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&value),
        "`version`: '3' is not Alertmanager's webhook version 4"
    );
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/alertmanager",
        Some(TOKEN),
        Some(json!({"alerts": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&value).contains("missing field `version`") || error(&value).contains("invalid type"),
        "{value}"
    );
}
