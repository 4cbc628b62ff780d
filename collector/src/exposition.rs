//! What `/metrics` shows: the collector's own counters (kept in a prometheus `Registry`) and,
//! produced at scrape time from `State`, every up agent's relayed series plus the per-agent
//! `pantau_agent_*` series. An agent that goes down or is forgotten simply stops appearing.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::{SystemTime, UNIX_EPOCH};

use pantau_protocol::{MetricKind, RejectReason};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::time::Instant;

use crate::state::{AgentView, SharedState, State};

/// The collector's own metrics, and the registry that renders them with the agents' series.
pub struct Telemetry {
    registry: Registry,
    /// `pantau_collector_received_messages_total`: publishes received, before validation.
    pub received: IntCounter,
    /// `pantau_collector_rejected_messages_total{reason}`, one reason per `RejectReason`.
    pub rejected: IntCounterVec,
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

        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(stale_status.clone()))?;
        registry.register(Box::new(cleared_retained.clone()))?;
        registry.register(Box::new(mqtt_connected.clone()))?;
        registry.register(Box::new(mqtt_connections.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(broker_refused_logins.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(AgentsCollector { state }))?;
        Ok(Self {
            registry,
            received,
            rejected,
            dropped,
            stale_status,
            cleared_retained,
            mqtt_connected,
            mqtt_connections,
            http_requests,
            broker_refused_logins,
        })
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        encode(&self.registry.gather())
    }
}

/// Encodes families in the Prometheus text format (version 0.0.4).
pub fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(families, &mut buffer)?;
    String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
}

/// Produces the per-agent series at scrape time.
struct AgentsCollector {
    state: SharedState,
}

impl Collector for AgentsCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked collector: its names depend on what agents send.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            Snapshot::take(&state, Instant::now())
        };
        snapshot.families()
    }
}

/// All agents at one moment, ordered by id, copied out so the state lock is held only briefly.
pub struct Snapshot {
    rows: Vec<AgentView>,
}

impl Snapshot {
    /// Every agent's view at `now`.
    pub fn take(state: &State, now: Instant) -> Self {
        Self {
            rows: state.views(now),
        }
    }

    /// Every family, relayed and per-agent, sorted by name.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for row in &self.rows {
            let base = [("instance", row.id.as_str()), ("site", row.site.as_str())];
            for family in row.families.iter().flat_map(|families| families.iter()) {
                let target = out
                    .entry(family.name.clone())
                    .or_insert_with(|| new_family(&family.name, &family.help, family.kind));
                for sample in &family.samples {
                    let mut labels: Vec<(&str, &str)> = sample
                        .labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .chain(base)
                        .collect();
                    labels.sort_unstable_by_key(|(name, _)| *name);
                    target
                        .mut_metric()
                        .push(metric(&labels, family.kind, sample.value));
                }
            }
            let mut add =
                |name: &str, help: &str, kind: MetricKind, extra: &[(&str, &str)], value: f64| {
                    let labels: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
                    out.entry(name.to_owned())
                        .or_insert_with(|| new_family(name, help, kind))
                        .mut_metric()
                        .push(metric(&labels, kind, value));
                };
            add(
                "pantau_agent_up",
                "1 if the agent is online and sent a message within its silence limit, else 0.",
                MetricKind::Gauge,
                &[],
                if row.online { 1.0 } else { 0.0 },
            );
            if let Some(seen) = row.last_seen {
                add(
                    "pantau_agent_last_seen_timestamp_seconds",
                    "When the collector last received a message from the agent.",
                    MetricKind::Gauge,
                    &[],
                    unix_seconds(seen),
                );
            }
            add(
                "pantau_agent_messages_total",
                "Messages accepted from the agent.",
                MetricKind::Counter,
                &[],
                row.messages_total as f64,
            );
            add(
                "pantau_agent_missed_messages_total",
                "Messages the agent sent that never arrived, from gaps in its sequence numbers.",
                MetricKind::Counter,
                &[],
                row.missed_messages_total as f64,
            );
            add(
                "pantau_agent_duplicate_messages_total",
                "Messages from the agent whose sequence number was already seen, dropped.",
                MetricKind::Counter,
                &[],
                row.duplicate_messages_total as f64,
            );
            for (severity, count) in row.events_total.iter() {
                add(
                    "pantau_agent_events_total",
                    "Events reported by the agent, by severity.",
                    MetricKind::Counter,
                    &[("severity", severity.as_str())],
                    count as f64,
                );
            }
            if let Some(version) = &row.version {
                add(
                    "pantau_agent_info",
                    "Always 1; the labels describe the agent.",
                    MetricKind::Gauge,
                    &[("version", version)],
                    1.0,
                );
            }
        }
        out.into_values().collect()
    }
}

fn new_family(name: &str, help: &str, kind: MetricKind) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(match kind {
        MetricKind::Counter => MetricType::COUNTER,
        MetricKind::Gauge => MetricType::GAUGE,
    });
    family
}

fn metric(labels: &[(&str, &str)], kind: MetricKind, value: f64) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect();
    let mut metric = proto::Metric::from_label(pairs);
    match kind {
        MetricKind::Counter => {
            let mut counter = proto::Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        MetricKind::Gauge => {
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
    }
    metric
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use pantau_protocol::{Limits, decode};
    use serde::Deserialize;

    use super::*;
    use crate::state::{Liveness, Moment};

    #[derive(Deserialize)]
    struct Input {
        topic: String,
        payload: serde_json::Value,
    }

    /// The exposition of testdata/golden_messages.json must equal testdata/golden.prom.
    /// After an intended change, regenerate with
    /// `PANTAU_UPDATE_GOLDEN=1 cargo test -p pantau-collector golden` and review the diff.
    #[tokio::test(start_paused = true)]
    async fn golden_exposition() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let inputs: Vec<Input> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("golden_messages.json")).unwrap(),
        )
        .unwrap();
        let liveness = Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(15),
            forget_after: Duration::from_secs(3600),
        };
        let mut state = State::new(liveness);
        let start = Instant::now();
        for (index, input) in inputs.iter().enumerate() {
            let payload = serde_json::to_vec(&input.payload).unwrap();
            let decoded = decode("pantau", &input.topic, &payload, &Limits::default())
                .unwrap_or_else(|error| panic!("input {index}: {error}"));
            let moment = Moment {
                instant: start + Duration::from_secs(index as u64),
                wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + index as u64),
            };
            state.apply(decoded, false, moment);
        }
        let now = start + Duration::from_secs(inputs.len() as u64);
        let text = encode(&Snapshot::take(&state, now).families()).unwrap();

        let golden = dir.join("golden.prom");
        if std::env::var_os("PANTAU_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(
            text, expected,
            "exposition changed; if intended, regenerate with PANTAU_UPDATE_GOLDEN=1"
        );
    }

    #[test]
    fn every_reject_reason_is_exposed_from_the_start() {
        let state = std::sync::Arc::new(std::sync::RwLock::new(State::new(Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(15),
            forget_after: Duration::from_secs(3600),
        })));
        let telemetry = Telemetry::new(state).unwrap();
        let text = telemetry.render().unwrap();
        for reason in RejectReason::ALL.iter().map(|r| r.as_str()) {
            let line = format!("pantau_collector_rejected_messages_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
        assert!(text.contains("\npantau_collector_cleared_retained_messages_total 0\n"));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
