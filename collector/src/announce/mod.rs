//! Announcements: the collector's side of the sound role. An operator's request becomes one
//! signed `cmd/announce` per target agent, resent until the agent answers (queued, collapsed,
//! rejected) or the announcement expires; the agents' events drive each target's status; the
//! history, the agents' sites and clips, and an audit log live in SQLite (`store`).
//!
//! The decoder hands statuses and events to the `Tap` (a bounded channel, never blocking the
//! decoder); `Announcer::run` applies them and resends what is pending. A sound agent's site
//! is pinned (`sites`), and an event of a scheduled play is believed only where it can be
//! true (`believe`).

pub mod alerts;
pub mod believe;
pub mod config;
pub mod metrics;
mod request;
mod scheduler;
pub mod schedules;
pub mod sites;
mod stopping;
pub mod store;
mod tap;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::sound::{ANNOUNCE, Priority, SCHEDULE};
use pantau_protocol::{CommandMessage, SCHEMA_VERSION, derive_agent_key};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{AnnouncementsConfig, StorageConfig, Zone};
pub use metrics::AnnounceMetrics;
pub use request::AnnouncementRequest;
pub use store::{AnnouncementRow, HistoryFilter, PendingStop, PinnedSite, Store, StoreError};
pub use tap::{Observation, Tap};

use crate::mqtt::MqttHandle;

/// Statuses after which nothing is sent for a target any more.
const PENDING: &str = "pending";

/// Why an announcement request or stop was refused; client errors name the field.
#[derive(Debug, Error)]
pub enum AnnounceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already, or belongs to the config.
    #[error("{0}")]
    Conflict(String),
    /// A target agent has as many unexpired commands as `max_unexpired_per_agent` allows.
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

/// Settings the announcer needs from `[announcements]` and `[mqtt]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    /// The master key; each agent's key is derived from it (`derive_agent_key`).
    pub key: Vec<u8>,
    /// Unexpired announcements (emergencies aside) per agent; beyond, a new one is refused.
    pub max_unexpired_per_agent: u32,
    pub zones: Vec<Zone>,
    pub default_expires: Duration,
    pub resend_interval: Duration,
    /// `[[announcements.schedules]]`: read-only, beside those made through the API.
    pub schedules: Vec<schedules::ScheduleSpec>,
    /// `[[announcements.alert_rules]]`: Alertmanager alerts that are announced.
    pub alert_rules: Vec<alerts::AlertRule>,
    /// History older than this is deleted.
    pub retention: Duration,
    /// `announcements.sites`: agents whose site the config names (agent id to site).
    pub sites: BTreeMap<String, String>,
}

/// Composes, signs, sends and follows announcements.
pub struct Announcer {
    store: Mutex<Store>,
    settings: Settings,
    mqtt: MqttHandle,
    sequence: Mutex<u32>,
    /// `pantau_collector_sound_schedule_version{instance,state}`, when registered.
    schedule_gauge: Option<prometheus::IntGaugeVec>,
    /// Refused announcements, refused events and site moves, when registered.
    metrics: Option<AnnounceMetrics>,
    /// Log lines of refused events, site claims and refused announcements: an agent or a
    /// flood of requests triggers them.
    refusals_log: LogLimiter,
}

impl Announcer {
    pub fn new(store: Store, settings: Settings, mqtt: MqttHandle) -> Self {
        let now_ms = unix_ms(SystemTime::now());
        for (agent, site) in &settings.sites {
            if let Err(error) = store.pin_site(agent, site, now_ms) {
                warn!(%error, agent, site, "cannot pin the site announcements.sites names");
            }
        }
        Self {
            store: Mutex::new(store),
            settings,
            mqtt,
            sequence: Mutex::new(0),
            schedule_gauge: None,
            metrics: None,
            refusals_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Counts refused announcements, refused events and site moves in `metrics`.
    pub fn with_metrics(mut self, metrics: AnnounceMetrics) -> Self {
        if let Ok(waiting) = self.store().claims_waiting() {
            metrics.site_moves_waiting.set(waiting);
        }
        self.metrics = Some(metrics);
        self
    }

    /// Shows each agent's published and applied schedule version in `gauge`.
    pub fn with_schedule_gauge(mut self, gauge: prometheus::IntGaugeVec) -> Self {
        self.schedule_gauge = Some(gauge);
        self
    }

    /// `[[announcements.zones]]`.
    pub fn zones(&self) -> &[Zone] {
        &self.settings.zones
    }

    /// The store, for a short query; never held across an await.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates `request`, stores it with its targets and sends it; returns the stored row.
    pub async fn create(
        &self,
        who: &str,
        request: AnnouncementRequest,
        now: SystemTime,
    ) -> Result<AnnouncementRow, AnnounceError> {
        let now_ms = unix_ms(now);
        let (args, agents) = {
            let store = self.store();
            request.resolve(&self.settings.zones, &store)?
        };
        let expires_ms = now_ms.saturating_add(
            request
                .expires_in_seconds
                .map_or(self.settings.default_expires, Duration::from_secs)
                .as_millis()
                .try_into()
                .unwrap_or(i64::MAX),
        );
        let id = self.next_id(now_ms);
        let targets: Vec<(String, String)> = agents
            .iter()
            .enumerate()
            .map(|(index, agent)| (agent.clone(), format!("{id}-{index}")))
            .collect();
        let mut row = AnnouncementRow {
            id: id.clone(),
            created_ms: now_ms,
            created_by: who.to_owned(),
            expires_ms,
            args: serde_json::to_value(&args).map_err(|error| {
                AnnounceError::Invalid(format!("announcement cannot be encoded: {error}"))
            })?,
            stopped_ms: None,
            schedule: None,
            targets: Vec::new(),
        };
        {
            let store = self.store();
            // Under the same lock as the insert, so concurrent requests cannot both pass.
            if args.priority != Priority::Emergency {
                self.check_cap(&store, who, &agents, now_ms)?;
            }
            store.insert_announcement(&row, &targets)?;
            store.audit(now_ms, who, "announce", &id, &row.args.to_string())?;
            row = store.announcement(&id)?.unwrap_or(row);
        }
        info!(announcement = %id, who, targets = targets.len(), "announcement created");
        for (agent, command_id) in targets {
            self.send(
                &agent,
                &command_id,
                ANNOUNCE,
                row.args.clone(),
                Some(expires_ms),
            )
            .await;
        }
        Ok(row)
    }

    /// Refuses an announcement to an agent that has `max_unexpired_per_agent` unexpired ones:
    /// the agent keeps every id until it expires, and its memory must not fill up.
    fn check_cap(
        &self,
        store: &Store,
        who: &str,
        agents: &[String],
        now_ms: i64,
    ) -> Result<(), AnnounceError> {
        let cap = i64::from(self.settings.max_unexpired_per_agent);
        for agent in agents {
            let unexpired = store.unexpired_announcements(agent, now_ms)?;
            if unexpired < cap {
                continue;
            }
            if let Some(metrics) = &self.metrics {
                metrics.refused(metrics::AGENT_CAP);
            }
            if let Verdict::Log { suppressed } = self.refusals_log.check(agent) {
                warn!(
                    agent,
                    who,
                    unexpired,
                    cap,
                    suppressed,
                    reason = metrics::AGENT_CAP,
                    "announcement refused: the agent has too many unexpired announcements"
                );
            }
            return Err(AnnounceError::TooMany(format!(
                "agent '{agent}' has {unexpired} unexpired announcements, the most \
                 announcements.max_unexpired_per_agent allows ({cap}); wait until some expire, \
                 or give a shorter expires_in_seconds (stops and emergencies are not counted)"
            )));
        }
        Ok(())
    }

    fn next_id(&self, now_ms: i64) -> String {
        let mut sequence = self.sequence.lock().unwrap_or_else(PoisonError::into_inner);
        *sequence = sequence.wrapping_add(1) % 10_000;
        format!("a{now_ms}{:04}", *sequence)
    }

    /// Signs and publishes one command (a schedule retained); true once the broker has it. A
    /// failure is logged and left to the resend.
    pub(super) async fn send(
        &self,
        agent: &str,
        command_id: &str,
        name: &str,
        args: serde_json::Value,
        expires_ms: Option<i64>,
    ) -> bool {
        let site = match self.store().agent(agent) {
            Ok(Some((site, _))) => site,
            Ok(None) => return false,
            Err(error) => {
                warn!(%error, agent, "cannot read the agent's site");
                return false;
            }
        };
        let mut message = CommandMessage {
            schema: SCHEMA_VERSION,
            agent: agent.to_owned(),
            site: site.clone(),
            id: command_id.to_owned(),
            timestamp_ms: unix_ms(SystemTime::now()),
            expires_ms,
            args,
            hmac_version: None,
            hmac: None,
        };
        let key = derive_agent_key(&self.settings.key, agent);
        message.sign(key.as_bytes(), &self.settings.prefix, name);
        let topic = format!("{}/v1/{site}/{agent}/cmd/{name}", self.settings.prefix);
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let retain = name == SCHEDULE;
        match self.mqtt.publish(topic, payload, retain).await {
            Ok(()) => {
                debug!(agent, command_id, name, "command sent");
                if let Err(error) = self.store().count_send(command_id) {
                    warn!(%error, "cannot count a send");
                }
                true
            }
            Err(error) => {
                debug!(%error, agent, command_id, "command not sent; will resend");
                false
            }
        }
    }

    /// Applies what the decoder passed on.
    pub fn observe(&self, observation: Observation, now: SystemTime) {
        let now_ms = unix_ms(now);
        let store = self.store();
        let result = match observation {
            Observation::Status { agent, site, clips } => {
                // A last will names no clips: keep those of the birth.
                let clips = (!clips.is_empty()).then_some(clips.as_slice());
                self.observe_site(&store, &agent, &site, clips, now_ms)
            }
            Observation::Events { agent, events } => {
                // The agent's kept schedule versions, read at the first scheduled-play event
                // and again after it reports taking a version.
                let mut versions = None;
                events.iter().try_for_each(|event| {
                    schedules::apply_event(&store, &agent, event)?;
                    if event.kind == schedules::SCHEDULE_APPLIED {
                        versions = None;
                    }
                    if self.refuse_play(&store, &agent, event, now_ms, &mut versions)? {
                        return Ok(());
                    }
                    tap::apply_event(&store, &agent, event, now_ms, |name| {
                        self.scheduled_args(&store, name)
                    })
                })
            }
        };
        drop(store);
        self.refresh_schedule_gauge();
        if let Err(error) = result {
            warn!(%error, "cannot store an announcement update");
        }
    }

    /// True (counted and logged) if `event` is of a scheduled play that cannot be true.
    fn refuse_play(
        &self,
        store: &Store,
        agent: &str,
        event: &pantau_protocol::Event,
        now_ms: i64,
        versions: &mut Option<Vec<schedules::KeptVersion>>,
    ) -> Result<bool, StoreError> {
        if !event.kind.starts_with("announcement_") {
            return Ok(false);
        }
        let (Some(schedule), Some(play)) = (
            event.labels.get("schedule"),
            event.labels.get("announcement"),
        ) else {
            return Ok(false);
        };
        let versions = match versions {
            Some(versions) => versions,
            None => versions.insert(schedules::kept_versions(store, agent)?),
        };
        let verdict = believe::scheduled_play_of(store, versions, agent, schedule, play, now_ms)?;
        let Err(refusal) = verdict else {
            return Ok(false);
        };
        if let Some(metrics) = &self.metrics {
            metrics.rejected(refusal);
        }
        // Keyed by reason alone: the limiter keeps a window per key, and agent ids come from
        // senders.
        if let Verdict::Log { suppressed } = self.refusals_log.check(refusal.reason()) {
            warn!(agent, schedule = %schedule, play = %play, reason = refusal.reason(), suppressed,
                "event of a scheduled play refused: left out of the history");
        }
        Ok(true)
    }

    /// What schedule entry `name` plays (config first, then the API's), for the history; null
    /// if it is gone (deleted while the agent still played it).
    fn scheduled_args(&self, store: &Store, name: &str) -> serde_json::Value {
        let config = self.settings.schedules.iter().find(|s| s.name == name);
        let spec = match config {
            Some(spec) => Some(spec.clone()),
            None => schedules::stored(store).ok().and_then(|stored| {
                stored
                    .into_iter()
                    .map(|(spec, _)| spec)
                    .find(|spec| spec.name == name)
            }),
        };
        spec.and_then(|spec| serde_json::to_value(spec.announce).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Applies observations and resends pending targets until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut observations: mpsc::Receiver<Observation>,
        shutdown: CancellationToken,
    ) {
        // Every retained schedule is signed again with the current key and signature, so one
        // signed before an upgrade (or with a former master key) does not stay on the broker.
        if let Err(error) = schedules::republish_all(&self.store()) {
            warn!(%error, "cannot mark the schedules for signing again");
        }
        self.sync_schedules(SystemTime::now()).await;
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        let mut resend = tokio::time::interval(self.settings.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                observation = observations.recv() => match observation {
                    Some(observation) => self.observe(observation, SystemTime::now()),
                    None => break,
                },
                _ = prune.tick() => self.prune(SystemTime::now()),
                _ = resend.tick() => {
                    self.resend(SystemTime::now()).await;
                    self.publish_schedules().await;
                }
            }
        }
    }

    /// Deletes history older than the retention.
    pub fn prune(&self, now: SystemTime) {
        let before = now
            .checked_sub(self.settings.retention)
            .unwrap_or(UNIX_EPOCH);
        match self.store().prune(unix_ms(before)) {
            Ok(0) => {}
            Ok(gone) => info!(
                announcements = gone,
                "deleted history past storage.retention_days"
            ),
            Err(error) => warn!(%error, "cannot delete old history"),
        }
        let longest = self
            .settings
            .alert_rules
            .iter()
            .map(|rule| rule.repeat_interval_seconds)
            .max()
            .unwrap_or(0);
        let before = now
            .checked_sub(Duration::from_secs(longest))
            .unwrap_or(UNIX_EPOCH);
        if let Err(error) = self.store().prune_alert_limits(unix_ms(before)) {
            warn!(%error, "cannot prune the alert rate limit");
        }
    }

    /// Sends every pending target and every unanswered stop again, or marks it expired.
    pub async fn resend(&self, now: SystemTime) {
        let now_ms = unix_ms(now);
        self.resend_stops(now_ms).await;
        let pending = match self.store().pending() {
            Ok(pending) => pending,
            Err(error) => {
                warn!(%error, "cannot read pending announcements");
                return;
            }
        };
        for (command_id, agent, announcement) in pending {
            let row = match self.store().announcement(&announcement) {
                Ok(Some(row)) => row,
                _ => continue,
            };
            if now_ms > row.expires_ms {
                let store = self.store();
                if let Err(error) =
                    store.set_status(&command_id, "expired", "expired before delivery", now_ms)
                {
                    warn!(%error, "cannot mark an announcement expired");
                }
                continue;
            }
            self.send(
                &agent,
                &command_id,
                ANNOUNCE,
                row.args,
                Some(row.expires_ms),
            )
            .await;
        }
    }
}
