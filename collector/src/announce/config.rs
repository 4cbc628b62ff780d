//! `[announcements]` and `[storage]`: the shared command key, zones, expiry and resend
//! timing, and where the announcement history is kept.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pantau_protocol::validate_id;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;

/// `[announcements]`: what the collector needs to make the sound agents talk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementsConfig {
    /// The master command key. Each sound agent gets its own key derived from it
    /// (`pantau-collector key derive AGENT_ID --key-file THIS_FILE`), its `sound.key_file`.
    /// Without it the announcement API answers 503 and nothing is signed.
    #[serde(default, deserialize_with = "crate::config::empty_path_is_none")]
    pub key_file: Option<PathBuf>,
    /// Named groups of sound agents, targeted as `zones` in an announcement.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Expiry of an announcement that gives no `expires_in_seconds`.
    #[serde(default = "default_expires_in_seconds")]
    pub default_expires_in_seconds: u64,
    /// How often an announcement not yet acknowledged by its agent is sent again (and a
    /// schedule not yet acknowledged by the broker published again).
    #[serde(default = "default_resend_interval_seconds")]
    pub resend_interval_seconds: u64,
    /// Unexpired announcements one agent may have (emergencies and stops are not counted);
    /// beyond it the API answers 429. Keep it well below the agents'
    /// `sound.max_remembered_commands` (20,000 by default).
    #[serde(default = "default_max_unexpired_per_agent")]
    pub max_unexpired_per_agent: u32,
    /// `[[announcements.schedules]]`: reminders from the config, read-only through the API.
    #[serde(default)]
    pub schedules: Vec<super::schedules::ScheduleSpec>,
    /// `[[announcements.alert_rules]]`: Alertmanager alerts announced through
    /// `POST /api/v1/alertmanager`.
    #[serde(default)]
    pub alert_rules: Vec<super::alerts::AlertRule>,
    /// `[announcements.sites]`: sound agent id = site. Commands to such an agent always go to
    /// this site, whatever its status says. Any other agent is pinned to the site of its first
    /// status, and a move waits for an admin on the console's Now page.
    #[serde(default)]
    pub sites: BTreeMap<String, String>,
}

/// `[[announcements.zones]]`: a name for a group of sound agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// Agent ids.
    pub agents: Vec<String>,
}

/// `[storage]`: where the collector keeps what must survive a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the SQLite database (announcement history, audit log, agents' sites);
    /// created if missing. Used only when `announcements.key_file` is set.
    #[serde(default = "default_storage_dir")]
    pub dir: PathBuf,
    /// Announcements and audit rows older than this many days are deleted (checked hourly).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

fn default_retention_days() -> u64 {
    365
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=36_500).contains(&self.retention_days) {
            return Err(ConfigError::invalid(
                "storage.retention_days",
                self.retention_days,
                "must be 1 to 36500",
            ));
        }
        Ok(())
    }
}

fn default_expires_in_seconds() -> u64 {
    300
}

fn default_resend_interval_seconds() -> u64 {
    5
}

fn default_max_unexpired_per_agent() -> u32 {
    1_000
}

fn default_storage_dir() -> PathBuf {
    PathBuf::from("/var/lib/pantau-collector")
}

impl Default for AnnouncementsConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            zones: Vec::new(),
            default_expires_in_seconds: default_expires_in_seconds(),
            resend_interval_seconds: default_resend_interval_seconds(),
            max_unexpired_per_agent: default_max_unexpired_per_agent(),
            schedules: Vec::new(),
            alert_rules: Vec::new(),
            sites: BTreeMap::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: default_storage_dir(),
            retention_days: default_retention_days(),
        }
    }
}

impl AnnouncementsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = super::request::MAX_EXPIRES_IN_SECONDS;
        if !(1..=max).contains(&self.default_expires_in_seconds) {
            return Err(ConfigError::invalid(
                "announcements.default_expires_in_seconds",
                self.default_expires_in_seconds,
                format!("must be 1 to {max}"),
            ));
        }
        if !(1..=3600).contains(&self.resend_interval_seconds) {
            return Err(ConfigError::invalid(
                "announcements.resend_interval_seconds",
                self.resend_interval_seconds,
                "must be 1 to 3600",
            ));
        }
        if !(1..=10_000).contains(&self.max_unexpired_per_agent) {
            return Err(ConfigError::invalid(
                "announcements.max_unexpired_per_agent",
                self.max_unexpired_per_agent,
                "must be 1 to 10000",
            ));
        }
        for (index, zone) in self.zones.iter().enumerate() {
            let field = format!("announcements.zones[{index}]");
            if zone.name.is_empty() || self.zones.iter().filter(|z| z.name == zone.name).count() > 1
            {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    &zone.name,
                    "must be non-empty and unique",
                ));
            }
            if zone.agents.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.agents"),
                    "[]",
                    "must name at least one agent",
                ));
            }
            for agent in &zone.agents {
                validate_id(agent)
                    .map_err(|why| ConfigError::invalid(format!("{field}.agents"), agent, why))?;
            }
        }
        for (index, spec) in self.schedules.iter().enumerate() {
            let field = format!("announcements.schedules[{index}]");
            if self
                .schedules
                .iter()
                .filter(|s| s.name == spec.name)
                .count()
                > 1
            {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    &spec.name,
                    "is used twice",
                ));
            }
            pantau_protocol::schedule::parse_time_zone(&spec.time_zone).map_err(|_| {
                ConfigError::invalid(
                    format!("{field}.time_zone"),
                    &spec.time_zone,
                    "is not an IANA time zone (such as Asia/Jakarta)",
                )
            })?;
            spec.entry()
                .and_then(|_| spec.agents(&self.zones))
                .map_err(|why| ConfigError::invalid(&field, &spec.name, why))?;
        }
        for (index, rule) in self.alert_rules.iter().enumerate() {
            let field = format!("announcements.alert_rules[{index}]");
            rule.validate()
                .map_err(|why| ConfigError::invalid(&field, &rule.name, why))?;
            for zone in &rule.zones {
                if !self.zones.iter().any(|z| &z.name == zone) {
                    return Err(ConfigError::invalid(
                        format!("{field}.zones"),
                        zone,
                        "is not a zone of announcements.zones",
                    ));
                }
            }
        }
        for (agent, site) in &self.sites {
            let field = format!("announcements.sites.{agent}");
            validate_id(agent).map_err(|why| ConfigError::invalid(&field, agent, why))?;
            validate_id(site).map_err(|why| ConfigError::invalid(&field, site, why))?;
        }
        if let Some(path) = &self.key_file {
            pantau_protocol::read_key(path).map_err(|why| {
                ConfigError::invalid("announcements.key_file", path.display(), why)
            })?;
        }
        Ok(())
    }
}
