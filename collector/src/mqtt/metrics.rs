//! The connection's own series: which broker is in use, how often the collector failed over,
//! and messages of sites it does not own.

use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

use pantau_runtime::mqtt::Endpoint;

/// Registered once with the collector's registry.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// `pantau_collector_mqtt_broker_info{url}`: 1 for the broker in use.
    broker: IntGaugeVec,
    /// `pantau_collector_mqtt_failovers_total`.
    failovers: IntCounter,
    /// `pantau_collector_ignored_messages_total{reason="foreign_site"}`.
    pub foreign_site: IntCounter,
}

impl ConnectionMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let broker = IntGaugeVec::new(
            Opts::new(
                "pantau_collector_mqtt_broker_info",
                "The broker the collector uses (or tries) now, from mqtt.url; always 1.",
            ),
            &["url"],
        )?;
        let failovers = IntCounter::new(
            "pantau_collector_mqtt_failovers_total",
            "Moves to the next broker of mqtt.url after a failed attempt or a lost connection.",
        )?;
        let ignored = prometheus::IntCounterVec::new(
            Opts::new(
                "pantau_collector_ignored_messages_total",
                "Messages received but not for this collector, by reason (foreign_site: a \
                 site outside mqtt.sites).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(broker.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(ignored.clone()))?;
        Ok(Self {
            broker,
            failovers,
            foreign_site: ignored.with_label_values(&["foreign_site"]),
        })
    }

    /// The broker in use is now `endpoint` (its URL has no user info: the config refuses it).
    pub fn set_broker(&self, endpoint: &Endpoint) {
        self.broker.reset();
        self.broker
            .with_label_values(&[endpoint.to_string().as_str()])
            .set(1);
    }

    pub fn failed_over(&self, endpoint: &Endpoint) {
        self.set_broker(endpoint);
        self.failovers.inc();
    }
}
