//! The collector's seams end to end: events reach `/api/v1/agents/{id}/events`, a rejected
//! retained message is cleared from the broker through the collector's own publish handle, and
//! a real agent's roles show in the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_tests::{Agent, Collector, Mosquitto, TestDir, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(20);

fn events_payload(agent: &str, site: &str, seq: u64, kind: &str) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis();
    format!(
        r#"{{"schema":1,"agent":"{agent}","site":"{site}","seq":{seq},"timestamp_ms":{now_ms},
            "events":[{{"kind":"{kind}","severity":"critical","message":"{kind} on wan0",
                       "labels":{{"iface":"wan0"}}}}]}}"#
    )
    .into_bytes()
}

/// Publishes events for agent `gor-fake` through `publish` and checks what the API serves.
fn events_reach_the_api(collector: &Collector, publish: impl Fn(&str, &[u8])) {
    let topic = "pantau/v1/gor-satria/gor-fake/events";
    let path = "/api/v1/agents/gor-fake/events";
    publish(
        topic,
        &events_payload("gor-fake", "gor-satria", 7, "link_down"),
    );
    let json = collector.wait_for_api(path, 200, WAIT, |json| {
        json["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
    });
    assert_eq!(json["agent"], "gor-fake");
    let event = &json["events"][0];
    assert_eq!(event["kind"], "link_down", "{json}");
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["message"], "link_down on wan0");
    assert_eq!(event["labels"]["iface"], "wan0");
    assert_eq!(event["seq"], 7);
    assert!(
        event["timestamp_ms"]
            .as_i64()
            .is_some_and(|ms| ms > 1_700_000_000_000),
        "{json}"
    );
    assert!(
        event["received"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z')),
        "{json}"
    );

    // A redelivery (same seq) is dropped; the next one comes first.
    publish(
        topic,
        &events_payload("gor-fake", "gor-satria", 7, "link_down"),
    );
    publish(
        topic,
        &events_payload("gor-fake", "gor-satria", 8, "link_up"),
    );
    let json = collector.wait_for_api(path, 200, WAIT, |json| json["events"][0]["seq"] == 8);
    let kinds: Vec<&str> = json["events"]
        .as_array()
        .expect("an events array")
        .iter()
        .filter_map(|event| event["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["link_up", "link_down"], "{json}");
    collector.wait_for_sample(
        r#"pantau_agent_duplicate_messages_total{instance="gor-fake",site="gor-satria"}"#,
        WAIT,
        |v| v == 1.0,
    );
    collector.wait_for_sample(
        r#"pantau_agent_events_total{instance="gor-fake",site="gor-satria",severity="critical"}"#,
        WAIT,
        |v| v == 2.0,
    );

    let (status, json) = collector.api("/api/v1/agents/nobody/events");
    assert_eq!(
        (status, json["error"].as_str()),
        (404, Some("no agent 'nobody'"))
    );
    let (status, _) = collector.api("/api/v1/agents/not%20an%20id/events");
    assert_eq!(status, 400);
}

#[test]
fn events_reach_the_api_through_mosquitto() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    events_reach_the_api(&collector, |topic, payload| {
        broker.mosquitto_pub(topic, payload, false)
    });
}

#[test]
fn events_reach_the_api_through_the_embedded_broker() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let port = collector.broker_port();
    events_reach_the_api(&collector, |topic, payload| {
        mosquitto_pub(port, topic, payload, false)
    });
}

/// A retained message the broker replays on subscribe is the one that would come back on
/// every reconnect. (With the embedded broker the collector is subscribed before anyone can
/// publish, and rumqttd, like Mosquitto, delivers a retained publish to existing subscribers
/// without the retain flag, so there is no replay to test there without a reconnect.)
#[test]
fn a_rejected_retained_message_is_cleared_from_the_broker() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let topic = "pantau/v1/dc/x/status";
    broker.mosquitto_pub(topic, b"not json", true);
    assert_eq!(broker.subscribe_one(topic, WAIT), b"not json");

    let collector = Collector::with_broker(&dir, &broker);
    let rejected = r#"pantau_collector_rejected_messages_total{reason="invalid_json"}"#;
    let cleared = "pantau_collector_cleared_retained_messages_total";
    collector.wait_for_sample(rejected, WAIT, |v| v == 1.0);
    collector.wait_for_sample(cleared, WAIT, |v| v == 1.0);

    // The clear comes back to the collector as an empty publish: received, and ignored.
    collector.wait_for_sample("pantau_collector_received_messages_total", WAIT, |v| {
        v == 2.0
    });
    let text = collector.metrics();
    let rejections: f64 = text
        .lines()
        .filter(|line| line.starts_with("pantau_collector_rejected_messages_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rejections, 1.0, "{text}");
    assert_eq!(pantau_tests::sample(&text, cleared), Some(1.0));

    // A new subscriber gets no retained message on the topic any more; a live one still
    // works (so silence means cleared, not a broken subscription).
    let mut fresh = broker.subscribe(topic);
    assert_eq!(fresh.try_recv(Duration::from_secs(2)), None);
    broker.mosquitto_pub(topic, b"live", false);
    assert_eq!(fresh.recv(WAIT).payload, b"live");

    assert_eq!(collector.readyz().0, 200);
    assert!(
        collector
            .logs()
            .contains("cleared a rejected retained message"),
        "{}",
        collector.logs()
    );
}

#[test]
fn a_real_agent_shows_its_roles() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let agent = Agent::start(&dir, "dc-roles", "dc", &collector.broker_url(), 1);
    let json = collector.wait_for_api("/api/v1/agents/dc-roles", 200, WAIT, |json| {
        json["online"] == true
    });
    assert_eq!(
        json["roles"],
        serde_json::json!(["host"]),
        "{}",
        agent.logs()
    );
    assert_eq!(json["site"], "dc");
}
