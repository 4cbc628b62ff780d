//! What the state hands to the backfill, and what it keeps showing: history is never current.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{
    Channel, Decoded, Family, Message, MetricKind, MetricsMessage, Sample, Topic,
};
use prometheus::Registry;
use tokio::time::Instant;

use super::{Backfill, BackfillMetrics};
use crate::state::{Liveness, Moment, Outcome, State};

const LIVENESS: Liveness = Liveness {
    silent_intervals: 3,
    default_interval: Duration::from_secs(1),
    forget_after: Duration::from_secs(3600),
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn metrics(seq: u64, timestamp_ms: i64) -> Decoded {
    Decoded {
        topic: Topic::new("dc", "a", Channel::Metrics),
        message: Message::Metrics(MetricsMessage {
            schema: 1,
            agent: "a".to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms,
            families: vec![Family {
                name: "node_load1".to_owned(),
                kind: MetricKind::Gauge,
                help: String::new(),
                samples: vec![Sample {
                    labels: Default::default(),
                    value: seq as f64,
                }],
            }],
            histograms: Vec::new(),
        }),
    }
}

fn shown(state: &State) -> Option<f64> {
    let view = state.view("a", Instant::now())?;
    let families = view.families?;
    families.first()?.first_value()
}

#[test]
fn late_and_old_samples_are_history_not_current() {
    let mut state = State::new(LIVENESS);
    let now = now_ms();
    // Live: shown, nothing replayed.
    assert_eq!(
        state.apply(metrics(10, now), false, Moment::now()),
        Outcome::Accepted
    );
    assert_eq!(shown(&state), Some(10.0));
    assert!(state.take_replayed().is_empty());
    // Late (a backlog behind live data): replayed with its own timestamp, not shown.
    assert_eq!(
        state.apply(metrics(5, now - 60_000), false, Moment::now()),
        Outcome::Late
    );
    let replayed = state.take_replayed();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].timestamp_ms, now - 60_000);
    assert_eq!(replayed[0].samples(), 1);
    assert_eq!(shown(&state), Some(10.0));
    // Newest by number but older than the live window (2 x 1 s): history too.
    assert_eq!(
        state.apply(metrics(11, now - 3_000), false, Moment::now()),
        Outcome::Accepted
    );
    assert_eq!(state.take_replayed().len(), 1);
    assert_eq!(
        shown(&state),
        Some(10.0),
        "an old sample is never shown as current"
    );
    // Within the window: current.
    assert_eq!(
        state.apply(metrics(12, now - 1_000), false, Moment::now()),
        Outcome::Accepted
    );
    assert!(state.take_replayed().is_empty());
    assert_eq!(shown(&state), Some(12.0));
}

#[test]
fn a_configured_live_window_replaces_twice_the_interval() {
    let mut state = State::new(LIVENESS).with_live_window(Some(Duration::from_secs(60)));
    state.apply(metrics(1, now_ms() - 30_000), false, Moment::now());
    assert!(state.take_replayed().is_empty());
    assert_eq!(shown(&state), Some(1.0));
}

#[test]
fn without_an_endpoint_history_is_counted_and_dropped() {
    let mut state = State::new(LIVENESS);
    let now = now_ms();
    state.apply(metrics(10, now), false, Moment::now());
    state.apply(metrics(9, now - 1000), false, Moment::now());
    state.apply(metrics(8, now - 2000), false, Moment::now());
    let metrics = BackfillMetrics::register(&Registry::new()).unwrap();
    Backfill::off(metrics.clone()).offer(state.take_replayed());
    assert_eq!(metrics.dropped_count("no_endpoint"), 2);
}
