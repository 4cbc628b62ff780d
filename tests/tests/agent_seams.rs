//! The agent's seams, end to end against real Mosquitto and the real collector: commands reach
//! the role that claimed them and every command is answered by an event within a second; a
//! refused login is loud; an unwritable state directory and an oversized message never stop
//! the reports.

use std::fs;
use std::time::{Duration, Instant};

use pantau_tests::{Agent, Collector, Mosquitto, TestDir, poll_until, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A series as the collector writes it: labels sorted by name.
fn series(name: &str, id: &str, extra: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = vec![("instance", id), ("site", "dc")];
    labels.extend_from_slice(extra);
    labels.sort_unstable();
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!(r#"{k}="{v}""#))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn command(id: &str, command_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema": 1, "agent": id, "site": "dc", "id": command_id,
        "timestamp_ms": 1_800_000_000_000_i64
    }))
    .expect("a JSON value serializes")
}

/// The agent's recent events as the collector serves them.
fn events(collector: &Collector, id: &str) -> Vec<Value> {
    let (status, body) = collector.api(&format!("/api/v1/agents/{id}/events"));
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

/// The first event of `kind` whose label `key` is `value`.
fn find_event(events: &[Value], kind: &str, key: &str, value: &str) -> Option<Value> {
    events
        .iter()
        .find(|e| e["kind"] == kind && e["labels"][key] == value)
        .cloned()
}

/// An agent reporting every 60 s, up, and subscribed to its commands.
fn slow_agent(dir: &TestDir, broker: &Mosquitto, collector: &Collector, id: &str) -> Agent {
    let mut agent = Agent::start(dir, id, "dc", &broker.url(), 60);
    agent.guard().wait_for_log("subscribed to commands", WAIT);
    collector.wait_for_sample(&series("pantau_agent_up", id, &[]), WAIT, |v| v == 1.0);
    agent
}

#[test]
fn an_unknown_command_is_answered_within_a_second() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-cmd1";
    let _agent = slow_agent(&dir, &broker, &collector, id);

    let started = Instant::now();
    broker.mosquitto_pub(
        &format!("pantau/v1/dc/{id}/cmd/sound/play"),
        &command(id, "q-1"),
        false,
    );
    let answer = poll_until(Duration::from_secs(1), || {
        find_event(
            &events(&collector, id),
            "command_rejected",
            "command_id",
            "q-1",
        )
    });
    let elapsed = started.elapsed();
    let answer = answer.unwrap_or_else(|| {
        panic!(
            "no answer within 1 s (interval 60 s); events: {:?}\n{}",
            events(&collector, id),
            collector.logs()
        )
    });
    assert_eq!(answer["labels"]["reason"], "unknown_command", "{answer}");
    assert_eq!(answer["labels"]["command"], "sound/play");
    assert_eq!(answer["severity"], "warning");
    eprintln!("answered in {elapsed:?}");
}

#[test]
fn commands_reach_their_role_and_bad_ones_are_explained() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-cmd2";
    let agent = slow_agent(&dir, &broker, &collector, id);
    let messages = series("pantau_agent_messages_total", id, &[]);
    let before = collector.wait_for_sample(&messages, WAIT, |_| true);

    // host/collect, claimed by the host role: a metrics message out of cadence, and an answer.
    let topic = format!("pantau/v1/dc/{id}/cmd/host/collect");
    broker.mosquitto_pub(&topic, &command(id, "collect-1"), false);
    let done = wait_until("host/collect to be answered", WAIT, || {
        find_event(
            &events(&collector, id),
            "command_completed",
            "command_id",
            "collect-1",
        )
    });
    assert_eq!(done["labels"]["command"], "host/collect", "{done}");
    // The answer (events) and the report (metrics) are two more messages.
    collector.wait_for_sample(&messages, WAIT, |v| v >= before + 2.0);

    // A malformed payload on a claimed name, and an unknown name.
    broker.mosquitto_pub(&topic, b"{\"schema\":1, oops", false);
    wait_until("the malformed command to be answered", WAIT, || {
        find_event(
            &events(&collector, id),
            "command_rejected",
            "reason",
            "invalid_json",
        )
    });
    broker.mosquitto_pub(
        &format!("pantau/v1/dc/{id}/cmd/no/such"),
        &command(id, "unknown-1"),
        false,
    );
    wait_until("the unknown command to be answered", WAIT, || {
        find_event(
            &events(&collector, id),
            "command_rejected",
            "reason",
            "unknown_command",
        )
    });

    // The agent keeps reporting, and its counters say what it refused.
    broker.mosquitto_pub(&topic, &command(id, "collect-2"), false);
    for (reason, expected) in [
        ("invalid_json", 1.0),
        ("unknown_command", 1.0),
        ("expired", 0.0),
    ] {
        let counter = series(
            "pantau_agent_rejected_commands_total",
            id,
            &[("reason", reason)],
        );
        collector.wait_for_sample(&counter, WAIT, |v| v == expected);
    }
    let received = series("pantau_agent_received_commands_total", id, &[]);
    collector.wait_for_sample(&received, WAIT, |v| v >= 3.0);
    collector.wait_for_sample(&series("node_load1", id, &[]), WAIT, |v| v >= 0.0);
    drop(agent);
}

#[test]
fn a_refused_login_is_a_warning_within_two_seconds() {
    let dir = TestDir::new();
    let broker = Mosquitto::builder()
        .users(&[("dc-srv-good", "right"), ("dc-srv-bad", "right")])
        .start();
    let started = Instant::now();
    let mut bad = Agent::start_with(
        &dir,
        "dc-srv-bad",
        "dc",
        &broker.url(),
        1,
        &[
            ("PANTAU_MQTT__USERNAME", "dc-srv-bad"),
            ("PANTAU_MQTT__PASSWORD", "wrong"),
        ],
    );
    bad.guard()
        .wait_for_log("broker refused the login", Duration::from_secs(2));
    let elapsed = started.elapsed();
    let line = bad
        .logs()
        .lines()
        .find(|line| line.contains("broker refused the login"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("mqtt.password"),
        "the line names the setting: {line}"
    );
    eprintln!("refusal logged {elapsed:?} after start: {line}");

    // The right password gets in: the refusal was about the credentials.
    let mut good = Agent::start_with(
        &dir,
        "dc-srv-good",
        "dc",
        &broker.url(),
        1,
        &[
            ("PANTAU_MQTT__USERNAME", "dc-srv-good"),
            ("PANTAU_MQTT__PASSWORD", "right"),
        ],
    );
    good.guard().wait_for_log("connected to broker", WAIT);
    assert!(!good.logs().contains("broker refused the login"));
}

#[test]
fn an_unwritable_state_dir_does_not_stop_reporting() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-state";
    let agent = Agent::start(&dir, id, "dc", &broker.url(), 1);
    let failed = series("pantau_agent_state_persistence_failed", id, &[]);
    collector.wait_for_sample(&failed, WAIT, |v| v == 0.0);

    // Replace the state directory by a file: not writable, even for root.
    let moved = dir.join("state-moved-away");
    fs::rename(&agent.state_dir, &moved).unwrap();
    fs::write(&agent.state_dir, "not a directory").unwrap();
    collector.wait_for_sample(&failed, WAIT, |v| v == 1.0);
    let messages = series("pantau_agent_messages_total", id, &[]);
    let during = collector.wait_for_sample(&messages, WAIT, |_| true);
    collector.wait_for_sample(&messages, WAIT, |v| v >= during + 2.0);
    assert!(
        agent.logs().contains("cannot persist the sequence number"),
        "a loud error\n{}",
        agent.logs()
    );

    // Restored: persisted again, and the number on disk keeps up with the messages.
    fs::remove_file(&agent.state_dir).unwrap();
    fs::rename(&moved, &agent.state_dir).unwrap();
    collector.wait_for_sample(&failed, WAIT, |v| v == 0.0);
    let on_disk = || -> u64 {
        fs::read_to_string(agent.state_dir.join("sequence"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let first = on_disk();
    wait_until("the sequence file to advance", WAIT, || {
        (on_disk() > first).then_some(())
    });
    let (_, agent_json) = collector.api(&format!("/api/v1/agents/{id}"));
    let last_sequence = agent_json["last_sequence"].as_u64().unwrap();
    assert!(on_disk() > last_sequence, "{} vs {agent_json}", on_disk());
    assert_eq!(
        agent_json["missed_messages_total"], 0,
        "no message lost while the directory was gone: {agent_json}"
    );
}

#[test]
fn a_message_above_the_limit_is_trimmed_and_the_agent_stays_up() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-small";
    // A full host message is about 18 KB; 8 KiB holds the agent's own series and a few more.
    let _agent = Agent::start_with(
        &dir,
        id,
        "dc",
        &broker.url(),
        1,
        &[("PANTAU_AGENT__MAX_MESSAGE_BYTES", "8192")],
    );
    collector.wait_for_sample(&series("pantau_agent_up", id, &[]), WAIT, |v| v == 1.0);
    collector.wait_for_sample(
        &series("pantau_agent_dropped_families_total", id, &[]),
        WAIT,
        |v| v > 0.0,
    );
    collector.wait_for_sample(
        &series("pantau_agent_oversized_messages_total", id, &[]),
        WAIT,
        |v| v > 0.0,
    );
    collector.wait_for_sample(
        &series("pantau_agent_outbox_messages", id, &[]),
        WAIT,
        |_| true,
    );
    let (_, agent_json) = collector.api(&format!("/api/v1/agents/{id}"));
    assert_eq!(agent_json["online"], true, "{agent_json}");
}
