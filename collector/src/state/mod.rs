//! Per-agent state: what each agent last reported and whether it counts as up.
//!
//! "Up" is derived, never stored: an agent is up when its last status is `online` and its last
//! message is younger than `silent_intervals` of its own interval. Exposition reads it at scrape
//! time, so a silent agent turns down without any timer firing.
//!
//! Pure: every method takes the time as an argument, so tests drive it with paused time. The
//! decoder writes it; the exposition and the API read it through `AgentView`.

mod agent;
mod claims;
mod events;
mod restore;
mod saved;
mod sequence;
mod series;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{
    AgentState, AnyFamily, Decoded, EventsMessage, Message, MetricsMessage, RejectReason, Severity,
    StatusMessage,
};
use tokio::time::Instant;

pub use agent::Agent;
pub use claims::Conflict;
pub use events::EventRecord;
pub use saved::{
    Corrupt, FILE_NAME as ACCOUNTING_FILE, SavedAgent, decode as decode_accounting,
    encode as encode_accounting,
};
#[cfg(test)]
pub use sequence::WINDOW as SEQUENCE_WINDOW;
pub use series::{Label, StoredFamily};
pub use view::AgentView;

use crate::backfill::Replayed;
use claims::Claims;
use sequence::SeqCheck;
use series::{Interner, IntoStored};

use crate::ingest::KnownShape;

/// The state shared by ingest (writer), exposition and the API (readers). Readers hold the
/// lock only to copy out views; no lock is held across an `.await`.
pub type SharedState = Arc<RwLock<State>>;

/// How many recent events each agent keeps unless configured otherwise (`agents.max_events`).
pub const DEFAULT_MAX_EVENTS: usize = 100;

/// How many agents the collector follows unless configured otherwise (`limits.max_agents`).
pub const DEFAULT_MAX_AGENTS: usize = 200;

/// The event kind of the collector's own record of a refused message, in the agent's list.
pub const MESSAGE_REJECTED: &str = "message_rejected";

/// The event kind of the collector's own record of a family left out of a message.
pub const FAMILY_DROPPED: &str = "family_dropped";

/// Longest detail text kept in a rejection event.
const MAX_REJECTION_TEXT: usize = 256;

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
    /// Accepted without the listed families, whose names have another type (Prometheus
    /// cannot expose one name with two types); counted per family.
    Partly {
        conflicts: Vec<Conflict>,
    },
    /// Accepted from below the agent's newest sequence number (its outbox replaying a
    /// backlog): events are kept; the samples are older than those shown and go to the
    /// backfill (`State::take_replayed`).
    Late,
    /// A sequence number already seen (a QoS 1 redelivery): dropped, counted per agent.
    Duplicate,
    /// Refused for a reason only the state can judge (`too_many_agents`,
    /// `sequence_out_of_window`).
    Rejected(RejectReason),
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
    max_agents: usize,
    agents: HashMap<String, Agent>,
    /// The type of every metric name live agents report.
    claims: Claims,
    /// Sequence accounting restored at start, waiting for its agent to be heard from.
    restored: HashMap<String, SavedAgent>,
    /// Samples older than this are history (backfilled), never current; `None`: twice the
    /// agent's interval.
    live_window: Option<Duration>,
    /// History waiting for `take_replayed`: late messages' samples and those older than the
    /// live window.
    replayed: Vec<Replayed>,
    /// The strings and shapes the agents' stored families share.
    interner: Interner,
}

/// What `apply_families` needs of a metrics message besides its families.
struct Header<'a> {
    site: &'a str,
    seq: u64,
    timestamp_ms: i64,
}

/// A state change worth a log line, reported by `sweep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Up { agent: String },
    Down { agent: String },
    Forgotten { agent: String },
}

impl State {
    /// No agents yet; each will keep `DEFAULT_MAX_EVENTS` events and at most
    /// `DEFAULT_MAX_AGENTS` agents are followed, unless `with_max_events` and
    /// `with_max_agents` say otherwise.
    pub fn new(liveness: Liveness) -> Self {
        Self {
            liveness,
            max_events: DEFAULT_MAX_EVENTS,
            max_agents: DEFAULT_MAX_AGENTS,
            agents: HashMap::new(),
            claims: Claims::default(),
            restored: HashMap::new(),
            live_window: None,
            replayed: Vec::new(),
            interner: Interner::default(),
        }
    }

    /// Samples older than `window` are history; without it, older than twice the agent's
    /// interval.
    pub fn with_live_window(mut self, window: Option<Duration>) -> Self {
        self.live_window = window;
        self
    }

    /// The samples of messages applied since the last call that are history, not news:
    /// for the backfill, which sends them with their own timestamps.
    pub fn take_replayed(&mut self) -> Vec<Replayed> {
        std::mem::take(&mut self.replayed)
    }

    /// Keep the last `max_events` events of each agent.
    pub fn with_max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// Follow at most `max_agents` agents.
    pub fn with_max_agents(mut self, max_agents: usize) -> Self {
        self.max_agents = max_agents;
        self
    }

    #[cfg(test)]
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Names claimed by live agents' families (pinned names excluded).
    #[cfg(test)]
    pub fn claimed_names(&self) -> usize {
        self.claims.len()
    }

    /// Agent `id` as readers see it at `now`.
    pub fn view(&self, id: &str, now: Instant) -> Option<AgentView> {
        let agent = self.agents.get(id)?;
        Some(AgentView::new(id, agent, &self.liveness, now))
    }

    /// Every agent as readers see it at `now`, ordered by id.
    pub fn views(&self, now: Instant) -> Vec<AgentView> {
        self.views_where(now, |_, _| true)
    }

    /// Strings and shapes the stored families share.
    pub fn interned(&self) -> (usize, usize) {
        self.interner.sizes()
    }

    /// The agents `keep(id, site)` accepts, as readers see them at `now`, ordered by id.
    pub fn views_where(&self, now: Instant, keep: impl Fn(&str, &str) -> bool) -> Vec<AgentView> {
        let mut views: Vec<AgentView> = self
            .agents
            .iter()
            .filter(|(id, agent)| keep(id, &agent.site))
            .map(|(id, agent)| AgentView::new(id, agent, &self.liveness, now))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Agent `id`'s stored events and the collector's rejections of its messages, newest
    /// first.
    pub fn events(&self, id: &str) -> Option<Vec<EventRecord>> {
        let agent = self.agents.get(id)?;
        let mut records: Vec<EventRecord> = agent
            .recent_events
            .newest_first()
            .chain(agent.rejections.newest_first())
            .cloned()
            .collect();
        // Stable: within one arrival time the agent's own order stays.
        records.sort_by_key(|record| std::cmp::Reverse(record.received));
        Some(records)
    }

    /// Notes a refused message (`kind` `MESSAGE_REJECTED`) or a dropped family
    /// (`FAMILY_DROPPED`) in agent `id`'s event list, labelled with `reason`, so the agent's
    /// operator sees why in the API. Only for an agent already followed: a rejected message
    /// creates no agent.
    pub fn record_rejection(
        &mut self,
        id: &str,
        kind: &str,
        reason: &str,
        detail: &str,
        received: SystemTime,
    ) {
        if let Some(agent) = self.agents.get_mut(id) {
            push_rejection(agent, kind, reason, detail, None, received);
        }
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

    /// Makes sure agent `id` is followed, making room if needed by forgetting the agent that
    /// has been down longest; false when every followed agent is up (a live agent is never
    /// pushed out, however many new ids appear).
    fn admit(&mut self, id: &str, site: &str, now: Instant) -> bool {
        if !self.agents.contains_key(id) && self.agents.len() >= self.max_agents {
            let liveness = self.liveness;
            let oldest_down = self
                .agents
                .iter()
                .filter(|(_, agent)| !agent.is_up(&liveness, now))
                // Ties (agents last active at the same moment) go by id, so which agent
                // makes room does not depend on the map's order.
                .min_by_key(|(id, agent)| (agent.last_activity, *id))
                .map(|(id, _)| id.clone());
            let Some(victim) = oldest_down else {
                return false;
            };
            if let Some(agent) = self.agents.remove(&victim) {
                self.claims.release_all(&agent.families);
            }
        }
        let (liveness, max_events) = (self.liveness, self.max_events);
        let restored = &mut self.restored;
        let agent = self.agents.entry(id.to_owned()).or_insert_with(|| {
            let mut agent = Agent::new(site, &liveness, max_events, now);
            if let Some(saved) = restored.remove(id) {
                restore::take_over(&mut agent, saved);
            }
            agent
        });
        if agent.site != site {
            // An agent moved to another site (its config changed): follow it.
            agent.site = site.to_owned();
        }
        agent.last_activity = now;
        true
    }

    fn apply_status(
        &mut self,
        id: &str,
        status: StatusMessage,
        retained: bool,
        now: Moment,
    ) -> Outcome {
        if !self.admit(id, &status.site, now.instant) {
            return Outcome::Rejected(RejectReason::TooManyAgents);
        }
        let Some(agent) = self.agents.get_mut(id) else {
            return Outcome::Ignored;
        };
        if let (AgentState::Offline, Some(dead), Some(live)) =
            (status.state, status.connected_ms, agent.online_connected_ms)
            && dead < live
        {
            return Outcome::StaleStatus;
        }
        // A birth from a connection newer than the last one known: the agent (re)started while
        // the collector was not listening, and a replayed birth is news after all.
        let new_birth = status.state == AgentState::Online
            && status.connected_ms.is_some()
            && status.connected_ms > agent.online_connected_ms;
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
        // A replayed birth is the agent's last one, perhaps long ago: its next number is news
        // only to a collector that has not followed the agent yet, or that has not seen this
        // birth (restored accounting, a reconnect).
        if let Some(next) = status.next_seq
            && (!retained || !agent.window.started() || new_birth)
        {
            agent.window.announce(next);
        }
        let replayed_online = retained && status.state == AgentState::Online;
        if !retained || (replayed_online && agent.last_seen.is_none()) {
            // A replayed `online` after a collector restart gets a grace period of
            // `silent_intervals` to prove itself instead of showing the agent down at once.
            agent.last_seen = Some(now);
        }
        if !retained {
            agent.messages_total = agent.messages_total.saturating_add(1);
        }
        if agent.status == AgentState::Offline {
            // Down at once: only the liveness series stay.
            let old = std::mem::take(&mut agent.families);
            self.claims.release_all(&old);
        }
        Outcome::Accepted
    }

    fn apply_metrics(&mut self, id: &str, metrics: MetricsMessage, now: Moment) -> Outcome {
        let incoming: Vec<AnyFamily> = metrics
            .families
            .into_iter()
            .map(AnyFamily::Plain)
            .chain(metrics.histograms.into_iter().map(AnyFamily::Histogram))
            .collect();
        let header = Header {
            site: &metrics.site,
            seq: metrics.seq,
            timestamp_ms: metrics.timestamp_ms,
        };
        self.apply_families(id, header, incoming, now)
    }

    /// Applies a metrics message read against agent `topic.agent`'s stored shapes
    /// (`ingest::known_shape`): as `apply` would apply the same message decoded in full.
    pub fn apply_known(
        &mut self,
        topic: &pantau_protocol::Topic,
        known: KnownShape,
        values: &[f64],
        now: Moment,
    ) -> Outcome {
        let id = topic.agent.as_str();
        if !self.admit(id, &topic.site, now.instant) {
            return Outcome::Rejected(RejectReason::TooManyAgents);
        }
        let Some(agent) = self.agents.get_mut(id) else {
            return Outcome::Ignored;
        };
        match sort_metrics(agent, self.live_window, known.seq, known.timestamp_ms, now) {
            Err(outcome) => return outcome,
            Ok(Some(outcome)) => {
                self.replayed.push(Replayed {
                    agent: id.to_owned(),
                    site: agent.site.clone(),
                    timestamp_ms: known.timestamp_ms,
                    families: Arc::new(StoredFamily::all_with_values(&agent.families, values)),
                });
                return outcome;
            }
            Ok(None) => {}
        }
        // The stored shapes stay; only the values change. In place unless a scrape or the
        // backfill still holds the families (then they are shared, and copied once).
        let families: &mut Vec<StoredFamily> = Arc::make_mut(&mut agent.families);
        StoredFamily::overwrite_values(families, values);
        Outcome::Accepted
    }

    /// The families currently stored for agent `id`: what the next message of the same shape
    /// is read against, under the lock that then applies it (none stored reads as no shape).
    pub fn families_of(&self, id: &str) -> Option<&[StoredFamily]> {
        self.agents.get(id).map(|agent| agent.families.as_slice())
    }

    fn apply_families(
        &mut self,
        id: &str,
        metrics: Header,
        incoming: Vec<impl IntoStored>,
        now: Moment,
    ) -> Outcome {
        if !self.admit(id, metrics.site, now.instant) {
            return Outcome::Rejected(RejectReason::TooManyAgents);
        }
        let Some(agent) = self.agents.get_mut(id) else {
            return Outcome::Ignored;
        };
        match sort_metrics(
            agent,
            self.live_window,
            metrics.seq,
            metrics.timestamp_ms,
            now,
        ) {
            Err(outcome) => return outcome,
            Ok(Some(outcome)) => {
                self.replayed.push(Replayed {
                    agent: id.to_owned(),
                    site: agent.site.clone(),
                    timestamp_ms: metrics.timestamp_ms,
                    families: Arc::new(self.interner.store_all(incoming, &agent.families)),
                });
                return outcome;
            }
            Ok(None) => {}
        }
        if claims::same_shape(&agent.families, &incoming) {
            // The steady state: the same names with the same types as last time, so every
            // family is admitted and the claims stay as they are. Skips the name lookups
            // (quadratic in the families) that showed in the ingest profile.
            agent.families = Arc::new(self.interner.store_all(incoming, &agent.families));
            return Outcome::Accepted;
        }
        let (kept, conflicts) = self.claims.admit(&agent.families, incoming);
        self.claims.replace(&agent.families, &kept);
        agent.families = Arc::new(self.interner.store_all(kept, &agent.families));
        match conflicts.is_empty() {
            true => Outcome::Accepted,
            false => Outcome::Partly { conflicts },
        }
    }

    fn apply_events(&mut self, id: &str, events: EventsMessage, now: Moment) -> Outcome {
        if !self.admit(id, &events.site, now.instant) {
            return Outcome::Rejected(RejectReason::TooManyAgents);
        }
        let Some(agent) = self.agents.get_mut(id) else {
            return Outcome::Ignored;
        };
        let outcome = match check_sequence(agent, events.seq, now) {
            SeqCheck::Newest => Outcome::Accepted,
            // Late events are still news: keep them.
            SeqCheck::Late => Outcome::Late,
            SeqCheck::Duplicate => return Outcome::Duplicate,
            SeqCheck::OutOfWindow => {
                return Outcome::Rejected(RejectReason::SequenceOutOfWindow);
            }
        };
        for event in &events.events {
            agent.events_total.add(event.severity);
        }
        agent
            .recent_events
            .push(now.wall, events.timestamp_ms, events.seq, &events.events);
        outcome
    }

    /// Notes up/down transitions, drops the samples of agents that are down (their series
    /// disappear, and names only they used are free again), and forgets agents down for
    /// longer than `forget_after`.
    pub fn sweep(&mut self, now: Instant) -> Vec<Transition> {
        let liveness = self.liveness;
        let claims = &mut self.claims;
        let mut transitions = Vec::new();
        let mut dropped = false;
        self.agents.retain(|id, agent| {
            let up = agent.is_up(&liveness, now);
            if up != agent.was_up {
                agent.was_up = up;
                transitions.push(match up {
                    true => Transition::Up { agent: id.clone() },
                    false => Transition::Down { agent: id.clone() },
                });
            }
            if !up && !agent.families.is_empty() {
                let old = std::mem::take(&mut agent.families);
                claims.release_all(&old);
                dropped = true;
            }
            let idle = now.saturating_duration_since(agent.last_activity);
            let forget = !up && idle > liveness.forget_after;
            if forget {
                transitions.push(Transition::Forgotten { agent: id.clone() });
            }
            !forget
        });
        if dropped {
            // What only the dropped families used goes now, not when the interner has doubled:
            // a fleet that shrinks gives its memory back.
            self.interner.prune();
        }
        transitions
    }
}

/// The sequence and time checks of a metrics message of `agent`, numbered `seq` and taken at
/// `timestamp_ms`: `Err` with the outcome when it is refused or a repeat; `Ok(None)` when it
/// is live; `Ok(Some(outcome))` when it is history (late, or older than the live window),
/// which is replayed and never shown as current: what `/metrics` shows stays the newest live
/// samples.
fn sort_metrics(
    agent: &mut Agent,
    live_window: Option<Duration>,
    seq: u64,
    timestamp_ms: i64,
    now: Moment,
) -> Result<Option<Outcome>, Outcome> {
    let late = match check_sequence(agent, seq, now) {
        SeqCheck::Newest => false,
        SeqCheck::Late => true,
        SeqCheck::Duplicate => return Err(Outcome::Duplicate),
        SeqCheck::OutOfWindow => {
            return Err(Outcome::Rejected(RejectReason::SequenceOutOfWindow));
        }
    };
    let window = live_window.unwrap_or_else(|| agent.interval.saturating_mul(2));
    Ok(match (late, is_history(timestamp_ms, now.wall, window)) {
        (true, _) => Some(Outcome::Late),
        (false, true) => Some(Outcome::Accepted),
        (false, false) => None,
    })
}

/// Whether samples taken at `timestamp_ms` are older than `window` at `now`. A timestamp
/// ahead of the collector's clock counts as live.
fn is_history(timestamp_ms: i64, now: SystemTime, window: Duration) -> bool {
    let now_ms = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    });
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(timestamp_ms) > window_ms
}

/// Checks and records a message's sequence number, counting it as the agent's; for a number
/// outside the window, notes the rejection in the agent's list instead.
fn check_sequence(agent: &mut Agent, seq: u64, now: Moment) -> SeqCheck {
    let check = agent.window.check(seq);
    match check {
        SeqCheck::Newest | SeqCheck::Late => {
            agent.window.record(seq);
            agent.status = AgentState::Online;
            agent.last_seen = Some(now);
            agent.messages_total = agent.messages_total.saturating_add(1);
            if check == SeqCheck::Late {
                agent.late_total = agent.late_total.saturating_add(1);
            }
        }
        SeqCheck::Duplicate => agent.duplicates_total = agent.duplicates_total.saturating_add(1),
        SeqCheck::OutOfWindow => {
            let detail = format!(
                "sequence number {seq} is more than {} away from the newest, {:?}",
                sequence::WINDOW,
                agent.window.newest()
            );
            push_rejection(
                agent,
                MESSAGE_REJECTED,
                RejectReason::SequenceOutOfWindow.as_str(),
                &detail,
                Some(seq),
                now.wall,
            );
        }
    }
    check
}

fn push_rejection(
    agent: &mut Agent,
    kind: &str,
    reason: &str,
    detail: &str,
    seq: Option<u64>,
    received: SystemTime,
) {
    let message: String = detail.chars().take(MAX_REJECTION_TEXT).collect();
    agent.rejections.push_record(EventRecord {
        received,
        timestamp_ms: 0,
        seq: seq.unwrap_or(0),
        kind: kind.to_owned(),
        severity: Severity::Warning,
        message,
        labels: [("reason".to_owned(), reason.to_owned())].into(),
    });
}

#[cfg(test)]
mod tests;
