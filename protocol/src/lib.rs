//! Pantau wire protocol, version 1: the MQTT topics and JSON payloads that agents publish and
//! the collector consumes. Both sides use these types, so a change here is a change to the wire
//! format; see `protocol/README.md` for the specification this code implements.

mod command;
mod decode;
mod message;
mod names;
pub mod sound;
mod topic;

pub use command::{
    COMMAND_COMPLETED, COMMAND_REJECTED, Command, CommandMessage, CommandRejectReason,
    CommandRejection, SignatureError, decode_command, validate_command_name,
};
pub use decode::{DecodeError, Decoded, INTERVAL_SECONDS, Limits, RejectReason, decode};
pub use message::{
    AgentState, Event, EventsMessage, Family, Message, MetricKind, MetricsMessage, Sample,
    Severity, StatusMessage,
};
pub use names::{
    COLLECTOR_OWNED_LABELS, NameError, is_collector_owned_metric, validate_label_name,
    validate_metric_name,
};
pub use topic::{Channel, DEFAULT_PREFIX, Topic, TopicError, validate_id, validate_prefix};

/// The payload schema version this crate reads and writes. Topics carry it as `v1`.
pub const SCHEMA_VERSION: u32 = 1;
