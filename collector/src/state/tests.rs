//! State tests on literal messages with paused time.

use pantau_protocol::{Channel, Event, Family, MetricKind, Sample, Severity, Topic};

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
    metrics_named(agent, seq, &[("node_load1", kind)])
}

/// The first sample's value of a counter or gauge family.
fn value_of(family: &StoredFamily) -> f64 {
    family.first_value().expect("a counter or gauge")
}

/// A metrics message with one unlabelled sample of value `seq` per named family.
fn metrics_named(agent: &str, seq: u64, families: &[(&str, MetricKind)]) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Metrics),
        message: Message::Metrics(MetricsMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms: 1,
            families: families
                .iter()
                .map(|(name, kind)| Family {
                    name: (*name).to_owned(),
                    kind: *kind,
                    help: String::new(),
                    samples: vec![Sample {
                        labels: Default::default(),
                        value: seq as f64,
                    }],
                })
                .collect(),
            histograms: Vec::new(),
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
async fn sequence_gaps_late_messages_and_repeats_are_counted() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    for (seq, expected) in [
        (5, Outcome::Accepted),
        (6, Outcome::Accepted),
        (6, Outcome::Duplicate),
        (9, Outcome::Accepted),
        (8, Outcome::Late),
        (8, Outcome::Duplicate),
    ] {
        let outcome = state.apply(metrics("a", seq, MetricKind::Gauge), false, at(start, 0));
        assert_eq!(outcome, expected, "seq {seq}");
    }
    let view = state.view("a", start).unwrap();
    assert_eq!(
        (
            view.messages_total,
            view.missed_messages_total,
            view.duplicate_messages_total,
            view.late_messages_total,
            view.sequence_gaps,
        ),
        (4, 0, 2, 1, 1),
        "7 is an open gap, not missed yet"
    );
    let agent = state.agent("a").unwrap();
    assert_eq!(
        value_of(&agent.families[0]),
        9.0,
        "late 8 did not replace 9"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forged_sequence_number_far_ahead_is_refused_and_the_agent_keeps_reporting() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(
        metrics("victim", 10, MetricKind::Gauge),
        false,
        at(start, 0),
    );
    let forged = metrics("victim", 10 + SEQUENCE_WINDOW + 1, MetricKind::Gauge);
    assert_eq!(
        state.apply(forged, false, at(start, 1)),
        Outcome::Rejected(RejectReason::SequenceOutOfWindow)
    );
    assert_eq!(
        state.apply(
            metrics("victim", 11, MetricKind::Gauge),
            false,
            at(start, 2)
        ),
        Outcome::Accepted
    );
    let view = state
        .view("victim", start + Duration::from_secs(2))
        .unwrap();
    assert_eq!(
        (view.missed_messages_total, view.last_sequence),
        (0, Some(11))
    );
    assert_eq!(value_of(&state.agent("victim").unwrap().families[0]), 11.0);
    let events = state.events("victim").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, MESSAGE_REJECTED);
    assert_eq!(events[0].labels["reason"], "sequence_out_of_window");
}

#[tokio::test(start_paused = true)]
async fn a_reset_agent_is_believed_after_its_birth() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 100, MetricKind::Gauge), false, at(start, 0));
    let birth = |next| {
        let mut birth = status("a", AgentState::Online, Some(15));
        if let Message::Status(status) = &mut birth.message {
            status.next_seq = Some(next);
        }
        birth
    };
    // The broker replaying the agent's old birth says nothing new.
    state.apply(birth(50), true, at(start, 1));
    assert_eq!(state.view("a", start).unwrap().last_sequence, Some(100));
    state.apply(birth(0), false, at(start, 1));
    let outcome = state.apply(metrics("a", 0, MetricKind::Gauge), false, at(start, 2));
    assert_eq!(outcome, Outcome::Accepted);
    let view = state.view("a", start).unwrap();
    assert_eq!((view.missed_messages_total, view.sequence_gaps), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_family_is_dropped_and_the_rest_of_the_message_kept() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(metrics("a", 1, MetricKind::Gauge), false, at(start, 0));
    // node_load1 is pinned as a gauge: even an agent reporting first cannot make it a counter.
    let fake = metrics_named(
        "fake",
        1,
        &[
            ("node_load1", MetricKind::Counter),
            ("fake_up", MetricKind::Gauge),
        ],
    );
    assert_eq!(
        state.apply(fake, false, at(start, 0)),
        Outcome::Partly {
            conflicts: vec![Conflict {
                name: "node_load1".to_owned(),
                known: MetricKind::Gauge
            }]
        }
    );
    let names: Vec<&str> = state
        .agent("fake")
        .unwrap()
        .families
        .iter()
        .map(|f| f.name())
        .collect();
    assert_eq!(names, ["fake_up"]);
    // An unpinned name has the type of the agents using it.
    let other = metrics_named("b", 1, &[("fake_up", MetricKind::Counter)]);
    assert!(matches!(
        state.apply(other, false, at(start, 0)),
        Outcome::Partly { .. }
    ));
    // The agent alone with a name may change its type.
    let changed = metrics_named("fake", 2, &[("fake_up", MetricKind::Counter)]);
    assert_eq!(state.apply(changed, false, at(start, 1)), Outcome::Accepted);
    // The first agent's series are untouched.
    assert_eq!(
        state.agent("a").unwrap().families[0].kind(),
        MetricKind::Gauge
    );
}

#[tokio::test(start_paused = true)]
async fn a_name_is_released_when_its_last_agent_goes_down() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(
        metrics_named("a", 1, &[("ups_load", MetricKind::Counter)]),
        false,
        at(start, 0),
    );
    assert_eq!(state.claimed_names(), 1);
    // Down after 3 × 15 s of silence: the sweep drops its samples and frees the name.
    assert_ne!(state.interned(), (0, 0));
    state.sweep(start + Duration::from_secs(46));
    assert!(state.agent("a").unwrap().families.is_empty());
    assert_eq!(state.claimed_names(), 0);
    // Nothing stored uses its shape or strings any more: the interner let them go.
    assert_eq!(state.interned(), (0, 0));
    let outcome = state.apply(
        metrics_named("b", 1, &[("ups_load", MetricKind::Gauge)]),
        false,
        at(start, 47),
    );
    assert_eq!(outcome, Outcome::Accepted);
    // A will takes the samples away at once.
    state.apply(status("b", AgentState::Offline, None), false, at(start, 48));
    assert!(state.agent("b").unwrap().families.is_empty());
    assert_eq!(state.claimed_names(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_agents_cannot_push_out_a_live_one() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS).with_max_agents(3);
    state.apply(metrics("real", 1, MetricKind::Gauge), false, at(start, 0));
    state.apply(metrics("fake-1", 1, MetricKind::Gauge), false, at(start, 0));
    state.apply(metrics("fake-2", 1, MetricKind::Gauge), false, at(start, 0));
    assert_eq!(
        state.apply(metrics("fake-3", 1, MetricKind::Gauge), false, at(start, 1)),
        Outcome::Rejected(RejectReason::TooManyAgents)
    );
    assert!(state.agent("fake-3").is_none());
    // The real one keeps reporting; the fakes fall silent and go down.
    state.apply(metrics("real", 2, MetricKind::Gauge), false, at(start, 40));
    assert_eq!(
        state.apply(
            metrics("fake-3", 1, MetricKind::Gauge),
            false,
            at(start, 50)
        ),
        Outcome::Accepted,
        "a down fake made room"
    );
    assert!(state.agent("real").is_some());
    assert_eq!(state.views(start + Duration::from_secs(50)).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn rejections_are_listed_with_the_agents_events_but_apart_from_them() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS).with_max_events(3);
    state.apply(
        events("a", 1, &[("started", Severity::Info)]),
        false,
        at(start, 0),
    );
    for second in 1..=40 {
        state.record_rejection(
            "a",
            MESSAGE_REJECTED,
            "too_many_series",
            "x",
            at(start, second).wall,
        );
    }
    let listed = state.events("a").unwrap();
    assert_eq!(
        listed.len(),
        1 + 3,
        "the agent's event and max_events rejections"
    );
    assert_eq!(listed[0].kind, MESSAGE_REJECTED);
    assert_eq!(
        listed.last().unwrap().kind,
        "started",
        "not pushed out by the flood"
    );
    state.record_rejection(
        "nobody",
        MESSAGE_REJECTED,
        "oversized",
        "x",
        at(start, 0).wall,
    );
    assert!(
        state.agent("nobody").is_none(),
        "a rejection creates no agent"
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
