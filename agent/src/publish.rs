//! The one task that owns the MQTT connection.
//!
//! rumqttc reconnects only while its event loop is polled, and on a new (clean) session it
//! silently discards every publish it had not had acknowledged, including requests still
//! waiting in its channel. So this task keeps its own outbox: a message leaves it only when
//! the broker's PUBACK arrives; on a connection error everything unacknowledged goes back to
//! the front of the queue and is sent again after the reconnect (the collector drops repeats
//! by sequence number). The outbox lives in memory for now, bounded, oldest dropped first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{AgentState, Channel, SCHEMA_VERSION, StatusMessage, Topic};
use pantau_runtime::backoff::Backoff;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most messages handed to rumqttc and not yet acknowledged.
const WINDOW: usize = 32;
/// How long shutdown waits for the outbox to drain before publishing `offline`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A metrics or events message waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Counters the agent reports about its own delivery.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub outbox_messages: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub oversized_messages: AtomicU64,
    pub connections: AtomicU64,
}

/// Who the agent is, for its status messages.
#[derive(Debug, Clone)]
pub struct Identity {
    pub prefix: String,
    pub agent: String,
    pub site: String,
    pub interval_seconds: u64,
    /// The next sequence number the agent will use, announced in the birth message.
    pub next_seq: Arc<AtomicU64>,
}

impl Identity {
    fn status_topic(&self) -> String {
        Topic::new(&self.site, &self.agent, Channel::Status).render(&self.prefix)
    }

    fn status(&self, state: AgentState, connected_ms: i64) -> Vec<u8> {
        let online = state == AgentState::Online;
        let message = StatusMessage {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            state,
            timestamp_ms: unix_millis(SystemTime::now()),
            interval_seconds: online.then_some(self.interval_seconds),
            version: online.then(|| env!("CARGO_PKG_VERSION").to_owned()),
            next_seq: online.then(|| self.next_seq.load(Ordering::SeqCst)),
            connected_ms: Some(connected_ms),
            roles: Vec::new(),
        };
        // A struct of strings and integers always serializes.
        serde_json::to_vec(&message).unwrap_or_default()
    }

    /// The last will of the connection opened at `connected_ms`: the broker publishes it,
    /// retained, when that connection dies uncleanly.
    pub fn last_will(&self, connected_ms: i64) -> LastWill {
        LastWill::new(
            self.status_topic(),
            self.status(AgentState::Offline, connected_ms),
            QoS::AtLeastOnce,
            true,
        )
    }
}

pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    })
}

/// Messages between the sampler and the broker's acknowledgement.
#[derive(Debug)]
struct Outbox {
    capacity: usize,
    /// Not yet handed to rumqttc, oldest first.
    queued: VecDeque<Envelope>,
    /// Handed to rumqttc, waiting for the packet id it assigns (in the same order; `None`
    /// marks a status message, which is not retried).
    handed: VecDeque<Option<Envelope>>,
    /// Sent, waiting for PUBACK, by packet id.
    in_flight: BTreeMap<u16, Option<Envelope>>,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queued: VecDeque::new(),
            handed: VecDeque::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// Messages not yet acknowledged.
    fn len(&self) -> usize {
        self.queued.len()
            + self.handed.iter().flatten().count()
            + self.in_flight.values().flatten().count()
    }

    /// Queues a message; returns the oldest queued one if the outbox was full.
    fn push(&mut self, envelope: Envelope) -> Option<Envelope> {
        let dropped = (self.len() >= self.capacity)
            .then(|| self.queued.pop_front())
            .flatten();
        self.queued.push_back(envelope);
        dropped
    }

    fn window_open(&self) -> bool {
        self.handed.len() + self.in_flight.len() < WINDOW
    }

    fn on_sent(&mut self, pkid: u16) {
        if let Some(entry) = self.handed.pop_front() {
            self.in_flight.insert(pkid, entry);
        }
    }

    fn on_acked(&mut self, pkid: u16) {
        self.in_flight.remove(&pkid);
    }

    /// After a connection error: whatever was not acknowledged is sent again, in order.
    fn requeue_unacknowledged(&mut self) {
        let mut unacked: Vec<Envelope> = self
            .in_flight
            .values_mut()
            .filter_map(Option::take)
            .chain(self.handed.drain(..).flatten())
            .collect();
        self.in_flight.clear();
        unacked.sort_by_key(|envelope| envelope.seq);
        for envelope in unacked.into_iter().rev() {
            self.queued.push_front(envelope);
        }
    }
}

/// The publishing task: the event loop it alone polls, and the delivery state.
pub struct Publisher {
    eventloop: EventLoop,
    delivery: Delivery,
}

/// Everything but the event loop, so it can be borrowed while a `poll()` is in flight.
struct Delivery {
    client: AsyncClient,
    identity: Identity,
    outbox: Outbox,
    stats: Arc<DeliveryStats>,
    connected: bool,
    /// When the current (or next) connection was opened; its will and birth carry it.
    connected_ms: i64,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

/// What the task listens to besides the broker.
struct Inputs {
    incoming: mpsc::Receiver<Envelope>,
    incoming_open: bool,
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
            message = self.incoming.recv(), if self.incoming_open => match message {
                Some(envelope) => delivery.enqueue(envelope),
                None => self.incoming_open = false,
            },
        }
    }

    /// Whether to stop: after shutdown, once everything is delivered, the flush time is up,
    /// or there is no connection to flush over.
    fn finished(&self, delivery: &Delivery) -> bool {
        let Some(deadline) = self.flush_deadline else {
            return false;
        };
        let drained = !self.incoming_open && delivery.outbox.len() == 0;
        drained || Instant::now() >= deadline || !delivery.connected && !self.incoming_open
    }
}

impl Publisher {
    pub fn new(
        client: AsyncClient,
        eventloop: EventLoop,
        identity: Identity,
        outbox_capacity: usize,
        stats: Arc<DeliveryStats>,
    ) -> Self {
        Self {
            eventloop,
            delivery: Delivery {
                client,
                identity,
                outbox: Outbox::new(outbox_capacity),
                stats,
                connected: false,
                connected_ms: 0,
                backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
                retry_at: None,
            },
        }
    }

    /// Delivers `incoming` until `shutdown`, then flushes for up to `FLUSH_TIMEOUT`, publishes
    /// `offline` and disconnects.
    pub async fn run(self, incoming: mpsc::Receiver<Envelope>, shutdown: CancellationToken) {
        let Publisher {
            mut eventloop,
            mut delivery,
        } = self;
        let mut inputs = Inputs {
            incoming,
            incoming_open: true,
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
                let will = delivery.identity.last_will(delivery.connected_ms);
                eventloop.mqtt_options.set_last_will(will);
            }
            // A `poll()` in flight is never dropped: rumqttc abandons a connection whose CONNACK
            // it is awaiting when its future is dropped, and the broker then sees two
            // connections with one client id (rumqttd even lost the live one's last will).
            let poll = eventloop.poll();
            tokio::pin!(poll);
            let event = loop {
                if delivery.connected {
                    delivery.pump();
                }
                delivery
                    .stats
                    .outbox_messages
                    .store(delivery.outbox.len() as u64, Ordering::Relaxed);
                if inputs.finished(&delivery) {
                    break 'run;
                }
                tokio::select! {
                    event = &mut poll => break event,
                    () = inputs.next(&mut delivery) => {}
                }
            };
            delivery.handle(event);
        }
        delivery.finish(&mut eventloop).await;
    }
}

impl Delivery {
    fn enqueue(&mut self, envelope: Envelope) {
        if let Some(dropped) = self.outbox.push(envelope) {
            self.stats.dropped_messages.fetch_add(1, Ordering::Relaxed);
            warn!(
                seq = dropped.seq,
                capacity = self.outbox.capacity,
                "outbox full, dropped the oldest message"
            );
        }
    }

    /// Hands queued messages to rumqttc while the in-flight window has room.
    fn pump(&mut self) {
        while self.outbox.window_open() {
            let Some(envelope) = self.outbox.queued.front() else {
                return;
            };
            let sent = self.client.try_publish(
                envelope.topic.clone(),
                QoS::AtLeastOnce,
                false,
                envelope.payload.clone(),
            );
            if sent.is_err() {
                // rumqttc's request channel is full; the next event frees it.
                return;
            }
            let envelope = self.outbox.queued.pop_front();
            self.outbox.handed.push_back(envelope);
        }
    }

    fn publish_status(&mut self, state: AgentState) {
        let topic = self.identity.status_topic();
        let payload = self.identity.status(state, self.connected_ms);
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.outbox.handed.push_back(None),
            Err(error) => warn!(%error, state = ?state, "cannot queue the status message"),
        }
    }

    fn handle(&mut self, event: Result<Event, ConnectionError>) {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                self.connected = true;
                self.backoff.reset();
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                info!(
                    queued = self.outbox.len(),
                    "connected to broker, publishing birth message"
                );
                self.publish_status(AgentState::Online);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => self.outbox.on_sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => self.outbox.on_acked(ack.pkid),
            Ok(_) => {}
            Err(error) => {
                let delay = self.backoff.next_delay();
                if self.connected {
                    warn!(%error, "lost the broker connection, reconnecting");
                } else {
                    debug!(%error, retry_in = ?delay, "broker not reachable");
                }
                self.connected = false;
                self.outbox.requeue_unacknowledged();
                self.retry_at = Some(Instant::now() + delay);
            }
        }
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
        self.publish_status(AgentState::Offline);
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

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(seq: u64) -> Envelope {
        Envelope {
            seq,
            topic: "t".to_owned(),
            payload: vec![seq as u8],
        }
    }

    #[test]
    fn acknowledged_messages_leave_the_outbox() {
        let mut outbox = Outbox::new(10);
        outbox.push(envelope(1));
        outbox.push(envelope(2));
        let first = outbox.queued.pop_front();
        outbox.handed.push_back(first);
        outbox.handed.push_back(None); // a status message in between
        let second = outbox.queued.pop_front();
        outbox.handed.push_back(second);
        outbox.on_sent(7);
        outbox.on_sent(8);
        outbox.on_sent(9);
        assert_eq!(outbox.len(), 2);
        outbox.on_acked(7);
        outbox.on_acked(8);
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.in_flight.get(&9), Some(&Some(envelope(2))));
    }

    #[test]
    fn unacknowledged_messages_are_requeued_in_order() {
        let mut outbox = Outbox::new(10);
        for seq in 1..=4 {
            outbox.push(envelope(seq));
        }
        // 1 and 2 sent and in flight, 3 handed but not yet sent, 4 still queued.
        for pkid in [1, 2] {
            let next = outbox.queued.pop_front();
            outbox.handed.push_back(next);
            outbox.on_sent(pkid);
        }
        let next = outbox.queued.pop_front();
        outbox.handed.push_back(next);
        outbox.handed.push_back(None);
        outbox.on_acked(1);

        outbox.requeue_unacknowledged();
        let seqs: Vec<u64> = outbox.queued.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert!(outbox.handed.is_empty() && outbox.in_flight.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let mut outbox = Outbox::new(2);
        assert_eq!(outbox.push(envelope(1)), None);
        assert_eq!(outbox.push(envelope(2)), None);
        assert_eq!(outbox.push(envelope(3)), Some(envelope(1)));
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn the_window_bounds_what_rumqttc_holds() {
        let mut outbox = Outbox::new(100);
        for seq in 0..WINDOW as u64 {
            assert!(outbox.window_open());
            outbox.handed.push_back(Some(envelope(seq)));
        }
        assert!(!outbox.window_open());
    }

    #[test]
    fn birth_and_will_payloads() {
        let identity = Identity {
            prefix: "pantau".to_owned(),
            agent: "dc-srv-01".to_owned(),
            site: "dc".to_owned(),
            interval_seconds: 15,
            next_seq: Arc::new(AtomicU64::new(42)),
        };
        let birth: serde_json::Value =
            serde_json::from_slice(&identity.status(AgentState::Online, 7)).unwrap();
        assert_eq!(birth["state"], "online");
        assert_eq!(birth["connected_ms"], 7);
        assert_eq!(birth["next_seq"], 42);
        assert_eq!(birth["interval_seconds"], 15);
        let will = identity.last_will(7);
        assert_eq!(will.topic, "pantau/v1/dc/dc-srv-01/status");
        assert!(will.retain);
        let payload: serde_json::Value = serde_json::from_slice(&will.message).unwrap();
        assert_eq!(payload["state"], "offline");
        assert!(payload.get("next_seq").is_none());
        assert_eq!(payload["connected_ms"], 7);
    }
}
