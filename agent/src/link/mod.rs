//! The agent's MQTT link: the one task that owns the connection.
//!
//! It publishes the retained birth on every connect and registers a last will naming each
//! connection; subscribes to the agent's own command topics while some role claims a command
//! and forwards what arrives there; and delivers messages from the outbox. rumqttc reconnects
//! only while its event loop is polled, and on a new (clean) session it silently discards every
//! publish it had not had acknowledged, so a message leaves the outbox only when the broker's
//! PUBACK arrives, and after a reconnect everything unacknowledged is sent again. With several
//! brokers in `mqtt.url` every failure moves the event loop to the next one ([`Brokers`]), so
//! "sent again" then means "sent to the next broker".
//!
//! Failures are loud: every failed attempt is classified ([`Failure`]), counted, and logged at
//! WARN from the first one on (then at most once per period per reason).

mod failure;
mod outbox;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use pantau_runtime::backoff::Backoff;
use pantau_runtime::mqtt::Brokers;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use pantau_runtime::time::sleep_until_or_never;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use failure::Failure;
pub use outbox::{DiskOutbox, Envelope, Outbox, OutboxStats};

use crate::message::{Birth, Header, unix_millis};
use crate::telemetry::Telemetry;

/// Most messages handed to rumqttc and not yet acknowledged.
const WINDOW: usize = 32;
/// How long shutdown waits for the outbox to drain before publishing `offline`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection must stay up this long before the reconnect backoff starts again from its
/// shortest delay; otherwise a broker that accepts and then drops the agent at once would be
/// hammered at the shortest delay forever.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// At most one log line per failure reason per period (the first one always).
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(60);

/// A message that arrived on one of the agent's command topics, not yet decoded.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the birth message announces.
#[derive(Debug, Clone)]
pub struct BirthInfo {
    pub interval_seconds: u64,
    pub roles: Vec<String>,
    /// Audio clips a sound agent can play.
    pub clips: Vec<String>,
    /// The next sequence number the agent will use.
    pub next_seq: Arc<AtomicU64>,
}

/// The link's fixed settings.
pub struct LinkSettings {
    pub header: Header,
    pub birth: BirthInfo,
    /// Subscribe to the agent's command topics (some role claims a command).
    pub commands: bool,
    /// After a reconnect, messages from before it (the backlog) go out at most this fast,
    /// behind the live ones.
    pub drain_per_second: u32,
}

/// The backlog's pace: a token bucket refilled at `per_second`, holding one second's worth.
#[derive(Debug)]
struct Drain {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl Drain {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(per_second.max(1)),
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled = now;
    }

    /// When the next token is there.
    fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.refilled + Duration::from_secs_f64(missing / self.per_second)
    }
}

/// The link task: the event loop it alone polls, the brokers it may point it at, and the
/// delivery state.
pub struct Link {
    eventloop: EventLoop,
    brokers: Brokers,
    delivery: Delivery,
}

/// Everything but the event loop, so it can be borrowed while a `poll()` is in flight.
struct Delivery {
    client: AsyncClient,
    header: Header,
    birth: BirthInfo,
    command_filter: Option<String>,
    commands: mpsc::Sender<Incoming>,
    outbox: Box<dyn Outbox>,
    /// Handed to rumqttc, waiting for the packet id it assigns (in order; `None` marks a
    /// status message, which is not retried).
    handed: VecDeque<Option<u64>>,
    /// Sent, waiting for PUBACK, by packet id.
    in_flight: HashMap<u16, Option<u64>>,
    /// Sequence numbers that were in flight when a connection was lost: the broker may have
    /// taken them without the acknowledgement reaching us. Dropped from a full outbox, they are
    /// counted apart, since the collector may have them. At most `4 * WINDOW`, oldest out.
    sent_unacknowledged: BTreeSet<u64>,
    /// Taken from the outbox but refused by rumqttc's full request channel; sent first.
    stalled: Option<Envelope>,
    /// The first message composed during the current connection: it and everything after it
    /// is live and goes first; what is older is backlog, paced by `drain`.
    live_from: Option<u64>,
    drain: Drain,
    /// Backlog waits for the drain's next token.
    drain_waiting: bool,
    telemetry: Arc<Telemetry>,
    connected: bool,
    connected_at: Option<Instant>,
    /// When the current (or next) connection was opened; its will and birth carry it.
    connected_ms: i64,
    backoff: Backoff,
    retry_at: Option<Instant>,
    failure_log: LogLimiter,
}

/// What the task listens to besides the broker.
struct Inputs {
    outgoing: mpsc::Receiver<Envelope>,
    outgoing_open: bool,
    shutdown: CancellationToken,
    flush_deadline: Option<Instant>,
}

impl Inputs {
    /// Waits for one input and applies it.
    async fn next(&mut self, delivery: &mut Delivery) {
        tokio::select! {
            _ = self.shutdown.cancelled(), if self.flush_deadline.is_none() => {
                self.flush_deadline = Some(Instant::now() + FLUSH_TIMEOUT);
            }
            _ = sleep_until_or_never(self.flush_deadline), if self.flush_deadline.is_some() => {}
            message = self.outgoing.recv(), if self.outgoing_open => match message {
                Some(envelope) => delivery.enqueue(envelope),
                None => self.outgoing_open = false,
            },
        }
    }

    /// Whether to stop: after shutdown, once everything is delivered, the flush time is up,
    /// or there is no connection to flush over.
    fn finished(&self, delivery: &Delivery) -> bool {
        let Some(deadline) = self.flush_deadline else {
            return false;
        };
        let drained = !self.outgoing_open && delivery.outbox.len() == 0;
        drained || Instant::now() >= deadline || !delivery.connected && !self.outgoing_open
    }
}

impl Link {
    pub fn new(
        client: AsyncClient,
        eventloop: EventLoop,
        brokers: Brokers,
        settings: LinkSettings,
        outbox: Box<dyn Outbox>,
        commands: mpsc::Sender<Incoming>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let command_filter = settings.commands.then(|| settings.header.command_filter());
        telemetry.set_broker(brokers.current());
        Self {
            eventloop,
            brokers,
            delivery: Delivery {
                client,
                header: settings.header,
                birth: settings.birth,
                command_filter,
                commands,
                outbox,
                handed: VecDeque::new(),
                in_flight: HashMap::new(),
                sent_unacknowledged: BTreeSet::new(),
                stalled: None,
                live_from: None,
                drain: Drain::new(settings.drain_per_second),
                drain_waiting: false,
                telemetry,
                connected: false,
                connected_at: None,
                connected_ms: 0,
                backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
                retry_at: None,
                failure_log: LogLimiter::new(FAILURE_LOG_PERIOD),
            },
        }
    }

    /// Delivers `outgoing` until `shutdown`, then flushes for up to `FLUSH_TIMEOUT`, publishes
    /// `offline` and disconnects.
    pub async fn run(self, outgoing: mpsc::Receiver<Envelope>, shutdown: CancellationToken) {
        let Link {
            mut eventloop,
            mut brokers,
            mut delivery,
        } = self;
        let mut inputs = Inputs {
            outgoing,
            outgoing_open: true,
            shutdown,
            flush_deadline: None,
        };
        'run: loop {
            if let Some(retry_at) = delivery.retry_at.take() {
                while !inputs.finished(&delivery) {
                    tokio::select! {
                        _ = tokio::time::sleep_until(retry_at) => continue 'run,
                        () = inputs.next(&mut delivery) => {}
                    }
                }
                break 'run;
            }
            if !delivery.connected {
                // This poll() may open a connection: register a will that names it.
                delivery.connected_ms = unix_millis(SystemTime::now());
                let will = delivery.last_will();
                eventloop.mqtt_options.set_last_will(will);
            }
            // A `poll()` in flight is never dropped: rumqttc abandons a connection whose CONNACK
            // it is awaiting when its future is dropped, and the broker then sees two
            // connections with one client id (rumqttd even lost the live one's last will).
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    if delivery.connected {
                        delivery.pump();
                    }
                    delivery.telemetry.outbox(&delivery.outbox.stats());
                    if inputs.finished(&delivery) {
                        break 'run;
                    }
                    let drain_at = delivery.drain_at();
                    tokio::select! {
                        event = &mut poll => break event,
                        () = inputs.next(&mut delivery) => {}
                        _ = sleep_until_or_never(drain_at), if drain_at.is_some() => {}
                    }
                }
            };
            let failed = event.is_err();
            delivery.handle(event);
            // Whatever was in flight on the old broker is back in the outbox (`on_error`
            // rewound it) and goes to the next one, before anything newer.
            if failed {
                let from = brokers.current().to_string();
                if brokers.fail_over(&mut eventloop) {
                    delivery.telemetry.failed_over(brokers.current());
                    // While every broker is down this repeats at each attempt: rate-limited,
                    // the counter has them all.
                    if let Verdict::Log { suppressed } = delivery.failure_log.check("failover") {
                        info!(from, to = %brokers.current(), suppressed, "failing over to the next broker");
                    }
                }
            }
        }
        delivery.finish(&mut eventloop).await;
    }
}

impl Delivery {
    fn status_payload(&self, birth: bool) -> Vec<u8> {
        let birth = birth.then(|| Birth {
            interval_seconds: self.birth.interval_seconds,
            next_seq: self.birth.next_seq.load(Ordering::SeqCst),
            roles: self.birth.roles.clone(),
            clips: self.birth.clips.clone(),
        });
        let message = self.header.status(birth, self.connected_ms);
        // A struct of strings and integers always serializes.
        serde_json::to_vec(&message).unwrap_or_default()
    }

    /// The last will of the connection opened at `connected_ms`: the broker publishes it,
    /// retained, when that connection dies uncleanly.
    fn last_will(&self) -> LastWill {
        LastWill::new(
            self.header.topic(pantau_protocol::Channel::Status),
            self.status_payload(false),
            QoS::AtLeastOnce,
            true,
        )
    }

    fn enqueue(&mut self, envelope: Envelope) {
        if self.connected && self.live_from.is_none() {
            self.live_from = Some(envelope.seq);
        }
        let dropped = self.outbox.push(envelope);
        if let Some(oldest) = dropped.first() {
            self.telemetry
                .dropped_messages
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            let sent = dropped
                .iter()
                .filter(|seq| self.sent_unacknowledged.remove(seq))
                .count();
            self.telemetry
                .dropped_sent_messages
                .fetch_add(sent as u64, Ordering::Relaxed);
            if let Verdict::Log { suppressed } = self.failure_log.check("outbox_full") {
                warn!(
                    oldest_seq = oldest,
                    dropped = dropped.len(),
                    suppressed,
                    "outbox full or messages too old: dropped the oldest"
                );
            }
        }
    }

    /// Hands queued messages to rumqttc while the in-flight window has room: live ones first,
    /// then the backlog at the drain's pace.
    fn pump(&mut self) {
        let live_from = self.live_from.unwrap_or(u64::MAX);
        self.drain_waiting = false;
        while self.handed.len() + self.in_flight.len() < WINDOW {
            let envelope = match self.stalled.take() {
                Some(envelope) => envelope,
                None => match self.outbox.next_unsent(live_from, u64::MAX) {
                    Some(envelope) => envelope,
                    None => {
                        self.drain.refill(Instant::now());
                        if self.drain.tokens < 1.0 {
                            self.drain_waiting = self.outbox.len() > 0;
                            return;
                        }
                        let Some(envelope) = self.outbox.next_unsent(0, live_from) else {
                            return;
                        };
                        self.drain.tokens -= 1.0;
                        self.telemetry
                            .drained_messages
                            .fetch_add(1, Ordering::Relaxed);
                        envelope
                    }
                },
            };
            let seq = envelope.seq;
            let sent = self.client.try_publish(
                envelope.topic.clone(),
                QoS::AtLeastOnce,
                false,
                envelope.payload.clone(),
            );
            if sent.is_err() {
                // rumqttc's request channel is full; the next event frees it.
                self.stalled = Some(envelope);
                return;
            }
            self.handed.push_back(Some(seq));
        }
    }

    /// When the backlog may go on, if it waits for the drain.
    fn drain_at(&self) -> Option<Instant> {
        (self.connected && self.drain_waiting).then(|| self.drain.next_at())
    }

    fn publish_status(&mut self, birth: bool) {
        let topic = self.header.topic(pantau_protocol::Channel::Status);
        let payload = self.status_payload(birth);
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.handed.push_back(None),
            Err(error) => warn!(%error, birth, "cannot queue the status message"),
        }
    }

    fn handle(&mut self, event: Result<Event, ConnectionError>) {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                self.connected = true;
                // Everything already waiting is backlog from here on.
                self.live_from = None;
                self.connected_at = Some(Instant::now());
                self.telemetry.connections.fetch_add(1, Ordering::Relaxed);
                info!(
                    queued = self.outbox.len(),
                    "connected to broker, publishing birth message"
                );
                self.publish_status(true);
                if let Some(filter) = &self.command_filter
                    && let Err(error) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                {
                    warn!(%error, "cannot queue the command subscription");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    self.telemetry
                        .subscription_failures
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(
                        filter = self.command_filter.as_deref().unwrap_or_default(),
                        "broker refused the command subscription; this agent will receive no \
                         commands (check the broker's ACL for this user)"
                    );
                } else {
                    debug!("subscribed to commands");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => self.forward_command(publish),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(seq) = self.handed.pop_front() {
                    self.in_flight.insert(pkid, seq);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(Some(seq)) = self.in_flight.remove(&ack.pkid) {
                    self.outbox.acknowledge(seq);
                    self.sent_unacknowledged.remove(&seq);
                }
            }
            Ok(_) => {}
            Err(error) => self.on_error(&error),
        }
    }

    fn forward_command(&mut self, publish: rumqttc::Publish) {
        self.telemetry
            .received_commands
            .fetch_add(1, Ordering::Relaxed);
        let incoming = Incoming {
            topic: publish.topic,
            payload: publish.payload.to_vec(),
        };
        if let Err(TrySendError::Full(dropped)) = self.commands.try_send(incoming) {
            self.telemetry
                .dropped_commands
                .fetch_add(1, Ordering::Relaxed);
            if let Verdict::Log { suppressed } = self.failure_log.check("commands_full") {
                warn!(topic = %dropped.topic, suppressed, "too many commands at once, dropped one");
            }
        }
    }

    fn on_error(&mut self, error: &ConnectionError) {
        let failure = Failure::classify(error, self.connected);
        self.telemetry.connection_error(failure);
        let stable = self
            .connected_at
            .is_some_and(|at| at.elapsed() >= STABLE_AFTER);
        if stable {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        if let Verdict::Log { suppressed } = self.failure_log.check(failure.as_str()) {
            warn!(
                reason = failure.as_str(),
                %error,
                retry_in = ?delay,
                suppressed,
                "{}",
                failure.advice()
            );
        }
        self.connected = false;
        self.connected_at = None;
        self.handed.clear();
        self.sent_unacknowledged
            .extend(self.in_flight.drain().filter_map(|(_, seq)| seq));
        while self.sent_unacknowledged.len() > 4 * WINDOW {
            self.sent_unacknowledged.pop_first();
        }
        self.stalled = None;
        self.outbox.rewind();
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Publishes `offline` (so the collector marks the agent down at once rather than after
    /// three silent intervals) and disconnects cleanly, which keeps the broker from also
    /// publishing the last will.
    async fn finish(mut self, eventloop: &mut EventLoop) {
        let undelivered = self.outbox.len();
        if undelivered > 0 {
            warn!(undelivered, "stopping with undelivered messages");
        }
        if !self.connected {
            return;
        }
        self.publish_status(false);
        let _ = self.client.try_disconnect();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("broker did not confirm the disconnect in time");
                    return;
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => {
                        debug!("disconnected");
                        return;
                    }
                    Ok(_) => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh outbox directory for one test (leaked: the test process ends soon after).
    fn outbox_dir() -> std::path::PathBuf {
        tempfile::tempdir().unwrap().keep()
    }

    /// A link's delivery state; the event loop is returned too, as rumqttc's requests go
    /// nowhere once it is dropped.
    fn delivery() -> (Delivery, (EventLoop, mpsc::Receiver<Incoming>)) {
        delivery_with_max_age(86_400_000)
    }

    /// `delivery` with an outbox that drops messages older than `max_age_ms`.
    fn delivery_with_max_age(max_age_ms: i64) -> (Delivery, (EventLoop, mpsc::Receiver<Incoming>)) {
        let options = rumqttc::MqttOptions::new("t", "127.0.0.1", 1);
        let (client, eventloop) = AsyncClient::new(options.clone(), 64);
        let (commands, commands_rx) = mpsc::channel(1);
        let endpoint = pantau_runtime::mqtt::Endpoint::parse("mqtt://127.0.0.1:1").unwrap();
        let brokers = Brokers::new(
            vec![(endpoint, options)],
            pantau_runtime::mqtt::Failover::InOrder,
        );
        let link = Link::new(
            client,
            eventloop,
            brokers,
            LinkSettings {
                header: Header {
                    prefix: "pantau".to_owned(),
                    agent: "dc-srv-01".to_owned(),
                    site: "dc".to_owned(),
                },
                birth: BirthInfo {
                    interval_seconds: 15,
                    roles: vec!["host".to_owned()],
                    clips: Vec::new(),
                    next_seq: Arc::new(AtomicU64::new(42)),
                },
                commands: true,
                drain_per_second: 1000,
            },
            Box::new(DiskOutbox::open(&outbox_dir(), 1 << 20, max_age_ms).0),
            commands,
            Arc::new(Telemetry::default()),
        );
        (link.delivery, (link.eventloop, commands_rx))
    }

    fn envelope(seq: u64) -> Envelope {
        Envelope {
            seq,
            topic: "pantau/v1/dc/dc-srv-01/metrics".to_owned(),
            payload: vec![1],
        }
    }

    #[tokio::test]
    async fn only_acknowledged_messages_leave_and_the_rest_are_resent_after_a_loss() {
        let (mut delivery, _commands) = delivery();
        delivery.connected = true;
        for seq in 1..=3 {
            delivery.enqueue(envelope(seq));
        }
        delivery.publish_status(true);
        delivery.pump();
        // rumqttc assigns packet ids as it sends: the status first, then 1, 2, 3.
        for pkid in 1..=4 {
            delivery.handle(Ok(Event::Outgoing(Outgoing::Publish(pkid))));
        }
        delivery.handle(Ok(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(2)))));
        assert_eq!(delivery.outbox.len(), 2, "seq 1 acknowledged");
        delivery.handle(Err(ConnectionError::NetworkTimeout));
        assert_eq!(delivery.telemetry.connection_errors(Failure::Lost), 1);
        let resent: Vec<u64> =
            std::iter::from_fn(|| delivery.outbox.next_unsent(0, u64::MAX).map(|e| e.seq))
                .collect();
        assert_eq!(resent, [2, 3]);
    }

    /// Messages dropped for their age are counted once as dropped (and as expired), and
    /// those sent but unacknowledged when the connection was lost also as dropped-sent.
    #[tokio::test]
    async fn messages_too_old_are_dropped_and_counted_once() {
        // Old enough to outlive the steps before the sleep on a loaded machine (a 1 ms limit
        // let seq 1-3 expire before they were sent), young enough to keep the test short.
        let (mut delivery, _commands) = delivery_with_max_age(400);
        delivery.connected = true;
        for seq in 1..=3 {
            delivery.enqueue(envelope(seq));
        }
        delivery.pump();
        // rumqttc numbers the publishes 1, 2, 3; the connection is lost before any PUBACK.
        for pkid in 1..=3 {
            delivery.handle(Ok(Event::Outgoing(Outgoing::Publish(pkid))));
        }
        delivery.handle(Err(ConnectionError::NetworkTimeout));
        delivery.enqueue(envelope(4));
        // The outbox's clock is the wall clock in milliseconds: let it pass the age limit.
        std::thread::sleep(Duration::from_millis(500));
        delivery.enqueue(envelope(5));
        delivery.telemetry.outbox(&delivery.outbox.stats());
        let families = delivery.telemetry.families();
        let value = |name: &str| {
            families
                .iter()
                .find(|family| family.name == name)
                .map(|family| family.samples[0].value)
        };
        assert_eq!(
            value("pantau_agent_outbox_expired_messages_total"),
            Some(4.0)
        );
        assert_eq!(
            value("pantau_agent_outbox_dropped_messages_total"),
            Some(4.0)
        );
        assert_eq!(
            value("pantau_agent_outbox_dropped_sent_messages_total"),
            Some(3.0)
        );
        assert_eq!(delivery.outbox.len(), 1, "only seq 5 is left");
    }

    #[tokio::test(start_paused = true)]
    async fn live_messages_go_first_and_the_backlog_drains_behind_at_its_pace() {
        let (mut delivery, (_eventloop, _commands)) = delivery();
        delivery.drain = Drain::new(2);
        for seq in 1..=5 {
            delivery.enqueue(envelope(seq)); // while disconnected: backlog
        }
        delivery.handle(Ok(Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            rumqttc::ConnectReturnCode::Success,
            false,
        )))));
        delivery.enqueue(envelope(6)); // live
        let handed = |delivery: &Delivery| -> Vec<u64> {
            delivery.handed.iter().flatten().copied().collect()
        };
        delivery.pump();
        assert_eq!(
            handed(&delivery),
            [6, 1, 2],
            "live first, then two a second"
        );
        assert!(
            delivery.drain_at().is_some(),
            "the rest waits for the drain"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        delivery.pump();
        assert_eq!(handed(&delivery), [6, 1, 2, 3]);
        assert_eq!(
            delivery.telemetry.drained_messages.load(Ordering::Relaxed),
            3
        );
    }

    #[tokio::test]
    async fn birth_and_will_payloads() {
        let (mut delivery, _commands) = delivery();
        delivery.connected_ms = 7;
        let birth: serde_json::Value =
            serde_json::from_slice(&delivery.status_payload(true)).unwrap();
        assert_eq!(birth["state"], "online");
        assert_eq!(birth["connected_ms"], 7);
        assert_eq!(birth["next_seq"], 42);
        assert_eq!(birth["interval_seconds"], 15);
        assert_eq!(birth["roles"], serde_json::json!(["host"]));
        let will = delivery.last_will();
        assert_eq!(will.topic, "pantau/v1/dc/dc-srv-01/status");
        assert!(will.retain);
        let payload: serde_json::Value = serde_json::from_slice(&will.message).unwrap();
        assert_eq!(payload["state"], "offline");
        assert!(payload.get("next_seq").is_none());
        assert_eq!(payload["connected_ms"], 7);
    }

    #[tokio::test]
    async fn commands_are_forwarded_and_overflow_is_counted() {
        let (mut delivery, (_eventloop, mut commands)) = delivery();
        for _ in 0..2 {
            let publish = rumqttc::Publish::new(
                "pantau/v1/dc/dc-srv-01/cmd/host/collect",
                QoS::AtLeastOnce,
                b"{}".to_vec(),
            );
            delivery.handle(Ok(Event::Incoming(Packet::Publish(publish))));
        }
        let first = commands.try_recv().unwrap();
        assert!(first.topic.ends_with("cmd/host/collect"));
        assert_eq!(
            delivery.telemetry.received_commands.load(Ordering::Relaxed),
            2
        );
        assert_eq!(
            delivery.telemetry.dropped_commands.load(Ordering::Relaxed),
            1
        );
    }
}
