//! Per-agent state: what each agent last reported and whether it counts as up.
//!
//! "Up" is derived, never stored: an agent is up when its last status is `online` and its last
//! message is younger than `silent_intervals` of its own interval. Exposition reads it at scrape
//! time, so a silent agent turns down without any timer firing.
//!
//! Pure: every method takes the time as an argument, so tests drive it with paused time. The
//! decoder writes it; the exposition and the API read it through `AgentView`.

mod agent;
mod events;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use pantau_protocol::{
    AgentState, Decoded, EventsMessage, Family, Message, MetricKind, MetricsMessage, StatusMessage,
};
use tokio::time::Instant;

pub use agent::Agent;
pub use events::EventRecord;
pub use view::AgentView;

/// The state shared by ingest (writer), exposition and the API (readers). Readers hold the
/// lock only to copy out views; no lock is held across an `.await`.
pub type SharedState = Arc<RwLock<State>>;

/// How many recent events each agent keeps unless configured otherwise (`agents.max_events`).
pub const DEFAULT_MAX_EVENTS: usize = 100;

/// Settings that decide when an agent is down or forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// An agent is down after this many of its intervals without a message.
    pub silent_intervals: u32,
    /// The interval assumed before an agent's birth names its own.
    pub default_interval: Duration,
    /// How long a down agent is remembered.
    pub forget_after: Duration,
}

/// A moment, on the monotonic clock (for ages) and the wall clock (for display).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Moment {
    /// Both clocks, read now.
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
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
    max_events: usize,
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
    /// No agents yet; each will keep `DEFAULT_MAX_EVENTS` events unless `with_max_events`
    /// says otherwise.
    pub fn new(liveness: Liveness) -> Self {
        Self {
            liveness,
            max_events: DEFAULT_MAX_EVENTS,
            agents: HashMap::new(),
            metric_types: HashMap::new(),
        }
    }

    /// Keep the last `max_events` events of each agent.
    pub fn with_max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    #[cfg(test)]
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Agent `id` as readers see it at `now`.
    pub fn view(&self, id: &str, now: Instant) -> Option<AgentView> {
        let agent = self.agents.get(id)?;
        Some(AgentView::new(id, agent, &self.liveness, now))
    }

    /// Every agent as readers see it at `now`, ordered by id.
    pub fn views(&self, now: Instant) -> Vec<AgentView> {
        let mut views: Vec<AgentView> = self
            .agents
            .iter()
            .map(|(id, agent)| AgentView::new(id, agent, &self.liveness, now))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Agent `id`'s stored events, newest first.
    pub fn events(&self, id: &str) -> Option<Vec<EventRecord>> {
        let agent = self.agents.get(id)?;
        Some(agent.recent_events.newest_first().cloned().collect())
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
        let (liveness, max_events) = (self.liveness, self.max_events);
        let agent = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| Agent::new(site, &liveness, max_events, now));
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
        if !status.roles.is_empty() {
            agent.roles = status.roles;
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
            agent.events_total.add(event.severity);
        }
        agent
            .recent_events
            .push(now.wall, events.timestamp_ms, events.seq, &events.events);
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

#[cfg(test)]
mod tests;
