//! The collector's per-agent sequence accounting end to end: a collector restarted under load
//! behind Mosquitto misses nothing, and an agent whose outbox overflowed during an outage is
//! missing exactly as many numbers at the collector as it counted dropped.

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pantau_tests::{Agent, Collector, Mosquitto, TestDir, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn series(name: &str, id: &str) -> String {
    format!(r#"{name}{{instance="{id}",site="dc"}}"#)
}

/// The collector's view of agent `id`, once it has one.
fn agent_view(collector: &Collector, id: &str) -> Option<serde_json::Value> {
    let (status, view) = collector.api(&format!("/api/v1/agents/{id}"));
    (status == 200).then_some(view)
}

/// Numbers the collector counts as not received: missed plus still open gaps.
fn not_received(view: &serde_json::Value) -> Option<u64> {
    Some(view["missed_messages_total"].as_u64()? + view["sequence_gaps"].as_u64()?)
}

/// A real MQTT publisher (`mosquitto_pub -l`, QoS 1, one connection) sending `count` small
/// metrics messages of agent `id`, numbered from 0, one every `every`: a steady load.
fn steady_publisher(port: u16, id: &str, count: u64, every: Duration) -> JoinHandle<()> {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
        .args(["-i", id, "-t", &format!("pantau/v1/dc/{id}/metrics")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    let id = id.to_owned();
    std::thread::spawn(move || {
        let mut stdin = child.stdin.take().expect("piped stdin");
        for seq in 0..count {
            let line = format!(
                r#"{{"schema":1,"agent":"{id}","site":"dc","seq":{seq},"timestamp_ms":{},"families":[{{"name":"pantau_load_seq","type":"gauge","samples":[{{"value":{seq}}}]}}]}}"#,
                1_700_000_000_000_u64 + seq
            );
            writeln!(stdin, "{line}").expect("feed mosquitto_pub");
            // Pacing a load generator, not waiting for readiness.
            std::thread::sleep(every);
        }
        drop(stdin);
        let status = pantau_tests::poll_until(WAIT, || child.try_wait().expect("wait"))
            .expect("mosquitto_pub exits after its input ends");
        assert!(status.success(), "mosquitto_pub for {id} failed: {status}");
    })
}

#[test]
fn a_collector_restarted_under_load_misses_nothing() {
    let dir = TestDir::new();
    // What README asks of Mosquitto for the collector's persistent session: persistence, and a
    // queue per offline client that holds what arrives while the collector restarts.
    let broker = Mosquitto::builder()
        .persistence(true)
        .config_lines(&["max_queued_messages 100000", "max_queued_bytes 0"])
        .start();
    let mut collector = Collector::with_broker(&dir, &broker);
    let agents: Vec<Agent> = (0..3)
        .map(|n| Agent::start(&dir, &format!("dc-srv-restart-{n}"), "dc", &broker.url(), 1))
        .collect();
    for agent in &agents {
        collector.wait_for_sample(&series("pantau_agent_up", &agent.id), WAIT, |v| v == 1.0);
    }
    const LOAD: u64 = 600;
    let load_ids: Vec<String> = (0..4).map(|n| format!("dc-load-{n}")).collect();
    let publishers: Vec<JoinHandle<()>> = load_ids
        .iter()
        .map(|id| steady_publisher(broker.port(), id, LOAD, Duration::from_millis(10)))
        .collect();
    wait_until("the load at the collector", WAIT, || {
        let view = agent_view(&collector, &load_ids[0])?;
        (view["last_sequence"].as_u64()? >= 100).then_some(())
    });

    let stopped = Instant::now();
    collector.restart();
    let restart_took = stopped.elapsed();
    let before: Vec<u64> = agents
        .iter()
        .map(|agent| {
            agent_view(&collector, &agent.id)
                .and_then(|view| view["last_sequence"].as_u64())
                .unwrap_or(0)
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }

    for id in &load_ids {
        let view = wait_until("the load's last message", WAIT, || {
            let view = agent_view(&collector, id)?;
            (view["last_sequence"].as_u64()? == LOAD - 1).then_some(view)
        });
        assert_eq!(
            not_received(&view),
            Some(0),
            "{id}: {view}\n{}",
            collector.logs()
        );
        // Redeliveries after the restart are duplicates; every number arrived at least once.
        let received = view["messages_total"].as_u64().expect("messages_total");
        assert_eq!(received, LOAD, "{id}: {view}");
    }
    for (agent, before) in agents.iter().zip(before) {
        let view = wait_until("the agent's messages after the restart", WAIT, || {
            let view = agent_view(&collector, &agent.id)?;
            (view["last_sequence"].as_u64()? >= before + 2).then_some(view)
        });
        assert_eq!(
            not_received(&view),
            Some(0),
            "{}: {view}\n{}",
            agent.id,
            collector.logs()
        );
    }
    eprintln!("collector stopped and ready again in {restart_took:?}");
}

#[test]
fn a_full_outbox_drops_exactly_what_the_collector_misses() {
    let dir = TestDir::new();
    let mut broker = Mosquitto::builder().persistence(true).start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-overflow";
    // The smallest outbox the agent accepts (1 MiB), at one report a second.
    let mut agent = Agent::start_with(
        &dir,
        id,
        "dc",
        &broker.url(),
        1,
        &[("PANTAU_OUTBOX__MAX_BYTES", "1048576")],
    );
    collector.wait_for_sample(&series("pantau_agent_up", id), WAIT, |v| v == 1.0);

    broker.kill();
    let outage = Instant::now();
    agent.guard().wait_for_log(
        "outbox full or messages too old: dropped the oldest",
        Duration::from_secs(180),
    );
    let filled_in = outage.elapsed();
    broker.restart();

    // Once the backlog is in, the agent's own count of dropped messages (in its live
    // reports) and the numbers the collector never received agree: exactly, except for
    // messages that were in flight when the broker went (the broker may have taken them
    // before the acknowledgement got back), which the agent counts apart.
    let agreed = pantau_tests::poll_until(WAIT, || {
        let dropped =
            collector.sample(&series("pantau_agent_outbox_dropped_messages_total", id))?;
        let sent = collector.sample(&series(
            "pantau_agent_outbox_dropped_sent_messages_total",
            id,
        ))?;
        let missing = not_received(&agent_view(&collector, id)?)? as f64;
        (dropped > 0.0 && missing <= dropped && missing >= dropped - sent).then_some(dropped)
    });
    let view = agent_view(&collector, id);
    let Some(dropped) = agreed else {
        panic!(
            "after {WAIT:?}: agent dropped {:?}, collector {view:?}\n{}\n{}",
            collector.sample(&series("pantau_agent_outbox_dropped_messages_total", id)),
            agent.logs(),
            collector.logs()
        );
    };
    eprintln!(
        "outbox overflowed {filled_in:?} into the outage; {dropped} dropped, collector: {view:?}"
    );
}
