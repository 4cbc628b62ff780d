//! State tests on literal messages with paused time.

use pantau_protocol::{Channel, Event, Sample, Severity, Topic};

use super::*;

const LIVENESS: Liveness = Liveness {
    silent_intervals: 3,
    default_interval: Duration::from_secs(15),
    forget_after: Duration::from_secs(3600),
};

fn status(agent: &str, state: AgentState, interval: Option<u64>) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Status),
        message: Message::Status(StatusMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            state,
            timestamp_ms: 0,
            interval_seconds: interval,
            version: Some("0.1.0".to_owned()),
            next_seq: None,
            connected_ms: None,
            roles: Vec::new(),
            clips: Vec::new(),
        }),
    }
}

fn with_connection(mut decoded: Decoded, connected_ms: i64) -> Decoded {
    if let Message::Status(status) = &mut decoded.message {
        status.connected_ms = Some(connected_ms);
    }
    decoded
}

fn metrics(agent: &str, seq: u64, kind: MetricKind) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Metrics),
        message: Message::Metrics(MetricsMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms: 1,
            families: vec![Family {
                name: "node_load1".to_owned(),
                kind,
                help: String::new(),
                samples: vec![Sample {
                    labels: Default::default(),
                    value: seq as f64,
                }],
            }],
        }),
    }
}

fn at(start: Instant, seconds: u64) -> Moment {
    Moment {
        instant: start + Duration::from_secs(seconds),
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
    }
}

#[tokio::test(start_paused = true)]
async fn silence_for_three_intervals_is_down() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(
        status("a", AgentState::Online, Some(10)),
        false,
        at(start, 0),
    );
    state.apply(metrics("a", 1, MetricKind::Gauge), false, at(start, 1));
    let agent = state.agent("a").unwrap();
    assert!(agent.is_up(&LIVENESS, start + Duration::from_secs(31)));
    assert!(!agent.is_up(&LIVENESS, start + Duration::from_secs(32)));
}

#[tokio::test(start_paused = true)]
async fn the_will_is_down_at_once() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 1, MetricKind::Gauge), false, at(start, 0));
    assert!(state.agent("a").unwrap().is_up(&LIVENESS, start));
    state.apply(status("a", AgentState::Offline, None), false, at(start, 1));
    assert!(
        !state
            .agent("a")
            .unwrap()
            .is_up(&LIVENESS, start + Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn a_will_from_an_older_connection_is_ignored() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    let online = |ms| with_connection(status("a", AgentState::Online, Some(10)), ms);
    let offline = |ms| with_connection(status("a", AgentState::Offline, None), ms);
    state.apply(online(100), false, at(start, 0));
    // The agent reconnected (connection 200) before the broker dropped connection 100.
    state.apply(online(200), false, at(start, 1));
    assert_eq!(
        state.apply(offline(100), false, at(start, 2)),
        Outcome::StaleStatus
    );
    assert!(
        state
            .agent("a")
            .unwrap()
            .is_up(&LIVENESS, start + Duration::from_secs(2))
    );
    // The current connection's own will counts.
    assert_eq!(
        state.apply(offline(200), false, at(start, 3)),
        Outcome::Accepted
    );
    assert!(
        !state
            .agent("a")
            .unwrap()
            .is_up(&LIVENESS, start + Duration::from_secs(3))
    );
}

#[tokio::test(start_paused = true)]
async fn sequence_gaps_and_repeats_are_counted() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    for (seq, expected) in [
        (5, Outcome::Accepted),
        (6, Outcome::Accepted),
        (6, Outcome::Duplicate),
        (9, Outcome::Accepted),
        (8, Outcome::Duplicate),
    ] {
        let outcome = state.apply(metrics("a", seq, MetricKind::Gauge), false, at(start, 0));
        assert_eq!(outcome, expected, "seq {seq}");
    }
    let agent = state.agent("a").unwrap();
    assert_eq!(
        (
            agent.messages_total,
            agent.missed_total,
            agent.duplicates_total
        ),
        (3, 2, 2)
    );
    assert_eq!(agent.families[0].samples[0].value, 9.0);
}

#[tokio::test(start_paused = true)]
async fn a_reset_agent_is_believed_after_its_birth() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 100, MetricKind::Gauge), false, at(start, 0));
    let mut birth = status("a", AgentState::Online, Some(15));
    if let Message::Status(status) = &mut birth.message {
        status.next_seq = Some(0);
    }
    state.apply(birth, false, at(start, 1));
    let outcome = state.apply(metrics("a", 0, MetricKind::Gauge), false, at(start, 2));
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!(state.agent("a").unwrap().missed_total, 0);
}

#[tokio::test(start_paused = true)]
async fn one_name_keeps_one_type_across_agents() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 1, MetricKind::Gauge), false, at(start, 0));
    let outcome = state.apply(metrics("b", 1, MetricKind::Counter), false, at(start, 0));
    assert_eq!(
        outcome,
        Outcome::TypeConflict {
            name: "node_load1".to_owned(),
            known: MetricKind::Gauge
        }
    );
    assert!(
        state.agent("b").is_none(),
        "a refused message creates nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn retained_status_gives_a_grace_period_but_is_not_a_sign_of_life() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(
        status("a", AgentState::Online, Some(10)),
        true,
        at(start, 0),
    );
    let agent = state.agent("a").unwrap();
    assert!(agent.is_up(&LIVENESS, start + Duration::from_secs(30)));
    assert!(!agent.is_up(&LIVENESS, start + Duration::from_secs(31)));
    assert_eq!(agent.messages_total, 0);

    state.apply(status("b", AgentState::Offline, None), true, at(start, 0));
    assert!(state.agent("b").unwrap().last_seen.is_none());
}

#[tokio::test(start_paused = true)]
async fn sweep_reports_transitions_and_forgets_the_long_gone() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 1, MetricKind::Gauge), false, at(start, 0));
    assert_eq!(
        state.sweep(start),
        vec![Transition::Up {
            agent: "a".to_owned()
        }]
    );
    assert_eq!(state.sweep(start + Duration::from_secs(10)), vec![]);
    assert_eq!(
        state.sweep(start + Duration::from_secs(46)),
        vec![Transition::Down {
            agent: "a".to_owned()
        }]
    );
    assert_eq!(
        state.sweep(start + Duration::from_secs(3601)),
        vec![Transition::Forgotten {
            agent: "a".to_owned()
        }]
    );
    assert!(state.agent("a").is_none());
    // The name is free again.
    let outcome = state.apply(metrics("b", 1, MetricKind::Counter), false, at(start, 3602));
    assert_eq!(outcome, Outcome::Accepted);
}

fn with_roles(mut decoded: Decoded, roles: &[&str]) -> Decoded {
    if let Message::Status(status) = &mut decoded.message {
        status.roles = roles.iter().map(|role| (*role).to_owned()).collect();
    }
    decoded
}

fn events(agent: &str, seq: u64, kinds: &[(&str, Severity)]) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Events),
        message: Message::Events(EventsMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms: 1_000 + seq as i64,
            events: kinds
                .iter()
                .map(|(kind, severity)| Event {
                    kind: (*kind).to_owned(),
                    severity: *severity,
                    message: format!("{kind}!"),
                    labels: Default::default(),
                })
                .collect(),
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_named_roles_are_kept_through_a_will() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    let birth = with_roles(
        status("a", AgentState::Online, Some(10)),
        &["host", "probe"],
    );
    state.apply(birth, false, at(start, 0));
    state.apply(status("a", AgentState::Offline, None), false, at(start, 1));
    let view = state.view("a", start + Duration::from_secs(1)).unwrap();
    assert_eq!(view.roles, vec!["host", "probe"]);
    assert!(!view.online);

    let birth = with_roles(status("a", AgentState::Online, Some(10)), &["sound"]);
    state.apply(birth, false, at(start, 2));
    assert_eq!(state.view("a", start).unwrap().roles, vec!["sound"]);
}

#[tokio::test(start_paused = true)]
async fn events_are_counted_and_kept_once_newest_first_within_the_limit() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS).with_max_events(3);
    state.apply(
        events("a", 1, &[("started", Severity::Info)]),
        false,
        at(start, 0),
    );
    let repeat = events("a", 1, &[("started", Severity::Info)]);
    assert_eq!(state.apply(repeat, false, at(start, 1)), Outcome::Duplicate);
    state.apply(
        events(
            "a",
            2,
            &[
                ("link_down", Severity::Critical),
                ("link_up", Severity::Info),
            ],
        ),
        false,
        at(start, 2),
    );
    let stored = state.events("a").unwrap();
    let kinds: Vec<&str> = stored.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["link_up", "link_down", "started"]);
    assert_eq!(stored[0].seq, 2);
    assert_eq!(stored[0].received, at(start, 2).wall);
    assert_eq!(stored[2].timestamp_ms, 1_001);

    state.apply(
        events("a", 3, &[("probe_failed", Severity::Warning)]),
        false,
        at(start, 3),
    );
    let kinds: Vec<String> = state
        .events("a")
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["probe_failed", "link_up", "link_down"]);
    let counts: Vec<(Severity, u64)> = state
        .view("a", start)
        .unwrap()
        .events_total
        .iter()
        .collect();
    assert_eq!(
        counts,
        vec![
            (Severity::Info, 2),
            (Severity::Warning, 1),
            (Severity::Critical, 1)
        ]
    );
    assert!(state.events("nobody").is_none());
}

#[tokio::test(start_paused = true)]
async fn views_are_sorted_and_carry_samples_only_while_up() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("b", 1, MetricKind::Gauge), false, at(start, 0));
    state.apply(metrics("a", 4, MetricKind::Gauge), false, at(start, 0));
    let views = state.views(start);
    let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert!(views[0].online && views[0].families.is_some());
    assert_eq!(views[0].last_sequence, Some(4));

    let later = start + Duration::from_secs(46);
    let view = state.view("a", later).unwrap();
    assert!(!view.online);
    assert!(view.families.is_none(), "a down agent's samples are stale");
    assert!(state.view("nobody", later).is_none());
}
