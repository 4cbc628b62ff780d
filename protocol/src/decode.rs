//! Decoding and validation of everything received on a Pantau topic. A payload that passes
//! here can be relayed to Prometheus as is: names follow the grammar, values are finite and
//! no series appears twice.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::SCHEMA_VERSION;
use crate::message::{EventsMessage, Family, Message, MetricsMessage, StatusMessage};
use crate::names::{NameError, validate_label_name, validate_metric_name};
use crate::topic::{Channel, Topic, TopicError};

/// The reporting intervals an agent may announce: what its own config accepts. Anything else
/// would only be a stranger's attempt to overflow the collector's silence arithmetic.
pub const INTERVAL_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Most clips a status message may list.
const MAX_CLIPS: usize = 500;

/// Most roles a status message may list.
const MAX_ROLES: usize = 16;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Payloads larger than this are refused before parsing.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 512 * 1024,
        }
    }
}

/// A payload that passed validation, with the topic it arrived on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub topic: Topic,
    pub message: Message,
}

/// The reason label of `pantau_collector_rejected_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    InvalidTopic,
    UnknownSchema,
    Oversized,
    InvalidJson,
    InvalidSchema,
    AgentMismatch,
    NonFiniteValue,
    InvalidMetricName,
    InvalidLabelName,
    DuplicateSeries,
    /// A number outside the range the protocol allows (e.g. `interval_seconds` of 0).
    OutOfRange,
    /// Not produced by `decode`: the collector refuses a family whose type differs from the
    /// type the name already has. Listed here so the label set is defined in one place.
    TypeConflict,
}

impl RejectReason {
    /// Every reason, so counters can start at zero and dashboards see them before the first
    /// rejection.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::InvalidTopic,
        RejectReason::UnknownSchema,
        RejectReason::Oversized,
        RejectReason::InvalidJson,
        RejectReason::InvalidSchema,
        RejectReason::AgentMismatch,
        RejectReason::NonFiniteValue,
        RejectReason::InvalidMetricName,
        RejectReason::InvalidLabelName,
        RejectReason::DuplicateSeries,
        RejectReason::OutOfRange,
        RejectReason::TypeConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTopic => "invalid_topic",
            RejectReason::UnknownSchema => "unknown_schema",
            RejectReason::Oversized => "oversized",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidSchema => "invalid_schema",
            RejectReason::AgentMismatch => "agent_mismatch",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::InvalidLabelName => "invalid_label_name",
            RejectReason::DuplicateSeries => "duplicate_series",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::TypeConflict => "type_conflict",
        }
    }
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
    #[error("{field} {value} is outside {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
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
            if let Some(interval) = status.interval_seconds
                && !INTERVAL_SECONDS.contains(&interval)
            {
                return Err(DecodeError::OutOfRange {
                    field: "interval_seconds",
                    value: interval,
                    min: *INTERVAL_SECONDS.start(),
                    max: *INTERVAL_SECONDS.end(),
                });
            }
            Message::Status(status)
        }
        Channel::Metrics => {
            let metrics: MetricsMessage = parse(payload)?;
            check_origin(&topic, &metrics.agent, &metrics.site)?;
            validate_families(&metrics.families)?;
            Message::Metrics(metrics)
        }
        Channel::Events => {
            let events: EventsMessage = parse(payload)?;
            check_origin(&topic, &events.agent, &events.site)?;
            for event in &events.events {
                validate_metric_name(&event.kind).map_err(DecodeError::InvalidMetricName)?;
                validate_label_names(&event.kind, event.labels.keys())?;
            }
            Message::Events(events)
        }
        Channel::Command(_) => unreachable!("returned above"),
    };
    Ok(Decoded { topic, message })
}

/// Reads only the `schema` field first, so that a future version with a different shape is
/// reported as an unknown version rather than as a schema mismatch.
pub(crate) fn check_schema_version(payload: &[u8]) -> Result<(), DecodeError> {
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

pub(crate) fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|error| {
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

fn validate_families(families: &[Family]) -> Result<(), DecodeError> {
    let mut names = HashSet::with_capacity(families.len());
    for family in families {
        validate_metric_name(&family.name).map_err(DecodeError::InvalidMetricName)?;
        if !names.insert(family.name.as_str()) {
            return Err(DecodeError::DuplicateSeries(family.name.clone()));
        }
        let mut label_sets = HashSet::with_capacity(family.samples.len());
        for sample in &family.samples {
            validate_label_names(&family.name, sample.labels.keys())?;
            if !sample.value.is_finite() {
                return Err(DecodeError::NonFiniteValue {
                    metric: family.name.clone(),
                    value: sample.value,
                });
            }
            if !label_sets.insert(&sample.labels) {
                return Err(DecodeError::DuplicateSeries(family.name.clone()));
            }
        }
    }
    Ok(())
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

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: HashSet<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }
}
