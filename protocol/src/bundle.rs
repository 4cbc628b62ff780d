//! The enrolment bundle: everything an agent's host needs to join, in one line.
//!
//! `pantau-collector agent add ID --role ROLE` writes it (one file, mode 0600) and
//! `pantau-agent init --bundle FILE` reads it. It is a secret: it holds the agent's broker
//! password and, for a sound agent, its own command key.
//!
//! On disk and on the wire it is one line, `pantau-enrol-1.` followed by the URL-safe base64
//! (no padding) of a JSON object, so it survives being pasted through a terminal or a chat.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::topic::{validate_id, validate_prefix};

/// What a bundle line starts with; the number is the format's version.
pub const BUNDLE_PREFIX: &str = "pantau-enrol-1.";

/// Bundles larger than this are refused before decoding (a CA, a client certificate and its
/// key fit in a few KiB).
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// What the agent does, which decides the config `pantau-agent init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Host metrics of a server.
    Server,
    /// Host metrics plus network-link probes and interface state.
    Link,
    /// Host metrics plus devices without an agent (UPS over NUT, switches over SNMP).
    Device,
    /// Host metrics plus announcements on the host's speakers.
    Sound,
}

impl AgentRole {
    /// Every role, in the order the CLI lists them.
    pub const ALL: [AgentRole; 4] = [
        AgentRole::Server,
        AgentRole::Link,
        AgentRole::Device,
        AgentRole::Sound,
    ];

    /// The role's name on the command line and in the bundle.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Server => "server",
            AgentRole::Link => "link",
            AgentRole::Device => "device",
            AgentRole::Sound => "sound",
        }
    }
}

impl std::str::FromStr for AgentRole {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AgentRole::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("'{text}' is not a role (one of server, link, device, sound)"))
    }
}

/// One agent's enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The agent's id: its MQTT login and the id in its topics.
    pub agent_id: String,
    pub role: AgentRole,
    /// The agent's site, when the admin named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The broker(s), `mqtts://HOST:PORT`, tried in order.
    pub broker_urls: Vec<String>,
    /// The topic prefix (`mqtt.prefix`).
    pub prefix: String,
    /// The CA that signed the broker's certificate, PEM.
    pub ca_pem: String,
    /// The broker login: user name (the agent id) and password.
    pub username: String,
    pub password: String,
    /// A sound agent's own command key, derived from the collector's master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_key: Option<String>,
    /// The agent's client certificate and key, PEM, when the broker asks for certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

/// Why a bundle line cannot be read; never shows the secrets it holds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("a bundle is at most {MAX_BUNDLE_BYTES} bytes; this one has {0}")]
    TooLarge(usize),
    #[error("a bundle starts with '{BUNDLE_PREFIX}' (made by `pantau-collector agent add`)")]
    NotABundle,
    #[error("the bundle is damaged (not base64): copy the whole line")]
    NotBase64,
    #[error("the bundle is damaged: {0}")]
    BadJson(String),
    #[error("the bundle's {field} is invalid: {why}")]
    Invalid { field: &'static str, why: String },
}

impl Bundle {
    /// The bundle as one line (no line end).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("plain data"));
        format!("{BUNDLE_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a bundle line (surrounding white space allowed) and checks every field.
    pub fn decode(text: &str) -> Result<Bundle, BundleError> {
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(text.len()));
        }
        let body = text
            .trim()
            .strip_prefix(BUNDLE_PREFIX)
            .ok_or(BundleError::NotABundle)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| BundleError::NotBase64)?;
        let bundle: Bundle = serde_json::from_slice(&json).map_err(|error| {
            // serde_json's message names the field and position, never a value.
            BundleError::BadJson(error.to_string())
        })?;
        bundle.validate()?;
        Ok(bundle)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let invalid = |field, why: String| BundleError::Invalid { field, why };
        validate_id(&self.agent_id).map_err(|why| invalid("agent_id", why))?;
        if let Some(site) = &self.site {
            validate_id(site).map_err(|why| invalid("site", why))?;
        }
        validate_prefix(&self.prefix).map_err(|why| invalid("prefix", why))?;
        if self.broker_urls.is_empty() || self.broker_urls.len() > 16 {
            return Err(invalid(
                "broker_urls",
                format!("{} URLs; give 1 to 16", self.broker_urls.len()),
            ));
        }
        for url in &self.broker_urls {
            if !(url.starts_with("mqtts://") || url.starts_with("mqtt://")) || url.len() > 512 {
                return Err(invalid(
                    "broker_urls",
                    format!("'{url}' is not an mqtts:// or mqtt:// URL"),
                ));
            }
        }
        if !self.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid("ca_pem", "holds no PEM certificate".into()));
        }
        if self.username.is_empty() || self.password.len() < 16 {
            return Err(invalid(
                "username/password",
                "a login needs a user name and a password of at least 16 characters".into(),
            ));
        }
        match (self.role, &self.command_key) {
            (AgentRole::Sound, None) => {
                return Err(invalid("command_key", "a sound agent needs one".into()));
            }
            (_, Some(key)) if key.trim().len() < crate::MIN_KEY_BYTES => {
                return Err(invalid(
                    "command_key",
                    format!("shorter than {} bytes", crate::MIN_KEY_BYTES),
                ));
            }
            _ => {}
        }
        if self.client_cert_pem.is_some() != self.client_key_pem.is_some() {
            return Err(invalid(
                "client_cert_pem/client_key_pem",
                "both or neither".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        Bundle {
            agent_id: "gor-link-01".into(),
            role: AgentRole::Link,
            site: Some("gor-satria".into()),
            broker_urls: vec!["mqtts://collector.kominfo.lan:8883".into()],
            prefix: "pantau".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            username: "gor-link-01".into(),
            password: "0123456789abcdef0123".into(),
            command_key: None,
            client_cert_pem: None,
            client_key_pem: None,
        }
    }

    #[test]
    fn a_bundle_survives_its_line() {
        let bundle = sample();
        let line = bundle.encode();
        assert!(line.starts_with(BUNDLE_PREFIX));
        assert!(!line.contains(['\n', ' ', '+', '/', '=']), "{line}");
        assert_eq!(Bundle::decode(&format!("  {line}\n")), Ok(bundle));
    }

    #[test]
    fn damaged_or_wrong_bundles_are_named_without_their_secrets() {
        assert_eq!(Bundle::decode("hello"), Err(BundleError::NotABundle));
        assert_eq!(
            Bundle::decode("pantau-enrol-1.!!!"),
            Err(BundleError::NotBase64)
        );
        let mut sound = sample();
        sound.role = AgentRole::Sound;
        let error = Bundle::decode(&sound.encode()).unwrap_err();
        assert!(error.to_string().contains("command_key"), "{error}");
        let mut short = sample();
        short.password = "secret".into();
        let error = Bundle::decode(&short.encode()).unwrap_err().to_string();
        assert!(
            error.contains("password") && !error.contains("secret"),
            "{error}"
        );
        let mut bad_id = sample();
        bad_id.agent_id = "a/b".into();
        assert!(matches!(
            Bundle::decode(&bad_id.encode()),
            Err(BundleError::Invalid {
                field: "agent_id",
                ..
            })
        ));
        let huge = format!("{BUNDLE_PREFIX}{}", "A".repeat(MAX_BUNDLE_BYTES));
        assert!(matches!(
            Bundle::decode(&huge),
            Err(BundleError::TooLarge(_))
        ));
    }

    #[test]
    fn roles_read_from_the_command_line() {
        for role in AgentRole::ALL {
            assert_eq!(role.as_str().parse::<AgentRole>(), Ok(role));
        }
        assert!("printer".parse::<AgentRole>().is_err());
    }
}
