//! What `/metrics` shows: the collector's own counters (kept in a prometheus `Registry`) and,
//! produced at scrape time from `State`, every up agent's relayed series plus the per-agent
//! `pantau_agent_*` series. An agent that goes down or is forgotten simply stops appearing.
//!
//! Rendering is blocking work proportional to the number of series: `render_chunks` runs on a
//! blocking thread (see `api`) and hands the text over in chunks as it goes.

mod filter;
mod snapshot;

use std::sync::PoisonError;

use pantau_protocol::{DropReason, RejectReason};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

pub use filter::{AgentFilter, Scope, ScopeError};
#[cfg(test)]
pub use snapshot::render_snapshot;
pub use snapshot::{ChunkWriter, Snapshot, agent_labels, for_each_series};

use crate::state::SharedState;

/// The collector's own metrics, and the registry that renders them with the agents' series.
pub struct Telemetry {
    registry: Registry,
    state: SharedState,
    /// `pantau_collector_received_messages_total`: publishes received, before validation.
    pub received: IntCounter,
    /// `pantau_collector_rejected_messages_total{reason}`, one reason per `RejectReason`.
    pub rejected: IntCounterVec,
    /// `pantau_collector_dropped_families_total{reason}`: families left out of accepted
    /// messages, one reason per `DropReason`.
    pub dropped_families: IntCounterVec,
    /// `pantau_collector_dropped_messages_total`: the ingest queue was full.
    pub dropped: IntCounter,
    /// `pantau_collector_stale_status_messages_total`: late wills of older connections.
    pub stale_status: IntCounter,
    /// `pantau_collector_cleared_retained_messages_total`: rejected retained messages removed
    /// from the broker.
    pub cleared_retained: IntCounter,
    /// `pantau_collector_mqtt_connected`: 1 while connected and subscribed.
    pub mqtt_connected: IntGauge,
    /// `pantau_collector_mqtt_connections_total`: successful connections.
    pub mqtt_connections: IntCounter,
    /// `pantau_collector_http_requests_total{handler,code}`.
    pub http_requests: IntCounterVec,
    /// `pantau_collector_broker_refused_logins_total{reason}`: the embedded broker's refusals.
    pub broker_refused_logins: IntCounterVec,
    /// `pantau_collector_api_auth_failures_total{reason}`: API writes refused, `missing` or
    /// `wrong` credentials (401) and `forbidden` (403); the console adds `csrf` (a form without
    /// its token) and `rate_limited` (too many failed logins from one address).
    pub api_auth_failures: IntCounterVec,
    /// `pantau_collector_sound_schedule_version{instance,state}`: each sound agent's schedule
    /// version the broker has (`published`) and the one the agent reported taking (`applied`).
    pub schedule_version: IntGaugeVec,
    /// `pantau_collector_sequence_file_errors_total{reason}`: the saved sequence accounting
    /// was `corrupt` or `unreadable` at start (the collector started afresh), or a `write`
    /// failed.
    pub sequence_file_errors: IntCounterVec,
    /// `pantau_collector_bad_scrape_requests_total{reason}`: `/metrics` queries refused with
    /// 400 (`ScopeError::REASONS`).
    pub bad_scrapes: IntCounterVec,
    /// `pantau_collector_interned_strings` and `_shapes`: what the stored families share
    /// (label names and values, family shapes), set at each scrape.
    interned_strings: IntGauge,
    interned_shapes: IntGauge,
    /// `pantau_collector_decoded_messages_total{path}`: how each message was read, resolved
    /// once per path (this is counted per message).
    pub decoded: DecodePaths,
}

/// The children of `pantau_collector_decoded_messages_total`, one per path.
pub struct DecodePaths {
    /// An agent's own serialization of its stored shapes, matched byte by byte.
    pub bytes: IntCounter,
    /// The stored shapes spelled another way, read with serde against them.
    pub shape: IntCounter,
    /// The full decode: an agent's first message, a changed shape, another channel, or a
    /// message refused.
    pub full: IntCounter,
}

impl Telemetry {
    /// Registers the collector's own metrics and the per-agent series read from `state`.
    pub fn new(state: SharedState) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let received = IntCounter::new(
            "pantau_collector_received_messages_total",
            "MQTT messages received on Pantau topics, before validation.",
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "pantau_collector_rejected_messages_total",
                "Messages refused, by reason.",
            ),
            &["reason"],
        )?;
        let dropped_families = IntCounterVec::new(
            Opts::new(
                "pantau_collector_dropped_families_total",
                "Families left out of otherwise accepted messages, by reason.",
            ),
            &["reason"],
        )?;
        let dropped = IntCounter::new(
            "pantau_collector_dropped_messages_total",
            "Messages dropped because the ingest queue was full.",
        )?;
        let stale_status = IntCounter::new(
            "pantau_collector_stale_status_messages_total",
            "Offline statuses ignored because the agent had reconnected since (a late last will).",
        )?;
        let cleared_retained = IntCounter::new(
            "pantau_collector_cleared_retained_messages_total",
            "Rejected retained messages the collector removed from the broker, so that they are \
             not replayed on every reconnect.",
        )?;
        let mqtt_connected = IntGauge::new(
            "pantau_collector_mqtt_connected",
            "Whether the collector is connected and subscribed to the broker.",
        )?;
        let mqtt_connections = IntCounter::new(
            "pantau_collector_mqtt_connections_total",
            "Successful connections to the broker.",
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "pantau_collector_http_requests_total",
                "HTTP requests served, by route and status code.",
            ),
            &["handler", "code"],
        )?;
        let broker_refused_logins = IntCounterVec::new(
            Opts::new(
                "pantau_collector_broker_refused_logins_total",
                "Logins the embedded broker refused, by reason.",
            ),
            &["reason"],
        )?;
        for refusal in crate::users::Refusal::ALL {
            broker_refused_logins.with_label_values(&[refusal.as_str()]);
        }
        let api_auth_failures = IntCounterVec::new(
            Opts::new(
                "pantau_collector_api_auth_failures_total",
                "API and console requests refused for missing or wrong credentials (401), a role \
                 that may not do it (403), a console form without its CSRF token or too many \
                 failed logins, by reason.",
            ),
            &["reason"],
        )?;
        for reason in ["missing", "wrong", "forbidden", "csrf", "rate_limited"] {
            api_auth_failures.with_label_values(&[reason]);
        }
        let schedule_version = IntGaugeVec::new(
            Opts::new(
                "pantau_collector_sound_schedule_version",
                "Each sound agent's schedule version: published to the broker, and applied by \
                 the agent (its schedule_applied event).",
            ),
            &["instance", "state"],
        )?;
        let sequence_file_errors = IntCounterVec::new(
            Opts::new(
                "pantau_collector_sequence_file_errors_total",
                "Failures of the sequence accounting file in storage.dir, by reason: corrupt or \
                 unreadable at start (the accounting started afresh), or a failed write.",
            ),
            &["reason"],
        )?;
        for reason in crate::ingest::AccountingError::REASONS {
            sequence_file_errors.with_label_values(&[reason]);
        }
        let bad_scrapes = IntCounterVec::new(
            Opts::new(
                "pantau_collector_bad_scrape_requests_total",
                "/metrics requests refused with 400 for a bad site, agent or scope parameter, by \
                 reason.",
            ),
            &["reason"],
        )?;
        for reason in ScopeError::REASONS {
            bad_scrapes.with_label_values(&[reason]);
        }
        let build_info = IntGauge::with_opts(
            Opts::new(
                "pantau_collector_build_info",
                "Always 1; the labels say which build is running.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        // Every reason starts at 0, so `increase()` works from the first rejection on.
        for reason in RejectReason::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        for reason in DropReason::ALL {
            dropped_families.with_label_values(&[reason.as_str()]);
        }

        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(dropped_families.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(stale_status.clone()))?;
        registry.register(Box::new(cleared_retained.clone()))?;
        registry.register(Box::new(mqtt_connected.clone()))?;
        registry.register(Box::new(mqtt_connections.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(broker_refused_logins.clone()))?;
        registry.register(Box::new(api_auth_failures.clone()))?;
        registry.register(Box::new(schedule_version.clone()))?;
        registry.register(Box::new(sequence_file_errors.clone()))?;
        registry.register(Box::new(bad_scrapes.clone()))?;
        let interned_strings = IntGauge::new(
            "pantau_collector_interned_strings",
            "Distinct label names, label values and family names and help texts the stored \
             series share.",
        )?;
        registry.register(Box::new(interned_strings.clone()))?;
        let interned_shapes = IntGauge::new(
            "pantau_collector_interned_shapes",
            "Distinct family shapes (name, type, help and every sample's labels) the stored \
             series share.",
        )?;
        registry.register(Box::new(interned_shapes.clone()))?;
        let decoded = IntCounterVec::new(
            Opts::new(
                "pantau_collector_decoded_messages_total",
                "Messages read, by path: bytes (an agent's own serialization of its stored \
                 shapes, the fastest), shape (the stored shapes spelled another way), full (the \
                 full decode: a first message, a changed shape, another channel, or refused).",
            ),
            &["path"],
        )?;
        registry.register(Box::new(decoded.clone()))?;
        let decoded = DecodePaths {
            bytes: decoded.with_label_values(&["bytes"]),
            shape: decoded.with_label_values(&["shape"]),
            full: decoded.with_label_values(&["full"]),
        };
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            state,
            received,
            rejected,
            dropped_families,
            dropped,
            stale_status,
            cleared_retained,
            mqtt_connected,
            mqtt_connections,
            http_requests,
            broker_refused_logins,
            api_auth_failures,
            schedule_version,
            sequence_file_errors,
            bad_scrapes,
            interned_strings,
            interned_shapes,
            decoded,
        })
    }

    /// The registry of the collector's own metrics, for a part (the backfill) that keeps its
    /// own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Writes the exposition of `scope` to `sink` in chunks of about `CHUNK_BYTES`; stops
    /// early once `sink` returns false (the client went away). Blocking: the agents' part
    /// takes time in proportion to their series.
    pub fn render_chunks(
        &self,
        scope: &Scope,
        sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), prometheus::Error> {
        let mut out = ChunkWriter::new(sink);
        if scope.own_series() {
            let (strings, shapes) = self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .interned();
            self.interned_strings.set(saturating_i64(strings));
            self.interned_shapes.set(saturating_i64(shapes));
            out.write(&encode(&self.registry.gather())?);
        }
        if let Some(filter) = scope.agents() {
            let snapshot = {
                let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
                Snapshot::take_matching(&state, Instant::now(), &filter)
            };
            snapshot.write(&mut out);
        }
        out.flush();
        Ok(())
    }

    /// The whole exposition as one string.
    #[cfg(test)]
    pub fn render(&self) -> Result<String, prometheus::Error> {
        self.render_scope(&Scope::All)
    }

    /// The exposition of `scope` as one string.
    #[cfg(test)]
    pub fn render_scope(&self, scope: &Scope) -> Result<String, prometheus::Error> {
        let mut text = Vec::new();
        self.render_chunks(scope, |chunk| {
            text.extend_from_slice(&chunk);
            true
        })?;
        String::from_utf8(text).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }
}

fn saturating_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Encodes families in the Prometheus text format (version 0.0.4).
pub fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(families, &mut buffer)?;
    String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
}

#[cfg(test)]
mod tests;
