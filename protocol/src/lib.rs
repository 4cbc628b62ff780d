//! Pantau wire protocol, version 1: the MQTT topics and JSON payloads that agents publish and
//! the collector consumes. Both sides use these types, so a change here is a change to the wire
//! format; see `protocol/README.md` for the specification this code implements.

mod bundle;
mod command;
mod decode;
mod histogram;
mod message;
mod names;
mod pinned;
mod reason;
pub mod schedule;
mod signing;
pub mod sound;
mod topic;

pub use bundle::{AgentRole, BUNDLE_PREFIX, Bundle, BundleError, MAX_BUNDLE_BYTES};
pub use command::{
    COMMAND_COMPLETED, COMMAND_REJECTED, Command, CommandMessage, CommandRejectReason,
    CommandRejection, decode_command, validate_command_name,
};
pub use decode::{
    Counted, DecodeError, Decoded, INTERVAL_SECONDS, Limited, Limits, MAX_INTEGER, decode,
    decode_metrics,
};
pub use histogram::{
    AnyFamily, Bucket, HistogramError, HistogramFamily, HistogramSample, MetricsPayload,
};
pub use message::{
    AgentState, Event, EventsMessage, Family, Message, MetricKind, MetricsMessage, Sample,
    Severity, StatusMessage,
};
pub use names::{
    AGENT_SERIES, COLLECTOR_OWNED_LABELS, COLLECTOR_PREFIXES, NameError, agent_series,
    is_collector_owned_metric, validate_label_name, validate_metric_name,
};
pub use pinned::pinned_kind;
pub use reason::{DropReason, RejectReason};
pub use signing::{HMAC_VERSION, MIN_KEY_BYTES, SignatureError, derive_agent_key, read_key};
pub use topic::{Channel, DEFAULT_PREFIX, Topic, TopicError, validate_id, validate_prefix};

/// The payload schema version this crate reads and writes. Topics carry it as `v1`.
pub const SCHEMA_VERSION: u32 = 1;
