//! A stop for an agent that does not answer (offline, or its broker session lost) is resent,
//! under the same id, until that agent answers it or the announcement could no longer play.

use std::time::{Duration, SystemTime};

use pantau_protocol::{COMMAND_COMPLETED, Event, Severity};
use serde_json::json;

use super::test_support::{TOKEN, call, fixture};
use crate::announce::Observation;

/// Ids of the stops sent so far, per agent topic, in order.
fn stops(sent: &[(String, pantau_protocol::CommandMessage, bool)]) -> Vec<(String, String)> {
    sent.iter()
        .filter(|(topic, _, _)| topic.ends_with("/cmd/stop"))
        .map(|(topic, message, _)| (topic.clone(), message.id.clone()))
        .collect()
}

#[tokio::test]
async fn a_stop_is_resent_until_its_agent_answers_or_the_announcement_expires() {
    let f = fixture();
    let (_, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "x", "zones": ["lobby"], "expires_in_seconds": 120})),
    )
    .await;
    let id = value["id"].as_str().unwrap().to_owned();
    let t0 = SystemTime::now();
    f.announcer.stop("token:ops", &id, t0).await.unwrap();
    let first = stops(&f.sent.lock().unwrap());
    assert_eq!(first.len(), 2, "{first:?}");
    let aula = first
        .iter()
        .find(|(topic, _)| topic == "pantau/v1/dc/aula/cmd/stop")
        .unwrap()
        .clone();
    let lobi = first
        .iter()
        .find(|(topic, _)| topic == "pantau/v1/dc/lobi/cmd/stop")
        .unwrap()
        .clone();

    // Nobody answered: both again, the same commands (the agents carry out an id once).
    f.announcer.resend(t0 + Duration::from_secs(5)).await;
    let sent = stops(&f.sent.lock().unwrap());
    assert_eq!(sent.len(), 4);
    assert_eq!(&sent[2..], &first[..]);
    // The expiry carried is the announcement's, so a late stop still beats a late play.
    let expires = f
        .sent
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(topic, _, _)| topic.ends_with("/cmd/stop"))
        .and_then(|(_, message, _)| message.expires_ms)
        .unwrap();
    assert!(expires >= crate::announce::unix_ms(t0) + 60_000);

    // lobi answers; another agent's answer with lobi's id changes nothing for aula.
    let answer = |agent: &str, stop_id: &str| Observation::Events {
        agent: agent.to_owned(),
        events: vec![Event {
            kind: COMMAND_COMPLETED.to_owned(),
            severity: Severity::Info,
            message: "stopping".to_owned(),
            labels: [
                ("command".to_owned(), "stop".to_owned()),
                ("command_id".to_owned(), stop_id.to_owned()),
            ]
            .into(),
        }],
    };
    f.announcer.observe(answer("lobi", &lobi.1), t0);
    f.announcer.observe(answer("lobi", &aula.1), t0);
    f.announcer.resend(t0 + Duration::from_secs(10)).await;
    let sent = stops(&f.sent.lock().unwrap());
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[4], aula);

    // Past the announcement's expiry (120 s) aula's stop is dropped, not sent for ever.
    f.announcer.resend(t0 + Duration::from_secs(121)).await;
    f.announcer.resend(t0 + Duration::from_secs(126)).await;
    assert_eq!(stops(&f.sent.lock().unwrap()).len(), 5);
    assert!(f.announcer.store().pending_stops(0).unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_stop_counts_as_answered() {
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
    let t0 = SystemTime::now();
    f.announcer.stop("token:ops", &id, t0).await.unwrap();
    let stop_id = stops(&f.sent.lock().unwrap())[0].1.clone();
    // A resend that crossed the agent's answer is refused as a replay: the stop arrived.
    f.announcer.observe(
        Observation::Events {
            agent: "aula".to_owned(),
            events: vec![Event {
                kind: pantau_protocol::COMMAND_REJECTED.to_owned(),
                severity: Severity::Warning,
                message: "already carried out".to_owned(),
                labels: [
                    ("command".to_owned(), "stop".to_owned()),
                    ("command_id".to_owned(), stop_id),
                    ("reason".to_owned(), "replayed".to_owned()),
                ]
                .into(),
            }],
        },
        t0,
    );
    f.announcer.resend(t0 + Duration::from_secs(5)).await;
    assert_eq!(stops(&f.sent.lock().unwrap()).len(), 1);
    let row = f.announcer.store().announcement(&id).unwrap().unwrap();
    assert_eq!(
        row.targets[0].status, "stopped",
        "the refusal is not the target's"
    );
}
