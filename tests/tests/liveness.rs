//! When an agent counts as up: the last will on SIGKILL, `offline` on SIGTERM, silence, and
//! both sides reconnecting after the broker restarts; the sequence number across restarts.

use std::time::Duration;

use pantau_tests::{Agent, Collector, Mosquitto, Signal, TestDir, http_get, sample, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn up(id: &str) -> String {
    format!(r#"pantau_agent_up{{instance="{id}",site="dc"}}"#)
}

/// SIGKILL leaves no chance to say goodbye: the broker publishes the agent's last will. The
/// agent reports every 60 s, so silence alone would take 3 minutes; the will must do it at once.
fn killed_agent_goes_down_by_its_will(collector: &Collector, broker_url: &str) {
    let dir = TestDir::new();
    let mut agent = Agent::start(&dir, "dc-srv-kill", "dc", broker_url, 60);
    collector.wait_for_sample(&up("dc-srv-kill"), WAIT, |v| v == 1.0);

    agent.guard().kill();
    collector.wait_for_sample(&up("dc-srv-kill"), Duration::from_secs(10), |v| v == 0.0);
    let (status, json) = collector.api("/api/v1/agents/dc-srv-kill");
    assert_eq!(status, 200);
    assert_eq!(json["online"], false);
    assert_eq!(json["status"], "offline");
    // A down agent's relayed series are gone; its up series stays for alerting.
    let text = collector.metrics();
    assert_eq!(
        sample(&text, r#"node_load1{instance="dc-srv-kill",site="dc"}"#),
        None
    );
}

#[test]
fn sigkill_flips_up_through_the_last_will_with_mosquitto() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    killed_agent_goes_down_by_its_will(&collector, &broker.url());
}

#[test]
fn sigkill_flips_up_through_the_last_will_with_the_embedded_broker() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    killed_agent_goes_down_by_its_will(&collector, &collector.broker_url());
}

#[test]
fn a_late_will_from_an_older_connection_does_not_mark_a_live_agent_down() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let status = |state: &str, connected_ms: u64| {
        format!(
            r#"{{"schema":1,"agent":"dc-flap","site":"dc","state":"{state}","timestamp_ms":1,
                "interval_seconds":60,"connected_ms":{connected_ms}}}"#
        )
    };
    let topic = "pantau/v1/dc/dc-flap/status";
    // The link flapped: the agent reconnected (connection 2000) before the broker noticed that
    // connection 1000 was dead and published its will.
    broker.mosquitto_pub(topic, status("online", 1000).as_bytes(), true);
    broker.mosquitto_pub(topic, status("online", 2000).as_bytes(), true);
    collector.wait_for_sample(&up("dc-flap"), WAIT, |v| v == 1.0);
    broker.mosquitto_pub(topic, status("offline", 1000).as_bytes(), true);
    collector.wait_for_sample("pantau_collector_stale_status_messages_total", WAIT, |v| {
        v == 1.0
    });
    assert_eq!(collector.sample(&up("dc-flap")), Some(1.0));
    // The current connection's will still counts.
    broker.mosquitto_pub(topic, status("offline", 2000).as_bytes(), true);
    collector.wait_for_sample(&up("dc-flap"), WAIT, |v| v == 0.0);
}

#[test]
fn sigterm_publishes_offline_and_exits_cleanly() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let mut agent = Agent::start(&dir, "dc-srv-term", "dc", &broker.url(), 60);
    collector.wait_for_sample(&up("dc-srv-term"), WAIT, |v| v == 1.0);

    agent.guard().kill_with(Signal::TERM);
    let status = agent
        .guard()
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("agent did not stop on SIGTERM\n{}", agent.logs()));
    assert!(status.success(), "{status}\n{}", agent.logs());
    collector.wait_for_sample(&up("dc-srv-term"), Duration::from_secs(5), |v| v == 0.0);
    // The retained status on the broker says offline too: a collector starting now agrees.
    let retained = broker.subscribe_one("pantau/v1/dc/dc-srv-term/status", WAIT);
    let retained: serde_json::Value = serde_json::from_slice(&retained).unwrap();
    assert_eq!(retained["state"], "offline");
    assert!(agent.logs().contains("agent stopped"), "{}", agent.logs());
}

#[test]
fn a_silent_agent_goes_down_after_three_intervals() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    // An agent that announced a 1 s interval and then fell silent without a will: the
    // birth message is published by hand, as a hung agent would have left it.
    let birth = r#"{"schema":1,"agent":"dc-hung","site":"dc","state":"online",
        "timestamp_ms":1,"interval_seconds":1}"#;
    broker.mosquitto_pub("pantau/v1/dc/dc-hung/status", birth.as_bytes(), true);
    let metrics = r#"{"schema":1,"agent":"dc-hung","site":"dc","seq":0,"timestamp_ms":1,
        "families":[{"name":"node_load1","type":"gauge","samples":[{"value":0.5}]}]}"#;
    broker.mosquitto_pub("pantau/v1/dc/dc-hung/metrics", metrics.as_bytes(), false);
    collector.wait_for_sample(&up("dc-hung"), WAIT, |v| v == 1.0);
    let went_up = std::time::Instant::now();
    collector.wait_for_sample(&up("dc-hung"), Duration::from_secs(10), |v| v == 0.0);
    // 3 intervals of 1 s; allow for the collector's once-a-second view and scheduling.
    assert!(
        went_up.elapsed() >= Duration::from_millis(1500),
        "down after only {:?}",
        went_up.elapsed()
    );
}

#[test]
fn both_sides_reconnect_after_the_broker_restarts() {
    let dir = TestDir::new();
    let mut broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let agent = Agent::start(&dir, "dc-srv-re", "dc", &broker.url(), 1);
    let connections = r#"pantau_agent_mqtt_connections_total{instance="dc-srv-re",site="dc"}"#;
    collector.wait_for_sample(connections, WAIT, |v| v == 1.0);

    broker.kill();
    let readyz = format!("{}/readyz", collector.url());
    wait_until("the collector to report not ready", WAIT, || {
        matches!(http_get(&readyz), Ok((503, _))).then_some(())
    });
    broker.restart();
    wait_until("the collector to be ready again", WAIT, || {
        matches!(http_get(&readyz), Ok((200, _))).then_some(())
    });

    // The agent reconnected (a second connection), published its birth again, and reports.
    collector.wait_for_sample(connections, WAIT, |v| v >= 2.0);
    collector.wait_for_sample(&up("dc-srv-re"), WAIT, |v| v == 1.0);
    let retained = broker.subscribe_one("pantau/v1/dc/dc-srv-re/status", WAIT);
    let retained: serde_json::Value = serde_json::from_slice(&retained).unwrap();
    assert_eq!(retained["state"], "online", "{}", agent.logs());
    let text = collector.metrics();
    assert_eq!(
        sample(&text, "pantau_collector_mqtt_connections_total"),
        Some(2.0),
        "{text}"
    );
}

#[test]
fn the_sequence_number_continues_across_agent_restarts() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let last_sequence = || {
        let (_, json) = collector.api("/api/v1/agents/dc-srv-seq");
        json["last_sequence"].as_u64()
    };

    let mut agent = Agent::start(&dir, "dc-srv-seq", "dc", &broker.url(), 1);
    let first = wait_until("a few messages", WAIT, || {
        last_sequence().filter(|s| *s >= 3)
    });
    agent.guard().kill_with(Signal::TERM);
    agent
        .guard()
        .wait_exit(Duration::from_secs(10))
        .expect("agent stops");
    // The file holds the next number to use.
    let read_next = || -> u64 {
        let text = std::fs::read_to_string(dir.join("dc-srv-seq/sequence")).unwrap();
        text.trim().parse().unwrap()
    };
    let next = read_next();
    assert!(next > first);

    let mut events = broker.subscribe("pantau/v1/dc/dc-srv-seq/events");
    let _agent = Agent::start(&dir, "dc-srv-seq", "dc", &broker.url(), 1);
    // The restarted agent's first message (its agent_started event) takes exactly that number.
    let started: serde_json::Value = serde_json::from_slice(&events.recv(WAIT).payload).unwrap();
    assert_eq!(started["events"][0]["kind"], "agent_started");
    assert_eq!(started["seq"].as_u64(), Some(next));
    wait_until("the restarted agent's messages", WAIT, || {
        last_sequence().filter(|s| *s >= next + 2)
    });
    let text = collector.metrics();
    // Every number was used once: no gap, no repeat, across the restart.
    for counter in ["missed", "duplicate"] {
        let series =
            format!(r#"pantau_agent_{counter}_messages_total{{instance="dc-srv-seq",site="dc"}}"#);
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    assert!(read_next() > next + 2);
}
