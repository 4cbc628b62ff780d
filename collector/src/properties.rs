//! Property tests of the decoder and `State` together: random sequences of status, metrics and
//! events payloads (well-formed, hostile and garbage) from several agents, with time passing
//! and sweeps in between. Whatever arrives, nothing panics, and after every step:
//! - a render holds no series twice and gives each name one `# TYPE`;
//! - all agents' families of one name have one type, pinned names their pinned one;
//! - no per-agent counter ever decreases while the agent is followed;
//! - a second state fed the same messages, metrics read against the stored shapes whenever
//!   they have them (`ingest::known_shape`), renders exactly the same.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use pantau_protocol::{Channel, Limits, Topic, decode, pinned_kind};
use proptest::prelude::*;
use tokio::time::Instant;

use crate::exposition::{Snapshot, render_snapshot};
use crate::ingest::known_shape;
use crate::state::{AgentView, Liveness, Moment, State};

const AGENTS: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 6] = [
    "node_load1",
    "jobs_total",
    "temperature",
    "probe_success",
    "pantau_agent_up",
    "node_network_receive_bytes_total",
];

/// One step of the sequence.
#[derive(Debug, Clone)]
enum Step {
    Publish {
        agent: usize,
        payload: Payload,
        retained: bool,
    },
    Garbage {
        agent: usize,
        bytes: Vec<u8>,
    },
    Wait {
        seconds: u64,
    },
    Sweep,
    /// The agent's last metrics message again, with the next sequence number and other
    /// values: the steady state, which takes the known-shape path.
    Again {
        agent: usize,
        shift: f64,
    },
}

/// A family: index into `NAMES`, counter (else gauge), samples as (label value, value).
type FamilySpec = (usize, bool, Vec<(u8, f64)>);

#[derive(Debug, Clone)]
enum Payload {
    Status {
        online: bool,
        interval: u64,
        next_seq: Option<u64>,
    },
    Metrics {
        seq: u64,
        families: Vec<FamilySpec>,
    },
    Events {
        seq: u64,
        count: usize,
    },
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..40,
        1 => 8000u64..8300,
        1 => any::<u64>(),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (
            any::<bool>(),
            prop_oneof![1u64..5, Just(0), Just(u64::MAX)],
            proptest::option::of(seq())
        )
            .prop_map(|(online, interval, next_seq)| Payload::Status {
                online,
                interval,
                next_seq
            }),
        (
            seq(),
            proptest::collection::vec(
                (
                    0..NAMES.len(),
                    any::<bool>(),
                    proptest::collection::vec((0u8..4, -1e6f64..1e6), 0..4)
                ),
                0..4
            )
        )
            .prop_map(|(seq, families)| Payload::Metrics { seq, families }),
        (seq(), 0usize..3).prop_map(|(seq, count)| Payload::Events { seq, count }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..AGENTS.len(), payload(), proptest::bool::weighted(0.1))
            .prop_map(|(agent, payload, retained)| Step::Publish { agent, payload, retained }),
        1 => (0..AGENTS.len(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(agent, bytes)| Step::Garbage { agent, bytes }),
        2 => (0u64..30).prop_map(|seconds| Step::Wait { seconds }),
        1 => Just(Step::Sweep),
        4 => (0..AGENTS.len(), -10f64..10.0).prop_map(|(agent, shift)| Step::Again { agent, shift }),
    ]
}

/// The JSON an agent (or someone pretending to be one) would publish at `timestamp_ms`; a
/// metrics message in the agent's own serialization (`known_shape::canonical` reads it).
fn render_payload(agent: &str, payload: &Payload, timestamp_ms: u64) -> (String, String) {
    let head = format!(r#""schema":1,"agent":"{agent}","site":"dc","timestamp_ms":{timestamp_ms}"#);
    match payload {
        Payload::Status {
            online,
            interval,
            next_seq,
        } => {
            let state = if *online { "online" } else { "offline" };
            let next = next_seq.map_or(String::new(), |n| format!(r#","next_seq":{n}"#));
            (
                "status".to_owned(),
                format!(r#"{{{head},"state":"{state}","interval_seconds":{interval}{next}}}"#),
            )
        }
        Payload::Metrics { seq, families } => {
            let mut used = HashSet::new();
            let families: Vec<String> = families
                .iter()
                .filter(|(name, _, _)| used.insert(*name))
                .map(|(name, counter, samples)| {
                    let mut labels = HashSet::new();
                    let samples: Vec<String> = samples
                        .iter()
                        .filter(|(label, _)| labels.insert(*label))
                        .map(|(label, value)| {
                            format!(r#"{{"labels":{{"l":"{label}"}},"value":{value}}}"#)
                        })
                        .collect();
                    let kind = if *counter { "counter" } else { "gauge" };
                    format!(
                        r#"{{"name":"{}","type":"{kind}","samples":[{}]}}"#,
                        NAMES[*name],
                        samples.join(",")
                    )
                })
                .collect();
            (
                "metrics".to_owned(),
                format!(
                    r#"{{"schema":1,"agent":"{agent}","site":"dc","seq":{seq},"timestamp_ms":{timestamp_ms},"families":[{}]}}"#,
                    families.join(",")
                ),
            )
        }
        Payload::Events { seq, count } => {
            let events = vec![r#"{"kind":"x","severity":"warning","message":"m"}"#; *count];
            (
                "events".to_owned(),
                format!(r#"{{{head},"seq":{seq},"events":[{}]}}"#, events.join(",")),
            )
        }
    }
}

/// Every counter of a view, in a fixed order.
fn counters(view: &AgentView) -> Vec<u64> {
    let mut counters = vec![
        view.messages_total,
        view.missed_messages_total,
        view.duplicate_messages_total,
        view.late_messages_total,
    ];
    counters.extend(view.events_total.iter().map(|(_, count)| count));
    counters
}

fn check_invariants(state: &State, now: Instant) -> Result<(), TestCaseError> {
    let text = render_snapshot(&Snapshot::take(state, now));
    let mut series = HashSet::new();
    let mut types = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_owned();
            prop_assert!(types.insert(name), "a second # TYPE line: {}", line);
        } else if !line.starts_with('#') {
            let key = line
                .rsplit_once(' ')
                .map_or(line, |(key, _)| key)
                .to_owned();
            prop_assert!(series.insert(key), "a series twice: {}", line);
        }
    }
    let mut kinds = HashMap::new();
    for view in state.views(now) {
        for family in view.families.iter().flat_map(|families| families.iter()) {
            let name = family.name();
            let first = *kinds.entry(name.to_owned()).or_insert(family.kind());
            prop_assert_eq!(first, family.kind(), "{} has two types", name);
            if let Some(pinned) = pinned_kind(name) {
                prop_assert_eq!(pinned, family.kind(), "{} is pinned", name);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_messages_keeps_the_invariants(
        steps in proptest::collection::vec(step(), 1..60),
        max_agents in 1usize..4,
    ) {
        let liveness = Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
        };
        let mut state = State::new(liveness).with_max_agents(max_agents).with_max_events(5);
        let limits = Limits { max_series_per_message: 6, ..Limits::default() };
        let start = Instant::now();
        let mut elapsed = 0u64;
        let mut last: HashMap<String, Vec<u64>> = HashMap::new();
        let mut shadow = State::new(liveness).with_max_agents(max_agents).with_max_events(5);
        let mut last_metrics: HashMap<usize, (u64, Vec<FamilySpec>)> = HashMap::new();
        for step in steps {
            let now = Moment {
                instant: start + Duration::from_secs(elapsed),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(elapsed),
            };
            let publish = match &step {
                Step::Publish { agent, payload, retained } => Some((*agent, payload.clone(), *retained)),
                Step::Again { agent, shift } => last_metrics.get(agent).map(|(seq, families)| {
                    let families = families
                        .iter()
                        .map(|(name, counter, samples)| {
                            let samples = samples.iter().map(|(l, v)| (*l, v + shift)).collect();
                            (*name, *counter, samples)
                        })
                        .collect();
                    (*agent, Payload::Metrics { seq: seq.saturating_add(1), families }, false)
                }),
                _ => None,
            };
            if let Some((agent, Payload::Metrics { seq, families }, _)) = &publish {
                last_metrics.insert(*agent, (*seq, families.clone()));
            }
            match step {
                Step::Publish { .. } | Step::Again { .. } => {
                    let Some((agent, payload, retained)) = publish else {
                        continue;
                    };
                    let (channel, json) = render_payload(AGENTS[agent], &payload, elapsed * 1000);
                    let topic = format!("pantau/v1/dc/{}/{channel}", AGENTS[agent]);
                    let mut values = Vec::new();
                    let known = Topic::parse("pantau", &topic)
                        .ok()
                        .filter(|topic| topic.channel == Channel::Metrics)
                        .and_then(|topic| {
                            let stored = shadow.families_of(&topic.agent)?;
                            let known =
                                known_shape::read(&topic, json.as_bytes(), stored, &mut values)?;
                            Some((topic, known))
                        });
                    let through_decode: &mut [&mut State] = match known {
                        Some((topic, known)) => {
                            shadow.apply_known(&topic, known, &values, now);
                            &mut [&mut state]
                        }
                        None => &mut [&mut state, &mut shadow],
                    };
                    for state in through_decode {
                        match decode("pantau", &topic, json.as_bytes(), &limits) {
                            Ok(decoded) => {
                                state.apply(decoded, retained, now);
                            }
                            Err(error) => state.record_rejection(
                                AGENTS[agent],
                                "message_rejected",
                                error.reason().as_str(),
                                &error.to_string(),
                                now.wall,
                            ),
                        }
                    }
                }
                Step::Garbage { agent, bytes } => {
                    let topic = format!("pantau/v1/dc/{}/metrics", AGENTS[agent]);
                    prop_assert!(decode("pantau", &topic, &bytes, &limits).is_err());
                }
                Step::Wait { seconds } => elapsed += seconds,
                Step::Sweep => {
                    state.sweep(now.instant);
                    shadow.sweep(now.instant);
                }
            }
            let now = start + Duration::from_secs(elapsed);
            check_invariants(&state, now)?;
            prop_assert_eq!(
                render_snapshot(&Snapshot::take(&state, now)),
                render_snapshot(&Snapshot::take(&shadow, now)),
                "the known-shape path changed what is shown"
            );
            let views = state.views(now);
            prop_assert!(views.len() <= max_agents);
            let present: HashSet<&str> = views.iter().map(|v| v.id.as_str()).collect();
            last.retain(|id, _| present.contains(id.as_str()));
            for view in &views {
                let now_counters = counters(view);
                if let Some(before) = last.get(&view.id) {
                    for (old, new) in before.iter().zip(&now_counters) {
                        prop_assert!(new >= old, "{} went from {:?} to {:?}", view.id, before, now_counters);
                    }
                }
                last.insert(view.id.clone(), now_counters);
            }
        }
    }

    /// The decoder alone, on arbitrary bytes and arbitrary topics: an answer, never a panic.
    #[test]
    fn decode_never_panics(topic in "[a-z/+#.]{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode("pantau", &topic, &bytes, &Limits::default());
        let _ = decode("pantau", "pantau/v1/dc/a/metrics", &bytes, &Limits::default());
    }
}
