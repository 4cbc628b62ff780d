//! Per-agent state: what each agent last reported and whether it counts as up.
//!
//! "Up" is derived, never stored: an agent is up when its last status is `online` and its last
//! message is younger than `silent_intervals` of its own interval. Exposition reads it at scrape
//! time, so a silent agent turns down without any timer firing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pantau_protocol::{
    AgentState, Decoded, EventsMessage, Family, Message, MetricKind, MetricsMessage, Severity,
    StatusMessage,
};
use tokio::time::Instant;

/// Settings that decide when an agent is down or forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub silent_intervals: u32,
    pub default_interval: Duration,
    pub forget_after: Duration,
}

/// A moment, on the monotonic clock (for ages) and the wall clock (for display).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Everything known about one agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub site: String,
    /// From the last status message, or `Online` once the agent sends data.
    pub status: AgentState,
    pub interval: Duration,
    pub version: Option<String>,
    /// When a message from the agent last arrived (a retained status replayed by the broker is
    /// not a sign of life and does not count).
    pub last_seen: Option<Moment>,
    /// When anything about the agent last changed, retained messages included; drives forgetting.
    pub last_activity: Instant,
    pub last_seq: Option<u64>,
    pub messages_total: u64,
    pub missed_total: u64,
    pub duplicates_total: u64,
    pub events_total: [u64; 3],
    /// Latest samples; shared with scrapes in progress, replaced whole on each message.
    pub families: Arc<Vec<Family>>,
    /// Whether the last sweep saw the agent up, to log transitions once.
    pub was_up: bool,
    /// `connected_ms` of the last `online` status: an `offline` from an older connection is
    /// stale.
    pub online_connected_ms: Option<i64>,
}

impl Agent {
    fn new(site: &str, liveness: &Liveness, now: Instant) -> Self {
        Self {
            site: site.to_owned(),
            status: AgentState::Offline,
            interval: liveness.default_interval,
            version: None,
            last_seen: None,
            last_activity: now,
            last_seq: None,
            messages_total: 0,
            missed_total: 0,
            duplicates_total: 0,
            events_total: [0; 3],
            families: Arc::new(Vec::new()),
            was_up: false,
            online_connected_ms: None,
        }
    }

    /// Whether the agent counts as up at `now`.
    pub fn is_up(&self, liveness: &Liveness, now: Instant) -> bool {
        let deadline = self.interval * liveness.silent_intervals;
        self.status == AgentState::Online
            && self
                .last_seen
                .is_some_and(|seen| now.saturating_duration_since(seen.instant) <= deadline)
    }

    /// Applies a sequence number; returns false for a repeat of one already seen.
    fn accept_seq(&mut self, seq: u64) -> bool {
        match self.last_seq {
            Some(last) if seq <= last => {
                self.duplicates_total += 1;
                false
            }
            last => {
                let expected = last.map_or(seq, |last| last + 1);
                self.missed_total += seq - expected;
                self.last_seq = Some(seq);
                true
            }
        }
    }
}

/// What happened to a message that passed decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// A sequence number already seen (a QoS 1 redelivery): dropped, counted per agent.
    Duplicate,
    /// A family whose type differs from the type other agents use for that name; the whole
    /// message is refused because Prometheus cannot expose one name with two types.
    TypeConflict {
        name: String,
        known: MetricKind,
    },
    /// An `offline` from a connection older than the agent's current one: the broker gave up
    /// on a half-open connection after the agent had reconnected. Ignored.
    StaleStatus,
    /// A command topic: not for the collector.
    Ignored,
}

/// All agents, by id.
#[derive(Debug)]
pub struct State {
    liveness: Liveness,
    agents: HashMap<String, Agent>,
    /// The type of every metric name any agent reports; the first agent to use a name fixes it.
    metric_types: HashMap<String, MetricKind>,
}

/// A state change worth a log line, reported by `sweep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Up { agent: String },
    Down { agent: String },
    Forgotten { agent: String },
}

impl State {
    pub fn new(liveness: Liveness) -> Self {
        Self {
            liveness,
            agents: HashMap::new(),
            metric_types: HashMap::new(),
        }
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    pub fn agents(&self) -> impl Iterator<Item = (&String, &Agent)> {
        self.agents.iter()
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Applies a decoded message. `retained` marks a message the broker replayed on subscribe.
    pub fn apply(&mut self, decoded: Decoded, retained: bool, now: Moment) -> Outcome {
        let Decoded { topic, message } = decoded;
        match message {
            Message::Status(status) => self.apply_status(&topic.agent, status, retained, now),
            Message::Metrics(metrics) => self.apply_metrics(&topic.agent, metrics, now),
            Message::Events(events) => self.apply_events(&topic.agent, events, now),
            Message::Command(_) => Outcome::Ignored,
        }
    }

    fn entry(&mut self, id: &str, site: &str, now: Instant) -> &mut Agent {
        let liveness = self.liveness;
        let agent = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| Agent::new(site, &liveness, now));
        if agent.site != site {
            // An agent moved to another site (its config changed): follow it.
            agent.site = site.to_owned();
        }
        agent.last_activity = now;
        agent
    }

    fn apply_status(
        &mut self,
        id: &str,
        status: StatusMessage,
        retained: bool,
        now: Moment,
    ) -> Outcome {
        let agent = self.entry(id, &status.site, now.instant);
        if let (AgentState::Offline, Some(dead), Some(live)) =
            (status.state, status.connected_ms, agent.online_connected_ms)
            && dead < live
        {
            return Outcome::StaleStatus;
        }
        if status.state == AgentState::Online && status.connected_ms.is_some() {
            agent.online_connected_ms = status.connected_ms;
        }
        agent.status = status.state;
        if let Some(seconds) = status.interval_seconds.filter(|s| *s > 0) {
            agent.interval = Duration::from_secs(seconds);
        }
        if status.version.is_some() {
            agent.version = status.version;
        }
        if let (Some(next), Some(last)) = (status.next_seq, agent.last_seq)
            && next <= last
        {
            // The agent lost its state directory and counts from a lower number again.
            agent.last_seq = next.checked_sub(1);
        }
        let replayed_online = retained && status.state == AgentState::Online;
        if !retained || (replayed_online && agent.last_seen.is_none()) {
            // A replayed `online` after a collector restart gets a grace period of
            // `silent_intervals` to prove itself instead of showing the agent down at once.
            agent.last_seen = Some(now);
        }
        if !retained {
            agent.messages_total += 1;
        }
        Outcome::Accepted
    }

    fn apply_metrics(&mut self, id: &str, metrics: MetricsMessage, now: Moment) -> Outcome {
        if let Some(conflict) = self.type_conflict(&metrics.families) {
            return conflict;
        }
        for family in &metrics.families {
            if !self.metric_types.contains_key(&family.name) {
                self.metric_types.insert(family.name.clone(), family.kind);
            }
        }
        let agent = self.entry(id, &metrics.site, now.instant);
        if !agent.accept_seq(metrics.seq) {
            return Outcome::Duplicate;
        }
        agent.status = AgentState::Online;
        agent.last_seen = Some(now);
        agent.messages_total += 1;
        agent.families = Arc::new(metrics.families);
        Outcome::Accepted
    }

    fn apply_events(&mut self, id: &str, events: EventsMessage, now: Moment) -> Outcome {
        let agent = self.entry(id, &events.site, now.instant);
        if !agent.accept_seq(events.seq) {
            return Outcome::Duplicate;
        }
        agent.status = AgentState::Online;
        agent.last_seen = Some(now);
        agent.messages_total += 1;
        for event in &events.events {
            agent.events_total[severity_index(event.severity)] += 1;
        }
        Outcome::Accepted
    }

    fn type_conflict(&self, families: &[Family]) -> Option<Outcome> {
        families.iter().find_map(|family| {
            self.metric_types
                .get(&family.name)
                .filter(|known| **known != family.kind)
                .map(|known| Outcome::TypeConflict {
                    name: family.name.clone(),
                    known: *known,
                })
        })
    }

    /// Notes up/down transitions and forgets agents down for longer than `forget_after`.
    pub fn sweep(&mut self, now: Instant) -> Vec<Transition> {
        let liveness = self.liveness;
        let mut transitions = Vec::new();
        self.agents.retain(|id, agent| {
            let up = agent.is_up(&liveness, now);
            if up != agent.was_up {
                agent.was_up = up;
                transitions.push(match up {
                    true => Transition::Up { agent: id.clone() },
                    false => Transition::Down { agent: id.clone() },
                });
            }
            let idle = now.saturating_duration_since(agent.last_activity);
            let forget = !up && idle > liveness.forget_after;
            if forget {
                transitions.push(Transition::Forgotten { agent: id.clone() });
            }
            !forget
        });
        if transitions
            .iter()
            .any(|t| matches!(t, Transition::Forgotten { .. }))
        {
            self.rebuild_metric_types();
        }
        transitions
    }

    /// Names used only by forgotten agents are freed, so a later agent may use them with
    /// another type.
    fn rebuild_metric_types(&mut self) {
        self.metric_types.clear();
        for agent in self.agents.values() {
            for family in agent.families.iter() {
                self.metric_types
                    .entry(family.name.clone())
                    .or_insert(family.kind);
            }
        }
    }
}

/// Index into `Agent::events_total`, in `SEVERITIES` order.
pub fn severity_index(severity: Severity) -> usize {
    match severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// The severities in `Agent::events_total` order.
pub const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

#[cfg(test)]
mod tests {
    use pantau_protocol::{Channel, Sample, Topic};

    use super::*;

    pub(crate) const LIVENESS: Liveness = Liveness {
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
}
