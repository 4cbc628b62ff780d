//! `/metrics?site=`, `?agent=` and `?scope=collector` through the router.

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
    let telemetry = Arc::new(Telemetry::new(state.clone()).expect("telemetry"));
    let app = AppState::new(state, telemetry, Readiness::default());
    for (site, id) in [
        ("dc", "dc-srv-01"),
        ("dc", "dc-srv-02"),
        ("hq", "hq-srv-01"),
    ] {
        let payload = format!(
            r#"{{"schema":1,"agent":"{id}","site":"{site}","seq":1,"timestamp_ms":{},
                "families":[{{"name":"node_load1","type":"gauge","samples":[{{"value":0.5}}]}}]}}"#,
            crate::test_support_now_ms()
        );
        let topic = format!("pantau/v1/{site}/{id}/metrics");
        let decoded =
            decode("pantau", &topic, payload.as_bytes(), &Limits::default()).expect("valid");
        app.state
            .write()
            .expect("lock")
            .apply(decoded, false, Moment::now());
    }
    app
}

async fn get(app: &AppState, uri: &str) -> (StatusCode, String) {
    let response = super::app(app.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

fn instances(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|line| line.starts_with("node_load1{"))
        .filter_map(|line| line.split('"').nth(1))
        .collect()
}

#[tokio::test]
async fn a_site_or_agent_filter_shows_only_those_agents_and_not_the_collectors_own() {
    let app = fixture();
    let (status, all) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instances(&all), ["dc-srv-01", "dc-srv-02", "hq-srv-01"]);
    assert!(all.contains("pantau_collector_received_messages_total"));

    let (status, dc) = get(&app, "/metrics?site=dc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instances(&dc), ["dc-srv-01", "dc-srv-02"]);
    assert!(dc.contains(r#"pantau_agent_up{instance="dc-srv-02",site="dc"} 1"#));
    assert!(!dc.contains("hq-srv-01"));
    assert!(!dc.contains("pantau_collector_"), "{dc}");

    let (_, one) = get(&app, "/metrics?agent=hq-srv-01").await;
    assert_eq!(instances(&one), ["hq-srv-01"]);
    assert!(!one.contains("dc-srv"));

    let (_, none) = get(&app, "/metrics?site=dc&agent=hq-srv-01").await;
    assert_eq!(instances(&none), Vec::<&str>::new());
    let (_, nobody) = get(&app, "/metrics?site=elsewhere").await;
    assert!(nobody.is_empty(), "{nobody}");

    let (status, own) = get(&app, "/metrics?scope=collector").await;
    assert_eq!(status, StatusCode::OK);
    assert!(own.contains("pantau_collector_received_messages_total"));
    assert!(!own.contains("node_load1") && !own.contains("pantau_agent_up"));
}

#[tokio::test]
async fn bad_scrape_parameters_get_400_and_are_counted_by_reason() {
    let app = fixture();
    for (uri, says) in [
        ("/metrics?site=a%2Fb", "site \\\"a/b\\\""),
        ("/metrics?agent=", "agent \\\"\\\""),
        ("/metrics?sites=dc", "unknown parameter \\\"sites\\\""),
        ("/metrics?site=dc&site=hq", "given more than once"),
        ("/metrics?scope=everything", "the only scope"),
        ("/metrics?scope=collector&site=dc", "cannot be combined"),
    ] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(says), "{uri}: {body}");
    }
    let (_, metrics) = get(&app, "/metrics?scope=collector").await;
    for (reason, count) in [
        ("invalid_site", 1),
        ("invalid_agent", 1),
        ("unknown_parameter", 1),
        ("repeated_parameter", 1),
        ("invalid_scope", 1),
        ("conflicting_parameters", 1),
    ] {
        let line =
            format!(r#"pantau_collector_bad_scrape_requests_total{{reason="{reason}"}} {count}"#);
        assert!(metrics.contains(&line), "missing {line}");
    }
    assert!(
        metrics
            .contains(r#"pantau_collector_http_requests_total{code="400",handler="/metrics"} 6"#)
    );
}
