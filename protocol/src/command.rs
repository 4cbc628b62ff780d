//! Commands to agents: `<prefix>/v1/<site>/<agent>/cmd/<name>`, published by the collector and
//! read only by the agent they name. The envelope (who, when, which command, until when) is
//! checked here like every other payload; the arguments belong to the role that claimed the
//! command name, which checks them itself and answers `invalid_arguments`.
//!
//! Every command is answered by an event on the agent's events topic: `command_completed`
//! (info) or `command_rejected` (warning) with labels `command`, `command_id` and, for a
//! rejection, `reason` (a [`CommandRejectReason`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decode::{DecodeError, Limits, check_origin, check_schema_version, parse};
use crate::topic::{Channel, Topic, TopicError, validate_id};

/// Event kind answering a command that was carried out.
pub const COMMAND_COMPLETED: &str = "command_completed";
/// Event kind answering a command that was refused.
pub const COMMAND_REJECTED: &str = "command_rejected";

/// Longest command name (the topic levels after `cmd/`), in bytes.
const MAX_COMMAND_NAME_LEN: usize = 64;

/// A command to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandMessage {
    pub schema: u32,
    /// The agent the command is for; must equal the topic's.
    pub agent: String,
    /// That agent's site; must equal the topic's.
    pub site: String,
    /// Chosen by the sender, unique per command (same alphabet as agent ids). The events that
    /// answer the command carry it, and an agent carries out a repeated id only once, so a
    /// sender may resend until it sees the answer.
    pub id: String,
    /// When the command was composed (Unix milliseconds).
    pub timestamp_ms: i64,
    /// After this moment (Unix milliseconds) the agent refuses the command as `expired`
    /// instead of carrying it out late (e.g. an announcement queued behind a long outage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// The command's arguments; each command documents its own. Absent means `{}`.
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub args: serde_json::Value,
    /// Which signature `hmac` is; [`crate::HMAC_VERSION`] is the only one accepted. Absent
    /// on a message signed before the signature covered the topic, which is then refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_version: Option<u32>,
    /// HMAC-SHA256 (lowercase hex) over the topic's prefix, the command name and the rest of
    /// the message, with the agent's own key (see [`CommandMessage::sign`]). Commands that
    /// make the speakers talk must carry it; others may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

/// A command that passed envelope validation, with the name and prefix from its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The topic levels after `cmd/`.
    pub name: String,
    /// The topic's prefix (before `/v1/`), which the signature covers.
    pub prefix: String,
    pub message: CommandMessage,
}

impl Command {
    /// Checks the signature with `key` for the topic the command arrived on, in constant time.
    pub fn verify(&self, key: &[u8]) -> Result<(), crate::SignatureError> {
        self.message.verify(key, &self.prefix, &self.name)
    }
}

/// The `reason` label of a refused command, in `pantau_agent_rejected_commands_total` and in
/// the `command_rejected` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandRejectReason {
    /// Not a well-formed command topic for this agent.
    InvalidTopic,
    Oversized,
    InvalidJson,
    InvalidSchema,
    UnknownSchema,
    AgentMismatch,
    /// The `id` is empty, too long or has characters outside the id alphabet.
    InvalidId,
    /// Received after its `expires_ms`.
    Expired,
    /// No role of this agent claims the command name.
    UnknownCommand,
    /// The role that claims the command refused its `args`.
    InvalidArguments,
    /// The role accepted the command but could not carry it out.
    Failed,
    /// A command that must be signed carries no `hmac`.
    Unsigned,
    /// The `hmac` does not match (wrong key, or altered on the way).
    BadSignature,
    /// An id already carried out (kept until the command expires): a replay.
    Replayed,
    /// A version older than the one the agent already has (schedules).
    Outdated,
    /// The agent's replay memory was full and forgot commands expiring as late as this one,
    /// so it cannot tell it from a replay; sent again with a later expiry, it is taken.
    OverCapacity,
}

impl CommandRejectReason {
    /// Every reason, so counters start at zero.
    pub const ALL: [CommandRejectReason; 16] = [
        CommandRejectReason::InvalidTopic,
        CommandRejectReason::Oversized,
        CommandRejectReason::InvalidJson,
        CommandRejectReason::InvalidSchema,
        CommandRejectReason::UnknownSchema,
        CommandRejectReason::AgentMismatch,
        CommandRejectReason::InvalidId,
        CommandRejectReason::Expired,
        CommandRejectReason::UnknownCommand,
        CommandRejectReason::InvalidArguments,
        CommandRejectReason::Failed,
        CommandRejectReason::Unsigned,
        CommandRejectReason::BadSignature,
        CommandRejectReason::Replayed,
        CommandRejectReason::Outdated,
        CommandRejectReason::OverCapacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandRejectReason::InvalidTopic => "invalid_topic",
            CommandRejectReason::Oversized => "oversized",
            CommandRejectReason::InvalidJson => "invalid_json",
            CommandRejectReason::InvalidSchema => "invalid_schema",
            CommandRejectReason::UnknownSchema => "unknown_schema",
            CommandRejectReason::AgentMismatch => "agent_mismatch",
            CommandRejectReason::InvalidId => "invalid_id",
            CommandRejectReason::Expired => "expired",
            CommandRejectReason::UnknownCommand => "unknown_command",
            CommandRejectReason::InvalidArguments => "invalid_arguments",
            CommandRejectReason::Failed => "failed",
            CommandRejectReason::Unsigned => "unsigned",
            CommandRejectReason::BadSignature => "bad_signature",
            CommandRejectReason::Replayed => "replayed",
            CommandRejectReason::Outdated => "outdated",
            CommandRejectReason::OverCapacity => "over_capacity",
        }
    }
}

/// Why a command was refused; `Display` is the text of the answering event.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{detail}")]
pub struct CommandRejection {
    pub reason: CommandRejectReason,
    /// The command name from the topic, when the topic could be read.
    pub command: Option<String>,
    /// The command id, when the payload could be read that far.
    pub id: Option<String>,
    pub detail: String,
}

impl CommandRejection {
    pub fn new(reason: CommandRejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            command: None,
            id: None,
            detail: detail.into(),
        }
    }

    /// A refusal of `command` by the role that claims it.
    pub fn of(command: &Command, reason: CommandRejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            command: Some(command.name.clone()),
            id: Some(command.message.id.clone()),
            detail: detail.into(),
        }
    }
}

/// Decodes a command received on `topic` at `now_ms` (Unix milliseconds, for `expires_ms`).
pub fn decode_command(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<Command, CommandRejection> {
    let parsed = Topic::parse(prefix, topic).map_err(|error| {
        let reason = match error {
            TopicError::UnknownVersion { .. } => CommandRejectReason::UnknownSchema,
            _ => CommandRejectReason::InvalidTopic,
        };
        CommandRejection::new(reason, error.to_string())
    })?;
    let Channel::Command(name) = &parsed.channel else {
        return Err(CommandRejection::new(
            CommandRejectReason::InvalidTopic,
            format!("topic '{topic}' is not a command topic"),
        ));
    };
    let name = name.clone();
    let with_name = |mut rejection: CommandRejection| {
        rejection.command = Some(name.clone());
        rejection
    };
    validate_command_name(&name).map_err(|why| {
        with_name(CommandRejection::new(
            CommandRejectReason::InvalidTopic,
            why,
        ))
    })?;
    if payload.len() > limits.max_payload_bytes {
        return Err(with_name(CommandRejection::new(
            CommandRejectReason::Oversized,
            format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                limits.max_payload_bytes
            ),
        )));
    }
    let decoded = check_schema_version(payload)
        .and_then(|()| parse::<CommandMessage>(payload))
        .and_then(|message| {
            check_origin(&parsed, &message.agent, &message.site)?;
            Ok(message)
        })
        .map_err(|error| with_name(envelope_rejection(&error)))?;
    let rejection = |reason, detail: String| CommandRejection {
        reason,
        command: Some(name.clone()),
        id: Some(decoded.id.clone()),
        detail,
    };
    if let Err(why) = validate_id(&decoded.id) {
        let mut refused = rejection(CommandRejectReason::InvalidId, format!("id: {why}"));
        // An id outside the alphabet must not travel on as a label value.
        refused.id = None;
        return Err(refused);
    }
    if !decoded.args.is_object() {
        return Err(rejection(
            CommandRejectReason::InvalidSchema,
            "`args` must be a JSON object".to_owned(),
        ));
    }
    if let Some(expires_ms) = decoded.expires_ms
        && now_ms > expires_ms
    {
        return Err(rejection(
            CommandRejectReason::Expired,
            format!(
                "expired {} ms before it arrived",
                now_ms.saturating_sub(expires_ms)
            ),
        ));
    }
    Ok(Command {
        name,
        prefix: prefix.to_owned(),
        message: decoded,
    })
}

fn envelope_rejection(error: &DecodeError) -> CommandRejection {
    let reason = match error {
        DecodeError::InvalidJson(_) => CommandRejectReason::InvalidJson,
        DecodeError::UnknownSchemaVersion(_) => CommandRejectReason::UnknownSchema,
        DecodeError::AgentMismatch { .. } => CommandRejectReason::AgentMismatch,
        _ => CommandRejectReason::InvalidSchema,
    };
    CommandRejection::new(reason, error.to_string())
}

/// Checks a command name: 1 to 64 bytes of lowercase letters, digits, `_`, `-`, with `/`
/// between non-empty levels (`host/collect`).
pub fn validate_command_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_COMMAND_NAME_LEN {
        return Err(format!(
            "command name must be 1 to {MAX_COMMAND_NAME_LEN} bytes"
        ));
    }
    if name.split('/').any(str::is_empty) {
        return Err(format!("command name '{name}' has an empty level"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '/')))
    {
        Some(bad) => Err(format!(
            "command name has character {bad:?} (use a-z, 0-9, '_', '-', '/')"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const TOPIC: &str = "pantau/v1/office/sound-01/cmd/host/collect";
    const NOW: i64 = 1_800_000_000_000;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "schema": 1, "agent": "sound-01", "site": "office", "id": "c-1",
            "timestamp_ms": NOW - 10, "args": {"x": 1}
        })
    }

    fn decode_json(topic: &str, value: &serde_json::Value) -> Result<Command, CommandRejection> {
        let payload = serde_json::to_vec(value).unwrap();
        decode_command("pantau", topic, &payload, &Limits::default(), NOW)
    }

    #[test]
    fn a_good_command_decodes() {
        let command = decode_json(TOPIC, &good()).unwrap();
        assert_eq!(command.name, "host/collect");
        assert_eq!(command.message.id, "c-1");
        assert_eq!(command.message.args["x"], 1);
        let mut bare = good();
        bare.as_object_mut().unwrap().remove("args");
        assert_eq!(
            decode_json(TOPIC, &bare).unwrap().message.args,
            empty_object()
        );
    }

    #[test]
    fn every_envelope_rejection_reason() {
        let with = |key: &str, value: serde_json::Value| {
            let mut message = good();
            message[key] = value;
            message
        };
        let cases: Vec<(CommandRejectReason, &str, Vec<u8>)> = vec![
            (
                CommandRejectReason::InvalidTopic,
                "pantau/v1/office/sound-01/metrics",
                serde_json::to_vec(&good()).unwrap(),
            ),
            (
                CommandRejectReason::InvalidTopic,
                "pantau/v1/office/sound-01/cmd/Host",
                serde_json::to_vec(&good()).unwrap(),
            ),
            (
                CommandRejectReason::UnknownSchema,
                "pantau/v2/office/sound-01/cmd/x",
                serde_json::to_vec(&good()).unwrap(),
            ),
            (
                CommandRejectReason::InvalidJson,
                TOPIC,
                b"{\"schema\"".to_vec(),
            ),
            (
                CommandRejectReason::InvalidSchema,
                TOPIC,
                br#"{"schema":1,"agent":"sound-01"}"#.to_vec(),
            ),
            (
                CommandRejectReason::InvalidSchema,
                TOPIC,
                serde_json::to_vec(&with("args", serde_json::json!([1]))).unwrap(),
            ),
            (
                CommandRejectReason::UnknownSchema,
                TOPIC,
                serde_json::to_vec(&with("schema", serde_json::json!(2))).unwrap(),
            ),
            (
                CommandRejectReason::AgentMismatch,
                TOPIC,
                serde_json::to_vec(&with("agent", serde_json::json!("other"))).unwrap(),
            ),
            (
                CommandRejectReason::InvalidId,
                TOPIC,
                serde_json::to_vec(&with("id", serde_json::json!("a\nb"))).unwrap(),
            ),
            (
                CommandRejectReason::Expired,
                TOPIC,
                serde_json::to_vec(&with("expires_ms", serde_json::json!(NOW - 1))).unwrap(),
            ),
        ];
        for (expected, topic, payload) in cases {
            let rejection =
                decode_command("pantau", topic, &payload, &Limits::default(), NOW).unwrap_err();
            assert_eq!(
                rejection.reason,
                expected,
                "{topic} {}",
                String::from_utf8_lossy(&payload)
            );
        }
        let limits = Limits {
            max_payload_bytes: 8,
            ..Limits::default()
        };
        let oversized = decode_command("pantau", TOPIC, b"{\"schema\":1}", &limits, NOW);
        assert_eq!(
            oversized.unwrap_err().reason,
            CommandRejectReason::Oversized
        );
    }

    #[test]
    fn rejections_carry_what_was_readable() {
        let mut message = good();
        message["expires_ms"] = serde_json::json!(NOW - 5);
        let rejection = decode_json(TOPIC, &message).unwrap_err();
        assert_eq!(rejection.command.as_deref(), Some("host/collect"));
        assert_eq!(rejection.id.as_deref(), Some("c-1"));
        assert_eq!(rejection.to_string(), "expired 5 ms before it arrived");

        message["id"] = serde_json::json!("bad id");
        let rejection = decode_json(TOPIC, &message).unwrap_err();
        assert_eq!(rejection.id, None, "an invalid id is not echoed");
    }

    #[test]
    fn command_names() {
        for good in ["collect", "host/collect", "sound/play-now", "a_1"] {
            assert_eq!(validate_command_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Host", "a//b", "a/", "a b", &"x".repeat(65)] {
            assert!(validate_command_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: HashSet<_> = CommandRejectReason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(labels.len(), CommandRejectReason::ALL.len());
    }
}
