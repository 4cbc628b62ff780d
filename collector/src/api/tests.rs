//! Handler tests without a socket: `app(state).oneshot(request)`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pantau_protocol::{Limits, decode};
use tower::ServiceExt;

use super::*;
use crate::state::{Liveness, Moment, State as AgentsState};

fn fixture() -> AppState {
    let state = Arc::new(RwLock::new(AgentsState::new(Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    })));
    let telemetry = Arc::new(Telemetry::new(state.clone()).unwrap());
    AppState::new(state, telemetry, Readiness::default()).with_credentials(Credentials::fixed(
        Tokens::parse(&format!("{VIEWER_TOKEN} viewer")).unwrap(),
        accounts::Accounts::default(),
        None,
    ))
}

/// The viewer token of the fixture: every route under `/api/v1/` needs a login.
const VIEWER_TOKEN: &str = "0123456789abcdef-viewer";

fn add_agent(app: &AppState, id: &str) {
    let now_ms = crate::test_support_now_ms();
    let payload = format!(
        r#"{{"schema":1,"agent":"{id}","site":"dc","seq":3,"timestamp_ms":{now_ms},
            "families":[{{"name":"node_load1","type":"gauge","samples":[{{"value":0.5}}]}}]}}"#
    );
    let topic = format!("pantau/v1/dc/{id}/metrics");
    let decoded = decode("pantau", &topic, payload.as_bytes(), &Limits::default()).unwrap();
    app.state
        .write()
        .unwrap()
        .apply(decoded, false, Moment::now());
}

async fn get(app: &AppState, uri: &str) -> (StatusCode, String, Option<String>) {
    let response = super::app(app.clone())
        .oneshot(
            Request::get(uri)
                .header("authorization", format!("Bearer {VIEWER_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).unwrap(),
        content_type,
    )
}

#[tokio::test]
async fn health_and_readiness() {
    let app = fixture();
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    let (status, body, _) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not subscribed"));
    app.readiness.set_subscribed(true);
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_essential_task_makes_readyz_say_which_and_why() {
    let app = fixture();
    app.readiness.set_subscribed(true);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut supervisor = app.readiness.supervisor(shutdown.clone());
    let token = shutdown.clone();
    supervisor.spawn("sweeper", async move { token.cancelled().await });
    supervisor.spawn("decoder", async {
        tokio::task::yield_now().await;
        if true {
            panic!("overflow in seq arithmetic");
        }
    });
    let failure = supervisor.run().await.unwrap_err();
    assert_eq!(failure.task, "decoder");
    assert!(shutdown.is_cancelled());

    let (status, body, _) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "not ready: essential task 'decoder' panicked: overflow in seq arithmetic\n"
    );
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
}

fn apply(app: &AppState, topic: &str, payload: &str) {
    let decoded = decode("pantau", topic, payload.as_bytes(), &Limits::default()).unwrap();
    app.state
        .write()
        .unwrap()
        .apply(decoded, false, Moment::now());
}

#[tokio::test]
async fn events_are_served_newest_first() {
    let app = fixture();
    for (seq, kind) in [(4, "agent_started"), (5, "link_down"), (5, "link_down")] {
        apply(
            &app,
            "pantau/v1/gor/gor-link-01/events",
            &format!(
                r#"{{"schema":1,"agent":"gor-link-01","site":"gor","seq":{seq},"timestamp_ms":{seq}000,
                    "events":[{{"kind":"{kind}","severity":"warning","message":"{kind} now",
                               "labels":{{"iface":"wan0"}}}}]}}"#
            ),
        );
    }
    let (status, body, content_type) = get(&app, "/api/v1/agents/gor-link-01/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["agent"], "gor-link-01");
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the repeated seq 5 is stored once: {body}");
    assert_eq!(events[0]["kind"], "link_down");
    assert_eq!(events[0]["seq"], 5);
    assert_eq!(events[0]["timestamp_ms"], 5000);
    assert_eq!(events[0]["severity"], "warning");
    assert_eq!(events[0]["message"], "link_down now");
    assert_eq!(events[0]["labels"]["iface"], "wan0");
    assert!(events[0]["received"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[1]["kind"], "agent_started");

    let (status, body, _) = get(&app, "/api/v1/agents/nobody/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, r#"{"error":"no agent 'nobody'"}"#);
    let (status, body, _) = get(&app, "/api/v1/agents/bad%20id/events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("agent id 'bad id'"), "{body}");
}

#[tokio::test]
async fn an_agent_shows_the_roles_of_its_birth() {
    let app = fixture();
    apply(
        &app,
        "pantau/v1/dc/dc-srv-01/status",
        r#"{"schema":1,"agent":"dc-srv-01","site":"dc","state":"online","timestamp_ms":1,
            "interval_seconds":15,"version":"0.2.0","roles":["host","probe"]}"#,
    );
    let (_, body, _) = get(&app, "/api/v1/agents/dc-srv-01").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["roles"], serde_json::json!(["host", "probe"]));
    assert_eq!(json["version"], "0.2.0");
    assert_eq!(json["interval_seconds"], 15);
    let fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields.len(),
        14,
        "the README's fields, nothing else: {fields:?}"
    );
}

#[tokio::test]
async fn agents_are_listed_and_looked_up() {
    let app = fixture();
    add_agent(&app, "dc-srv-02");
    add_agent(&app, "dc-srv-01");
    let (status, body, _) = get(&app, "/api/v1/agents").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let agents = json["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["id"], "dc-srv-01");
    assert_eq!(agents[0]["site"], "dc");
    assert_eq!(agents[0]["online"], true);
    assert_eq!(agents[0]["status"], "online");
    assert_eq!(agents[0]["last_sequence"], 3);
    assert!(agents[0]["last_seen"].as_str().unwrap().ends_with('Z'));

    let (status, body, _) = get(&app, "/api/v1/agents/dc-srv-02").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"id\":\"dc-srv-02\""));
}

#[tokio::test]
async fn bad_calls_get_json_errors_and_are_counted() {
    let app = fixture();
    let (status, body, content_type) = get(&app, "/api/v1/agents/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, r#"{"error":"no agent 'nobody'"}"#);
    assert_eq!(content_type.as_deref(), Some("application/json"));

    let (status, body, _) = get(&app, "/api/v1/agents/bad%20id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("agent id 'bad id'"), "{body}");

    let (status, body, _) = get(&app, "/api/v2/everything").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, r#"{"error":"no route for GET /api/v2/everything"}"#);

    let (_, metrics, _) = get(&app, "/metrics").await;
    for line in [
        r#"pantau_collector_http_requests_total{code="404",handler="/api/v1/agents/{id}"} 1"#,
        r#"pantau_collector_http_requests_total{code="400",handler="/api/v1/agents/{id}"} 1"#,
        r#"pantau_collector_http_requests_total{code="404",handler="unmatched"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = fixture();
    add_agent(&app, "dc-srv-01");
    let (status, body, content_type) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        body.contains(r#"node_load1{instance="dc-srv-01",site="dc"} 0.5"#),
        "{body}"
    );
    assert!(body.contains(r#"pantau_agent_up{instance="dc-srv-01",site="dc"} 1"#));
}
