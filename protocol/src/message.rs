//! Payload types. Every payload is a JSON object carrying `schema`, `agent`, `site` and
//! `timestamp_ms`; metrics and events also carry the agent's sequence number `seq`.
//!
//! Unknown fields are ignored so that a later v1 agent may add optional fields without breaking
//! older collectors; anything that changes the meaning of a field needs schema version 2.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A decoded payload, by channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Status(StatusMessage),
    Metrics(MetricsMessage),
    Events(EventsMessage),
    /// Commands are addressed to agents; the collector ignores them and agents parse their own.
    Command(Vec<u8>),
}

/// Birth (`online`, retained, published on every connect) or last will (`offline`, retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub schema: u32,
    pub agent: String,
    pub site: String,
    pub state: AgentState,
    /// When the message was composed (Unix milliseconds). For the last will that is the time
    /// of the connection it was registered with, not the time of death.
    pub timestamp_ms: i64,
    /// The agent's publish interval; the collector marks the agent down after 3 missed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// The agent's software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The sequence number of the next metrics or events message. A value at or below the last
    /// one the collector saw means the agent's state was reset, not that messages repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_seq: Option<u64>,
    /// When the agent opened the connection this status belongs to (Unix milliseconds): a
    /// birth and the last will registered with the same connection carry the same value. An
    /// `offline` from an older connection than the last `online` is stale (a half-open
    /// connection the broker gave up on after the agent had already reconnected) and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_ms: Option<i64>,
    /// The roles the agent runs (`host`, `probe`, `sound`, `device`), in the birth message.
    /// Added within v1: older agents send none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The audio clips a sound agent can play (file names), in the birth message, so the
    /// collector can refuse an unknown clip. Added within v1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<String>,
}

/// Whether the agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Online,
    Offline,
}

/// One collection round of metric samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsMessage {
    pub schema: u32,
    pub agent: String,
    pub site: String,
    /// Per-agent sequence number, shared with events: it grows by one per message and survives
    /// agent restarts, so the collector can count lost and repeated messages.
    pub seq: u64,
    /// When the samples were taken (Unix milliseconds).
    pub timestamp_ms: i64,
    pub families: Vec<Family>,
    /// The message's histogram families, kept apart from `families` after decoding. On the
    /// wire they travel in `families` (see [`crate::MetricsPayload`]).
    #[serde(skip)]
    pub histograms: Vec<crate::HistogramFamily>,
}

/// All samples of one metric name, as in the Prometheus exposition format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    pub samples: Vec<Sample>,
}

/// Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    /// A value with no declared type (node_exporter's vmstat and netstat fields, textfile
    /// `untyped`): exposed as `untyped`, stored by Prometheus like a gauge.
    Untyped,
    /// Only a [`crate::HistogramFamily`] has it; a counter or gauge [`Family`] declaring it is
    /// refused at decode.
    Histogram,
}

/// One series: its labels (without `instance` and `site`, which the collector adds) and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// JSON has no NaN or infinity: `null` (what serde_json writes for them) and the strings
    /// `"NaN"`, `"+Inf"`, `"-Inf"` decode to non-finite values so validation can name the problem.
    #[serde(deserialize_with = "deserialize_value")]
    pub value: f64,
}

/// A batch of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsMessage {
    pub schema: u32,
    pub agent: String,
    pub site: String,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub events: Vec<Event>,
}

/// Something that happened on the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Machine-readable kind, a metric-name-like word such as `agent_started`.
    pub kind: String,
    pub severity: Severity,
    /// Human-readable text.
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Event severity, as in Alertmanager's conventional `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Every severity, in increasing order: the label set of per-severity series.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Untyped => "untyped",
            MetricKind::Histogram => "histogram",
        }
    }
}

pub(crate) fn deserialize_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    // A hand-written visitor instead of an untagged enum: this runs once per sample, and an
    // untagged enum buffers every value and reports mismatches without saying what it got.
    struct ValueVisitor;

    impl serde::de::Visitor<'_> for ValueVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, null, \"NaN\", \"+Inf\" or \"-Inf\"")
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<f64, E> {
            Ok(value)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<f64, E> {
            Ok(value as f64)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<f64, E> {
            Ok(value as f64)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<f64, E> {
            match text {
                "NaN" => Ok(f64::NAN),
                "+Inf" | "Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
            }
        }
    }

    deserializer.deserialize_any(ValueVisitor)
}
