//! Agent → MQTT → collector → `/metrics` and the API, through real Mosquitto and through the
//! collector's embedded broker, and the exposition checked by `promtool check metrics`.

use std::time::Duration;

use std::collections::BTreeSet;
use std::process::Command;

use pantau_tests::{
    Agent, ChildGuard, Collector, Mosquitto, Prometheus, TestDir, free_port, http_get,
    promtool_metric_lints, sample, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// What a user of either setup sees once one agent reports.
fn assert_agent_visible(collector: &Collector, agent: &Agent) {
    let id = &agent.id;
    let up = format!(r#"pantau_agent_up{{instance="{id}",site="dc"}}"#);
    collector.wait_for_sample(&up, WAIT, |v| v == 1.0);
    let load = format!(r#"node_load1{{instance="{id}",site="dc"}}"#);
    collector.wait_for_sample(&load, WAIT, |v| v >= 0.0);

    let text = collector.metrics();
    let cpu_idle =
        format!(r#"node_cpu_seconds_total{{cpu="0",instance="{id}",mode="idle",site="dc"}}"#);
    assert!(
        sample(&text, &cpu_idle).is_some_and(|v| v > 0.0),
        "{cpu_idle} missing\n{text}"
    );
    let boot = format!(r#"node_boot_time_seconds{{instance="{id}",site="dc"}}"#);
    assert!(
        sample(&text, &boot).is_some_and(|v| v > 1.0e9),
        "{boot} missing"
    );
    for collector_name in ["cpu", "stat", "meminfo", "filesystem", "netdev", "loadavg"] {
        let series = format!(
            r#"node_scrape_collector_success{{collector="{collector_name}",instance="{id}",site="dc"}}"#
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("node_filesystem_avail_bytes{")
                && l.contains(&format!(r#"instance="{id}""#))
                && l.contains(r#"mountpoint="/""#)),
        "no root filesystem series"
    );
    assert!(
        text.contains(&format!(
            r#"pantau_agent_events_total{{instance="{id}",site="dc",severity="info"}} 1"#
        )),
        "the agent_started event was not counted"
    );

    let (status, json) = collector.api("/api/v1/agents");
    assert_eq!(status, 200);
    let agents = json["agents"].as_array().expect("agents array");
    let me = agents
        .iter()
        .find(|a| a["id"] == id.as_str())
        .expect("agent listed");
    assert_eq!(me["site"], "dc");
    assert_eq!(me["online"], true);
    assert_eq!(me["status"], "online");
    assert!(me["last_sequence"].as_u64().is_some(), "{me}");
    assert!(
        me["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{me}"
    );
    assert_eq!(me["interval_seconds"], 1);
}

#[test]
fn agent_reaches_metrics_through_mosquitto() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let agent = Agent::start(&dir, "dc-srv-01", "dc", &broker.url(), 1);
    assert_agent_visible(&collector, &agent);

    // Messages keep flowing, in sequence, with nothing missed or repeated.
    let messages = r#"pantau_agent_messages_total{instance="dc-srv-01",site="dc"}"#;
    let before = collector.wait_for_sample(messages, WAIT, |v| v >= 2.0);
    collector.wait_for_sample(messages, WAIT, |v| v >= before + 2.0);
    let text = collector.metrics();
    assert_eq!(
        sample(
            &text,
            r#"pantau_agent_missed_messages_total{instance="dc-srv-01",site="dc"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"pantau_agent_duplicate_messages_total{instance="dc-srv-01",site="dc"}"#
        ),
        Some(0.0)
    );
    // A real agent's messages after its first are read on the fastest path: its own
    // serialization matched against the stored shapes, never the slower serde reader.
    collector.wait_for_sample(
        r#"pantau_collector_decoded_messages_total{path="bytes"}"#,
        WAIT,
        |v| v >= 2.0,
    );
    let text = collector.metrics();
    assert_eq!(
        sample(
            &text,
            r#"pantau_collector_decoded_messages_total{path="shape"}"#
        ),
        Some(0.0),
        "{}",
        agent.logs()
    );
}

#[test]
fn agent_reaches_metrics_through_the_embedded_broker() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let agent = Agent::start(&dir, "gor-link-01", "dc", &collector.broker_url(), 1);
    assert_agent_visible(&collector, &agent);
}

#[test]
fn exposition_passes_promtool_and_prometheus_keeps_the_agent_labels() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let _agent = Agent::start(&dir, "dc-srv-02", "dc", &collector.broker_url(), 1);
    collector.wait_for_sample(
        r#"node_load1{instance="dc-srv-02",site="dc"}"#,
        WAIT,
        |_| true,
    );

    let text = collector.metrics();
    let lints = promtool_metric_lints(&text)
        .unwrap_or_else(|error| panic!("{error}\n--- exposition ---\n{text}"));
    // node_exporter's names are kept exactly, so that dashboards and rules written for it
    // work, and promtool says the same about node_exporter's own output (camelCase meminfo
    // and netstat names, entropy in bits). Those findings must be exactly node_exporter's on
    // this machine; every other finding is a defect.
    let ours: Vec<&String> = lints.iter().filter(|lint| !is_node(lint)).collect();
    assert!(
        ours.is_empty(),
        "promtool findings: {ours:#?}\n--- exposition ---\n{text}"
    );
    let ours_inherited: BTreeSet<&String> = lints.iter().filter(|lint| is_node(lint)).collect();
    let inherited = node_exporter_lints();
    let theirs: BTreeSet<&String> = inherited.iter().filter(|l| is_node(l)).collect();
    assert_eq!(
        ours_inherited, theirs,
        "node_* findings differ from node_exporter's on this machine"
    );

    // The README's scrape job (honor_labels) keeps the agent's instance label.
    let target = collector.url().trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::builder().scrape("pantau", &target).start();
    let series = prometheus.wait_for_query(r#"node_load1{instance="dc-srv-02",site="dc"}"#, WAIT);
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "pantau");
}

fn is_node(lint: &str) -> bool {
    lint.starts_with("node_")
}

/// promtool's findings on the real node_exporter's output on this machine, with the agent's
/// default collectors.
fn node_exporter_lints() -> Vec<String> {
    let dir = TestDir::new();
    let port = free_port();
    let _exporter = ChildGuard::spawn(
        "node_exporter",
        Command::new("prometheus-node-exporter")
            .args([
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--collector.disable-defaults",
                "--no-collector.netdev.netlink",
            ])
            .args(pantau_tests::NODE_EXPORTER_COLLECTORS.map(|c| format!("--collector.{c}"))),
        dir.path(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = wait_until("node_exporter to serve /metrics", WAIT, || {
        match http_get(&url) {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    });
    promtool_metric_lints(&text).expect("promtool parses node_exporter's output")
}
