//! The `[mqtt]` config section both binaries share, broker URL parsing, and the rumqttc options
//! built from them.

use std::fmt;
use std::time::Duration;

use rumqttc::MqttOptions;
use serde::Deserialize;

use crate::config::ConfigError;

/// Port used when a broker URL names none.
pub const DEFAULT_PORT: u16 = 1883;

/// `[mqtt]`: how to reach the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker URL, `mqtt://host[:port]` (port 1883 when omitted).
    pub url: Option<String>,
    /// First topic level(s) of every Pantau topic.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// MQTT client id; defaults to one derived from the agent id or collector name.
    pub client_id: Option<String>,
    /// Broker user name, when the broker requires a login.
    pub username: Option<String>,
    /// Broker password; prefer `PANTAU_MQTT__PASSWORD` from a root-only environment file.
    pub password: Option<Secret>,
    /// Interval of MQTT keep-alive pings; the broker declares the client gone (and publishes
    /// its last will) after 1.5 times this without traffic.
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: u64,
}

/// A string kept out of logs and debug output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

fn default_prefix() -> String {
    pantau_protocol::DEFAULT_PREFIX.to_owned()
}

fn default_keep_alive_seconds() -> u64 {
    30
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            url: None,
            prefix: default_prefix(),
            client_id: None,
            username: None,
            password: None,
            keep_alive_seconds: default_keep_alive_seconds(),
        }
    }
}

impl MqttSettings {
    /// Checks everything but `url`, whose presence each binary decides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            Endpoint::parse(url).map_err(|why| ConfigError::invalid("mqtt.url", url, why))?;
        }
        pantau_protocol::validate_prefix(&self.prefix)
            .map_err(|why| ConfigError::invalid("mqtt.prefix", &self.prefix, why))?;
        if let Some(id) = self
            .client_id
            .as_ref()
            .filter(|id| id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError::invalid(
                "mqtt.client_id",
                id,
                "must be 1 to 128 bytes long",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::invalid(
                "mqtt.password",
                "***",
                "is set but mqtt.username is not (MQTT 3.1.1 sends a password only with a user name)",
            ));
        }
        if !(5..=3600).contains(&self.keep_alive_seconds) {
            return Err(ConfigError::invalid(
                "mqtt.keep_alive_seconds",
                self.keep_alive_seconds,
                "must be between 5 and 3600",
            ));
        }
        Ok(())
    }

    /// rumqttc options for `endpoint` as `client_id`, with credentials and keep-alive applied.
    pub fn options(&self, endpoint: &Endpoint, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
        options.set_keep_alive(Duration::from_secs(self.keep_alive_seconds));
        if let Some(username) = &self.username {
            let password = self
                .password
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_default();
            options.set_credentials(username.clone(), password);
        }
        options
    }
}

/// A broker's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `mqtt://host[:port]` (also `tcp://`); IPv6 hosts go in brackets.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or("must start with mqtt:// (TLS is not supported yet)")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '@']) {
            return Err("must be mqtt://host[:port] with no path, query or user info".to_owned());
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or("has an unclosed '['")?;
                match after {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(after.strip_prefix(':').ok_or("has junk after ']'")?),
                    ),
                }
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err("has no host".to_owned());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("has an invalid port '{text}'")),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let cases = [
            ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883),
            ("mqtt://broker.kominfo.lan", "broker.kominfo.lan", 1883),
            ("tcp://localhost:18830/", "localhost", 18830),
            ("mqtt://[::1]:1884", "::1", 1884),
            ("mqtt://[::1]", "::1", 1883),
        ];
        for (url, host, port) in cases {
            let endpoint = Endpoint::parse(url).unwrap();
            assert_eq!(
                (endpoint.host.as_str(), endpoint.port),
                (host, port),
                "{url}"
            );
        }
        assert_eq!(
            Endpoint::parse("mqtt://[::1]:1884").unwrap().to_string(),
            "mqtt://[::1]:1884"
        );
    }

    #[test]
    fn refuses_bad_urls() {
        let cases = [
            ("http://x", "must start with mqtt://"),
            ("mqtts://x", "must start with mqtt://"),
            ("mqtt://", "has no host"),
            ("mqtt://x:0", "invalid port '0'"),
            ("mqtt://x:99999", "invalid port '99999'"),
            ("mqtt://x:port", "invalid port 'port'"),
            ("mqtt://u:p@x", "no path, query or user info"),
            ("mqtt://x/topic", "no path, query or user info"),
            ("mqtt://[::1", "unclosed"),
        ];
        for (url, expected) in cases {
            let error = Endpoint::parse(url).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn validation_names_field_and_value() {
        let settings = MqttSettings {
            keep_alive_seconds: 1,
            ..MqttSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.keep_alive_seconds: '1' must be between 5 and 3600"
        );
        let settings = MqttSettings {
            prefix: "pantau/#".to_owned(),
            ..MqttSettings::default()
        };
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("mqtt.prefix: 'pantau/#'")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let settings = MqttSettings {
            username: Some("agent".to_owned()),
            password: Some(Secret("hunter2".to_owned())),
            ..MqttSettings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
