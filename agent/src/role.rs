//! The seam every role plugs into. A role owns top-level config keys, may start background
//! work, contributes its latest families to the one metrics message per interval, can push
//! events that are published at once, and can claim command names: a message on
//! `<prefix>/v1/<site>/<agent>/cmd/<name>` reaches the role that claimed `<name>`.
//!
//! Adding a role means a folder, a `RoleKind` and a `Role` variant; the compiler then points at
//! every match below that must learn it, and the config keys it owns become overridable by
//! environment variables without a hand-kept list.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pantau_protocol::{AnyFamily, Command, CommandRejection, Event};
use pantau_runtime::config::ConfigError;
use pantau_runtime::supervise::Supervisor;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

use crate::config::AgentConfig;
use crate::device::DeviceRole;
use crate::host::HostRole;
use crate::probe::{ProbeRole, StartError};
#[cfg(feature = "sound")]
use crate::sound::SoundRole;

/// Why the roles cannot start.
#[derive(Debug, Error)]
pub enum RoleError {
    #[error(transparent)]
    Probe(#[from] StartError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A kind of role, named as in the birth message and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// Host metrics under node_exporter's names (`[host]`).
    Host,
    /// Link probes and link state (`[[probes]]`, `[[links]]`).
    Probe,
    /// Announcements and the reminder schedule on the office sound system (`[sound]`).
    Sound,
    /// Equipment that cannot run an agent, polled from this one (`[[ups]]`, `[[snmp]]`).
    Device,
}

impl RoleKind {
    pub const ALL: [RoleKind; 4] = [
        RoleKind::Host,
        RoleKind::Probe,
        RoleKind::Sound,
        RoleKind::Device,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Host => "host",
            RoleKind::Probe => "probe",
            RoleKind::Sound => "sound",
            RoleKind::Device => "device",
        }
    }

    /// The top-level config keys the role owns; the role is on when one of them is present.
    pub fn config_keys(self) -> &'static [&'static str] {
        match self {
            RoleKind::Host => &["host"],
            RoleKind::Probe => &["probes", "links"],
            RoleKind::Sound => &["sound"],
            RoleKind::Device => &["ups", "snmp"],
        }
    }

    /// The command names the role claims.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            RoleKind::Host => HostRole::COMMANDS,
            RoleKind::Probe | RoleKind::Device => &[],
            #[cfg(feature = "sound")]
            RoleKind::Sound => SoundRole::COMMANDS,
            #[cfg(not(feature = "sound"))]
            RoleKind::Sound => &[],
        }
    }

    /// Whether the role refuses repeated command ids itself (as `replayed`, remembered on
    /// disk), instead of the dispatcher answering a repeat from memory.
    pub fn checks_replays(self) -> bool {
        match self {
            RoleKind::Host | RoleKind::Probe | RoleKind::Device => false,
            RoleKind::Sound => true,
        }
    }
}

/// One running role.
pub enum Role {
    Host(HostRole),
    Probe(ProbeRole),
    #[cfg(feature = "sound")]
    Sound(Box<SoundRole>),
    Device(DeviceRole),
}

impl Role {
    /// Every role the config switches on. Fails when a role cannot work on this machine
    /// at all (no ICMP socket for the probes); call it inside the runtime.
    pub fn from_config(config: &AgentConfig) -> Result<Vec<Role>, RoleError> {
        let mut roles = Vec::new();
        if let Some(host) = &config.host {
            roles.push(Role::Host(HostRole::new(host)));
        }
        if !config.probes.is_empty() || !config.links.is_empty() {
            roles.push(Role::Probe(ProbeRole::new(
                &config.probes,
                &config.links,
                config.agent.interval_seconds,
            )?));
        }
        #[cfg(feature = "sound")]
        if let Some(sound) = &config.sound {
            let role = SoundRole::new(sound, &config.agent.state_dir)?;
            roles.push(Role::Sound(Box::new(role)));
        }
        if !config.ups.is_empty() || !config.snmp.is_empty() {
            roles.push(Role::Device(DeviceRole::new(
                &config.ups,
                &config.snmp,
                config.agent.interval_seconds,
            )?));
        }
        Ok(roles)
    }

    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Host(_) => RoleKind::Host,
            Role::Probe(_) => RoleKind::Probe,
            #[cfg(feature = "sound")]
            Role::Sound(_) => RoleKind::Sound,
            Role::Device(_) => RoleKind::Device,
        }
    }

    /// Starts the role's background work, as essential tasks of `supervisor`.
    pub fn start(&mut self, context: &RoleContext, supervisor: &mut Supervisor) {
        match self {
            Role::Host(role) => role.start(context, supervisor),
            Role::Probe(role) => role.start(context, supervisor),
            #[cfg(feature = "sound")]
            Role::Sound(role) => role.start(context, supervisor),
            Role::Device(role) => role.start(context, supervisor),
        }
    }

    /// The role's latest families, for this interval's metrics message.
    pub async fn collect(&mut self) -> Vec<AnyFamily> {
        match self {
            Role::Host(role) => role
                .collect()
                .await
                .into_iter()
                .map(AnyFamily::from)
                .collect(),
            Role::Probe(role) => role.collect(),
            #[cfg(feature = "sound")]
            Role::Sound(role) => role.families().into_iter().map(AnyFamily::from).collect(),
            Role::Device(role) => role.collect(),
        }
    }

    /// Carries out `command` (whose name this role claims); `Ok` holds the text of the
    /// `command_completed` answer.
    pub async fn handle(&mut self, command: &Command) -> Result<String, CommandRejection> {
        match self {
            Role::Host(role) => role.handle(command),
            Role::Probe(_) | Role::Device(_) => Err(CommandRejection::of(
                command,
                pantau_protocol::CommandRejectReason::UnknownCommand,
                "this role claims no commands",
            )),
            #[cfg(feature = "sound")]
            Role::Sound(role) => role.handle(command),
        }
    }

    /// The audio clips the role offers, announced in the birth message.
    pub fn clips(&self) -> Vec<String> {
        match self {
            #[cfg(feature = "sound")]
            Role::Sound(role) => role.clips(),
            Role::Host(_) | Role::Probe(_) | Role::Device(_) => Vec::new(),
        }
    }
}

/// `[sound]` read by an agent built without the sound role (`--no-default-features`): kept so
/// the error names the section instead of calling it an unknown key.
#[cfg(not(feature = "sound"))]
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NoSound(serde::de::IgnoredAny);

#[cfg(not(feature = "sound"))]
impl NoSound {
    pub fn validate(&self) -> Result<(), ConfigError> {
        Err(ConfigError::invalid(
            "sound",
            "[sound]",
            "needs a pantau-agent built with the `sound` feature (the default); this one was built with --no-default-features",
        ))
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

/// The top-level config keys: the agent's own (`agent`, `mqtt`, `outbox`) plus every role's.
pub fn config_sections() -> Vec<&'static str> {
    let mut sections = vec!["agent", "mqtt", "outbox"];
    for kind in RoleKind::ALL {
        sections.extend_from_slice(kind.config_keys());
    }
    sections
}

/// What a role may use to reach the rest of the agent.
#[derive(Clone)]
pub struct RoleContext {
    pub events: EventSender,
    pub report_now: ReportTrigger,
}

/// Pushes events that are published at once, not at the next tick.
#[derive(Clone)]
pub struct EventSender {
    sender: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    pub fn new(sender: mpsc::Sender<Event>) -> Self {
        Self {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `event` without waiting; a burst beyond the queue is dropped and logged.
    pub fn emit(&self, event: Event) {
        if self.sender.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(dropped, "event queue full, events dropped");
            }
        }
    }
}

/// Asks for a metrics message now, out of cadence (at most one a second).
#[derive(Clone, Default)]
pub struct ReportTrigger(Arc<Notify>);

impl ReportTrigger {
    pub fn request(&self) {
        self.0.notify_one();
    }

    pub async fn requested(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a role claims must be a field of `AgentConfig`, or it could neither be set
    /// in a file nor overridden.
    #[test]
    fn every_role_key_is_a_config_field() {
        for section in config_sections() {
            let mut value = serde_json::json!({"agent": {"site": "dc"}});
            value[section] = serde_json::Value::Null;
            if let Err(error) = serde_json::from_value::<AgentConfig>(value) {
                assert!(
                    !error.to_string().contains("unknown field"),
                    "{section}: {error}"
                );
            }
        }
    }

    #[test]
    fn command_names_are_valid_and_claimed_once() {
        let mut seen = std::collections::HashSet::new();
        for kind in RoleKind::ALL {
            for name in kind.commands() {
                pantau_protocol::validate_command_name(name).unwrap();
                assert!(seen.insert(*name), "{name} claimed twice");
            }
        }
    }
}
