//! Several brokers for one client (`mqtt.url` as a list, each URL checked and named in errors
//! as `mqtt.url[1]`) and the choice of the next one after a failure (`mqtt.failover`).
//!
//! rumqttc's `EventLoop` keeps no connection after `poll()` returned an error, and opens the
//! next one from its public `mqtt_options`; so failing over is replacing those options before
//! the next poll. The event loop, its request channel and whoever owns it stay the same: the
//! one-task-owns-the-event-loop rule holds, and the caller's resend logic (the agent's outbox,
//! the collector's publish acks) works across brokers exactly as across reconnects to one.

use std::fmt;

use rumqttc::{EventLoop, MqttOptions};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::mqtt::{Endpoint, MqttSettings};
use crate::mqtt_tls;

/// `mqtt.url`: one URL, or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BrokerUrls {
    One(String),
    List(Vec<String>),
}

impl BrokerUrls {
    /// Each URL with the config path that names it: `mqtt.url`, or `mqtt.url[1]` in a list.
    /// A string with commas is a list too, so that `PANTAU_MQTT__URL` (environment overrides
    /// are strings) can name several brokers.
    pub fn named(&self) -> Vec<(String, &str)> {
        let list: Vec<&str> = match self {
            BrokerUrls::One(url) if !url.contains(',') => {
                return vec![("mqtt.url".to_owned(), url.as_str())];
            }
            BrokerUrls::One(urls) => urls.split(',').map(str::trim).collect(),
            BrokerUrls::List(urls) => urls.iter().map(String::as_str).collect(),
        };
        list.into_iter()
            .enumerate()
            .map(|(i, url)| (format!("mqtt.url[{i}]"), url))
            .collect()
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerUrls::One(url) => f.write_str(url),
            BrokerUrls::List(urls) => write!(f, "[{}]", urls.join(", ")),
        }
    }
}

impl From<&str> for BrokerUrls {
    fn from(url: &str) -> Self {
        BrokerUrls::One(url.to_owned())
    }
}

/// `mqtt.failover`: which broker of the list to try after a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failover {
    /// Start with the first URL and go down the list, back to the first after the last.
    #[default]
    InOrder,
    /// Start with a random URL and pick another one at random after each failure, which
    /// spreads clients over the brokers of a cluster.
    Random,
}

impl fmt::Display for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failover::InOrder => "in_order",
            Failover::Random => "random",
        })
    }
}

/// The brokers a client may use, each with its ready rumqttc options, and the current one.
#[derive(Debug)]
pub struct Brokers {
    brokers: Vec<(Endpoint, MqttOptions)>,
    failover: Failover,
    current: usize,
}

impl Brokers {
    /// `brokers` must not be empty (the config's validation makes sure); the first one is
    /// current with `InOrder`, a random one with `Random`.
    pub fn new(brokers: Vec<(Endpoint, MqttOptions)>, failover: Failover) -> Self {
        let current = match failover {
            Failover::Random if brokers.len() > 1 => fastrand::usize(..brokers.len()),
            _ => 0,
        };
        Self {
            brokers,
            failover,
            current,
        }
    }

    /// The broker in use (or about to be tried).
    pub fn current(&self) -> &Endpoint {
        &self.brokers[self.current].0
    }

    /// The options of the current broker, to build the event loop with.
    pub fn options(&self) -> MqttOptions {
        self.brokers[self.current].1.clone()
    }

    /// Every broker, in configured order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.brokers.iter().map(|(endpoint, _)| endpoint)
    }

    /// After a failed attempt or a lost connection: moves to the next broker and points
    /// `eventloop` at it, so that its next `poll()` connects there. Returns whether the broker
    /// changed (false with a single URL).
    pub fn fail_over(&mut self, eventloop: &mut EventLoop) -> bool {
        let next = self.next_index(fastrand::usize);
        if next == self.current {
            return false;
        }
        self.current = next;
        eventloop.mqtt_options = self.options();
        true
    }

    /// The broker after the current one; `pick(range)` draws a random number for `Random`.
    fn next_index(&self, pick: impl FnOnce(std::ops::Range<usize>) -> usize) -> usize {
        let count = self.brokers.len();
        if count < 2 {
            return self.current;
        }
        match self.failover {
            Failover::InOrder => (self.current + 1) % count,
            // One of the others, uniformly: draw among count - 1 and skip the current one.
            Failover::Random => {
                let drawn = pick(0..count - 1);
                if drawn >= self.current {
                    drawn + 1
                } else {
                    drawn
                }
            }
        }
    }
}

/// `url` with any user info (`user:password@`) replaced by `***@`, for error messages: a
/// password written into a URL must not reach the log.
fn redact_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

impl MqttSettings {
    /// Parses and checks every URL of `urls`; errors name the URL's place (`mqtt.url[1]`).
    /// Reads the TLS files when a URL needs them, so that `--check-config` names a bad one.
    pub fn endpoints(&self, urls: &BrokerUrls) -> Result<Vec<Endpoint>, ConfigError> {
        let named = urls.named();
        if named.is_empty() {
            return Err(ConfigError::invalid(
                "mqtt.url",
                "[]",
                "must name at least one broker",
            ));
        }
        let mut endpoints = Vec::with_capacity(named.len());
        for (field, url) in named {
            let endpoint = Endpoint::parse(url)
                .map_err(|why| ConfigError::invalid(&field, redact_user_info(url), why))?;
            if endpoint.tls {
                mqtt_tls::client_config(self)?;
            } else {
                self.refuse_tls_files_without_tls(url)?;
            }
            if endpoints.contains(&endpoint) {
                return Err(ConfigError::invalid(field, url, "is listed twice"));
            }
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }

    /// The failover list over `endpoints`: options for each, built by `options` and then
    /// finished by `adjust` (packet limits, session kind), so every broker gets the same ones.
    pub fn brokers(
        &self,
        endpoints: &[Endpoint],
        client_id: &str,
        mut adjust: impl FnMut(&mut MqttOptions),
    ) -> Result<Brokers, ConfigError> {
        let mut list = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let mut options = self.options(endpoint, client_id)?;
            adjust(&mut options);
            list.push((endpoint.clone(), options));
        }
        Ok(Brokers::new(list, self.failover))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(count: u16, failover: Failover) -> Brokers {
        let list = (0..count)
            .map(|i| {
                let endpoint = Endpoint::parse(&format!("mqtt://127.0.0.1:{}", 1883 + i)).unwrap();
                let options = MqttOptions::new("t", endpoint.host.clone(), endpoint.port);
                (endpoint, options)
            })
            .collect();
        Brokers::new(list, failover)
    }

    #[test]
    fn in_order_goes_down_the_list_and_wraps() {
        let mut brokers = brokers(3, Failover::InOrder);
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(brokers.options(), 1);
        let mut ports = vec![brokers.current().port];
        for _ in 0..4 {
            assert!(brokers.fail_over(&mut eventloop));
            ports.push(brokers.current().port);
            assert_eq!(
                eventloop.mqtt_options.broker_address().1,
                brokers.current().port,
                "the event loop connects to the new broker next"
            );
        }
        assert_eq!(ports, [1883, 1884, 1885, 1883, 1884]);
    }

    #[test]
    fn a_single_broker_stays() {
        let mut brokers = brokers(1, Failover::Random);
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(brokers.options(), 1);
        assert!(!brokers.fail_over(&mut eventloop));
        assert_eq!(brokers.current().port, 1883);
    }

    #[test]
    fn random_always_picks_another_broker() {
        let mut brokers = brokers(3, Failover::Random);
        brokers.current = 1;
        assert_eq!(brokers.next_index(|_| 0), 0);
        assert_eq!(brokers.next_index(|_| 1), 2);
        brokers.current = 2;
        assert_eq!(brokers.next_index(|range| range.end - 1), 1);
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(brokers.options(), 1);
        for _ in 0..50 {
            let before = brokers.current;
            assert!(brokers.fail_over(&mut eventloop));
            assert_ne!(brokers.current, before);
        }
    }

    fn parse(toml: &str) -> MqttSettings {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml))
            .extract()
            .expect("valid [mqtt] TOML")
    }

    #[test]
    fn url_may_be_one_string_or_a_list() {
        let one = parse(r#"url = "mqtt://127.0.0.1:1883""#);
        let endpoints = one.endpoints(one.url.as_ref().unwrap()).unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(one.failover, Failover::InOrder);
        let list = parse(
            r#"
            url = ["mqtt://n1.lan", "mqtt://n2.lan:1884", "mqtt://[::1]:1885"]
            failover = "random"
            "#,
        );
        let endpoints = list.endpoints(list.url.as_ref().unwrap()).unwrap();
        let shown: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "mqtt://n1.lan:1883",
                "mqtt://n2.lan:1884",
                "mqtt://[::1]:1885"
            ]
        );
        assert_eq!(list.failover, Failover::Random);
        list.validate().unwrap();
        // The form an environment override takes.
        let env = parse(r#"url = "mqtt://n1.lan:1883, mqtt://n2.lan:1884""#);
        let endpoints = env.endpoints(env.url.as_ref().unwrap()).unwrap();
        assert_eq!(endpoints[1].to_string(), "mqtt://n2.lan:1884");
        let env = parse(r#"url = "mqtt://n1.lan:1883,""#);
        assert_eq!(
            env.validate().unwrap_err().to_string(),
            "mqtt.url[1]: '' must start with mqtt:// or mqtts:// (TLS)"
        );
    }

    #[test]
    fn every_url_of_the_list_is_checked_and_named() {
        let settings = parse(r#"url = ["mqtt://n1.lan", "http://n2.lan"]"#);
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.url[1]: 'http://n2.lan' must start with mqtt:// or mqtts:// (TLS)"
        );
        let settings = parse(r#"url = []"#);
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.url: '[]' must name at least one broker"
        );
        let settings = parse(r#"url = ["mqtt://n1.lan", "mqtt://n1.lan:1883"]"#);
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.url[1]: 'mqtt://n1.lan:1883' is listed twice"
        );
        // User info (a password) can never reach the broker info metric's label.
        // nor the error message.
        let settings = parse(r#"url = ["mqtt://n1.lan", "mqtt://u:secret@n2.lan"]"#);
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "mqtt.url[1]: 'mqtt://***@n2.lan' must be mqtt[s]://host[:port] with no path, query \
             or user info"
        );
        use figment::providers::{Format, Toml};
        let error = figment::Figment::from(Toml::string(r#"failover = "sideways""#))
            .extract::<MqttSettings>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("in_order"), "{error}");
    }

    #[test]
    fn sites_are_checked_like_agent_sites() {
        let settings = parse(r#"sites = ["dc", "gor"]"#);
        settings.validate().unwrap();
        for (toml, expected) in [
            (
                r#"sites = []"#,
                "mqtt.sites: '[]' must name at least one site",
            ),
            (
                r#"sites = ["dc", "a/b"]"#,
                "mqtt.sites[1]: 'a/b' character '/'",
            ),
            (
                r#"sites = ["dc", "dc"]"#,
                "mqtt.sites[1]: 'dc' is listed twice",
            ),
        ] {
            let error = parse(toml).validate().unwrap_err().to_string();
            assert!(error.starts_with(expected), "{toml}: {error}");
        }
    }
}
