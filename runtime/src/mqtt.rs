//! The `[mqtt]` config section both binaries share, broker URL parsing, and the rumqttc options
//! built from them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use serde::Deserialize;
use tracing::warn;

use crate::config::ConfigError;
pub use crate::mqtt_failover::{BrokerUrls, Brokers, Failover};
use crate::mqtt_tls;

/// Port used when an `mqtt://` URL names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Port used when an `mqtts://` URL names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// `[mqtt]`: how to reach the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker URL, `mqtt://host[:port]` (port 1883 when omitted) or, over TLS,
    /// `mqtts://host[:port]` (port 8883); or a list of them, the nodes of a broker cluster,
    /// to fail over between (`mqtt.failover`).
    pub url: Option<BrokerUrls>,
    /// Which URL of the list to try after a failure: `in_order` (the default) or `random`.
    #[serde(default)]
    pub failover: Failover,
    /// Collector only: the sites this collector owns. It subscribes to their topics only, so
    /// several collectors can share one broker (or cluster) by site. Unset: every site.
    pub sites: Option<Vec<String>>,
    /// First topic level(s) of every Pantau topic.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// MQTT client id; defaults to one derived from the agent id or collector name.
    pub client_id: Option<String>,
    /// Broker user name, when the broker requires a login.
    pub username: Option<String>,
    /// Broker password; prefer `password_file` or `PANTAU_MQTT__PASSWORD` from a root-only
    /// environment file. Never logged.
    pub password: Option<Secret>,
    /// A file whose first line is the broker password (instead of `password`).
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) that may sign the broker's certificate, for `mqtts://`; the
    /// system's CA store when unset.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for brokers that require client certificates;
    /// needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
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
            failover: Failover::default(),
            sites: None,
            prefix: default_prefix(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_seconds: default_keep_alive_seconds(),
        }
    }
}

impl MqttSettings {
    /// Checks everything but `url`, whose presence each binary decides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(urls) = &self.url {
            self.endpoints(urls)?;
        }
        if let Some(sites) = &self.sites {
            if sites.is_empty() {
                return Err(ConfigError::invalid(
                    "mqtt.sites",
                    "[]",
                    "must name at least one site (remove it to own every site)",
                ));
            }
            for (i, site) in sites.iter().enumerate() {
                pantau_protocol::validate_id(site)
                    .map_err(|why| ConfigError::invalid(format!("mqtt.sites[{i}]"), site, why))?;
                if sites[..i].contains(site) {
                    return Err(ConfigError::invalid(
                        format!("mqtt.sites[{i}]"),
                        site,
                        "is listed twice",
                    ));
                }
            }
        }
        if let Some(path) = &self.password_file {
            if self.password.is_some() {
                return Err(ConfigError::invalid(
                    "mqtt.password_file",
                    path.display(),
                    "is set together with mqtt.password (or PANTAU_MQTT__PASSWORD); keep one",
                ));
            }
            mqtt_tls::read_password(path)?;
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
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
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

    /// TLS files only work with an `mqtts://` URL; with `mqtt://` they would be silently
    /// ignored and the connection sent in clear text.
    pub(crate) fn refuse_tls_files_without_tls(&self, url: &str) -> Result<(), ConfigError> {
        for (field, path) in [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert_file", &self.client_cert_file),
            ("mqtt.client_key_file", &self.client_key_file),
        ] {
            if let Some(path) = path {
                return Err(ConfigError::invalid(
                    field,
                    path.display(),
                    format!("is set but mqtt.url '{url}' is not TLS; use mqtts://"),
                ));
            }
        }
        Ok(())
    }

    /// rumqttc options for `endpoint` as `client_id`, with credentials, keep-alive and, for
    /// `mqtts://`, TLS applied. Reads the TLS and password files.
    pub fn options(
        &self,
        endpoint: &Endpoint,
        client_id: &str,
    ) -> Result<MqttOptions, ConfigError> {
        let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
        options.set_keep_alive(Duration::from_secs(self.keep_alive_seconds));
        if let Some(username) = &self.username {
            let password = match (&self.password, &self.password_file) {
                (Some(password), _) => password.0.clone(),
                (None, Some(path)) => mqtt_tls::read_password(path)?,
                (None, None) => String::new(),
            };
            options.set_credentials(username.clone(), password);
        }
        if endpoint.tls {
            let config = mqtt_tls::client_config(self)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(options)
    }
}

/// A broker's host and port, and whether to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with the broker's name verified.
    pub tls: bool,
}

impl Endpoint {
    /// Parses `mqtt://host[:port]` (also `tcp://`) or `mqtts://host[:port]` (also `ssl://`);
    /// IPv6 hosts go in brackets.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls) = if let Some(rest) = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            (rest, false)
        } else if let Some(rest) = url
            .strip_prefix("mqtts://")
            .or_else(|| url.strip_prefix("ssl://"))
        {
            (rest, true)
        } else {
            return Err("must start with mqtt:// or mqtts:// (TLS)".to_owned());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '@']) {
            return Err(
                "must be mqtt[s]://host[:port] with no path, query or user info".to_owned(),
            );
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
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("has an invalid port '{text}'")),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// Logs a warning when this is a clear-text connection to another machine. Call once per
    /// start, for a broker the user configured (not the collector's own embedded one).
    pub fn warn_if_clear_text(&self) {
        if !self.tls && !self.is_loopback() {
            warn!(
                broker = %self,
                "MQTT to another machine in clear text: anyone on the path can read the \
                 messages and the password; use mqtts:// (README, \"MQTT over TLS\")"
            );
        }
    }

    /// Whether the broker is on this machine (`localhost` or a loopback address).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
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
            ("mqtts://broker.kominfo.lan", "broker.kominfo.lan", 8883),
            ("ssl://127.0.0.1:18883", "127.0.0.1", 18883),
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
            ("http://x", "must start with mqtt:// or mqtts://"),
            ("mqtts://", "has no host"),
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
    fn loopback_and_tls_are_recognised() {
        for (url, loopback) in [
            ("mqtt://127.0.0.1", true),
            ("mqtt://127.8.9.1", true),
            ("mqtt://localhost:1883", true),
            ("mqtt://[::1]", true),
            ("mqtt://10.20.0.5", false),
            ("mqtt://mqtt.kominfo.lan", false),
        ] {
            assert_eq!(
                Endpoint::parse(url).unwrap().is_loopback(),
                loopback,
                "{url}"
            );
        }
        let endpoint = Endpoint::parse("mqtts://[::1]").unwrap();
        assert!(endpoint.tls);
        assert_eq!(endpoint.to_string(), "mqtts://[::1]:8883");
    }

    #[test]
    fn tls_files_need_an_mqtts_url_and_one_password_source() {
        let settings = MqttSettings {
            url: Some("mqtt://broker".into()),
            client_cert_file: Some(PathBuf::from("/etc/pantau/a.pem")),
            ..MqttSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.client_cert_file: '/etc/pantau/a.pem' is set but mqtt.url 'mqtt://broker' is \
             not TLS; use mqtts://"
        );
        let settings = MqttSettings {
            username: Some("agent".to_owned()),
            password: Some(Secret("x".to_owned())),
            password_file: Some(PathBuf::from("/etc/pantau/password")),
            ..MqttSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.starts_with("mqtt.password_file: '/etc/pantau/password' is set together"));
        assert!(
            !error.contains("'x'"),
            "the password must not be quoted: {error}"
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
