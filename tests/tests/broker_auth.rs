//! The embedded broker asks who you are: users from a `mosquitto_passwd` file, each bound to
//! its own client id, the collector refusing to listen beyond loopback at all (the LAN broker
//! is Mosquitto), and a refused agent saying why in its log.

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

/// This machine's addresses other than loopback, from `ip -o addr` (may be none).
fn lan_addresses() -> Vec<String> {
    let output = run_with_timeout(
        Command::new("ip").args(["-o", "addr", "show"]),
        b"",
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet" || *word == "inet6")?;
            let address = words.next()?.split('/').next()?.to_owned();
            let ip: std::net::IpAddr = address.parse().ok()?;
            let link_local = matches!(ip, std::net::IpAddr::V6(v6) if v6.segments()[0] == 0xfe80);
            (!ip.is_loopback() && !link_local).then_some(address)
        })
        .collect()
}

/// The embedded broker listens on loopback only: every address, or one of this machine's LAN
/// addresses, is refused by `--check-config` (nothing is bound, no traffic sent), a password
/// file or not, with an error that names the field and value and points to Mosquitto.
#[test]
fn the_embedded_broker_refuses_a_lan_address() {
    let dir = TestDir::new();
    let users = dir.join("users");
    write_password_file(&users, &[("dc-srv-01", "right")], &[]);
    let users = users.display().to_string();
    let port = free_port();
    let mut listens = vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")];
    let lan = lan_addresses();
    eprintln!("this machine's LAN addresses: {lan:?}");
    listens.extend(lan.iter().map(|ip| match ip.contains(':') {
        true => format!("[{ip}]:{port}"),
        false => format!("{ip}:{port}"),
    }));
    for listen in &listens {
        for password_file in ["", users.as_str()] {
            let output = run_with_timeout(
                Command::new(pantau_binary("pantau-collector"))
                    .arg("--config")
                    .arg(example_config("collector.toml"))
                    .arg("--check-config")
                    .env("PANTAU_BROKER__LISTEN", listen)
                    .env("PANTAU_BROKER__PASSWORD_FILE", password_file),
                b"",
                Duration::from_secs(10),
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{listen}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "broker.listen: '{listen}' is not a loopback address"
                )),
                "{stderr}"
            );
            assert!(stderr.contains("Mosquitto"), "{stderr}");
            assert!(stderr.contains("broker.embedded = false"), "{stderr}");
            assert!(stderr.contains("README"), "{stderr}");
        }
    }
    // Control: the same check accepts loopback, v4 and v6.
    for listen in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let output = run_with_timeout(
            Command::new(pantau_binary("pantau-collector"))
                .arg("--config")
                .arg(example_config("collector.toml"))
                .arg("--check-config")
                .env("PANTAU_BROKER__LISTEN", &listen)
                .env("PANTAU_BROKER__PASSWORD_FILE", users.as_str()),
            b"",
            Duration::from_secs(10),
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{listen}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The embedded broker's TLS listener is gone; a config that still sets it is told where to go.
#[test]
fn a_config_with_the_removed_broker_tls_keys_is_refused_with_a_pointer() {
    for (key, value) in [
        ("PANTAU_BROKER__TLS_LISTEN", "127.0.0.1:8883"),
        (
            "PANTAU_BROKER__TLS_CLIENT_CA_FILE",
            "/etc/pantau/tls/ca.pem",
        ),
    ] {
        let output = run_with_timeout(
            Command::new(pantau_binary("pantau-collector"))
                .arg("--config")
                .arg(example_config("collector.toml"))
                .arg("--check-config")
                .env("PANTAU_BROKER__PASSWORD_FILE", "")
                .env(key, value),
            b"",
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let field = key.trim_start_matches("PANTAU_BROKER__").to_lowercase();
        assert!(
            stderr.contains(&format!("broker.{field}: '{value}' is no longer supported")),
            "{stderr}"
        );
        assert!(stderr.contains("Mosquitto"), "{stderr}");
        assert!(!stderr.contains("unknown field"), "{stderr}");
    }
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
