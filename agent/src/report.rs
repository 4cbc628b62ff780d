//! The reporting loop: every interval (or at once when a role asks), collect from each role,
//! number the message and hand it to the link; publish role events and command answers as
//! they come, not at the next tick.
//!
//! A metrics message larger than `agent.max_message_bytes` is trimmed, largest role families
//! first, never split: the collector replaces an agent's families with each message, so a
//! split would blank half of them every round. The agent's own series are never dropped, so a
//! trimmed agent still shows as up and says why it was trimmed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pantau_protocol::{AnyFamily, Channel, Event, Family, Severity};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use pantau_runtime::time::sleep_until_or_never;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::command::Dispatcher;
use crate::link::{Envelope, Incoming};
use crate::message::Header;
use crate::role::{ReportTrigger, Role};
use crate::sequence::Sequence;
use crate::telemetry::Telemetry;

/// Shortest spacing of out-of-cadence reports, however often they are asked for.
const MIN_REPORT_SPACING: Duration = Duration::from_secs(1);
/// How often freed heap memory is handed back to the kernel.
const TRIM_PERIOD: Duration = Duration::from_secs(60);

/// Most events published in one message.
const MAX_EVENTS_PER_MESSAGE: usize = 100;

/// What the loop needs to build and route messages.
pub struct Reporter {
    pub header: Header,
    pub interval: Duration,
    pub max_message_bytes: usize,
    pub sequence: Sequence,
    pub roles: Vec<Role>,
    pub dispatcher: Dispatcher,
    pub telemetry: Arc<Telemetry>,
    pub outgoing: mpsc::Sender<Envelope>,
}

/// The loop's inputs besides the clock.
pub struct ReporterInputs {
    pub events: mpsc::Receiver<Event>,
    pub commands: mpsc::Receiver<Incoming>,
    pub report_now: ReportTrigger,
    pub shutdown: CancellationToken,
}

impl Reporter {
    /// Announces the start, then reports until `shutdown`.
    pub async fn run(mut self, inputs: ReporterInputs) {
        let ReporterInputs {
            mut events,
            mut commands,
            report_now,
            shutdown,
        } = inputs;
        self.send_events(vec![Event {
            kind: "agent_started".to_owned(),
            severity: Severity::Info,
            message: format!("pantau-agent {} started", env!("CARGO_PKG_VERSION")),
            labels: [("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())].into(),
        }])
        .await;
        let mut tick = tokio::time::interval(self.interval);
        // After a stall (suspended VM), report once and keep the cadence; no burst of catch-ups.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_report: Option<Instant> = None;
        let mut pending_report: Option<Instant> = None;
        let mut commands_open = true;
        let mut last_trim = Instant::now();
        loop {
            let report = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => true,
                () = report_now.requested(), if pending_report.is_none() => {
                    let earliest = last_report.map_or_else(Instant::now, |at| at + MIN_REPORT_SPACING);
                    pending_report = Some(earliest.max(Instant::now()));
                    false
                }
                _ = sleep_until_or_never(pending_report), if pending_report.is_some() => true,
                Some(first) = events.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_EVENTS_PER_MESSAGE {
                        match events.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    self.send_events(batch).await;
                    false
                }
                incoming = commands.recv(), if commands_open => {
                    match incoming {
                        Some(incoming) => {
                            if let Some(answer) = self.dispatcher.dispatch(incoming, &mut self.roles).await {
                                self.send_events(vec![answer]).await;
                            }
                        }
                        None => commands_open = false,
                    }
                    false
                }
            };
            if report {
                pending_report = None;
                last_report = Some(Instant::now());
                let families = self.collect().await;
                self.send_metrics(families).await;
                // A round allocates and frees a few hundred KiB (families, the JSON payload);
                // glibc keeps freed pages below the heap's top resident unless asked. Giving
                // them back once a minute keeps the agent's memory near its working set without
                // paying page faults every round (BENCHMARKS.md, issue 13).
                if last_trim.elapsed() >= TRIM_PERIOD {
                    last_trim = Instant::now();
                    pantau_sys::malloc::release_free_memory();
                }
            }
        }
    }

    async fn collect(&mut self) -> Vec<AnyFamily> {
        let mut families = Vec::new();
        for role in &mut self.roles {
            families.append(&mut role.collect().await);
        }
        families
    }

    async fn send_metrics(&mut self, role_families: Vec<AnyFamily>) {
        let seq = self.sequence.take();
        let own = self.telemetry.families();
        match fit_metrics(
            &self.header,
            seq,
            role_families,
            own,
            self.max_message_bytes,
        ) {
            Ok(fitted) => {
                if !fitted.dropped.is_empty() {
                    self.telemetry
                        .oversized_messages
                        .fetch_add(1, Ordering::Relaxed);
                    self.telemetry
                        .dropped_families
                        .fetch_add(fitted.dropped.len() as u64, Ordering::Relaxed);
                    warn!(
                        seq,
                        limit = self.max_message_bytes,
                        dropped = ?fitted.dropped,
                        "metrics message above agent.max_message_bytes; left out the largest \
                         families (switch off collectors or raise the limit, and the collector's)"
                    );
                }
                self.send(seq, Channel::Metrics, fitted.payload).await;
            }
            Err(size) => {
                self.telemetry
                    .oversized_messages
                    .fetch_add(1, Ordering::Relaxed);
                error!(
                    seq,
                    size,
                    limit = self.max_message_bytes,
                    "even the agent's own series exceed agent.max_message_bytes; message dropped"
                );
            }
        }
    }

    async fn send_events(&mut self, events: Vec<Event>) {
        let seq = self.sequence.take();
        let message = self.header.events(seq, events);
        let Some(payload) = encode(&message) else {
            return;
        };
        if payload.len() > self.max_message_bytes {
            self.telemetry
                .oversized_messages
                .fetch_add(1, Ordering::Relaxed);
            error!(
                seq,
                size = payload.len(),
                "events message above agent.max_message_bytes, dropped"
            );
            return;
        }
        self.send(seq, Channel::Events, payload).await;
    }

    async fn send(&self, seq: u64, channel: Channel, payload: Vec<u8>) {
        let topic = self.header.topic(channel);
        let envelope = Envelope {
            seq,
            topic,
            payload,
        };
        if self.outgoing.send(envelope).await.is_err() {
            warn!(seq, "the MQTT link has stopped; message not sent");
        }
    }
}

fn encode(message: &impl Serialize) -> Option<Vec<u8>> {
    static LOG: std::sync::OnceLock<LogLimiter> = std::sync::OnceLock::new();
    match serde_json::to_vec(message) {
        Ok(payload) => Some(payload),
        Err(error) => {
            let log = LOG.get_or_init(|| LogLimiter::new(Duration::from_secs(60)));
            if let Verdict::Log { suppressed } = log.check("encode") {
                error!(%error, suppressed, "cannot encode a message");
            }
            None
        }
    }
}

/// A metrics payload within the size limit, and the names of the families left out.
#[derive(Debug)]
struct Fitted {
    payload: Vec<u8>,
    dropped: Vec<String>,
}

/// Serializes a metrics message of `role` and `own` families within `max_bytes`, leaving out
/// the largest role families until it fits. `Err` holds the size when even the agent's own
/// series alone do not fit.
fn fit_metrics(
    header: &Header,
    seq: u64,
    role: Vec<AnyFamily>,
    own: Vec<Family>,
    max_bytes: usize,
) -> Result<Fitted, usize> {
    let own: Vec<AnyFamily> = own.into_iter().map(AnyFamily::from).collect();
    let all: Vec<AnyFamily> = role.iter().cloned().chain(own.iter().cloned()).collect();
    let payload = encode(&header.metrics(seq, all)).ok_or(0usize)?;
    if payload.len() <= max_bytes {
        return Ok(Fitted {
            payload,
            dropped: Vec::new(),
        });
    }
    // A family costs its own JSON plus a separating comma.
    let mut by_size: Vec<(usize, usize)> = role
        .iter()
        .enumerate()
        .map(|(index, family)| (serde_json::to_vec(family).map_or(0, |b| b.len()) + 1, index))
        .collect();
    by_size.sort_unstable_by(|a, b| b.cmp(a));
    let mut excess = payload.len() - max_bytes;
    let mut keep = vec![true; role.len()];
    let mut dropped = Vec::new();
    for (size, index) in by_size {
        keep[index] = false;
        dropped.push(role[index].name().to_owned());
        if size >= excess {
            let kept: Vec<AnyFamily> = role
                .iter()
                .zip(&keep)
                .filter(|(_, keep)| **keep)
                .map(|(family, _)| family.clone())
                .chain(own.iter().cloned())
                .collect();
            let payload = encode(&header.metrics(seq, kept)).ok_or(0usize)?;
            if payload.len() <= max_bytes {
                return Ok(Fitted { payload, dropped });
            }
            excess = payload.len() - max_bytes;
        } else {
            excess -= size;
        }
    }
    let payload = encode(&header.metrics(seq, own)).ok_or(0usize)?;
    match payload.len() <= max_bytes {
        true => Ok(Fitted { payload, dropped }),
        false => Err(payload.len()),
    }
}

#[cfg(test)]
mod tests {
    use pantau_protocol::MetricsMessage;

    use super::*;
    use crate::metric::FamilyBuilder;

    fn header() -> Header {
        Header {
            prefix: "pantau".to_owned(),
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
        }
    }

    fn family(name: &str, samples: usize) -> Family {
        let mut builder = FamilyBuilder::gauge(name, "help");
        for n in 0..samples {
            builder.sample(&[("n", &n.to_string())], n as f64);
        }
        builder.build()
    }

    fn any(families: Vec<Family>) -> Vec<AnyFamily> {
        families.into_iter().map(AnyFamily::from).collect()
    }

    fn names(payload: &[u8]) -> Vec<String> {
        let message: MetricsMessage = serde_json::from_slice(payload).unwrap();
        message.families.into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn a_message_within_the_limit_is_whole() {
        let fitted = fit_metrics(
            &header(),
            1,
            any(vec![family("a", 3)]),
            vec![family("own", 1)],
            10_000,
        )
        .unwrap();
        assert!(fitted.dropped.is_empty());
        assert_eq!(names(&fitted.payload), ["a", "own"]);
    }

    #[test]
    fn the_largest_role_families_go_first_and_own_series_stay() {
        let role = vec![family("small", 2), family("big", 200), family("medium", 40)];
        let own = vec![family("pantau_agent_outbox_messages", 1)];
        let whole = encode(&header().metrics(1, any([role.clone(), own.clone()].concat())))
            .unwrap()
            .len();
        let big = serde_json::to_vec(&role[1]).unwrap().len();
        let fitted =
            fit_metrics(&header(), 1, any(role.clone()), own.clone(), whole - big).unwrap();
        assert_eq!(fitted.dropped, ["big"]);
        assert_eq!(
            names(&fitted.payload),
            ["small", "medium", "pantau_agent_outbox_messages"]
        );
        assert!(fitted.payload.len() <= whole - big);

        let fitted = fit_metrics(&header(), 1, any(role), own, 300).unwrap();
        assert_eq!(fitted.dropped, ["big", "medium", "small"]);
        assert_eq!(names(&fitted.payload), ["pantau_agent_outbox_messages"]);
    }

    #[test]
    fn own_series_that_do_not_fit_are_an_error() {
        let size = fit_metrics(&header(), 1, vec![], vec![family("own", 100)], 200).unwrap_err();
        assert!(size > 200);
    }
}
