//! Exposition tests: the golden file, reserved names, and streaming.

use std::path::Path;
use std::time::Duration;

use pantau_protocol::{Limits, decode};
use serde::Deserialize;

use std::time::UNIX_EPOCH;

use super::snapshot::render_snapshot;
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
