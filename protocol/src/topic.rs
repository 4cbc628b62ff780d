//! Topic layout: `<prefix>/v1/<site>/<agent-id>/<channel>`.
//!
//! Site and agent id are single topic levels, so they may not contain `/` or the MQTT wildcards;
//! the allowed alphabet is kept small on purpose (it also becomes a Prometheus label value and a
//! file name on the agent).

use std::fmt;

use thiserror::Error;

use crate::SCHEMA_VERSION;

/// The topic prefix used when the config does not name one.
pub const DEFAULT_PREFIX: &str = "pantau";

/// Longest accepted agent id or site, in bytes.
const MAX_ID_LEN: usize = 64;

/// What a topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Retained birth (`online`) and last will (`offline`) messages.
    Status,
    /// Periodic metric samples.
    Metrics,
    /// Discrete events (agent started, probe state changes, ...).
    Events,
    /// Commands to the agent; the rest of the topic after `cmd/` names the command.
    Command(String),
}

/// A parsed Pantau topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub site: String,
    pub agent: String,
    pub channel: Channel,
}

/// Why a topic is not a Pantau v1 topic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under the prefix")]
    OutsidePrefix(String),
    #[error("topic {topic:?} uses protocol version {version:?}, this build speaks v1")]
    UnknownVersion { topic: String, version: String },
    #[error("topic {topic:?} does not match <prefix>/v1/<site>/<agent>/<channel>: {why}")]
    Malformed { topic: String, why: String },
}

impl Topic {
    pub fn new(site: &str, agent: &str, channel: Channel) -> Self {
        Self {
            site: site.to_owned(),
            agent: agent.to_owned(),
            channel,
        }
    }

    /// The full topic string under `prefix`.
    pub fn render(&self, prefix: &str) -> String {
        format!(
            "{prefix}/v{SCHEMA_VERSION}/{}/{}/{}",
            self.site, self.agent, self.channel
        )
    }

    /// The subscription filter that matches every Pantau topic under `prefix`, including other
    /// protocol versions, so a newer agent shows up as `unknown_schema` instead of silence.
    pub fn subscription_filter(prefix: &str) -> String {
        format!("{prefix}/#")
    }

    /// Parses `topic`, which must lie under `prefix`.
    pub fn parse(prefix: &str, topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| TopicError::OutsidePrefix(topic.to_owned()))?;
        let mut levels = rest.splitn(5, '/');
        let malformed = |why: &str| TopicError::Malformed {
            topic: topic.to_owned(),
            why: why.to_owned(),
        };
        let version = levels.next().unwrap_or_default();
        if version != format!("v{SCHEMA_VERSION}") {
            return Err(TopicError::UnknownVersion {
                topic: topic.to_owned(),
                version: version.to_owned(),
            });
        }
        let site = levels.next().ok_or_else(|| malformed("no site level"))?;
        let agent = levels.next().ok_or_else(|| malformed("no agent level"))?;
        let channel = levels.next().ok_or_else(|| malformed("no channel level"))?;
        validate_id(site).map_err(|why| malformed(&format!("site: {why}")))?;
        validate_id(agent).map_err(|why| malformed(&format!("agent: {why}")))?;
        let tail = levels.next();
        let channel = match (channel, tail) {
            ("status", None) => Channel::Status,
            ("metrics", None) => Channel::Metrics,
            ("events", None) => Channel::Events,
            ("cmd", Some(command)) if !command.is_empty() => Channel::Command(command.to_owned()),
            ("cmd", _) => return Err(malformed("cmd without a command name")),
            (other, None) => return Err(malformed(&format!("unknown channel '{other}'"))),
            (_, Some(_)) => return Err(malformed("extra levels after the channel")),
        };
        Ok(Self {
            site: site.to_owned(),
            agent: agent.to_owned(),
            channel,
        })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Status => f.write_str("status"),
            Channel::Metrics => f.write_str("metrics"),
            Channel::Events => f.write_str("events"),
            Channel::Command(name) => write!(f, "cmd/{name}"),
        }
    }
}

/// Checks an agent id or site: 1 to 64 bytes of ASCII letters, digits, `.`, `_` or `-`, and
/// not `.` or `..` (ids become file and URL path segments).
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id == "." || id == ".." {
        return Err(format!("must not be {id:?}"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("longer than {MAX_ID_LEN} bytes"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(format!(
            "character {bad:?} is not allowed (use letters, digits, '.', '_' or '-')"
        )),
        None => Ok(()),
    }
}

/// Checks a topic prefix: one or more non-empty levels without MQTT wildcards.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err("must not contain '+', '#' or NUL".to_owned());
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not start or end with '/' or contain '//'".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_every_channel() {
        for channel in [
            Channel::Status,
            Channel::Metrics,
            Channel::Events,
            Channel::Command("announce/play".to_owned()),
        ] {
            let topic = Topic::new("gor-satria", "link-01", channel);
            let text = topic.render("pantau");
            assert_eq!(Topic::parse("pantau", &text), Ok(topic));
        }
        assert_eq!(
            Topic::new("dc", "srv-01", Channel::Metrics).render("kominfo/pantau"),
            "kominfo/pantau/v1/dc/srv-01/metrics"
        );
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        assert!(matches!(
            Topic::parse("pantau", "pantauX/v1/dc/a/metrics"),
            Err(TopicError::OutsidePrefix(_))
        ));
        assert!(matches!(
            Topic::parse("pantau", "pantau/v2/dc/a/metrics"),
            Err(TopicError::UnknownVersion { version, .. }) if version == "v2"
        ));
        for bad in [
            "pantau/v1/dc/a",
            "pantau/v1/dc/a/weather",
            "pantau/v1/dc/a/metrics/extra",
            "pantau/v1/dc/a/cmd",
            "pantau/v1/dc/a b/metrics",
            "pantau/v1//a/metrics",
        ] {
            assert!(
                matches!(
                    Topic::parse("pantau", bad),
                    Err(TopicError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn id_rules() {
        assert!(validate_id("dc-srv-01.kominfo_x").is_ok());
        assert_eq!(validate_id(""), Err("must not be empty".to_owned()));
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id("a/b").unwrap_err().contains("'/'"));
        assert!(validate_id("a+").is_err());
        assert!(validate_id(".").is_err() && validate_id("..").is_err());
        assert!(validate_id("...").is_ok() && validate_id(".a").is_ok());
    }

    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("pantau").is_ok());
        assert!(validate_prefix("kominfo/pantau").is_ok());
        for bad in ["", "/pantau", "pantau/", "a//b", "pan+tau", "pantau/#"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
