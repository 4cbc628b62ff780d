//! The embedded broker under a burst: 20 publishers each send 150 well-formed metrics messages
//! of about 40 KB, QoS 1, as fast as `mosquitto_pub` can; the collector's accounting then shows
//! every one received and none missed. rumqttd acknowledges a publish once it is in its
//! in-memory log and drops the oldest part of the log when it is full, so this fails if the
//! log kept for the collector cannot hold what it falls behind by.

use std::process::Command;
use std::time::{Duration, Instant};

use pantau_tests::{Collector, TestDir, poll_until, run_with_timeout};

const AGENTS: usize = 20;
const MESSAGES: u64 = 150;
const WAIT: Duration = Duration::from_secs(120);

/// One metrics message of about 40 KB: 280 samples with a padded label, numbered `seq`.
/// Written by hand rather than through `serde_json::json!`, which takes seconds for 3,000 of
/// them in a debug build; the collector's decoder is what checks it is well-formed.
fn message(agent: &str, seq: u64) -> String {
    let pad = "x".repeat(100);
    let samples: Vec<String> = (0..280)
        .map(|n| format!(r#"{{"labels":{{"n":"{n}","pad":"{pad}"}},"value":{seq}}}"#))
        .collect();
    format!(
        r#"{{"schema":1,"agent":"{agent}","site":"dc","seq":{seq},"timestamp_ms":{},"families":[{{"name":"pantau_burst_filler","type":"gauge","samples":[{}]}}]}}"#,
        1_700_000_000_000_u64 + seq,
        samples.join(",")
    )
}

#[test]
fn a_burst_into_the_embedded_broker_loses_nothing() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let port = collector.broker_port().to_string();
    let ids: Vec<String> = (0..AGENTS).map(|n| format!("dc-burst-{n:02}")).collect();
    // Every message is made before any is sent, so the publishers run flat out.
    let inputs: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let lines: Vec<String> = (0..MESSAGES).map(|seq| message(id, seq)).collect();
            (lines.join("\n") + "\n").into_bytes()
        })
        .collect();
    let bytes: usize = inputs.iter().map(Vec::len).sum();

    let started = Instant::now();
    let publishers: Vec<_> = ids
        .iter()
        .zip(inputs)
        .map(|(id, input)| {
            let (id, port) = (id.clone(), port.clone());
            std::thread::spawn(move || {
                // `-l`: one message per line of stdin, over one connection, QoS 1.
                let mut command = Command::new("mosquitto_pub");
                command.args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l"]);
                command.args(["-i", &id, "-t", &format!("pantau/v1/dc/{id}/metrics")]);
                run_with_timeout(&mut command, &input, WAIT)
            })
        })
        .collect();
    for (id, publisher) in ids.iter().zip(publishers) {
        let output = publisher.join().expect("publisher thread");
        assert!(
            output.status.success(),
            "mosquitto_pub for {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let published = started.elapsed();

    // Each publisher's last message arrives last on its connection.
    let list = || collector.api("/api/v1/agents").1["agents"].clone();
    let done = poll_until(WAIT, || {
        if collector.logs().contains("jumping to head") {
            // rumqttd dropped part of its log: no need to wait for what will never come.
            return Some(None);
        }
        let agents = list().as_array()?.clone();
        let done = agents
            .iter()
            .filter(|agent| agent["last_sequence"].as_u64() == Some(MESSAGES - 1))
            .count();
        (done == AGENTS).then_some(Some(agents))
    });
    let Some(Some(agents)) = done else {
        let logs = collector.logs();
        panic!(
            "not every agent's last message arrived (waited up to {WAIT:?}); the broker \
             dropped from its log: {}\n{}\n{logs}",
            logs.contains("jumping to head"),
            list()
        );
    };
    eprintln!(
        "{AGENTS} x {MESSAGES} messages, {bytes} bytes, published in {published:?}, \
         received in {:?}; collector {}",
        started.elapsed(),
        resident(collector.pid())
    );
    for agent in &agents {
        let counts = (
            &agent["messages_total"],
            &agent["sequence_gaps"],
            &agent["missed_messages_total"],
            &agent["duplicate_messages_total"],
        );
        assert_eq!(
            counts,
            (&MESSAGES.into(), &0.into(), &0.into(), &0.into()),
            "{} (received, open gaps, missed, duplicates)\n{}",
            agent["id"],
            collector.logs()
        );
    }
    assert_eq!(
        collector.sample("pantau_collector_dropped_messages_total"),
        Some(0.0)
    );
}

/// The process's resident memory, as /proc says it (for the log, not asserted).
fn resident(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            Some(
                line.split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .unwrap_or_else(|| "RSS unknown".to_owned())
}
