//! What the API tests share: an `AppState` with a SQLite store in a temp dir, two known sound
//! agents, a token, users of each role, and a fake broker that acknowledges every publish and
//! records it; `call` sends one request through `app(state).oneshot(request)`.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pantau_protocol::CommandMessage;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::announce::{AnnounceMetrics, Announcer, Observation, Settings, Store, Zone};
use crate::mqtt::MqttHandle;
use crate::state::{Liveness, State as AgentsState};

pub(crate) const TOKEN: &str = "0123456789abcdef-ops";
/// A read-only token: what `call` sends for a GET that names no credentials, since every
/// route under `/api/v1/` needs a login.
pub(crate) const VIEWER_TOKEN: &str = "0123456789abcdef-viewer";
pub(crate) const KEY: &[u8] = b"sixteen-byte-key-for-tests";

/// Checks that `message`, published on `topic`, is signed with its agent's derived key for
/// that topic, and with no other agent's key.
pub(crate) fn verify_sent(topic: &str, message: &CommandMessage) {
    let name = topic.split("/cmd/").nth(1).unwrap();
    let own = pantau_protocol::derive_agent_key(KEY, &message.agent);
    message.verify(own.as_bytes(), "pantau", name).unwrap();
    let other = pantau_protocol::derive_agent_key(KEY, "someone-else");
    assert!(message.verify(other.as_bytes(), "pantau", name).is_err());
    assert!(
        message.verify(KEY, "pantau", name).is_err(),
        "not the master key"
    );
}

pub(crate) struct Fixture {
    pub(crate) app: AppState,
    pub(crate) announcer: Arc<Announcer>,
    /// (topic, payload, retain) of every publish, in order.
    pub(crate) sent: Arc<Mutex<Vec<(String, CommandMessage, bool)>>>,
    _dir: tempfile::TempDir,
}

pub(crate) fn fixture() -> Fixture {
    fixture_with_cap(1_000)
}

/// As `fixture`, with `max_unexpired_per_agent` set to `cap`.
pub(crate) fn fixture_with_cap(cap: u32) -> Fixture {
    let state = Arc::new(RwLock::new(AgentsState::new(Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    })));
    let telemetry = Arc::new(Telemetry::new(state.clone()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, mut requests) = MqttHandle::channel(64);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let message: CommandMessage = serde_json::from_slice(&request.payload).unwrap();
            log.lock()
                .unwrap()
                .push((request.topic, message, request.retain));
            let _ = request.reply.send(Ok(()));
        }
    });
    let settings = Settings {
        prefix: "pantau".to_owned(),
        key: KEY.to_vec(),
        zones: vec![Zone {
            name: "lobby".to_owned(),
            agents: vec!["aula".to_owned(), "lobi".to_owned()],
        }],
        max_unexpired_per_agent: cap,
        default_expires: Duration::from_secs(300),
        resend_interval: Duration::from_secs(5),
        schedules: vec![
            serde_json::from_value(json!({
                "name": "config-pagi", "targets": ["aula"], "times": ["08:00"],
                "announce": {"text": "Selamat pagi"}
            }))
            .unwrap(),
        ],
        retention: Duration::from_secs(365 * 86_400),
        sites: std::collections::BTreeMap::new(),
        alert_rules: vec![
            serde_json::from_value(json!({
                "name": "link-down", "alertname": "LinkDown", "labels": {"severity": "critical"},
                "message": "Perhatian: jaringan {{ $labels.link }} terputus",
                "resolved_message": "Jaringan {{ $labels.link }} sudah pulih",
                "targets": ["aula"]
            }))
            .unwrap(),
        ],
    };
    let metrics = AnnounceMetrics::register(telemetry.registry()).unwrap();
    let announcer = Arc::new(
        Announcer::new(Store::open(dir.path()).unwrap(), settings, mqtt)
            .with_schedule_gauge(telemetry.schedule_version.clone())
            .with_metrics(metrics),
    );
    for agent in ["aula", "lobi"] {
        announcer.observe(
            Observation::Status {
                agent: agent.to_owned(),
                site: "dc".to_owned(),
                clips: vec!["bel.wav".to_owned()],
            },
            SystemTime::now(),
        );
    }
    let mut accounts = accounts::Accounts::default();
    accounts
        .set(
            "rina",
            Some(accounts::Role::Operator),
            "rahasia-rina",
            false,
        )
        .unwrap();
    accounts
        .set("tamu", Some(accounts::Role::Viewer), "rahasia-tamu", false)
        .unwrap();
    accounts
        .set("adi", Some(accounts::Role::Admin), "rahasia-adi", false)
        .unwrap();
    let app = AppState::new(state, telemetry, Readiness::default())
        .with_credentials(Credentials::fixed(
            Tokens::parse(&format!("{TOKEN}\n{VIEWER_TOKEN} viewer")).unwrap(),
            accounts,
            None,
        ))
        .with_announcer(announcer.clone());
    Fixture {
        app,
        announcer,
        sent,
        _dir: dir,
    }
}

/// `Authorization: Basic ...` of `user:password`.
pub(crate) fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

pub(crate) async fn call(
    app: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    let token = token.or((method == "GET").then_some(VIEWER_TOKEN));
    if let Some(token) = token {
        let value = if token.starts_with("Basic ") {
            token.to_owned()
        } else {
            format!("Bearer {token}")
        };
        request = request.header("authorization", value);
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = super::app(app.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

pub(crate) fn error(value: &Value) -> &str {
    value["error"].as_str().unwrap()
}
