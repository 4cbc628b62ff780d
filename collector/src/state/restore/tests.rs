//! Accounting across a collector restart: saved, written, read back, restored.

use std::time::{Duration, SystemTime};

use pantau_protocol::{
    AgentState, Channel, Decoded, Message, MetricsMessage, StatusMessage, Topic,
};
use tokio::time::Instant;

use crate::state::sequence::WINDOW;
use crate::state::{
    AgentView, Liveness, Moment, Outcome, State, decode_accounting, encode_accounting,
};

const LIVENESS: Liveness = Liveness {
    silent_intervals: 3,
    default_interval: Duration::from_secs(1),
    forget_after: Duration::from_secs(3600),
};

/// A wall clock far from the epoch, so that "an hour ago" exists.
const EPOCH_OFFSET: Duration = Duration::from_secs(1_700_000_000);

fn at(start: Instant, seconds: u64) -> Moment {
    Moment {
        instant: start + Duration::from_secs(seconds),
        wall: SystemTime::UNIX_EPOCH + EPOCH_OFFSET + Duration::from_secs(seconds),
    }
}

fn metrics(agent: &str, seq: u64) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Metrics),
        message: Message::Metrics(MetricsMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms: 1,
            families: Vec::new(),
            histograms: Vec::new(),
        }),
    }
}

fn birth(agent: &str, next_seq: u64, connected_ms: i64) -> Decoded {
    Decoded {
        topic: Topic::new("dc", agent, Channel::Status),
        message: Message::Status(StatusMessage {
            schema: 1,
            agent: agent.to_owned(),
            site: "dc".to_owned(),
            state: AgentState::Online,
            timestamp_ms: 0,
            interval_seconds: Some(1),
            version: None,
            next_seq: Some(next_seq),
            connected_ms: Some(connected_ms),
            roles: Vec::new(),
            clips: Vec::new(),
        }),
    }
}

fn send(state: &mut State, agent: &str, seqs: impl IntoIterator<Item = u64>, now: Moment) {
    for seq in seqs {
        state.apply(metrics(agent, seq), false, now);
    }
}

/// The collector stops (its accounting written and read back) and a new one starts from it.
fn restart(state: &mut State, now: Moment) -> State {
    let bytes = encode_accounting(&state.accounting(now));
    let mut fresh = State::new(LIVENESS);
    fresh.restore(decode_accounting(&bytes).unwrap(), now);
    fresh
}

fn view(state: &State, agent: &str, now: Moment) -> AgentView {
    state.view(agent, now.instant).unwrap()
}

/// (received, duplicates, late, open gaps, missed)
fn counts(view: &AgentView) -> (u64, u64, u64, u64, u64) {
    (
        view.messages_total,
        view.duplicate_messages_total,
        view.late_messages_total,
        view.sequence_gaps,
        view.missed_messages_total,
    )
}

#[tokio::test(start_paused = true)]
async fn the_accounting_goes_on_where_it_stopped() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(birth("a", 0, 100), false, at(start, 0));
    send(&mut state, "a", [0, 1, 2, 4, 4], at(start, 0));
    let before = counts(&view(&state, "a", at(start, 0)));
    // The birth is a message too.
    assert_eq!(before, (5, 1, 0, 1, 0));

    let mut state = restart(&mut state, at(start, 5));
    assert!(
        state.view("a", start).is_none(),
        "shown only once heard from"
    );
    assert_eq!(state.restored_len(), 1);
    // The retained birth of the agent's last start is replayed on subscribe: old news.
    state.apply(birth("a", 0, 100), true, at(start, 5));
    assert_eq!(counts(&view(&state, "a", at(start, 5))), before);
    assert_eq!(state.restored_len(), 0);
    assert_eq!(
        state.apply(metrics("a", 2), false, at(start, 6)),
        Outcome::Duplicate
    );
    send(&mut state, "a", [5], at(start, 6));
    assert_eq!(counts(&view(&state, "a", at(start, 6))), (6, 2, 0, 1, 0));
    // An agent the old collector never heard of starts from nothing.
    send(&mut state, "b", [7], at(start, 6));
    assert_eq!(counts(&view(&state, "b", at(start, 6))), (1, 0, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_gap_opened_while_the_collector_was_down_is_counted() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    send(&mut state, "a", 0..5, at(start, 0));
    let mut state = restart(&mut state, at(start, 1));
    // 5..10 were published while the collector was down, and lost with its broker.
    send(&mut state, "a", [10], at(start, 20));
    assert_eq!(counts(&view(&state, "a", at(start, 20))), (6, 0, 0, 5, 0));
    // Once the window has passed them, they are missed.
    send(&mut state, "a", 11..=10 + WINDOW, at(start, 21));
    let view = view(&state, "a", at(start, 21));
    assert_eq!((view.sequence_gaps, view.missed_messages_total), (0, 5));

    // Without the saved accounting the same gap would be forgotten: the window would start
    // at 10.
    let mut forgetful = State::new(LIVENESS);
    send(&mut forgetful, "a", [10], at(start, 20));
    assert_eq!(forgetful.view("a", start).unwrap().sequence_gaps, 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_message_after_a_restart_fills_its_gap_once() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    send(&mut state, "a", [0, 1, 2, 3, 4, 8], at(start, 0));
    let mut state = restart(&mut state, at(start, 1));
    // The agent's outbox replays 5..8 behind live data.
    send(&mut state, "a", [9], at(start, 2));
    assert_eq!(
        state.apply(metrics("a", 6), false, at(start, 3)),
        Outcome::Late
    );
    assert_eq!(
        state.apply(metrics("a", 6), false, at(start, 3)),
        Outcome::Duplicate
    );
    send(&mut state, "a", [5, 7], at(start, 3));
    assert_eq!(counts(&view(&state, "a", at(start, 3))), (10, 1, 3, 0, 0));
    // Restarted once more, the filled gap stays filled.
    let mut state = restart(&mut state, at(start, 4));
    assert_eq!(
        state.apply(metrics("a", 5), false, at(start, 5)),
        Outcome::Duplicate
    );
    send(&mut state, "a", 10..=10 + WINDOW, at(start, 5));
    assert_eq!(view(&state, "a", at(start, 5)).missed_messages_total, 0);
}

#[tokio::test(start_paused = true)]
async fn only_agents_the_state_admits_are_restored_and_old_ones_are_dropped() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    send(&mut state, "old", [1], at(start, 0));
    send(&mut state, "a", [1], at(start, 3000));
    send(&mut state, "b", [1], at(start, 3500));
    send(&mut state, "c", [1], at(start, 3600));
    let saved = state.accounting(at(start, 3700));
    assert_eq!(saved.len(), 4);

    // `old` was last heard more than `forget_after` before this start.
    let mut fresh = State::new(LIVENESS).with_max_agents(2);
    assert_eq!(fresh.restore(saved.clone(), at(start, 3700)), 2);
    let ids: Vec<String> = fresh
        .accounting(at(start, 3700))
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, ["b", "c"], "the two most recently active");

    let mut fresh = State::new(LIVENESS);
    assert_eq!(fresh.restore(saved, at(start, 3700)), 3);
    // An entry whose agent never comes back ages out of later saves.
    let later = fresh.accounting(at(start, 3000 + 3601));
    let ids: Vec<&str> = later.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn a_birth_missed_while_the_collector_was_down_is_news() {
    let start = Instant::now();
    let mut state = State::new(LIVENESS);
    state.apply(birth("kept", 0, 100), false, at(start, 0));
    state.apply(birth("reset", 0, 100), false, at(start, 0));
    send(&mut state, "kept", 0..10, at(start, 0));
    send(&mut state, "reset", 0..10, at(start, 0));
    let mut state = restart(&mut state, at(start, 1));

    // Restarted with its state while the collector was down, after sending 10..15 into a
    // broker that lost them: its replayed birth opens that gap.
    state.apply(birth("kept", 15, 200), true, at(start, 20));
    send(&mut state, "kept", [15], at(start, 21));
    // (A replayed birth is not counted as received; the live one before was.)
    assert_eq!(
        counts(&view(&state, "kept", at(start, 21))),
        (12, 0, 0, 5, 0)
    );

    // Restarted without its state (numbering afresh): the window starts over at its birth
    // instead of taking its new numbers for repeats.
    state.apply(birth("reset", 0, 200), true, at(start, 20));
    assert_eq!(
        state.apply(metrics("reset", 0), false, at(start, 21)),
        Outcome::Accepted
    );
    assert_eq!(
        counts(&view(&state, "reset", at(start, 21))),
        (12, 0, 0, 0, 0)
    );
}
