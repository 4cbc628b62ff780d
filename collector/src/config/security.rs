//! `[security]`: the promise an installed collector makes, checked once at start. With
//! `require_tls_beyond_loopback`, nothing the collector serves or sends crosses the network in
//! clear text: the LAN is not trusted, so a config edit that would open a plain listener or a
//! plain connection to another machine stops the service instead of running insecurely.

use std::net::{IpAddr, SocketAddr};

use pantau_runtime::config::ConfigError;
use pantau_runtime::mqtt::Endpoint;
use serde::Deserialize;

/// `[security]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Refuse to start when `http.listen` is not a loopback address and serves plain HTTP,
    /// when an `mqtt.url` reaches another machine with plain `mqtt://`, or when
    /// `remote_write.url` is plain `http://` to another machine. `pantau-collector init`
    /// sets it.
    #[serde(default)]
    pub require_tls_beyond_loopback: bool,
}

/// What the check looks at, taken from the rest of the config.
pub struct Exposure<'a> {
    pub http_listen: SocketAddr,
    pub http_tls: bool,
    pub mqtt: &'a [Endpoint],
    pub remote_write_url: Option<&'a str>,
}

impl SecurityConfig {
    pub fn check(&self, exposure: &Exposure) -> Result<(), ConfigError> {
        if !self.require_tls_beyond_loopback {
            return Ok(());
        }
        let refuse = |field: &str, value: &dyn std::fmt::Display, how: &str| {
            ConfigError::invalid(
                field,
                value,
                format!(
                    "{how}, but security.require_tls_beyond_loopback = true: TLS is required \
                     beyond loopback"
                ),
            )
        };
        if !exposure.http_listen.ip().is_loopback() && !exposure.http_tls {
            return Err(refuse(
                "http.listen",
                &exposure.http_listen,
                "is not a loopback address and http.tls_cert_file is not set (plain HTTP)",
            ));
        }
        for endpoint in exposure.mqtt {
            if !endpoint.tls && !is_loopback_host(&endpoint.host) {
                return Err(refuse(
                    "mqtt.url",
                    &format!("mqtt://{}:{}", endpoint.host, endpoint.port),
                    "reaches another machine with plain mqtt:// (use mqtts://)",
                ));
            }
        }
        if let Some(url) = exposure.remote_write_url
            && let Some(rest) = url.strip_prefix("http://")
        {
            let authority = rest.split('/').next().unwrap_or_default();
            if !is_loopback_host(host_of(authority)) {
                return Err(refuse(
                    "remote_write.url",
                    &url,
                    "sends plain http:// to another machine",
                ));
            }
        }
        Ok(())
    }
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// `localhost` or a loopback address; a name is otherwise taken to be another machine.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, tls: bool) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port: 1883,
            tls,
        }
    }

    fn check(
        listen: &str,
        http_tls: bool,
        mqtt: &[Endpoint],
        remote_write_url: Option<&str>,
    ) -> Result<(), String> {
        SecurityConfig {
            require_tls_beyond_loopback: true,
        }
        .check(&Exposure {
            http_listen: listen.parse().unwrap(),
            http_tls,
            mqtt,
            remote_write_url,
        })
        .map_err(|error| error.to_string())
    }

    #[test]
    fn plain_http_beyond_loopback_is_refused() {
        let error = check("0.0.0.0:9810", false, &[], None).unwrap_err();
        assert_eq!(
            error,
            "http.listen: '0.0.0.0:9810' is not a loopback address and http.tls_cert_file is \
             not set (plain HTTP), but security.require_tls_beyond_loopback = true: TLS is \
             required beyond loopback"
        );
        assert!(check("192.168.1.10:9810", false, &[], None).is_err());
        check("0.0.0.0:9810", true, &[], None).unwrap();
        check("127.0.0.1:9810", false, &[], None).unwrap();
        check("[::1]:9810", false, &[], None).unwrap();
    }

    #[test]
    fn plain_mqtt_to_another_machine_is_refused() {
        let error = check("127.0.0.1:9810", false, &[endpoint("mq.lan", false)], None).unwrap_err();
        assert!(
            error.starts_with("mqtt.url: 'mqtt://mq.lan:1883' reaches another machine"),
            "{error}"
        );
        assert!(error.contains("TLS is required beyond loopback"), "{error}");
        let second = [endpoint("127.0.0.1", false), endpoint("10.0.0.2", false)];
        assert!(
            check("127.0.0.1:9810", false, &second, None).is_err(),
            "any of the list"
        );
        let fine = [
            endpoint("127.0.0.1", false),
            endpoint("::1", false),
            endpoint("localhost", false),
            endpoint("mq.lan", true),
        ];
        check("127.0.0.1:9810", false, &fine, None).unwrap();
    }

    #[test]
    fn plain_remote_write_to_another_machine_is_refused() {
        let url = "http://prometheus.lan:9090/api/v1/write";
        let error = check("127.0.0.1:9810", false, &[], Some(url)).unwrap_err();
        assert!(
            error.starts_with("remote_write.url: 'http://prometheus.lan:9090/"),
            "{error}"
        );
        for url in [
            "http://127.0.0.1:9090/api/v1/write",
            "http://localhost:9090/api/v1/write",
            "http://[::1]:9090/api/v1/write",
            "https://prometheus.lan:9090/api/v1/write",
        ] {
            check("127.0.0.1:9810", false, &[], Some(url)).unwrap();
        }
    }

    #[test]
    fn off_by_default_allows_everything() {
        SecurityConfig::default()
            .check(&Exposure {
                http_listen: "0.0.0.0:9810".parse().unwrap(),
                http_tls: false,
                mqtt: &[endpoint("mq.lan", false)],
                remote_write_url: Some("http://prometheus.lan:9090/api/v1/write"),
            })
            .unwrap();
    }
}
