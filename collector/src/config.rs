//! The collector's config: `[http]`, `[broker]`, `[mqtt]`, `[ingest]`, `[agents]`,
//! `[limits]` and `[enrolment]`, parsed and validated once at start.

mod security;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pantau_protocol::Limits;
use pantau_runtime::config::{self, ConfigError};
use pantau_runtime::mqtt::{Endpoint, MqttSettings};
use serde::Deserialize;

pub use crate::announce::{AnnouncementsConfig, StorageConfig};
pub use crate::api::ApiConfig;
pub use crate::backfill::RemoteWriteConfig;
pub use security::SecurityConfig;

/// Sections that `PANTAU_<SECTION>__<KEY>` may override.
const SECTIONS: &[&str] = &[
    "http",
    "broker",
    "mqtt",
    "ingest",
    "agents",
    "limits",
    "api",
    "announcements",
    "storage",
    "console",
    "remote_write",
    "sensors",
    "security",
    "enrolment",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub mqtt: MqttSettings,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub announcements: AnnouncementsConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub console: crate::console::ConsoleConfig,
    #[serde(default)]
    pub remote_write: RemoteWriteConfig,
    /// Room sensors read from MQTT directly, each its own `[[sensors]]` table.
    #[serde(default)]
    pub sensors: Vec<crate::sensors::SensorRule>,
    #[serde(default)]
    pub security: SecurityConfig,
    /// What `init` writes and `agent add|remove|list` and `cert renew` read; the service
    /// does not use it.
    #[serde(default)]
    pub enrolment: Option<EnrolmentConfig>,
}

/// `[http]`: the Prometheus endpoint and the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz` and `/api/v1/`.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); needs `tls_key_file`.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Bearer tokens that may read `/metrics`, one per line (as Prometheus's `authorization`
    /// sends them). Without it `/metrics` is open, as `/healthz` and `/readyz` always are.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// A request's head must arrive within this many seconds of its first byte (of the
    /// connection's start, for the first request), and its body within this time again; an
    /// HTTPS client must finish its TLS handshake within it too. Otherwise the connection is
    /// closed: a client sending a byte at a time cannot hold it.
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// A kept-alive connection with no request, or a response that does not move (a client
    /// that stops reading), is closed after this many seconds.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// Most HTTP connections open at once; more are closed at accept (plain HTTP with a 503).
    /// Kept below the open-file limit, which the collector raises to its hard limit at start.
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
    /// Most HTTP connections open at once from one remote address (IPv6: one /64), so one
    /// client cannot take every slot of `max_connections`.
    #[serde(default = "default_http_max_connections_per_address")]
    pub max_connections_per_address: usize,
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 4] = [
            (
                "http.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                1,
                300,
            ),
            (
                "http.idle_timeout_seconds",
                self.idle_timeout_seconds,
                1,
                3600,
            ),
            (
                "http.max_connections",
                self.max_connections as u64,
                1,
                1_000_000,
            ),
            (
                "http.max_connections_per_address",
                self.max_connections_per_address as u64,
                1,
                1_000_000,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        if self.max_connections_per_address > self.max_connections {
            return Err(ConfigError::invalid(
                "http.max_connections_per_address",
                self.max_connections_per_address,
                format!(
                    "must be at most http.max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        Ok(())
    }
}

/// `[broker]`: the MQTT broker built into the collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Run an MQTT broker in this process, so one machine needs nothing else. Set to false to
    /// use an external broker (Mosquitto, EMQX) named by `mqtt.url`, as every deployment with
    /// agents on other machines must.
    #[serde(default = "default_true")]
    pub embedded: bool,
    /// Where the embedded broker accepts agents: a loopback address only, since it serves
    /// agents on this machine (a LAN uses Mosquitto, README "The LAN broker: Mosquitto").
    #[serde(default = "default_broker_listen")]
    pub listen: SocketAddr,
    /// Largest MQTT packet, one setting for both ends: the embedded broker refuses bigger
    /// publishes (closing the sender's connection), and the collector's own client accepts
    /// packets up to this size (with an external broker, set the broker's own limit, e.g.
    /// Mosquitto's `max_packet_size`, to the same value). Must exceed
    /// `ingest.max_payload_bytes` by 64 KiB, so an oversized payload still reaches the collector
    /// and is counted instead of breaking its connection.
    #[serde(default = "default_broker_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Most simultaneous client connections the embedded broker admits.
    #[serde(default = "default_broker_max_connections")]
    pub max_connections: usize,
    /// Memory the embedded broker keeps of the agents' messages on their way to the collector
    /// (rumqttd's in-memory log for the collector's subscription). rumqttd acknowledges a
    /// publish once it is in this log and, when the log is full, drops its oldest part, read
    /// or not: a burst the collector falls further behind on than this is lost. The log fills
    /// up with ordinary traffic and stays full, so this is memory the collector holds.
    #[serde(default = "default_broker_max_buffer_bytes")]
    pub max_buffer_bytes: usize,
    /// Who may log in to the embedded broker: a file in Mosquitto's `mosquitto_passwd` format
    /// (README, "Security"), for several local users on one host. An empty value means none:
    /// then any process on this machine may connect.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub password_file: Option<PathBuf>,
    /// Let clients connect without logging in; says explicitly what no `password_file` means.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Removed: the embedded broker's TLS listener. Read only to be refused with a pointer to
    /// Mosquitto instead of serde's bare "unknown field".
    #[serde(default)]
    pub tls_listen: Option<RemovedValue>,
    /// Removed, as `tls_listen`.
    #[serde(default)]
    pub tls_cert_file: Option<RemovedValue>,
    /// Removed, as `tls_listen`.
    #[serde(default)]
    pub tls_key_file: Option<RemovedValue>,
    /// Removed, as `tls_listen`.
    #[serde(default)]
    pub tls_client_ca_file: Option<RemovedValue>,
}

impl BrokerConfig {
    /// The first removed key that is set, with its value.
    fn removed_key(&self) -> Option<(&'static str, &str)> {
        [
            ("broker.tls_listen", &self.tls_listen),
            ("broker.tls_cert_file", &self.tls_cert_file),
            ("broker.tls_key_file", &self.tls_key_file),
            ("broker.tls_client_ca_file", &self.tls_client_ca_file),
        ]
        .into_iter()
        .find_map(|(field, value)| value.as_ref().map(|value| (field, value.0.as_str())))
    }
}

/// A removed key's value, as text, whatever its type.
#[derive(Debug, Clone)]
pub struct RemovedValue(String);

impl<'de> Deserialize<'de> for RemovedValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = RemovedValue;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a value")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RemovedValue, E> {
                Ok(RemovedValue(value.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RemovedValue, E> {
                Ok(RemovedValue(value.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<RemovedValue, E> {
                Ok(RemovedValue(value.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<RemovedValue, E> {
                Ok(RemovedValue(value.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// An empty string (e.g. `PANTAU_BROKER__PASSWORD_FILE=`) switches an optional path off.
pub(crate) fn empty_path_is_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    let path: Option<PathBuf> = Option::deserialize(deserializer)?;
    Ok(path.filter(|path| !path.as_os_str().is_empty()))
}

/// `[ingest]`: limits on what agents send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Payloads larger than this are rejected with reason `oversized`.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Messages waiting between the MQTT connection and decoding; when full, new messages are
    /// dropped and counted rather than stalling the connection's keep-alive.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

/// `[agents]`: when an agent counts as down or is forgotten.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// An agent is down after this many of its intervals without a message.
    #[serde(default = "default_silent_intervals")]
    pub silent_intervals: u32,
    /// Interval assumed for an agent whose birth message has not been seen.
    #[serde(default = "default_interval_seconds")]
    pub default_interval_seconds: u64,
    /// A down agent's `pantau_agent_up 0` series stays this long, then the agent is forgotten.
    #[serde(default = "default_forget_after_seconds")]
    pub forget_after_seconds: u64,
    /// Recent events kept per agent for `/api/v1/agents/{id}/events`; older ones are dropped
    /// (they stay counted in `pantau_agent_events_total`).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

/// `[limits]`: how much any one message, agent or all agents together may make the collector
/// store. What exceeds a limit is refused, counted in
/// `pantau_collector_rejected_messages_total{reason}` and noted in the agent's events. The
/// defaults keep the worst case near 550 MiB (BENCHMARKS.md, "Collector memory per series").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most agents followed at once. A new agent is refused (`too_many_agents`) unless one
    /// that is down can be forgotten to make room; an agent that is up is never pushed out.
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
    /// Most series in one metrics message, that is per agent, since each message replaces
    /// the agent's series (`too_many_series`).
    #[serde(default = "default_max_series_per_agent")]
    pub max_series_per_agent: usize,
    /// Longest metric name or event kind (`metric_name_too_long`).
    #[serde(default = "default_max_metric_name_bytes")]
    pub max_metric_name_bytes: usize,
    /// Longest label name (`label_name_too_long`).
    #[serde(default = "default_max_label_name_bytes")]
    pub max_label_name_bytes: usize,
    /// Longest label value (`label_value_too_long`).
    #[serde(default = "default_max_label_value_bytes")]
    pub max_label_value_bytes: usize,
    /// Most labels on one series or event (`too_many_labels`).
    #[serde(default = "default_max_labels_per_series")]
    pub max_labels_per_series: usize,
    /// Most events in one events message (`too_many_events`).
    #[serde(default = "default_max_events_per_message")]
    pub max_events_per_message: usize,
    /// Longest event text (`event_message_too_long`).
    #[serde(default = "default_max_event_message_bytes")]
    pub max_event_message_bytes: usize,
}

fn default_max_agents() -> usize {
    crate::state::DEFAULT_MAX_AGENTS
}

fn default_max_series_per_agent() -> usize {
    Limits::default().max_series_per_message
}

fn default_max_metric_name_bytes() -> usize {
    Limits::default().max_metric_name_bytes
}

fn default_max_label_name_bytes() -> usize {
    Limits::default().max_label_name_bytes
}

fn default_max_label_value_bytes() -> usize {
    Limits::default().max_label_value_bytes
}

fn default_max_labels_per_series() -> usize {
    Limits::default().max_labels_per_series
}

fn default_max_events_per_message() -> usize {
    Limits::default().max_events_per_message
}

fn default_max_event_message_bytes() -> usize {
    Limits::default().max_event_message_bytes
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_agents: default_max_agents(),
            max_series_per_agent: default_max_series_per_agent(),
            max_metric_name_bytes: default_max_metric_name_bytes(),
            max_label_name_bytes: default_max_label_name_bytes(),
            max_label_value_bytes: default_max_label_value_bytes(),
            max_labels_per_series: default_max_labels_per_series(),
            max_events_per_message: default_max_events_per_message(),
            max_event_message_bytes: default_max_event_message_bytes(),
        }
    }
}

impl LimitsConfig {
    /// Each limit with the smallest value that still lets a real agent work (node_exporter's
    /// longest names and label sets fit) and the largest that keeps a bound meaningful.
    fn ranges(&self) -> [(&'static str, usize, usize, usize); 8] {
        [
            ("limits.max_agents", self.max_agents, 1, 100_000),
            (
                "limits.max_series_per_agent",
                self.max_series_per_agent,
                10,
                1_000_000,
            ),
            (
                "limits.max_metric_name_bytes",
                self.max_metric_name_bytes,
                32,
                4096,
            ),
            (
                "limits.max_label_name_bytes",
                self.max_label_name_bytes,
                16,
                1024,
            ),
            (
                "limits.max_label_value_bytes",
                self.max_label_value_bytes,
                16,
                65_536,
            ),
            (
                "limits.max_labels_per_series",
                self.max_labels_per_series,
                4,
                256,
            ),
            (
                "limits.max_events_per_message",
                self.max_events_per_message,
                1,
                10_000,
            ),
            (
                "limits.max_event_message_bytes",
                self.max_event_message_bytes,
                64,
                65_536,
            ),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value, min, max) in self.ranges() {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9810))
}

fn default_header_read_timeout_seconds() -> u64 {
    10
}

fn default_idle_timeout_seconds() -> u64 {
    60
}

fn default_http_max_connections() -> usize {
    2048
}

fn default_http_max_connections_per_address() -> usize {
    128
}

fn default_broker_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

fn default_broker_max_packet_bytes() -> usize {
    1024 * 1024
}

/// Where the README tells how to set up Mosquitto for agents on other machines.
const LAN_BROKER_DOCS: &str = "README, \"Security\": \"The LAN broker: Mosquitto\"";

/// Room for the topic and MQTT header on top of the largest payload the collector accepts.
const PACKET_HEADROOM_BYTES: usize = 64 * 1024;

fn default_broker_max_buffer_bytes() -> usize {
    256 * 1024 * 1024
}

fn default_broker_max_connections() -> usize {
    10_000
}

fn default_max_payload_bytes() -> usize {
    Limits::default().max_payload_bytes
}

fn default_queue_capacity() -> usize {
    10_000
}

fn default_silent_intervals() -> u32 {
    3
}

fn default_interval_seconds() -> u64 {
    15
}

fn default_forget_after_seconds() -> u64 {
    24 * 3600
}

fn default_max_events() -> usize {
    crate::state::DEFAULT_MAX_EVENTS
}

/// Bounds the memory events take: at about 300 bytes an event, 1000 agents at this limit
/// would hold 3 GB.
const MAX_EVENTS_LIMIT: usize = 10_000;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            tls_cert_file: None,
            tls_key_file: None,
            metrics_token_file: None,
            header_read_timeout_seconds: default_header_read_timeout_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            max_connections: default_http_max_connections(),
            max_connections_per_address: default_http_max_connections_per_address(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            embedded: true,
            listen: default_broker_listen(),
            max_packet_bytes: default_broker_max_packet_bytes(),
            max_connections: default_broker_max_connections(),
            max_buffer_bytes: default_broker_max_buffer_bytes(),
            password_file: None,
            allow_anonymous: false,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload_bytes(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            silent_intervals: default_silent_intervals(),
            default_interval_seconds: default_interval_seconds(),
            forget_after_seconds: default_forget_after_seconds(),
            max_events: default_max_events(),
        }
    }
}

impl CollectorConfig {
    /// Reads `path` (optional: every key has a default) plus environment overrides and
    /// validates the result.
    /// `storage.dir` of the config at `path` (and the environment), as the collector would
    /// read it, for subcommands that need only that: the file is parsed and `[storage]`
    /// checked, but the files the service reads (keys, users) are not opened.
    pub fn storage_dir(path: Option<&Path>) -> Result<std::path::PathBuf, ConfigError> {
        let config: Self = config::load(path, SECTIONS)?;
        config.storage.validate()?;
        Ok(config.storage.dir)
    }

    /// The config at `path` (and the environment), parsed and validated, for subcommands
    /// (`agent add`): no file it names is opened.
    pub fn load_unopened(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = config::load(path, SECTIONS)?;
        config.validate()?;
        Ok(config)
    }

    /// The config at `path` (and the environment) parsed, not validated and with no file it
    /// names opened: `cert renew` must work on a config whose certificate is broken.
    pub fn parse_only(path: Option<&Path>) -> Result<Self, ConfigError> {
        config::load(path, SECTIONS)
    }

    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = config::load(path, SECTIONS)?;
        config.validate()?;
        // Read the users now, so `--check-config` catches a bad line before a restart does.
        if config.broker.embedded
            && let Some(path) = &config.broker.password_file
        {
            crate::users::Users::load(path).map_err(|error| {
                ConfigError::invalid("broker.password_file", path.display(), error.to_string())
            })?;
        }
        // The messages already name the field and the file.
        config.tls().map_err(ConfigError::Parse)?;
        // The messages name the field and the file.
        crate::api::Credentials::load(config.credential_files()).map_err(ConfigError::Parse)?;
        Ok(config)
    }

    /// The files of tokens and users the HTTP side reads (and reloads on SIGHUP).
    pub fn credential_files(&self) -> crate::api::CredentialFiles {
        crate::api::CredentialFiles {
            token_file: self.api.token_file.clone(),
            users_file: self.api.users_file.clone(),
            metrics_token_file: self.http.metrics_token_file.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mqtt.validate()?;
        match (&self.broker.embedded, &self.mqtt.url) {
            (true, Some(url)) => {
                return Err(ConfigError::invalid(
                    "mqtt.url",
                    url,
                    "is set while broker.embedded = true; set broker.embedded = false to use \
                     an external broker, or remove mqtt.url",
                ));
            }
            (false, None) => {
                return Err(ConfigError::invalid(
                    "mqtt.url",
                    "",
                    "is required when broker.embedded = false",
                ));
            }
            _ => {}
        }
        for (field, address) in [
            ("http.listen", self.http.listen),
            ("broker.listen", self.broker.listen),
        ] {
            if address.port() == 0 {
                return Err(ConfigError::invalid(
                    field,
                    address,
                    "needs a fixed port: clients must know where to connect",
                ));
            }
        }
        if self.broker.embedded && self.broker.listen == self.http.listen {
            return Err(ConfigError::invalid(
                "broker.listen",
                self.broker.listen,
                "is the same address as http.listen",
            ));
        }
        let minimums: [(&str, u64, u64); 9] = [
            (
                "broker.max_buffer_bytes",
                self.broker.max_buffer_bytes as u64,
                4 * 1024 * 1024,
            ),
            (
                "broker.max_packet_bytes",
                self.broker.max_packet_bytes as u64,
                1024,
            ),
            (
                "broker.max_connections",
                self.broker.max_connections as u64,
                1,
            ),
            (
                "ingest.max_payload_bytes",
                self.ingest.max_payload_bytes as u64,
                1024,
            ),
            (
                "ingest.queue_capacity",
                self.ingest.queue_capacity as u64,
                1,
            ),
            (
                "agents.silent_intervals",
                u64::from(self.agents.silent_intervals),
                1,
            ),
            (
                "agents.default_interval_seconds",
                self.agents.default_interval_seconds,
                1,
            ),
            (
                "agents.forget_after_seconds",
                self.agents.forget_after_seconds,
                60,
            ),
            ("agents.max_events", self.agents.max_events as u64, 1),
        ];
        for (field, value, minimum) in minimums {
            if value < minimum {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be at least {minimum}"),
                ));
            }
        }
        if let Some((field, value, moved_to)) = self.console.moved() {
            return Err(ConfigError::invalid(
                field,
                value,
                format!("has moved to {moved_to}, one limit for every login route"),
            ));
        }
        self.api.validate()?;
        for (field, value, min, max) in self.console.ranges() {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        if self.agents.max_events > MAX_EVENTS_LIMIT {
            return Err(ConfigError::invalid(
                "agents.max_events",
                self.agents.max_events,
                format!("must be at most {MAX_EVENTS_LIMIT}"),
            ));
        }
        self.http.validate()?;
        self.limits.validate()?;
        self.announcements.validate()?;
        self.storage.validate()?;
        crate::sensors::validate(&self.sensors, &self.mqtt.prefix)?;
        self.remote_write.validate()?;
        if let Some(enrolment) = &self.enrolment {
            enrolment.validate()?;
        }
        self.validate_broker()?;
        self.security.check(&security::Exposure {
            http_listen: self.http.listen,
            http_tls: self.http.tls_cert_file.is_some(),
            mqtt: &self.broker_endpoints()?,
            remote_write_url: self.remote_write.url.as_deref(),
        })
    }

    /// The packet limit shared by the broker and the collector's client, and who may log in.
    fn validate_broker(&self) -> Result<(), ConfigError> {
        let needed = self
            .ingest
            .max_payload_bytes
            .saturating_add(PACKET_HEADROOM_BYTES);
        if self.broker.max_packet_bytes < needed {
            return Err(ConfigError::invalid(
                "broker.max_packet_bytes",
                self.broker.max_packet_bytes,
                format!(
                    "must be at least ingest.max_payload_bytes + 65536 = {needed}, or an \
                     oversized payload breaks the collector's connection instead of being counted"
                ),
            ));
        }
        if let Some((field, value)) = self.broker.removed_key() {
            return Err(ConfigError::invalid(
                field,
                value,
                format!(
                    "is no longer supported: the embedded broker serves this machine only, over \
                     loopback without TLS; for MQTT over TLS from other machines run Mosquitto \
                     with the shipped configs/mosquitto files and set broker.embedded = false \
                     ({LAN_BROKER_DOCS})"
                ),
            ));
        }
        if !self.broker.embedded {
            return Ok(());
        }
        if !self.broker.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "broker.listen",
                self.broker.listen,
                format!(
                    "is not a loopback address: the embedded broker serves this machine only \
                     (it cannot keep one agent off another's topics); for agents on other \
                     machines run Mosquitto with the shipped configs/mosquitto files and set \
                     broker.embedded = false ({LAN_BROKER_DOCS})"
                ),
            ));
        }
        for (field, path) in [
            ("mqtt.ca_file", &self.mqtt.ca_file),
            ("mqtt.client_cert_file", &self.mqtt.client_cert_file),
            ("mqtt.client_key_file", &self.mqtt.client_key_file),
        ] {
            if let Some(path) = path {
                return Err(ConfigError::invalid(
                    field,
                    path.display(),
                    "is for an external broker (mqtts://); the collector reaches its embedded \
                     broker over loopback without TLS",
                ));
            }
        }
        match (&self.broker.password_file, self.broker.allow_anonymous) {
            (Some(path), true) => Err(ConfigError::invalid(
                "broker.allow_anonymous",
                true,
                format!(
                    "cannot be combined with broker.password_file ('{}'): with a password file \
                     every client logs in",
                    path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// What the decoder checks every message against.
    pub fn decode_limits(&self) -> Limits {
        let limits = &self.limits;
        Limits {
            max_payload_bytes: self.ingest.max_payload_bytes,
            max_metric_name_bytes: limits.max_metric_name_bytes,
            max_label_name_bytes: limits.max_label_name_bytes,
            max_label_value_bytes: limits.max_label_value_bytes,
            max_labels_per_series: limits.max_labels_per_series,
            max_series_per_message: limits.max_series_per_agent,
            max_events_per_message: limits.max_events_per_message,
            max_event_message_bytes: limits.max_event_message_bytes,
        }
    }

    /// The brokers the collector subscribes to: its own when embedded (over loopback when it
    /// listens on every address), otherwise those of `mqtt.url`.
    pub fn broker_endpoints(&self) -> Result<Vec<Endpoint>, ConfigError> {
        match &self.mqtt.url {
            Some(urls) => self.mqtt.endpoints(urls),
            None => {
                let listen = self.broker.listen;
                let host = match listen.ip() {
                    ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
                    ip if ip.is_unspecified() => "::1".to_owned(),
                    ip => ip.to_string(),
                };
                Ok(vec![Endpoint {
                    host,
                    port: listen.port(),
                    tls: false,
                }])
            }
        }
    }

    /// Fails early, with the field name, when an address to listen on is taken.
    pub fn check_listen_addresses(&self) -> Result<(), ConfigError> {
        let mut addresses = vec![("http.listen", self.http.listen)];
        if self.broker.embedded {
            addresses.push(("broker.listen", self.broker.listen));
        }
        for (field, address) in addresses {
            TcpListener::bind(address).map_err(|error| {
                ConfigError::invalid(field, address, format!("cannot be bound: {error}"))
            })?;
        }
        Ok(())
    }

    /// The HTTPS config when `http.tls_cert_file` and `http.tls_key_file` are both set.
    pub fn tls(&self) -> Result<Option<std::sync::Arc<crate::tls::HttpCertificate>>, String> {
        match (&self.http.tls_cert_file, &self.http.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => crate::tls::HttpCertificate::load(cert, key).map(Some),
            (Some(_), None) => {
                Err("http.tls_key_file: is required with http.tls_cert_file".to_owned())
            }
            (None, Some(_)) => {
                Err("http.tls_cert_file: is required with http.tls_key_file".to_owned())
            }
        }
    }

    pub fn default_interval(&self) -> Duration {
        Duration::from_secs(self.agents.default_interval_seconds)
    }
}

// ---- [enrolment] (owned by `agent add|remove|list`, enrol.rs) ----

/// `[enrolment]`: how `pantau-collector agent add` enrols an agent with the LAN broker
/// (Mosquitto on this host) and what it tells the agent. Written by `pantau-collector init`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentConfig {
    /// The broker URLs agents are told to connect to, `mqtts://HOST:PORT`, tried in order.
    /// HOST must be the name in the broker's certificate.
    pub broker_urls: Vec<String>,
    /// The CA certificate (PEM) that signed the broker's certificate; it goes into every
    /// bundle, so agents trust the broker without the system's CA store.
    #[serde(default = "default_enrolment_ca_file")]
    pub ca_file: PathBuf,
    /// The CA's private key, read only to sign client certificates
    /// (`client_certificates = true`).
    #[serde(default = "default_enrolment_ca_key_file")]
    pub ca_key_file: PathBuf,
    /// Also issue each agent a client certificate (CN = its id), for a broker that requires
    /// them (`require_certificate true`).
    #[serde(default)]
    pub client_certificates: bool,
    /// Mosquitto's password file (`password_file` in its config), where agents' logins go.
    #[serde(default = "default_enrolment_password_file")]
    pub mosquitto_password_file: PathBuf,
    /// Run after the password file changed, so Mosquitto reads it again: a new login works
    /// and a removed one is disconnected at once. Program and arguments, no shell.
    #[serde(default = "default_enrolment_reload_command")]
    pub mosquitto_reload_command: Vec<String>,
    /// Where `agent add` keeps each agent's bundle (`ID.bundle`, mode 0600, in a 0700 dir).
    #[serde(default = "default_enrolment_bundle_dir")]
    pub bundle_dir: PathBuf,
}

fn default_enrolment_ca_file() -> PathBuf {
    PathBuf::from("/etc/pantau/tls/ca.pem")
}

fn default_enrolment_ca_key_file() -> PathBuf {
    PathBuf::from("/etc/pantau/ca/ca.key")
}

fn default_enrolment_password_file() -> PathBuf {
    PathBuf::from("/etc/mosquitto/pantau-passwd")
}

fn default_enrolment_reload_command() -> Vec<String> {
    ["systemctl", "reload", "mosquitto"]
        .map(str::to_owned)
        .into()
}

fn default_enrolment_bundle_dir() -> PathBuf {
    PathBuf::from("/etc/pantau/agents")
}

impl EnrolmentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.broker_urls.is_empty() || self.broker_urls.len() > 16 {
            return Err(ConfigError::invalid(
                "enrolment.broker_urls",
                format!("{:?}", self.broker_urls),
                "give 1 to 16 URLs",
            ));
        }
        for (index, url) in self.broker_urls.iter().enumerate() {
            let field = format!("enrolment.broker_urls[{index}]");
            let endpoint = Endpoint::parse(url)
                .map_err(|why| ConfigError::invalid(field.as_str(), url, why))?;
            // The bundle's password would cross the LAN in clear text otherwise.
            if !endpoint.tls || !url.starts_with("mqtts://") {
                return Err(ConfigError::invalid(
                    field,
                    url,
                    "must be mqtts://HOST:PORT: agents send their password to it",
                ));
            }
        }
        for (field, path) in [
            ("enrolment.ca_file", &self.ca_file),
            ("enrolment.ca_key_file", &self.ca_key_file),
            (
                "enrolment.mosquitto_password_file",
                &self.mosquitto_password_file,
            ),
            ("enrolment.bundle_dir", &self.bundle_dir),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::invalid(
                    field,
                    path.display(),
                    "must be an absolute path",
                ));
            }
        }
        if self
            .mosquitto_reload_command
            .first()
            .is_none_or(String::is_empty)
        {
            return Err(ConfigError::invalid(
                "enrolment.mosquitto_reload_command",
                format!("{:?}", self.mosquitto_reload_command),
                "needs a program, e.g. [\"systemctl\", \"reload\", \"mosquitto\"]",
            ));
        }
        Ok(())
    }
}

// ---- end [enrolment] ----

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example config in configs/ must load.
    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/collector.toml");
        let config: CollectorConfig = config::load(Some(&path), SECTIONS).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn invalid_configs_produce_their_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
        let checked = config::check_invalid_configs(&dir, |path| {
            CollectorConfig::load(Some(path)).map(|_| ())
        })
        .unwrap();
        assert!(checked >= 5, "only {checked} invalid configs found");
    }

    #[test]
    fn embedded_broker_is_reached_over_loopback() {
        let config = CollectorConfig::default();
        assert_eq!(
            config.broker_endpoints().unwrap(),
            [Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 1883,
                tls: false,
            }]
        );
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = CollectorConfig {
            http: HttpConfig {
                listen: taken.local_addr().unwrap(),
                ..HttpConfig::default()
            },
            broker: BrokerConfig {
                embedded: false,
                ..BrokerConfig::default()
            },
            ..CollectorConfig::default()
        };
        let error = config.check_listen_addresses().unwrap_err().to_string();
        assert!(error.starts_with("http.listen: '127.0.0.1:"), "{error}");
        assert!(error.contains("cannot be bound"), "{error}");
    }
}
