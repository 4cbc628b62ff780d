//! The reporting loop: every interval, collect from each enabled role, number the message and
//! hand it to the publisher. Collection blocks (file reads, statvfs), so it runs on the
//! blocking pool with one long-lived `Host` moved in and out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use pantau_protocol::{
    Channel, Event, EventsMessage, Family, MetricsMessage, SCHEMA_VERSION, Severity, Topic,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::host::{FamilyBuilder, Host};
use crate::publish::{DeliveryStats, Envelope, unix_millis};
use crate::sequence::Sequence;

/// What the loop needs to build messages.
pub struct Reporter {
    pub prefix: String,
    pub agent: String,
    pub site: String,
    pub interval: Duration,
    pub max_message_bytes: usize,
    pub sequence: Sequence,
    pub host: Option<Host>,
    pub stats: Arc<DeliveryStats>,
    pub outgoing: mpsc::Sender<Envelope>,
}

impl Reporter {
    /// Announces the start, then reports every interval until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.send_event(Event {
            kind: "agent_started".to_owned(),
            severity: Severity::Info,
            message: format!("pantau-agent {} started", env!("CARGO_PKG_VERSION")),
            labels: [("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())].into(),
        })
        .await;
        let mut tick = tokio::time::interval(self.interval);
        // After a stall (suspended VM), report once and keep the cadence; no burst of catch-ups.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let families = self.collect().await;
            self.send_metrics(families).await;
        }
    }

    async fn collect(&mut self) -> Vec<Family> {
        let mut families = Vec::new();
        if let Some(mut host) = self.host.take() {
            match tokio::task::spawn_blocking(move || {
                let families = host.collect();
                (host, families)
            })
            .await
            {
                Ok((host, mut collected)) => {
                    self.host = Some(host);
                    families.append(&mut collected);
                }
                Err(error) => error!(%error, "host collection panicked; host metrics disabled"),
            }
        }
        families.extend(self.delivery_families());
        families
    }

    fn delivery_families(&self) -> Vec<Family> {
        let stats = &self.stats;
        vec![
            FamilyBuilder::gauge(
                "pantau_agent_outbox_messages",
                "Messages waiting for the broker's acknowledgement.",
            )
            .single(stats.outbox_messages.load(Ordering::Relaxed) as f64),
            FamilyBuilder::counter(
                "pantau_agent_outbox_dropped_messages_total",
                "Messages dropped because the outbox was full.",
            )
            .single(stats.dropped_messages.load(Ordering::Relaxed) as f64),
            FamilyBuilder::counter(
                "pantau_agent_oversized_messages_total",
                "Messages dropped because they exceeded agent.max_message_bytes.",
            )
            .single(stats.oversized_messages.load(Ordering::Relaxed) as f64),
            FamilyBuilder::counter(
                "pantau_agent_mqtt_connections_total",
                "Successful connections to the broker.",
            )
            .single(stats.connections.load(Ordering::Relaxed) as f64),
        ]
    }

    async fn send_metrics(&mut self, families: Vec<Family>) {
        let Some(seq) = self.take_seq() else { return };
        let message = MetricsMessage {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            seq,
            timestamp_ms: unix_millis(SystemTime::now()),
            families,
        };
        self.send(seq, Channel::Metrics, &message).await;
    }

    async fn send_event(&mut self, event: Event) {
        let Some(seq) = self.take_seq() else { return };
        let message = EventsMessage {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            seq,
            timestamp_ms: unix_millis(SystemTime::now()),
            events: vec![event],
        };
        self.send(seq, Channel::Events, &message).await;
    }

    fn take_seq(&mut self) -> Option<u64> {
        match self.sequence.take() {
            Ok(seq) => Some(seq),
            Err(error) => {
                // Sending with a number that may be reused after a restart would make the
                // collector drop later messages as repeats; skip this round instead.
                error!(%error, "cannot record the sequence number, skipping this report");
                None
            }
        }
    }

    async fn send(&self, seq: u64, channel: Channel, message: &impl Serialize) {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(error) => {
                error!(%error, "cannot encode a message");
                return;
            }
        };
        if payload.len() > self.max_message_bytes {
            self.stats
                .oversized_messages
                .fetch_add(1, Ordering::Relaxed);
            error!(
                seq,
                size = payload.len(),
                limit = self.max_message_bytes,
                "message larger than agent.max_message_bytes, dropped; \
                 switch off collectors or raise the limit (and the collector's)"
            );
            return;
        }
        let topic = Topic::new(&self.site, &self.agent, channel).render(&self.prefix);
        if self
            .outgoing
            .send(Envelope {
                seq,
                topic,
                payload,
            })
            .await
            .is_err()
        {
            warn!(seq, "publisher has stopped; message not sent");
        }
    }
}
