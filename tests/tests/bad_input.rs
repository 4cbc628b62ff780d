//! Bad input straight to the broker: every kind is refused, counted under its reason, and
//! never stops the collector or a good agent's series from updating.

use std::time::Duration;

use pantau_tests::{Agent, Collector, Mosquitto, TestDir, http_get, sample};

const WAIT: Duration = Duration::from_secs(20);

fn metrics_payload(agent: &str, site: &str, seq: u64, families: &str) -> String {
    // Taken now: older samples are history, never shown as current.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    format!(
        r#"{{"schema":1,"agent":"{agent}","site":"{site}","seq":{seq},"timestamp_ms":{now_ms},"families":{families}}}"#
    )
}

const LOAD: &str = r#"[{"name":"node_load1","type":"gauge","samples":[{"value":0.5}]}]"#;

#[test]
fn every_kind_of_bad_payload_is_counted_while_a_good_agent_keeps_reporting() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let mut collector = Collector::with_broker(&dir, &broker);
    let agent = Agent::start(&dir, "dc-good", "dc", &broker.url(), 1);
    let messages = r#"pantau_agent_messages_total{instance="dc-good",site="dc"}"#;
    collector.wait_for_sample(messages, WAIT, |v| v >= 1.0);

    let topic = "pantau/v1/dc/dc-bad/metrics";
    let oversized = metrics_payload(
        "dc-bad",
        "dc",
        1,
        &format!(
            r#"[{{"name":"node_load1","type":"gauge","help":"{}","samples":[{{"value":1}}]}}]"#,
            "x".repeat(600 * 1024)
        ),
    );
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("invalid_topic", "pantau/v1/dc/dc-bad/weather", b"{}".to_vec()),
        ("invalid_topic", "pantau/v1/dc/dc bad/metrics", b"{}".to_vec()),
        ("unknown_schema", "pantau/v2/dc/dc-bad/metrics", b"{}".to_vec()),
        (
            "unknown_schema",
            topic,
            metrics_payload("dc-bad", "dc", 1, LOAD)
                .replace(r#""schema":1"#, r#""schema":7"#)
                .into_bytes(),
        ),
        ("oversized", topic, oversized.into_bytes()),
        ("invalid_json", topic, b"\x00\xffnot json at all".to_vec()),
        ("invalid_json", topic, b"{\"schema\":1,".to_vec()),
        ("invalid_schema", topic, br#"{"schema":1,"agent":"dc-bad"}"#.to_vec()),
        ("invalid_schema", topic, b"[1,2,3]".to_vec()),
        // A spoofed origin: the payload claims another agent than its topic.
        (
            "agent_mismatch",
            topic,
            metrics_payload("dc-good", "dc", 1, LOAD).into_bytes(),
        ),
        (
            "non_finite_value",
            topic,
            metrics_payload("dc-bad", "dc", 1, LOAD)
                .replace("0.5", "null")
                .into_bytes(),
        ),
        (
            "invalid_metric_name",
            topic,
            metrics_payload("dc-bad", "dc", 1, LOAD)
                .replace("node_load1", "node-load1")
                .into_bytes(),
        ),
        // Forging the collector's own series.
        (
            "invalid_metric_name",
            topic,
            metrics_payload("dc-bad", "dc", 1, LOAD)
                .replace("node_load1", "pantau_agent_up")
                .into_bytes(),
        ),
        (
            "invalid_label_name",
            topic,
            metrics_payload(
                "dc-bad",
                "dc",
                1,
                r#"[{"name":"node_load1","type":"gauge","samples":[{"labels":{"instance":"dc-good"},"value":1}]}]"#,
            )
            .into_bytes(),
        ),
        (
            "duplicate_series",
            topic,
            metrics_payload(
                "dc-bad",
                "dc",
                1,
                r#"[{"name":"node_load1","type":"gauge","samples":[{"value":1},{"value":2}]}]"#,
            )
            .into_bytes(),
        ),
    ];

    for (reason, topic, payload) in &cases {
        let series = format!(r#"pantau_collector_rejected_messages_total{{reason="{reason}"}}"#);
        let before = collector
            .sample(&series)
            .unwrap_or_else(|| panic!("{series} not exposed"));
        broker.mosquitto_pub(topic, payload, false);
        collector.wait_for_sample(&series, WAIT, |v| v == before + 1.0);
    }

    // node_load1 is a gauge (node_exporter says so); a counter of that name cannot be exposed.
    // Only that family is dropped, and counted apart from whole messages.
    let dropped = r#"pantau_collector_dropped_families_total{reason="type_conflict"}"#;
    let before = collector.sample(dropped).expect("dropped families counter");
    broker.mosquitto_pub(
        "pantau/v1/dc/dc-other/metrics",
        metrics_payload("dc-other", "dc", 1, &LOAD.replace("gauge", "counter")).as_bytes(),
        false,
    );
    collector.wait_for_sample(dropped, WAIT, |v| v == before + 1.0);

    // A replayed message of the good agent (a sequence number it already used) is dropped:
    // its value never shows, and it is counted per agent.
    let replay = metrics_payload(
        "dc-good",
        "dc",
        0,
        r#"[{"name":"node_load1","type":"gauge","samples":[{"value":12345}]}]"#,
    );
    broker.mosquitto_pub("pantau/v1/dc/dc-good/metrics", replay.as_bytes(), false);
    let duplicates = r#"pantau_agent_duplicate_messages_total{instance="dc-good",site="dc"}"#;
    collector.wait_for_sample(duplicates, WAIT, |v| v >= 1.0);
    assert_ne!(
        collector.sample(r#"node_load1{instance="dc-good",site="dc"}"#),
        Some(12345.0)
    );

    // Nothing was created for the bad agent, the good one kept reporting, nobody exited.
    let text = collector.metrics();
    assert!(!text.contains(r#"instance="dc-bad""#), "{text}");
    let after = sample(&text, messages).unwrap();
    collector.wait_for_sample(messages, WAIT, |v| v >= after + 2.0);
    collector.wait_for_sample(
        r#"pantau_agent_up{instance="dc-good",site="dc"}"#,
        WAIT,
        |v| v == 1.0,
    );
    assert!(collector.guard().try_wait().is_none(), "collector exited");
    assert!(matches!(
        http_get(&format!("{}/healthz", collector.url())),
        Ok((200, _))
    ));
    assert!(
        collector.logs().contains("rejected message"),
        "no log line for rejections\n{}",
        collector.logs()
    );
    drop(agent);
}

#[test]
fn bad_api_calls_get_json_errors_and_are_counted() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let (status, json) = collector.api("/api/v1/agents/nobody");
    assert_eq!(
        (status, json["error"].as_str()),
        (404, Some("no agent 'nobody'"))
    );
    let (status, json) = collector.api("/api/v1/agents/not%2Fan%20id");
    assert_eq!(status, 400);
    assert!(
        json["error"].as_str().unwrap().contains("not allowed"),
        "{json}"
    );
    let (status, _) = collector.api("/api/v1/nothing-here");
    assert_eq!(status, 404);
    let text = collector.metrics();
    assert_eq!(
        sample(
            &text,
            r#"pantau_collector_http_requests_total{code="400",handler="/api/v1/agents/{id}"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"pantau_collector_http_requests_total{code="404",handler="unmatched"}"#
        ),
        Some(1.0)
    );
}
