//! Several brokers for one client (`mqtt.url` as a list) and the choice of the next one after a
//! failure (`mqtt.failover`).
//!
//! rumqttc's `EventLoop` keeps no connection after `poll()` returned an error, and opens the
//! next one from its public `mqtt_options`; so failing over is replacing those options before
//! the next poll. The event loop, its request channel and whoever owns it stay the same: the
//! one-task-owns-the-event-loop rule holds, and the caller's resend logic (the agent's outbox,
//! the collector's publish acks) works across brokers exactly as across reconnects to one.

use std::fmt;

use rumqttc::{EventLoop, MqttOptions};
use serde::Deserialize;

use crate::mqtt::Endpoint;

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
}
