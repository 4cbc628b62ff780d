//! The agent's own health, shared by its tasks as atomics and reported in every metrics
//! message: delivery (outbox, connections and why they failed), commands, and whether its
//! state directory can be written. The collector relays them like any role's series.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pantau_runtime::mqtt::Endpoint;

use pantau_protocol::{CommandRejectReason, Family};

use crate::link::{Failure, OutboxStats};
use crate::metric::FamilyBuilder;

/// Counters and gauges about the agent itself.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub outbox_messages: AtomicU64,
    outbox_bytes: AtomicU64,
    outbox_oldest_ms: AtomicU64,
    outbox_on_disk: AtomicU64,
    outbox_corrupt_records: AtomicU64,
    outbox_expired: AtomicU64,
    pub drained_messages: AtomicU64,
    pub dropped_messages: AtomicU64,
    /// Of `dropped_messages`, those in flight when a connection was lost.
    pub dropped_sent_messages: AtomicU64,
    pub oversized_messages: AtomicU64,
    pub dropped_families: AtomicU64,
    pub connections: AtomicU64,
    /// The broker in use, as `mqtt://host:port` (URLs never carry user info: the config
    /// refuses it, so no password reaches this label).
    broker: Mutex<String>,
    failovers: AtomicU64,
    connection_errors: [AtomicU64; Failure::ALL.len()],
    pub subscription_failures: AtomicU64,
    pub received_commands: AtomicU64,
    rejected_commands: [AtomicU64; CommandRejectReason::ALL.len()],
    pub dropped_commands: AtomicU64,
    pub state_persistence_failed: AtomicU64,
    pub state_write_errors: AtomicU64,
}

impl Telemetry {
    /// The outbox's latest sizes and health.
    pub fn outbox(&self, stats: &OutboxStats) {
        self.outbox_messages
            .store(stats.messages, Ordering::Relaxed);
        self.outbox_bytes.store(stats.bytes, Ordering::Relaxed);
        let oldest = stats
            .oldest_ms
            .map_or(0, |ms| u64::try_from(ms).unwrap_or(0));
        self.outbox_oldest_ms.store(oldest, Ordering::Relaxed);
        self.outbox_on_disk
            .store(u64::from(stats.on_disk), Ordering::Relaxed);
        self.outbox_corrupt_records
            .store(stats.corrupt_records, Ordering::Relaxed);
        self.outbox_expired.store(stats.expired, Ordering::Relaxed);
    }

    /// The broker the link uses now.
    pub fn set_broker(&self, endpoint: &Endpoint) {
        if let Ok(mut broker) = self.broker.lock() {
            *broker = endpoint.to_string();
        }
    }

    /// The link moved to `endpoint` after a failure.
    pub fn failed_over(&self, endpoint: &Endpoint) {
        self.set_broker(endpoint);
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_error(&self, failure: Failure) {
        let index = Failure::ALL.iter().position(|f| *f == failure);
        if let Some(counter) = index.and_then(|i| self.connection_errors.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connection errors counted so far for `failure`.
    #[cfg(test)]
    pub fn connection_errors(&self, failure: Failure) -> u64 {
        Failure::ALL
            .iter()
            .position(|f| *f == failure)
            .and_then(|i| self.connection_errors.get(i))
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    pub fn rejected_command(&self, reason: CommandRejectReason) {
        let index = CommandRejectReason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = index.and_then(|i| self.rejected_commands.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The agent's own series, for the metrics message. These are never dropped to make a
    /// message fit, so a trimmed message still says why it was trimmed.
    pub fn families(&self) -> Vec<Family> {
        let get = |value: &AtomicU64| value.load(Ordering::Relaxed) as f64;
        let mut connection_errors = FamilyBuilder::counter(
            "pantau_agent_mqtt_connection_errors_total",
            "Failed connection attempts and lost connections to the broker, by reason.",
        );
        for (failure, count) in Failure::ALL.iter().zip(&self.connection_errors) {
            connection_errors.sample(&[("reason", failure.as_str())], get(count));
        }
        let mut rejected_commands = FamilyBuilder::counter(
            "pantau_agent_rejected_commands_total",
            "Commands refused, by reason; each was answered by a command_rejected event.",
        );
        for (reason, count) in CommandRejectReason::ALL.iter().zip(&self.rejected_commands) {
            rejected_commands.sample(&[("reason", reason.as_str())], get(count));
        }
        let mut broker = FamilyBuilder::gauge(
            "pantau_agent_mqtt_broker_info",
            "The broker the agent uses (or tries) now, from mqtt.url; always 1.",
        );
        if let Ok(url) = self.broker.lock()
            && !url.is_empty()
        {
            broker.sample(&[("url", url.as_str())], 1.0);
        }
        vec![
            broker.build(),
            FamilyBuilder::counter(
                "pantau_agent_mqtt_failovers_total",
                "Moves to the next broker of mqtt.url after a failed attempt or a lost \
                 connection.",
            )
            .single(get(&self.failovers)),
            FamilyBuilder::gauge(
                "pantau_agent_outbox_messages",
                "Messages waiting for the broker's acknowledgement.",
            )
            .single(get(&self.outbox_messages)),
            FamilyBuilder::counter(
                "pantau_agent_outbox_dropped_messages_total",
                "Messages dropped because the outbox was full or they were older than its age \
                 limit (these are also in pantau_agent_outbox_expired_messages_total).",
            )
            // The outbox hands back what it expired with what it dropped for room, so both
            // are in `dropped_messages` already.
            .single(get(&self.dropped_messages)),
            FamilyBuilder::counter(
                "pantau_agent_outbox_dropped_sent_messages_total",
                "Of the messages dropped (outbox full or too old), those that had been sent \
                 and were waiting for the broker's acknowledgement when the connection was \
                 lost: the broker may have taken them, so the collector may have them.",
            )
            .single(get(&self.dropped_sent_messages)),
            FamilyBuilder::counter(
                "pantau_agent_outbox_expired_messages_total",
                "Messages dropped for being older than outbox.max_age_seconds.",
            )
            .single(get(&self.outbox_expired)),
            FamilyBuilder::gauge(
                "pantau_agent_outbox_bytes",
                "Bytes of messages waiting for the broker's acknowledgement.",
            )
            .single(get(&self.outbox_bytes)),
            FamilyBuilder::gauge(
                "pantau_agent_outbox_oldest_message_timestamp_seconds",
                "When the oldest waiting message was stored (0: none waiting).",
            )
            .single(get(&self.outbox_oldest_ms) / 1000.0),
            FamilyBuilder::gauge(
                "pantau_agent_outbox_on_disk",
                "1 while new messages are written to the outbox directory; 0 while they wait \
                 in memory because it cannot be written.",
            )
            .single(get(&self.outbox_on_disk)),
            FamilyBuilder::counter(
                "pantau_agent_outbox_drained_messages_total",
                "Backlog messages (composed before the current connection) sent behind the \
                 live ones, at outbox.drain_messages_per_second.",
            )
            .single(get(&self.drained_messages)),
            FamilyBuilder::counter(
                "pantau_agent_outbox_corrupt_records_total",
                "Torn or unreadable outbox records found (after a power cut) and dropped.",
            )
            .single(get(&self.outbox_corrupt_records)),
            FamilyBuilder::counter(
                "pantau_agent_oversized_messages_total",
                "Messages above agent.max_message_bytes: metrics messages were trimmed (see \
                 pantau_agent_dropped_families_total), other messages dropped.",
            )
            .single(get(&self.oversized_messages)),
            FamilyBuilder::counter(
                "pantau_agent_dropped_families_total",
                "Metric families left out of a metrics message to keep it within \
                 agent.max_message_bytes.",
            )
            .single(get(&self.dropped_families)),
            FamilyBuilder::counter(
                "pantau_agent_mqtt_connections_total",
                "Successful connections to the broker.",
            )
            .single(get(&self.connections)),
            connection_errors.build(),
            FamilyBuilder::counter(
                "pantau_agent_mqtt_subscription_failures_total",
                "Subscriptions the broker refused (the agent then receives no commands).",
            )
            .single(get(&self.subscription_failures)),
            FamilyBuilder::counter(
                "pantau_agent_received_commands_total",
                "Messages received on the agent's command topics.",
            )
            .single(get(&self.received_commands)),
            rejected_commands.build(),
            FamilyBuilder::counter(
                "pantau_agent_dropped_commands_total",
                "Commands dropped unread because too many arrived at once.",
            )
            .single(get(&self.dropped_commands)),
            FamilyBuilder::gauge(
                "pantau_agent_state_persistence_failed",
                "1 while the agent cannot write its state directory (the sequence number is \
                 then kept in memory only), else 0.",
            )
            .single(get(&self.state_persistence_failed)),
            FamilyBuilder::counter(
                "pantau_agent_state_write_errors_total",
                "Failed writes to the agent's state directory.",
            )
            .single(get(&self.state_write_errors)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_start_at_zero_and_count() {
        let telemetry = Telemetry::default();
        telemetry.connection_error(Failure::BadCredentials);
        telemetry.rejected_command(CommandRejectReason::UnknownCommand);
        let families = telemetry.families();
        let value = |name: &str, reason: &str| {
            let family = families.iter().find(|f| f.name == name).unwrap();
            family
                .samples
                .iter()
                .find(|s| s.labels["reason"] == reason)
                .unwrap()
                .value
        };
        assert_eq!(
            value(
                "pantau_agent_mqtt_connection_errors_total",
                "bad_credentials"
            ),
            1.0
        );
        assert_eq!(
            value("pantau_agent_mqtt_connection_errors_total", "lost"),
            0.0
        );
        assert_eq!(
            value("pantau_agent_rejected_commands_total", "unknown_command"),
            1.0
        );
        assert_eq!(
            value("pantau_agent_rejected_commands_total", "expired"),
            0.0
        );
    }
}
