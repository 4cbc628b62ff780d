//! The embedded broker asks who you are: users from a `mosquitto_passwd` file, each bound to
//! its own client id, the collector refusing to listen beyond loopback without logins, and a
//! refused agent saying why in its log.

use std::process::Command;
use std::time::{Duration, Instant};

use pantau_tests::{
    Agent, Collector, TestDir, example_config, free_port, pantau_binary, run_with_timeout,
    write_password_file,
};

const WAIT: Duration = Duration::from_secs(20);

/// `mosquitto_pub` with a login and a client id; true when the broker took the message.
fn publish_as(port: u16, user: Option<(&str, &str)>, client_id: &str, topic: &str) -> bool {
    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    command.args(["-i", client_id, "-t", topic, "-m", "{}"]);
    if let Some((name, password)) = user {
        command.args(["-u", name, "-P", password]);
    }
    run_with_timeout(&mut command, b"", Duration::from_secs(10))
        .status
        .success()
}

fn up(id: &str) -> String {
    format!(r#"pantau_agent_up{{instance="{id}",site="dc"}}"#)
}

#[test]
fn only_users_log_in_and_only_with_their_own_client_id() {
    let dir = TestDir::new();
    let users = dir.join("users");
    write_password_file(
        &users,
        &[("dc-srv-01", "right"), ("dc-srv-02", "also-right")],
        &[],
    );
    // A sensor that cannot choose its client id gets a pattern (Pantau's third field).
    write_password_file(&dir.join("sensor"), &[("room-sensor", "s3cret")], &[]);
    let sensor_line = std::fs::read_to_string(dir.join("sensor")).unwrap();
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!("{}:tasmota_*\n", sensor_line.trim()));
    std::fs::write(&users, text).unwrap();
    let users = users.display().to_string();
    let collector =
        Collector::embedded_with_env(&dir, &[("PANTAU_BROKER__PASSWORD_FILE", users.as_str())]);
    let port = collector.broker_port();

    let _agent = Agent::start_with(
        &dir,
        "dc-srv-01",
        "dc",
        &collector.broker_url(),
        1,
        &[
            ("PANTAU_MQTT__USERNAME", "dc-srv-01"),
            ("PANTAU_MQTT__PASSWORD", "right"),
        ],
    );
    collector.wait_for_sample(&up("dc-srv-01"), WAIT, |v| v == 1.0);
    let messages = r#"pantau_agent_messages_total{instance="dc-srv-01",site="dc"}"#;
    let before = collector.wait_for_sample(messages, WAIT, |_| true);

    let topic = "pantau/v1/dc/dc-srv-01/metrics";
    assert!(
        !publish_as(port, None, "anon", topic),
        "anonymous must be refused"
    );
    assert!(
        !publish_as(
            port,
            Some(("dc-srv-02", "wrong")),
            "pantau-agent-dc-srv-02",
            topic
        ),
        "a wrong password must be refused"
    );
    // dc-srv-02's own password does not let it take over dc-srv-01's client id, which would
    // kick the real agent off and fire its last will.
    assert!(
        !publish_as(
            port,
            Some(("dc-srv-02", "also-right")),
            "pantau-agent-dc-srv-01",
            topic
        ),
        "a client id of another user must be refused"
    );
    assert!(publish_as(
        port,
        Some(("dc-srv-02", "also-right")),
        "pantau-agent-dc-srv-02",
        "pantau/v1/dc/dc-srv-02/other"
    ));
    assert!(publish_as(
        port,
        Some(("room-sensor", "s3cret")),
        "tasmota_A1B2C3",
        "tele/room/SENSOR"
    ));
    assert!(!publish_as(
        port,
        Some(("room-sensor", "s3cret")),
        "pantau-agent-dc-srv-01",
        topic
    ));

    for (reason, at_least) in [
        ("bad_password", 1.0),
        ("client_id_not_allowed", 2.0),
        ("unknown_user", 0.0),
    ] {
        let series =
            format!(r#"pantau_collector_broker_refused_logins_total{{reason="{reason}"}}"#);
        collector.wait_for_sample(&series, WAIT, |v| v >= at_least);
    }
    // The real agent was never kicked off: still up, still counting.
    collector.wait_for_sample(messages, WAIT, |v| v >= before + 2.0);
    assert_eq!(collector.sample(&up("dc-srv-01")), Some(1.0));
    assert!(
        collector.logs().contains("embedded broker refused a login"),
        "{}",
        collector.logs()
    );
}

#[test]
fn an_agent_refused_by_the_embedded_broker_names_its_credentials() {
    let dir = TestDir::new();
    let collector = Collector::embedded_with_users(&dir, &[("dc-srv-01", "right")], &[]);
    let started = Instant::now();
    let mut agent = Agent::start_with(
        &dir,
        "dc-srv-01",
        "dc",
        &collector.broker_url(),
        1,
        &[
            ("PANTAU_MQTT__USERNAME", "dc-srv-01"),
            ("PANTAU_MQTT__PASSWORD", "wrong"),
        ],
    );
    agent
        .guard()
        .wait_for_log("closed the connection during login", Duration::from_secs(2));
    let elapsed = started.elapsed();
    let line = agent
        .logs()
        .lines()
        .find(|line| line.contains("closed the connection during login"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("credentials"), "{line}");
    eprintln!("refusal logged {elapsed:?} after start: {line}");
    assert_ne!(collector.sample(&up("dc-srv-01")), Some(1.0));
}

#[test]
fn listening_beyond_loopback_without_logins_is_refused_at_start() {
    let port = free_port();
    let output = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .arg("--config")
            .arg(example_config("collector.toml"))
            .arg("--check-config")
            .env("PANTAU_BROKER__LISTEN", format!("0.0.0.0:{port}"))
            .env("PANTAU_BROKER__PASSWORD_FILE", ""),
        b"",
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broker.password_file"), "{stderr}");
    assert!(stderr.contains("broker.allow_anonymous"), "{stderr}");
    assert!(stderr.contains(&format!("'0.0.0.0:{port}'")), "{stderr}");
}

/// A retained message larger than the collector's limits, left on an external broker, is read,
/// refused as oversized, counted and cleared once: no reconnect loop, and a real agent's data
/// still flows.
#[test]
fn an_oversized_retained_message_is_cleared_not_a_reconnect_loop() {
    let dir = TestDir::new();
    let broker = pantau_tests::Mosquitto::start();
    let poison = vec![b'x'; 3 * 1024 * 1024];
    broker.mosquitto_pub("pantau/v1/dc/x/status", &poison, true);
    let collector = Collector::with_broker(&dir, &broker);
    collector.wait_for_sample(
        r#"pantau_collector_rejected_messages_total{reason="oversized"}"#,
        WAIT,
        |v| v >= 1.0,
    );
    collector.wait_for_sample(
        "pantau_collector_cleared_retained_messages_total",
        WAIT,
        |v| v >= 1.0,
    );
    let _agent = Agent::start(&dir, "dc-srv-09", "dc", &broker.url(), 1);
    collector.wait_for_sample(&up("dc-srv-09"), WAIT, |v| v == 1.0);
    assert_eq!(
        collector.sample("pantau_collector_mqtt_connections_total"),
        Some(1.0),
        "the collector stayed connected"
    );
}
