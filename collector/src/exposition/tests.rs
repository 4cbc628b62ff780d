//! Exposition tests: the golden file, reserved names, and streaming.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use pantau_protocol::{Limits, decode};
use serde::Deserialize;

use super::snapshot::{self, render_snapshot};
use super::*;
use crate::state::{Liveness, Moment, State};

#[derive(Deserialize)]
struct Input {
    topic: String,
    payload: serde_json::Value,
}

/// The exposition of testdata/golden_messages.json must equal testdata/golden.prom.
/// After an intended change, regenerate with
/// `PANTAU_UPDATE_GOLDEN=1 cargo test -p pantau-collector golden` and review the diff.
#[tokio::test(start_paused = true)]
async fn golden_exposition() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let inputs: Vec<Input> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden_messages.json")).unwrap())
            .unwrap();
    let liveness = Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    };
    let mut state = State::new(liveness);
    let start = Instant::now();
    for (index, input) in inputs.iter().enumerate() {
        let payload = serde_json::to_vec(&input.payload).unwrap();
        let decoded = decode("pantau", &input.topic, &payload, &Limits::default())
            .unwrap_or_else(|error| panic!("input {index}: {error}"));
        let moment = Moment {
            instant: start + Duration::from_secs(index as u64),
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + index as u64),
        };
        state.apply(decoded, false, moment);
    }
    let now = start + Duration::from_secs(inputs.len() as u64);
    let text = render_snapshot(&Snapshot::take(&state, now));

    let golden = dir.join("golden.prom");
    if std::env::var_os("PANTAU_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        text, expected,
        "exposition changed; if intended, regenerate with PANTAU_UPDATE_GOLDEN=1"
    );
}

#[test]
fn every_reject_reason_is_exposed_from_the_start() {
    let state = std::sync::Arc::new(std::sync::RwLock::new(State::new(Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    })));
    let telemetry = Telemetry::new(state).unwrap();
    let text = telemetry.render().unwrap();
    for reason in RejectReason::ALL.iter().map(|r| r.as_str()) {
        let line = format!("pantau_collector_rejected_messages_total{{reason=\"{reason}\"}} 0");
        assert!(text.contains(&line), "missing {line}");
    }
    assert!(text.contains("\npantau_collector_cleared_retained_messages_total 0\n"));
    assert!(text.contains("process_resident_memory_bytes"));
}

/// Every name the collector writes itself is one `decode` refuses from agents, and every
/// reserved per-agent name is really written: the reserved list and the emitting code agree.
#[tokio::test(start_paused = true)]
async fn reserved_names_are_exactly_those_the_collector_emits() {
    let state = std::sync::Arc::new(std::sync::RwLock::new(State::new(Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    })));
    let messages = [
        (
            "pantau/v1/dc/a/status",
            r#"{"schema":1,"agent":"a","site":"dc","state":"online","timestamp_ms":1,"version":"1"}"#,
        ),
        (
            "pantau/v1/dc/a/metrics",
            r#"{"schema":1,"agent":"a","site":"dc","seq":1,"timestamp_ms":1,
                "families":[{"name":"relayed_total","type":"counter","samples":[{"value":1}]}]}"#,
        ),
        (
            "pantau/v1/dc/a/events",
            r#"{"schema":1,"agent":"a","site":"dc","seq":2,"timestamp_ms":1,
                "events":[{"kind":"started","severity":"info","message":"hi"}]}"#,
        ),
    ];
    for (topic, payload) in messages {
        let decoded = decode("pantau", topic, payload.as_bytes(), &Limits::default()).unwrap();
        state.write().unwrap().apply(decoded, false, Moment::now());
    }
    let telemetry = Telemetry::new(state).unwrap();
    let text = telemetry.render().unwrap();
    let emitted: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    for name in &emitted {
        let reserved = pantau_protocol::is_collector_owned_metric(name);
        assert_eq!(reserved, *name != "relayed_total", "{name}");
    }
    for name in pantau_protocol::AGENT_SERIES {
        assert!(
            emitted.contains(&name),
            "{name} is reserved but never emitted"
        );
    }
    for prefix in pantau_protocol::COLLECTOR_PREFIXES {
        assert!(
            emitted.iter().any(|name| name.starts_with(prefix)),
            "{prefix}* is reserved but nothing emitted starts with it"
        );
    }
    let unique: std::collections::HashSet<&&str> = emitted.iter().collect();
    assert_eq!(unique.len(), emitted.len(), "a name appears twice");
}

/// The text arrives in chunks of about `CHUNK_BYTES`, and rendering stops when the reader
/// goes away.
#[tokio::test(start_paused = true)]
async fn a_large_render_comes_in_chunks_and_stops_when_nobody_reads() {
    let mut state = State::new(Liveness {
        silent_intervals: 3,
        default_interval: Duration::from_secs(15),
        forget_after: Duration::from_secs(3600),
    });
    let samples: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"labels":{{"n":"{i}"}},"value":{i}}}"#))
        .collect();
    // Samples taken now: older ones are history, not shown.
    let now_ms = crate::test_support_now_ms();
    for agent in 0..20 {
        let payload = format!(
            r#"{{"schema":1,"agent":"a{agent}","site":"dc","seq":1,"timestamp_ms":{now_ms},
                "families":[{{"name":"many","type":"gauge","samples":[{}]}}]}}"#,
            samples.join(",")
        );
        let topic = format!("pantau/v1/dc/a{agent}/metrics");
        let decoded = decode("pantau", &topic, payload.as_bytes(), &Limits::default()).unwrap();
        state.apply(decoded, false, Moment::now());
    }
    let snapshot = Snapshot::take(&state, Instant::now());
    let mut sizes = Vec::new();
    let mut out = ChunkWriter::new(|chunk: Vec<u8>| {
        sizes.push(chunk.len());
        true
    });
    snapshot.write(&mut out);
    out.flush();
    drop(out);
    assert!(sizes.len() > 10, "{sizes:?}");
    assert!(
        sizes
            .iter()
            .all(|size| *size < snapshot::CHUNK_BYTES + 4096),
        "{sizes:?}"
    );
    let mut calls = 0;
    let mut out = ChunkWriter::new(|_| {
        calls += 1;
        false
    });
    snapshot.write(&mut out);
    out.flush();
    drop(out);
    assert_eq!(calls, 1, "stopped after the first refused chunk");
}
