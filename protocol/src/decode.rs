//! Decoding and validation of everything received on a Pantau topic. A payload that passes
//! here can be relayed to Prometheus as is: names follow the grammar, values are finite and
//! no series appears twice.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::SCHEMA_VERSION;
use crate::histogram::{AnyFamily, HistogramError, HistogramFamily, MetricsPayload};
use crate::message::{EventsMessage, Family, Message, MetricKind, MetricsMessage, StatusMessage};
use crate::names::{NameError, validate_label_name, validate_metric_name};
use crate::reason::RejectReason;
use crate::topic::{Channel, Topic, TopicError};

/// The reporting intervals an agent may announce: what its own config accepts. Anything else
/// would only be a stranger's attempt to overflow the collector's silence arithmetic.
pub const INTERVAL_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Most clips a status message may list.
const MAX_CLIPS: usize = 500;

/// Most roles a status message may list.
const MAX_ROLES: usize = 16;

/// Largest sequence number or timestamp a message may carry: 2^53 - 1, the largest integer a
/// JSON number holds exactly everywhere. An agent counting one message a second would need 285
/// million years to reach it; anything above is a forgery meant to overflow someone's arithmetic.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// Limits applied while decoding. Every one bounds what one message can make the collector
/// store; `README.md` ("Limits and hostile input") says how the defaults were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Payloads larger than this are refused before parsing.
    pub max_payload_bytes: usize,
    /// Longest metric name or event kind.
    pub max_metric_name_bytes: usize,
    /// Longest label name.
    pub max_label_name_bytes: usize,
    /// Longest label value.
    pub max_label_value_bytes: usize,
    /// Most labels on one series or event.
    pub max_labels_per_series: usize,
    /// Most series in one metrics message, that is per agent: each message replaces the last.
    pub max_series_per_message: usize,
    /// Most events in one events message.
    pub max_events_per_message: usize,
    /// Longest event text.
    pub max_event_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 512 * 1024,
            max_metric_name_bytes: 128,
            max_label_name_bytes: 64,
            max_label_value_bytes: 256,
            max_labels_per_series: 16,
            max_series_per_message: 2000,
            max_events_per_message: 64,
            max_event_message_bytes: 1024,
        }
    }
}

/// A payload that passed validation, with the topic it arrived on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub topic: Topic,
    pub message: Message,
}

/// Why a message was refused. `Display` gives the detail for the log line.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("payload does not match the v1 schema: {0}")]
    InvalidSchema(String),
    #[error("payload has schema version {0}, this build reads version 1")]
    UnknownSchemaVersion(u64),
    #[error("payload {field} {payload:?} does not match the topic's {topic:?}")]
    AgentMismatch {
        field: &'static str,
        payload: String,
        topic: String,
    },
    #[error("{metric:?}: value {value} is not finite")]
    NonFiniteValue { metric: String, value: f64 },
    #[error("metric name: {0}")]
    InvalidMetricName(NameError),
    #[error("{metric:?}: label name: {error}")]
    InvalidLabelName { metric: String, error: NameError },
    #[error("{0:?} appears more than once with the same labels")]
    DuplicateSeries(String),
    #[error("{metric:?}: histogram {error}")]
    InvalidHistogram {
        metric: String,
        error: HistogramError,
    },
    #[error("{field} {value} is outside {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: i128,
        min: i128,
        max: i128,
    },
    /// A name, value or text over its limit; `start` is its beginning, for the log line.
    #[error("{what} starting {start:?} is {len} bytes long, the limit is {limit}")]
    TooLong {
        what: Limited,
        start: String,
        len: usize,
        limit: usize,
    },
    #[error("{what}: {count}, the limit is {limit}")]
    TooMany {
        what: Counted,
        count: usize,
        limit: usize,
    },
}

/// What a `DecodeError::TooLong` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    MetricName,
    LabelName,
    LabelValue,
    EventMessage,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limited::MetricName => "metric name",
            Limited::LabelName => "label name",
            Limited::LabelValue => "label value",
            Limited::EventMessage => "event message",
        })
    }
}

/// What a `DecodeError::TooMany` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Labels,
    Series,
    Events,
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Counted::Labels => "labels on one series or event",
            Counted::Series => "series in one message",
            Counted::Events => "events in one message",
        })
    }
}

impl DecodeError {
    pub fn reason(&self) -> RejectReason {
        match self {
            DecodeError::Topic(TopicError::UnknownVersion { .. }) => RejectReason::UnknownSchema,
            DecodeError::Topic(_) => RejectReason::InvalidTopic,
            DecodeError::Oversized { .. } => RejectReason::Oversized,
            DecodeError::InvalidJson(_) => RejectReason::InvalidJson,
            DecodeError::InvalidSchema(_) => RejectReason::InvalidSchema,
            DecodeError::UnknownSchemaVersion(_) => RejectReason::UnknownSchema,
            DecodeError::AgentMismatch { .. } => RejectReason::AgentMismatch,
            DecodeError::NonFiniteValue { .. } => RejectReason::NonFiniteValue,
            DecodeError::InvalidMetricName(_) => RejectReason::InvalidMetricName,
            DecodeError::InvalidLabelName { .. } => RejectReason::InvalidLabelName,
            DecodeError::DuplicateSeries(_) => RejectReason::DuplicateSeries,
            DecodeError::OutOfRange { .. } => RejectReason::OutOfRange,
            DecodeError::InvalidHistogram { .. } => RejectReason::InvalidHistogram,
            DecodeError::TooLong { what, .. } => match what {
                Limited::MetricName => RejectReason::MetricNameTooLong,
                Limited::LabelName => RejectReason::LabelNameTooLong,
                Limited::LabelValue => RejectReason::LabelValueTooLong,
                Limited::EventMessage => RejectReason::EventMessageTooLong,
            },
            DecodeError::TooMany { what, .. } => match what {
                Counted::Labels => RejectReason::TooManyLabels,
                Counted::Series => RejectReason::TooManySeries,
                Counted::Events => RejectReason::TooManyEvents,
            },
        }
    }
}

/// Decodes and validates a message received on `topic` under `prefix`.
pub fn decode(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let topic = Topic::parse(prefix, topic)?;
    if let Channel::Command(_) = topic.channel {
        return Ok(Decoded {
            topic,
            message: Message::Command(payload.to_vec()),
        });
    }
    if payload.len() > limits.max_payload_bytes {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    check_schema_version(payload)?;
    let message = match topic.channel {
        Channel::Status => {
            let status: StatusMessage = parse(payload)?;
            check_origin(&topic, &status.agent, &status.site)?;
            validate_roles(&status.roles)?;
            validate_clips(&status.clips)?;
            if let Some(interval) = status.interval_seconds {
                check_range("interval_seconds", interval, INTERVAL_SECONDS)?;
            }
            check_timestamp("timestamp_ms", status.timestamp_ms)?;
            if let Some(connected) = status.connected_ms {
                check_timestamp("connected_ms", connected)?;
            }
            if let Some(next) = status.next_seq {
                check_range("next_seq", next, 0..=MAX_INTEGER)?;
            }
            if let Some(version) = &status.version {
                check_length(Limited::LabelValue, version, limits.max_label_value_bytes)?;
            }
            Message::Status(status)
        }
        Channel::Metrics => Message::Metrics(decode_metrics_payload(&topic, payload, limits)?),
        Channel::Events => {
            let events: EventsMessage = parse(payload)?;
            check_origin(&topic, &events.agent, &events.site)?;
            check_range("seq", events.seq, 0..=MAX_INTEGER)?;
            check_timestamp("timestamp_ms", events.timestamp_ms)?;
            check_count(
                Counted::Events,
                events.events.len(),
                limits.max_events_per_message,
            )?;
            for event in &events.events {
                check_length(
                    Limited::MetricName,
                    &event.kind,
                    limits.max_metric_name_bytes,
                )?;
                validate_metric_name(&event.kind).map_err(DecodeError::InvalidMetricName)?;
                check_length(
                    Limited::EventMessage,
                    &event.message,
                    limits.max_event_message_bytes,
                )?;
                validate_labels(&event.kind, &event.labels, limits)?;
            }
            Message::Events(events)
        }
        Channel::Command(_) => unreachable!("returned above"),
    };
    Ok(Decoded { topic, message })
}

/// Decodes and validates a metrics message with its histogram families, which `decode`
/// validates but does not return.
pub fn decode_metrics(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    limits: &Limits,
) -> Result<(Topic, MetricsMessage, Vec<HistogramFamily>), DecodeError> {
    let topic = Topic::parse(prefix, topic)?;
    if topic.channel != Channel::Metrics {
        return Err(DecodeError::InvalidSchema("not a metrics topic".to_owned()));
    }
    if payload.len() > limits.max_payload_bytes {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    check_schema_version(payload)?;
    let metrics = decode_metrics_payload(&topic, payload, limits)?;
    let histograms = metrics.histograms.clone();
    Ok((topic, metrics, histograms))
}

fn decode_metrics_payload(
    topic: &Topic,
    payload: &[u8],
    limits: &Limits,
) -> Result<MetricsMessage, DecodeError> {
    let metrics: MetricsPayload = parse(payload)?;
    check_origin(topic, &metrics.agent, &metrics.site)?;
    check_range("seq", metrics.seq, 0..=MAX_INTEGER)?;
    check_timestamp("timestamp_ms", metrics.timestamp_ms)?;
    validate_families(&metrics.families, limits)?;
    Ok(metrics.split())
}

/// Reads only the `schema` field first, so that a future version with a different shape is
/// reported as an unknown version rather than as a schema mismatch.
pub(crate) fn check_schema_version(payload: &[u8]) -> Result<(), DecodeError> {
    // Every agent writes `{"schema":1,` first: seen there, the whole payload need not be
    // scanned for it (the full parse that follows still checks all of it).
    if current_schema_first(payload) {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Probe {
        schema: Option<u64>,
    }
    // serde accepts a JSON array for a struct (fields by position); the protocol does not.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
            Ok(_) => Err(DecodeError::InvalidSchema(
                "payload must be a JSON object".to_owned(),
            )),
            Err(error) => Err(DecodeError::InvalidJson(error.to_string())),
        };
    }
    match parse::<Probe>(payload)?.schema {
        None => Err(DecodeError::InvalidSchema(
            "missing field `schema`".to_owned(),
        )),
        Some(version) if version == u64::from(SCHEMA_VERSION) => Ok(()),
        Some(version) => Err(DecodeError::UnknownSchemaVersion(version)),
    }
}

/// Whether `payload` opens with the current schema version as its first field.
fn current_schema_first(payload: &[u8]) -> bool {
    let start = payload
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(payload.len());
    let Some(rest) = payload[start..].strip_prefix(br#"{"schema":"#) else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // At most 9 digits (no overflow) and no leading zero (not JSON).
    if !(1..=9).contains(&digits) || (digits > 1 && rest[0] == b'0') {
        return false;
    }
    let version = rest[..digits]
        .iter()
        .fold(0u32, |number, digit| number * 10 + u32::from(digit - b'0'));
    version == SCHEMA_VERSION && matches!(rest.get(digits), Some(b',' | b'}'))
}

pub(crate) fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    // UTF-8 checked once for the whole payload, not string by string as `from_slice` does
    // (which showed in the ingest profile); a payload that is not UTF-8 goes to `from_slice`
    // for serde_json's own error, with its position.
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(payload),
    };
    parsed.map_err(|error| {
        // serde_json reports a number too large for f64 (1e999) as a syntax error; for us it
        // is a value that cannot be represented, like NaN.
        if error.to_string().starts_with("number out of range") {
            return DecodeError::NonFiniteValue {
                metric: "(unparsed)".to_owned(),
                value: f64::INFINITY,
            };
        }
        match error.classify() {
            serde_json::error::Category::Data => DecodeError::InvalidSchema(error.to_string()),
            _ => DecodeError::InvalidJson(error.to_string()),
        }
    })
}

pub(crate) fn check_origin(topic: &Topic, agent: &str, site: &str) -> Result<(), DecodeError> {
    if agent != topic.agent {
        return Err(DecodeError::AgentMismatch {
            field: "agent",
            payload: agent.to_owned(),
            topic: topic.agent.clone(),
        });
    }
    if site != topic.site {
        return Err(DecodeError::AgentMismatch {
            field: "site",
            payload: site.to_owned(),
            topic: topic.site.clone(),
        });
    }
    Ok(())
}

fn validate_families(families: &[AnyFamily], limits: &Limits) -> Result<(), DecodeError> {
    // Counted before anything else is looked at, so a huge message costs no more checking
    // than its parse did. A histogram sample is its buckets plus `_count` and `_sum`.
    let series = families.iter().map(AnyFamily::series).sum();
    check_count(Counted::Series, series, limits.max_series_per_message)?;
    let mut names: HashSet<&str> = HashSet::with_capacity(families.len());
    for family in families {
        let name = family.name();
        check_length(Limited::MetricName, name, limits.max_metric_name_bytes)?;
        validate_metric_name(name).map_err(DecodeError::InvalidMetricName)?;
        if !names.insert(name) {
            return Err(DecodeError::DuplicateSeries(name.to_owned()));
        }
        match family {
            AnyFamily::Plain(family) => validate_plain(family, limits)?,
            AnyFamily::Histogram(family) => validate_histogram(family, limits)?,
        }
    }
    // A histogram `x` is exposed as `x_bucket`, `x_count` and `x_sum`: no other family may
    // take those names.
    for family in families {
        if let AnyFamily::Histogram(histogram) = family {
            for suffix in ["_bucket", "_count", "_sum"] {
                let exposed = format!("{}{suffix}", histogram.name);
                if names.contains(exposed.as_str()) {
                    return Err(DecodeError::DuplicateSeries(exposed));
                }
            }
        }
    }
    Ok(())
}

fn validate_plain(family: &Family, limits: &Limits) -> Result<(), DecodeError> {
    if family.kind == MetricKind::Histogram {
        return Err(DecodeError::InvalidSchema(format!(
            "{:?}: a histogram needs `buckets`, `count` and `sum` in each sample",
            family.name
        )));
    }
    // A family of one sample (most of them) cannot repeat a label set: no set to build.
    let many = family.samples.len() > 1;
    let mut label_sets = HashSet::with_capacity(if many { family.samples.len() } else { 0 });
    for sample in &family.samples {
        validate_labels(&family.name, &sample.labels, limits)?;
        if !sample.value.is_finite() {
            return Err(DecodeError::NonFiniteValue {
                metric: family.name.clone(),
                value: sample.value,
            });
        }
        if many && !label_sets.insert(&sample.labels) {
            return Err(DecodeError::DuplicateSeries(family.name.clone()));
        }
    }
    Ok(())
}

fn validate_histogram(family: &HistogramFamily, limits: &Limits) -> Result<(), DecodeError> {
    let mut label_sets = HashSet::with_capacity(family.samples.len());
    for sample in &family.samples {
        validate_labels(&family.name, &sample.labels, limits)?;
        if sample.labels.contains_key("le") {
            return Err(DecodeError::InvalidLabelName {
                metric: family.name.clone(),
                error: NameError::Reserved("le".to_owned()),
            });
        }
        if !sample.sum.is_finite() {
            return Err(DecodeError::NonFiniteValue {
                metric: family.name.clone(),
                value: sample.sum,
            });
        }
        sample
            .validate()
            .map_err(|error| DecodeError::InvalidHistogram {
                metric: family.name.clone(),
                error,
            })?;
        if !label_sets.insert(&sample.labels) {
            return Err(DecodeError::DuplicateSeries(family.name.clone()));
        }
    }
    Ok(())
}

fn validate_labels(
    metric: &str,
    labels: &BTreeMap<String, String>,
    limits: &Limits,
) -> Result<(), DecodeError> {
    check_count(Counted::Labels, labels.len(), limits.max_labels_per_series)?;
    for (name, value) in labels {
        check_length(Limited::LabelName, name, limits.max_label_name_bytes)?;
        check_length(Limited::LabelValue, value, limits.max_label_value_bytes)?;
    }
    validate_label_names(metric, labels.keys())
}

fn check_length(what: Limited, text: &str, limit: usize) -> Result<(), DecodeError> {
    if text.len() <= limit {
        return Ok(());
    }
    Err(DecodeError::TooLong {
        what,
        start: text.chars().take(32).collect(),
        len: text.len(),
        limit,
    })
}

fn check_count(what: Counted, count: usize, limit: usize) -> Result<(), DecodeError> {
    match count <= limit {
        true => Ok(()),
        false => Err(DecodeError::TooMany { what, count, limit }),
    }
}

fn check_range(
    field: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), DecodeError> {
    match range.contains(&value) {
        true => Ok(()),
        false => Err(DecodeError::OutOfRange {
            field,
            value: i128::from(value),
            min: i128::from(*range.start()),
            max: i128::from(*range.end()),
        }),
    }
}

/// Unix milliseconds: not before 1970, not after `MAX_INTEGER`.
fn check_timestamp(field: &'static str, value: i64) -> Result<(), DecodeError> {
    match u64::try_from(value) {
        Ok(value) => check_range(field, value, 0..=MAX_INTEGER),
        Err(_) => Err(DecodeError::OutOfRange {
            field,
            value: i128::from(value),
            min: 0,
            max: i128::from(MAX_INTEGER),
        }),
    }
}

/// Role names are label values on the collector; keep them few and name-like.
fn validate_roles(roles: &[String]) -> Result<(), DecodeError> {
    if roles.len() > MAX_ROLES {
        return Err(DecodeError::InvalidSchema(format!(
            "`roles` lists {} roles, at most {MAX_ROLES} are allowed",
            roles.len()
        )));
    }
    for role in roles {
        let name_like = !role.is_empty()
            && role.len() <= 32
            && role.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !name_like {
            return Err(DecodeError::InvalidSchema(format!(
                "role {role:?} is not 1 to 32 lowercase letters or '_'"
            )));
        }
    }
    Ok(())
}

/// Clip names become API values and file names on the agent: plain names, a bounded list.
fn validate_clips(clips: &[String]) -> Result<(), DecodeError> {
    if clips.len() > MAX_CLIPS {
        return Err(DecodeError::InvalidSchema(format!(
            "`clips` lists {} clips, at most {MAX_CLIPS} are allowed",
            clips.len()
        )));
    }
    for clip in clips {
        crate::sound::validate_clip_name(clip).map_err(DecodeError::InvalidSchema)?;
    }
    Ok(())
}

fn validate_label_names<'a>(
    metric: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), DecodeError> {
    for name in names {
        validate_label_name(name).map_err(|error| DecodeError::InvalidLabelName {
            metric: metric.to_owned(),
            error,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::message::{AgentState, MetricKind, Sample};

    const TOPIC: &str = "pantau/v1/dc/srv-01/metrics";

    fn metrics() -> MetricsMessage {
        MetricsMessage {
            schema: 1,
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
            seq: 7,
            timestamp_ms: 1_800_000_000_000,
            families: vec![
                Family {
                    name: "node_load1".to_owned(),
                    kind: MetricKind::Gauge,
                    help: "1m load average.".to_owned(),
                    samples: vec![Sample {
                        labels: BTreeMap::new(),
                        value: 0.25,
                    }],
                },
                Family {
                    name: "node_cpu_seconds_total".to_owned(),
                    kind: MetricKind::Counter,
                    help: String::new(),
                    samples: vec![
                        Sample {
                            labels: [("cpu", "0"), ("mode", "idle")]
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .into(),
                            value: 1234.5,
                        },
                        Sample {
                            labels: [("cpu", "0"), ("mode", "user")]
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .into(),
                            value: 99.0,
                        },
                    ],
                },
            ],
            histograms: Vec::new(),
        }
    }

    fn decode_default(topic: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
        decode("pantau", topic, payload, &Limits::default())
    }

    fn reason_of(topic: &str, payload: &str) -> RejectReason {
        decode_default(topic, payload.as_bytes())
            .expect_err("must be rejected")
            .reason()
    }

    #[test]
    fn metrics_round_trip() {
        let message = metrics();
        let payload = serde_json::to_vec(&message).unwrap();
        let decoded = decode_default(TOPIC, &payload).unwrap();
        assert_eq!(decoded.topic, Topic::new("dc", "srv-01", Channel::Metrics));
        assert_eq!(decoded.message, Message::Metrics(message));
    }

    #[test]
    fn status_and_events_round_trip() {
        let status = StatusMessage {
            schema: 1,
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
            state: AgentState::Online,
            timestamp_ms: 5,
            interval_seconds: Some(15),
            version: Some("0.1.0".to_owned()),
            next_seq: Some(3),
            connected_ms: Some(4),
            roles: vec!["host".to_owned()],
            clips: vec!["masker.ogg".to_owned()],
        };
        let decoded = decode_default(
            "pantau/v1/dc/srv-01/status",
            &serde_json::to_vec(&status).unwrap(),
        )
        .unwrap();
        assert_eq!(decoded.message, Message::Status(status));

        let events = EventsMessage {
            schema: 1,
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
            seq: 4,
            timestamp_ms: 6,
            events: vec![crate::Event {
                kind: "agent_started".to_owned(),
                severity: crate::Severity::Info,
                message: "pantau-agent 0.1.0 started".to_owned(),
                labels: BTreeMap::new(),
            }],
        };
        let decoded = decode_default(
            "pantau/v1/dc/srv-01/events",
            &serde_json::to_vec(&events).unwrap(),
        )
        .unwrap();
        assert_eq!(decoded.message, Message::Events(events));
    }

    #[test]
    fn the_will_payload_is_minimal() {
        let will =
            r#"{"schema":1,"agent":"srv-01","site":"dc","state":"offline","timestamp_ms":1}"#;
        let decoded = decode_default("pantau/v1/dc/srv-01/status", will.as_bytes()).unwrap();
        assert!(matches!(
            decoded.message,
            Message::Status(StatusMessage {
                state: AgentState::Offline,
                ..
            })
        ));
    }

    #[test]
    fn commands_pass_through_undecoded() {
        let decoded = decode_default("pantau/v1/dc/srv-01/cmd/announce", b"not json").unwrap();
        assert_eq!(decoded.message, Message::Command(b"not json".to_vec()));
    }

    #[test]
    fn every_rejection_reason() {
        let good = serde_json::to_string(&metrics()).unwrap();
        let cases: [(RejectReason, &str, String); 12] = [
            (
                RejectReason::InvalidTopic,
                "pantau/v1/dc/srv-01/weather",
                good.clone(),
            ),
            (
                RejectReason::UnknownSchema,
                "pantau/v2/dc/srv-01/metrics",
                good.clone(),
            ),
            (
                RejectReason::InvalidJson,
                TOPIC,
                "{\"schema\":1,".to_owned(),
            ),
            (RejectReason::InvalidJson, TOPIC, "\u{0}garbage".to_owned()),
            (
                RejectReason::InvalidSchema,
                TOPIC,
                "{\"schema\":1}".to_owned(),
            ),
            (RejectReason::InvalidSchema, TOPIC, "[1,2,3]".to_owned()),
            (
                RejectReason::UnknownSchema,
                TOPIC,
                good.replace("\"schema\":1", "\"schema\":2"),
            ),
            (
                RejectReason::AgentMismatch,
                TOPIC,
                good.replace("srv-01", "srv-02"),
            ),
            (
                RejectReason::AgentMismatch,
                TOPIC,
                good.replace("\"dc\"", "\"gor\""),
            ),
            (
                RejectReason::NonFiniteValue,
                TOPIC,
                good.replace("0.25", "null"),
            ),
            (
                RejectReason::NonFiniteValue,
                TOPIC,
                good.replace("0.25", "1e999"),
            ),
            (
                RejectReason::NonFiniteValue,
                TOPIC,
                good.replace("0.25", "\"+Inf\""),
            ),
        ];
        for (expected, topic, payload) in cases {
            assert_eq!(reason_of(topic, &payload), expected, "{payload}");
        }
        let more: [(RejectReason, String); 6] = [
            (
                RejectReason::InvalidMetricName,
                good.replace("node_load1", "node-load1"),
            ),
            (
                RejectReason::InvalidMetricName,
                good.replace("node_load1", "pantau_agent_up"),
            ),
            (
                RejectReason::InvalidLabelName,
                good.replace("\"mode\"", "\"mo de\""),
            ),
            (
                RejectReason::InvalidLabelName,
                good.replace("\"mode\"", "\"instance\""),
            ),
            (
                RejectReason::DuplicateSeries,
                good.replace("\"user\"", "\"idle\""),
            ),
            (
                RejectReason::DuplicateSeries,
                good.replace("node_cpu_seconds_total", "node_load1"),
            ),
        ];
        for (expected, payload) in more {
            assert_eq!(reason_of(TOPIC, &payload), expected, "{payload}");
        }
    }

    #[test]
    fn intervals_outside_the_agents_range_are_refused() {
        let status = |interval: u64| {
            format!(
                r#"{{"schema":1,"agent":"srv-01","site":"dc","state":"online","timestamp_ms":1,
                    "interval_seconds":{interval}}}"#
            )
        };
        for bad in [0, 3601, u64::MAX] {
            let error =
                decode_default("pantau/v1/dc/srv-01/status", status(bad).as_bytes()).unwrap_err();
            assert_eq!(error.reason(), RejectReason::OutOfRange, "{bad}");
        }
        for good in [1, 15, 3600] {
            assert!(decode_default("pantau/v1/dc/srv-01/status", status(good).as_bytes()).is_ok());
        }
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let limits = Limits {
            max_payload_bytes: 16,
            ..Limits::default()
        };
        let error = decode("pantau", TOPIC, &[b'x'; 17], &limits).unwrap_err();
        assert_eq!(error.reason(), RejectReason::Oversized);
        assert_eq!(
            error.to_string(),
            "payload of 17 bytes exceeds the limit of 16 bytes"
        );
    }

    #[test]
    fn errors_explain_themselves() {
        let good = serde_json::to_string(&metrics()).unwrap();
        let error = decode_default(TOPIC, good.replace("srv-01", "srv-02").as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "payload agent \"srv-02\" does not match the topic's \"srv-01\""
        );
        let error = decode_default(TOPIC, good.replace("0.25", "null").as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "\"node_load1\": value NaN is not finite");
        let error = decode_default(TOPIC, br#"{"schema":"one"}"#).unwrap_err();
        assert_eq!(error.reason(), RejectReason::InvalidSchema);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let mut value = serde_json::to_value(metrics()).unwrap();
        value["compression"] = serde_json::json!("none");
        let payload = serde_json::to_vec(&value).unwrap();
        assert!(decode_default(TOPIC, &payload).is_ok());
    }

    #[test]
    fn integer_values_are_accepted() {
        let payload = serde_json::to_string(&metrics())
            .unwrap()
            .replace("0.25", "3");
        let Message::Metrics(message) = decode_default(TOPIC, payload.as_bytes()).unwrap().message
        else {
            panic!("not metrics");
        };
        assert_eq!(message.families[0].samples[0].value, 3.0);
    }

    fn with_histogram(histogram: serde_json::Value) -> String {
        let mut value = serde_json::to_value(metrics()).unwrap();
        value["families"].as_array_mut().unwrap().push(histogram);
        value.to_string()
    }

    fn rtt(samples: serde_json::Value) -> serde_json::Value {
        json!({"name": "rtt_seconds", "type": "histogram", "samples": samples})
    }

    #[test]
    fn histograms_are_validated_and_returned_by_decode_metrics() {
        let good = with_histogram(rtt(json!([
            {"labels": {"probe": "gw"}, "buckets": [[0.001, 1], [0.01, 3], ["+Inf", 4]],
             "count": 4, "sum": 0.02}
        ])));
        let (_, message, histograms) =
            decode_metrics("pantau", TOPIC, good.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(message.families.len(), 2);
        assert_eq!(histograms.len(), 1);
        assert_eq!(histograms[0].samples[0].buckets[2].le, f64::INFINITY);
        let Message::Metrics(plain) = decode_default(TOPIC, good.as_bytes()).unwrap().message
        else {
            panic!("not metrics");
        };
        assert_eq!(plain, message);
    }

    #[test]
    fn every_histogram_rejection() {
        let sample = |buckets: serde_json::Value, count: u64, sum: serde_json::Value| {
            rtt(json!([{"buckets": buckets, "count": count, "sum": sum}]))
        };
        let cases = [
            (
                sample(json!([]), 0, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([[1, 2]]), 2, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([[1, 2], [0.5, 2], ["+Inf", 2]]), 2, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([[1, 2], ["+Inf", 1]]), 1, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([[1, 2], ["+Inf", 3]]), 4, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([["NaN", 1], ["+Inf", 1]]), 1, json!(0)),
                RejectReason::InvalidHistogram,
            ),
            (
                sample(json!([["+Inf", 1]]), 1, json!("NaN")),
                RejectReason::NonFiniteValue,
            ),
            (
                sample(json!([["+Inf", 1]]), 1, json!(null)),
                RejectReason::NonFiniteValue,
            ),
            (
                rtt(
                    json!([{"labels": {"le": "1"}, "buckets": [["+Inf", 1]], "count": 1, "sum": 1}]),
                ),
                RejectReason::InvalidLabelName,
            ),
            (
                rtt(json!([{"buckets": [["+Inf", 1]], "count": 1, "sum": 1},
                           {"buckets": [["+Inf", 2]], "count": 2, "sum": 1}])),
                RejectReason::DuplicateSeries,
            ),
            (
                json!({"name": "node_load1", "type": "histogram", "samples": []}),
                RejectReason::DuplicateSeries,
            ),
            (
                json!({"name": "node_load", "type": "histogram", "samples": [{"buckets": [], "count": 0}]}),
                RejectReason::InvalidSchema,
            ),
            (
                json!({"name": "node_load", "type": "summary", "samples": []}),
                RejectReason::InvalidSchema,
            ),
        ];
        for (histogram, expected) in cases {
            let payload = with_histogram(histogram.clone());
            assert_eq!(reason_of(TOPIC, &payload), expected, "{histogram}");
        }
        // `node_load` takes `node_load_count`; a family of that name is a duplicate.
        let mut value = serde_json::to_value(metrics()).unwrap();
        value["families"][0]["name"] = json!("node_load_count");
        value["families"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "node_load", "type": "histogram", "samples": []}));
        assert_eq!(
            reason_of(TOPIC, &value.to_string()),
            RejectReason::DuplicateSeries
        );
        let error = decode_default(
            TOPIC,
            with_histogram(sample(json!([[1, 2], ["+Inf", 3]]), 4, json!(0))).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"rtt_seconds\": histogram count 4 differs from the +Inf bucket's 3"
        );
    }

    #[test]
    fn every_limit_has_its_reason() {
        let limits = Limits {
            max_metric_name_bytes: 24,
            max_label_name_bytes: 8,
            max_label_value_bytes: 8,
            max_labels_per_series: 2,
            max_series_per_message: 3,
            max_events_per_message: 2,
            max_event_message_bytes: 10,
            ..Limits::default()
        };
        let good = serde_json::to_string(&metrics()).unwrap();
        assert!(decode("pantau", TOPIC, good.as_bytes(), &limits).is_ok());
        let extra_sample = r#"{"labels":{"cpu":"1","mode":"idle"},"value":1},"#;
        let metrics_cases: [(RejectReason, String); 5] = [
            (
                RejectReason::MetricNameTooLong,
                good.replace("node_load1", "node_load1_and_much_more_x"),
            ),
            (
                RejectReason::LabelNameTooLong,
                good.replace("\"mode\"", "\"mode_of_it\""),
            ),
            (
                RejectReason::LabelValueTooLong,
                good.replace("\"idle\"", "\"idle_time!\""),
            ),
            (
                RejectReason::TooManyLabels,
                good.replace("\"mode\":\"idle\"", "\"mode\":\"idle\",\"x\":\"1\""),
            ),
            (
                RejectReason::TooManySeries,
                good.replacen(
                    "\"samples\":[{\"labels\"",
                    &format!("\"samples\":[{extra_sample}{{\"labels\""),
                    1,
                ),
            ),
        ];
        for (expected, payload) in metrics_cases {
            let error = decode("pantau", TOPIC, payload.as_bytes(), &limits).unwrap_err();
            assert_eq!(error.reason(), expected, "{payload}");
        }
        let events = |events: &str| {
            format!(
                r#"{{"schema":1,"agent":"srv-01","site":"dc","seq":4,"timestamp_ms":6,"events":[{events}]}}"#
            )
        };
        let event = |kind: &str, message: &str, labels: &str| {
            format!(
                r#"{{"kind":"{kind}","severity":"info","message":"{message}","labels":{{{labels}}}}}"#
            )
        };
        let topic = "pantau/v1/dc/srv-01/events";
        let ok = event("started", "hi", r#""a":"1""#);
        assert!(decode("pantau", topic, events(&ok).as_bytes(), &limits).is_ok());
        let events_cases: [(RejectReason, String); 6] = [
            (RejectReason::TooManyEvents, [ok.as_str(); 3].join(",")),
            (
                RejectReason::EventMessageTooLong,
                event("started", "hello world!", ""),
            ),
            (
                RejectReason::MetricNameTooLong,
                event("started_a_very_long_time_ago", "hi", ""),
            ),
            (
                RejectReason::TooManyLabels,
                event("started", "hi", r#""a":"1","b":"2","c":"3""#),
            ),
            (
                RejectReason::LabelNameTooLong,
                event("started", "hi", r#""abcdefghi":"1""#),
            ),
            (
                RejectReason::LabelValueTooLong,
                event("started", "hi", r#""a":"123456789""#),
            ),
        ];
        for (expected, body) in events_cases {
            let payload = events(&body);
            let error = decode("pantau", topic, payload.as_bytes(), &limits).unwrap_err();
            assert_eq!(error.reason(), expected, "{payload}");
        }
    }

    #[test]
    fn numbers_outside_their_range_are_refused() {
        let good = serde_json::to_string(&metrics()).unwrap();
        for (field, bad) in [
            ("\"seq\":7", "\"seq\":9007199254740992"),
            ("\"seq\":7", "\"seq\":18446744073709551615"),
            ("\"timestamp_ms\":1800000000000", "\"timestamp_ms\":-1"),
        ] {
            let payload = good.replace(field, bad);
            let error = decode_default(TOPIC, payload.as_bytes()).unwrap_err();
            assert_eq!(error.reason(), RejectReason::OutOfRange, "{payload}");
        }
        let status = |extra: &str| {
            format!(
                r#"{{"schema":1,"agent":"srv-01","site":"dc","state":"online","timestamp_ms":1{extra}}}"#
            )
        };
        let topic = "pantau/v1/dc/srv-01/status";
        assert!(
            decode_default(topic, status(r#","next_seq":9007199254740991"#).as_bytes()).is_ok()
        );
        for extra in [r#","next_seq":9007199254740992"#, r#","connected_ms":-5"#] {
            let error = decode_default(topic, status(extra).as_bytes()).unwrap_err();
            assert_eq!(error.reason(), RejectReason::OutOfRange, "{extra}");
        }
        let error = decode_default(
            topic,
            status("")
                .replace("\"timestamp_ms\":1", "\"timestamp_ms\":-1")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "timestamp_ms -1 is outside 0..=9007199254740991"
        );
    }

    #[test]
    fn a_long_name_is_not_copied_whole_into_the_error() {
        let name = "a".repeat(10_000);
        let payload = serde_json::to_string(&metrics())
            .unwrap()
            .replace("node_load1", &name);
        let error = decode_default(TOPIC, payload.as_bytes()).unwrap_err();
        assert_eq!(error.reason(), RejectReason::MetricNameTooLong);
        assert!(error.to_string().len() < 200, "{error}");
    }

    /// The version read from the opening bytes, and the full read it stands in for, agree.
    #[test]
    fn the_schema_version_in_front_is_read_without_scanning_the_rest() {
        for (payload, first) in [
            (r#"{"schema":1,"agent":"a"}"#, true),
            (r#"  {"schema":1}"#, true),
            (r#"{"schema":2,"agent":"a"}"#, false),
            (r#"{"schema":11,"agent":"a"}"#, false),
            (r#"{"schema":01,"agent":"a"}"#, false),
            (r#"{"schema":1.5,"agent":"a"}"#, false),
            (r#"{"schema": 1,"agent":"a"}"#, false),
            (r#"{"agent":"a","schema":1}"#, false),
            (r#"{"schema":1"#, false),
        ] {
            assert_eq!(current_schema_first(payload.as_bytes()), first, "{payload}");
        }
        // Where the opening bytes do not tell, the whole payload is read as before.
        assert!(matches!(
            check_schema_version(br#"{"schema":2,"agent":"a"}"#),
            Err(DecodeError::UnknownSchemaVersion(2))
        ));
        assert!(check_schema_version(br#"{"agent":"a","schema":1}"#).is_ok());
        assert!(matches!(
            check_schema_version(br#"{"schema":01}"#),
            Err(DecodeError::InvalidJson(_))
        ));
    }
}
