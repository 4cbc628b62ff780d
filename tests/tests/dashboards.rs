//! The Grafana dashboards in dashboards/grafana: checked for structure (Grafana is not
//! installable here), and every query of every panel run against a real Prometheus scraping a
//! live collector fed by real host, probe and sound agents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pantau_tests::{
    Agent, AudioCapture, Collector, Mosquitto, Nut, Prometheus, SNMP_COMMUNITY, Snmpd, TestDir,
    example_config, http_post, poll_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
const TOKEN: &str = "operator-token-0123456789";

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana")
}

fn boards() -> Vec<(String, Value)> {
    let mut boards: Vec<(String, Value)> = std::fs::read_dir(grafana_dir())
        .expect("dashboards/grafana")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a dashboard");
            let board = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path.display().to_string(), board)
        })
        .collect();
    boards.sort_by(|a, b| a.0.cmp(&b.0));
    boards
}

fn panels(board: &Value) -> impl Iterator<Item = &Value> {
    board["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|panel| panel["type"] != "row")
}

#[test]
fn every_dashboard_is_well_formed() {
    let boards = boards();
    let uids: BTreeSet<&str> = boards
        .iter()
        .map(|(_, b)| b["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids.len(), boards.len(), "dashboard uids repeat");
    for required in [
        "pantau-overview",
        "pantau-servers",
        "pantau-links",
        "pantau-sound",
        "pantau-self",
    ] {
        assert!(uids.contains(required), "{required} missing");
    }
    for (path, board) in &boards {
        let schema = board["schemaVersion"].as_u64().expect("schemaVersion");
        assert!(schema >= 36, "{path}: schemaVersion {schema} is too old");
        let variables = board["templating"]["list"].as_array().expect("templating");
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{path}: no datasource variable"
        );
        assert!(
            board["links"]
                .as_array()
                .is_some_and(|links| !links.is_empty()),
            "{path}: no links to the other boards"
        );
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{path}: panel id {id} repeats");
        }
        for panel in panels(board) {
            let title = panel["title"].as_str().expect("title");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{path}: {title}: fixed datasource"
            );
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 10),
                "{path}: {title}: no description"
            );
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{path}: {title}: no unit"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{path}: {title}: no query");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{path}: {title}: empty query"
                );
                assert_eq!(target["datasource"]["uid"], "${datasource}");
            }
        }
    }
    // Grafana provisioning: a data source and a provider pointing at this folder.
    let provisioning = grafana_dir().join("provisioning");
    let datasource = std::fs::read_to_string(provisioning.join("datasources/pantau.yml"))
        .expect("datasource provisioning");
    assert!(datasource.contains("type: prometheus"), "{datasource}");
    let provider = std::fs::read_to_string(provisioning.join("dashboards/pantau.yml"))
        .expect("dashboard provisioning");
    assert!(provider.contains("path:"), "{provider}");
}

/// The query as Grafana would send it, with every template variable at "All".
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$__interval", "15s")
        .replace("$instance", ".*")
        .replace("$site", ".*")
        .replace("$link", ".*")
}

/// Panels that may stay empty on the test machine, with the reason.
fn may_be_empty() -> BTreeMap<&'static str, String> {
    let mut allowed = BTreeMap::new();
    allowed.insert(
        "Firing alerts",
        "nothing is wrong on the test machine".to_owned(),
    );
    allowed.insert(
        "Predicted time to full",
        "lists only file systems that are filling".to_owned(),
    );
    let has_sensors = ["/sys/class/hwmon", "/sys/class/thermal"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        name.starts_with("hwmon") || name.starts_with("thermal_zone")
                    })
                })
            })
        });
    if !has_sensors {
        allowed.insert(
            "Temperatures",
            "this machine has no hwmon sensors or thermal zones".to_owned(),
        );
    }
    if !Path::new("/proc/pressure/memory").exists() {
        allowed.insert("Memory pressure (PSI)", "this kernel has no PSI".to_owned());
    }
    allowed
}

#[test]
fn every_panel_query_returns_data_from_a_live_system() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    dir.write("sound.key", KEY);
    dir.write("api-tokens", format!("{TOKEN}\n"));
    let collector_config = std::fs::read_to_string(example_config("collector.toml"))
        .expect("collector example")
        + r#"
[[announcements.schedules]]
name = "masker"
targets = ["dash-sound"]
times = ["08:00"]
announce = { text = "Mohon tetap memakai masker" }

[[sensors]]
topic = "zigbee2mqtt/+"
format = "zigbee2mqtt"
room = "server-room"
fields = [
  { path = "temperature", metric = "temperature_celsius" },
  { path = "humidity", metric = "humidity_ratio", scale = 0.01 },
]
"#;
    let collector_config = dir.write("collector.toml", collector_config);
    let key = dir.join("sound.key").display().to_string();
    let tokens = dir.join("api-tokens").display().to_string();
    let storage = dir.join("storage").display().to_string();
    let collector = Collector::with_config(
        &dir,
        &broker,
        &collector_config,
        &[
            ("PANTAU_ANNOUNCEMENTS__KEY_FILE", key.as_str()),
            ("PANTAU_API__TOKEN_FILE", tokens.as_str()),
            ("PANTAU_STORAGE__DIR", storage.as_str()),
        ],
    );

    // A server watching the collector's process, so the process panel has a group, a UPS
    // simulated by NUT and a "switch" that is the test machine's own snmpd.
    let nut = Nut::start(
        "dc-ups",
        "battery.charge: 100\nbattery.runtime: 3600\nups.load: 20\ninput.voltage: 230\nups.status: OL\n",
        &[],
    );
    let snmpd = Snmpd::start();
    let server_config = std::fs::read_to_string(example_config("agent-server.toml"))
        .expect("server example")
        + "\n[[host.processes]]\nname = \"collector\"\ncomm = [\"pantau-collecto\"]\n"
        + &format!(
            "\n[[ups]]\naddress = \"{}\"\nname = \"dc-ups\"\n",
            nut.address()
        )
        + &format!(
            "\n[[snmp]]\nname = \"dc-switch\"\ntarget = \"{}\"\ncommunity = \"{SNMP_COMMUNITY}\"\n\
             interfaces = [\"lo\"]\n",
            snmpd.address()
        );
    let server_config = dir.write("agent-server.toml", server_config);
    let _server = Agent::start_config(
        &dir,
        &server_config.display().to_string(),
        "dash-srv",
        "dc",
        &broker.url(),
        1,
        &[],
    );

    let health = format!("{}/healthz", collector.url());
    let probe_config = dir.write(
        "agent-probe.toml",
        format!(
            r#"[agent]
id = "dash-link"
site = "dc"
interval_seconds = 1

[[links]]
name = "loopback"
interface = "lo"
capacity_mbps = 100

[[probes]]
kind = "icmp"
name = "loopback-ping"
target = "127.0.0.1"
link = "loopback"
count = 3

[[probes]]
kind = "http"
name = "collector-health"
target = "{health}"
link = "loopback"
"#
        ),
    );
    let _probe = Agent::start_config(
        &dir,
        &probe_config.display().to_string(),
        "dash-link",
        "dc",
        &broker.url(),
        1,
        &[],
    );

    let capture = AudioCapture::new(&dir);
    let _sound = Agent::start_sound(
        &dir,
        "dash-sound",
        "office",
        &broker.url(),
        &capture,
        &dir.join("sound.key"),
    );

    // One short announcement, so "last success" has a value.
    let url = format!("{}/api/v1/announcements", collector.url());
    let body = serde_json::to_vec(&json!({
        "text": "Tes",
        "targets": ["dash-sound"],
        "priority": "operator",
    }))
    .expect("JSON");
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = http_post(
        &url,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .expect("POST announcement");
    assert_eq!(status, 201, "{text}");
    collector.wait_for_sample(
        r#"pantau_sound_last_success_timestamp_seconds{instance="dash-sound",site="office"}"#,
        WAIT,
        |v| v > 1.0e9,
    );

    // A room sensor on MQTT, read by the collector itself.
    broker.mosquitto_pub(
        "zigbee2mqtt/th-rack1",
        br#"{"temperature":24.5,"humidity":61}"#,
        false,
    );
    collector.wait_for_sample(
        r#"pantau_sensor_up{device="th-rack1",room="server-room"}"#,
        WAIT,
        |v| v == 1.0,
    );

    let prometheus = Prometheus::builder()
        .scrape("pantau", &collector.url().replace("http://", ""))
        .rule_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dashboards/prometheus/rules/pantau.rules.yml"),
        )
        .start();
    // Rates need two scrapes of every agent's series.
    prometheus.wait_for_query(
        r#"count(rate(pantau_agent_messages_total[1m]) > 0) >= 3"#,
        WAIT,
    );

    let allowed = may_be_empty();
    let mut empty = Vec::new();
    let mut allowed_empty = Vec::new();
    let mut queries = 0;
    for (path, board) in boards() {
        for panel in panels(&board) {
            let title = panel["title"].as_str().expect("title");
            for target in panel["targets"].as_array().expect("targets") {
                let expr = substitute(target["expr"].as_str().expect("expr"));
                queries += 1;
                // A panel over counters needs a few scrapes; give each query a short while.
                let found = poll_until(Duration::from_secs(10), || match prometheus.query(&expr) {
                    Value::Array(series) if !series.is_empty() => Some(()),
                    _ => None,
                });
                if found.is_none() {
                    match allowed.get(title) {
                        Some(reason) => allowed_empty.push(format!("{title}: {reason}")),
                        None => empty.push(format!("{path}: {title}: {expr}")),
                    }
                }
            }
        }
    }
    eprintln!(
        "{queries} queries; empty as expected on this machine:\n  {}",
        allowed_empty.join("\n  ")
    );
    assert!(queries > 40, "only {queries} queries");
    assert!(
        empty.is_empty(),
        "queries without data:\n{}\n{}",
        empty.join("\n"),
        collector.metrics()
    );
}
