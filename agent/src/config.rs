//! The agent's config: `[agent]` and `[mqtt]`, plus the sections each role owns (`[host]`,
//! `[[probes]]` and `[[links]]`; see `role.rs`). A role is on when its section is present.

use std::path::{Path, PathBuf};

use pantau_runtime::config::{self, ConfigError};
use pantau_runtime::mqtt::{Endpoint, MqttSettings};
use serde::Deserialize;

use crate::host::HostConfig;
use crate::probe::{LinkConfig, ProbeConfig};
use crate::role;
#[cfg(not(feature = "sound"))]
use crate::role::NoSound as SoundConfig;
#[cfg(feature = "sound")]
use crate::sound::SoundConfig;

/// The smallest message limit: the agent's own series (which are never left out) must fit.
const MIN_MESSAGE_BYTES: usize = 8192;

/// Broker used when `mqtt.url` is not set: a collector with its embedded broker on this host.
const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    #[serde(default)]
    pub mqtt: MqttSettings,
    /// Host metrics role (node_exporter-compatible).
    pub host: Option<HostConfig>,
    /// Link probes (ICMP, TCP, HTTP, DNS), each its own `[[probes]]` table.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Links whose interface state is watched, each its own `[[links]]` table.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    /// Sound role: announcements and the reminder schedule.
    pub sound: Option<SoundConfig>,
    /// Device role: UPSes behind a NUT server, each its own `[[ups]]` table.
    #[serde(default)]
    pub ups: Vec<crate::device::UpsConfig>,
    /// Device role: switches and routers polled over SNMP, each its own `[[snmp]]` table.
    #[serde(default)]
    pub snmp: Vec<crate::device::SnmpConfig>,
    /// Where messages wait until the broker acknowledges them.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

/// `[outbox]`: messages are written here before they are published and removed when the
/// broker acknowledges them, so an outage, a crash or a power cut loses nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox's segment files. Default: `<agent.state_dir>/outbox`.
    pub dir: Option<PathBuf>,
    /// Most bytes kept; past it the oldest messages go first (counted). Default 128 MiB: a
    /// day of a server's host metrics every 15 s.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: u64,
    /// Messages older than this are dropped (counted). Default: a day.
    #[serde(default = "default_outbox_max_age_seconds")]
    pub max_age_seconds: u64,
    /// After a reconnect, live messages go first and the backlog drains behind them at most
    /// this many messages a second, so a site coming back does not flood the broker.
    #[serde(default = "default_outbox_drain_messages_per_second")]
    pub drain_messages_per_second: u32,
}

fn default_outbox_drain_messages_per_second() -> u32 {
    50
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: default_outbox_max_bytes(),
            max_age_seconds: default_outbox_max_age_seconds(),
            drain_messages_per_second: default_outbox_drain_messages_per_second(),
        }
    }
}

fn default_outbox_max_bytes() -> u64 {
    128 * 1024 * 1024
}

fn default_outbox_max_age_seconds() -> u64 {
    24 * 3600
}

impl OutboxConfig {
    /// The directory, defaulting to one under `state_dir`.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state_dir.join("outbox"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = self.dir.as_ref().filter(|dir| !dir.is_absolute()) {
            return Err(ConfigError::invalid(
                "outbox.dir",
                dir.display(),
                "must be an absolute path",
            ));
        }
        if !(1024 * 1024..=1024 * 1024 * 1024 * 1024).contains(&self.max_bytes) {
            return Err(ConfigError::invalid(
                "outbox.max_bytes",
                self.max_bytes,
                "must be between 1 MiB (1048576) and 1 TiB",
            ));
        }
        if !(1..=100_000).contains(&self.drain_messages_per_second) {
            return Err(ConfigError::invalid(
                "outbox.drain_messages_per_second",
                self.drain_messages_per_second,
                "must be between 1 and 100000",
            ));
        }
        if !(60..=30 * 24 * 3600).contains(&self.max_age_seconds) {
            return Err(ConfigError::invalid(
                "outbox.max_age_seconds",
                self.max_age_seconds,
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        Ok(())
    }
}

/// `[agent]`: who this agent is and how often it reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Agent id, the `instance` label of its series. Default: the host name.
    pub id: Option<String>,
    /// Site the agent belongs to, the `site` label (e.g. `dc`, `gor-satria`, `office`).
    pub site: String,
    /// Seconds between reports.
    #[serde(default = "default_interval_seconds")]
    pub interval_seconds: u64,
    /// Where the agent keeps state that must survive restarts (its sequence number).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Largest message payload the agent sends. A bigger metrics message is trimmed, its
    /// largest families left out (counted in `pantau_agent_dropped_families_total`), never
    /// split. Keep it at or below the collector's `ingest.max_payload_bytes`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_interval_seconds() -> u64 {
    15
}

fn default_max_message_bytes() -> usize {
    512 * 1024
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/pantau-agent")
}

/// The config after defaults that depend on the machine (host name) are filled in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: AgentConfig,
    pub id: String,
    /// The brokers of `mqtt.url`, in configured order (one unless it is a list).
    pub endpoints: Vec<Endpoint>,
    pub client_id: String,
}

impl AgentConfig {
    /// Reads `path` plus environment overrides, validates, and resolves defaults.
    pub fn load(path: Option<&Path>) -> Result<Resolved, ConfigError> {
        let config: Self = config::load(path, &role::config_sections())?;
        let resolved = config.resolve()?;
        // Files the roles read at start, so `--check-config` catches them too.
        if let Some(sound) = &resolved.config.sound {
            sound.check()?;
        }
        Ok(resolved)
    }

    fn resolve(self) -> Result<Resolved, ConfigError> {
        let id = match &self.agent.id {
            Some(id) => id.clone(),
            None => sysinfo::System::host_name().map_err(|error| {
                ConfigError::invalid(
                    "agent.id",
                    "",
                    format!("is not set and the host name cannot be read ({error}); set agent.id"),
                )
            })?,
        };
        pantau_protocol::validate_id(&id).map_err(|why| {
            let field = match self.agent.id {
                Some(_) => "agent.id",
                None => "agent.id (default: the host name)",
            };
            ConfigError::invalid(field, &id, why)
        })?;
        pantau_protocol::validate_id(&self.agent.site)
            .map_err(|why| ConfigError::invalid("agent.site", &self.agent.site, why))?;
        if !pantau_protocol::INTERVAL_SECONDS.contains(&self.agent.interval_seconds) {
            return Err(ConfigError::invalid(
                "agent.interval_seconds",
                self.agent.interval_seconds,
                "must be between 1 and 3600",
            ));
        }
        if !self.agent.state_dir.is_absolute() {
            return Err(ConfigError::invalid(
                "agent.state_dir",
                self.agent.state_dir.display(),
                "must be an absolute path",
            ));
        }
        if !(MIN_MESSAGE_BYTES..=64 * 1024 * 1024).contains(&self.agent.max_message_bytes) {
            return Err(ConfigError::invalid(
                "agent.max_message_bytes",
                self.agent.max_message_bytes,
                format!("must be between {MIN_MESSAGE_BYTES} and 67108864"),
            ));
        }
        self.mqtt.validate()?;
        if let Some(host) = &self.host {
            host.validate()?;
        }
        crate::probe::validate(&self.probes, &self.links, self.agent.interval_seconds)?;
        crate::device::validate(&self.ups, &self.snmp)?;
        if let Some(sound) = &self.sound {
            sound.validate()?;
        }
        self.outbox.validate()?;
        if let Some(sites) = &self.mqtt.sites {
            return Err(ConfigError::invalid(
                "mqtt.sites",
                format!("{sites:?}"),
                "is a collector setting; an agent reports its own agent.site",
            ));
        }
        let endpoints = match &self.mqtt.url {
            Some(urls) => self.mqtt.endpoints(urls)?,
            None => self.mqtt.endpoints(&DEFAULT_MQTT_URL.into())?,
        };
        let client_id = self
            .mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("pantau-agent-{id}"));
        Ok(Resolved {
            config: self,
            id,
            endpoints,
            client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn load(path: &Path) -> Result<Resolved, ConfigError> {
        config::load::<AgentConfig>(Some(path), &role::config_sections())?.resolve()
    }

    /// Every agent example in configs/ must load.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut checked = 0;
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("agent-") && name.ends_with(".toml") {
                if cfg!(not(feature = "sound")) && has_sound_section(&path) {
                    assert_refused_without_sound(&path);
                } else {
                    load(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
                }
                checked += 1;
            }
        }
        assert!(checked >= 3, "only {checked} agent configs in configs/");
    }

    #[test]
    fn invalid_configs_produce_their_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
        // Without the sound role, a `[sound]` section is refused before its keys are read.
        let copy = tempfile::tempdir().unwrap();
        let dir = if cfg!(feature = "sound") {
            dir
        } else {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if has_sound_section(&path) {
                    assert_refused_without_sound(&path);
                } else {
                    fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
                }
            }
            copy.path().to_owned()
        };
        let checked = config::check_invalid_configs(&dir, |path| load(path).map(|_| ())).unwrap();
        assert!(checked >= 5, "only {checked} invalid configs found");
    }

    fn has_sound_section(path: &Path) -> bool {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .any(|line| line.trim() == "[sound]")
    }

    fn assert_refused_without_sound(path: &Path) {
        let error = load(path).map(|_| ()).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "sound: '[sound]' needs a pantau-agent built with the `sound` feature"
            ),
            "{}: {error}",
            path.display()
        );
    }

    #[test]
    fn defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        fs::write(&path, "[agent]\nsite = \"dc\"\nid = \"dc-srv-01\"\n").unwrap();
        let resolved = load(&path).unwrap();
        assert_eq!(resolved.id, "dc-srv-01");
        assert_eq!(resolved.client_id, "pantau-agent-dc-srv-01");
        assert_eq!(resolved.endpoints[0].port, 1883);
        assert_eq!(resolved.config.agent.interval_seconds, 15);
        assert!(resolved.config.host.is_none());
    }
}
