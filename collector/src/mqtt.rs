//! The one task that owns the collector's MQTT connection, and `MqttHandle`, through which any
//! other part of the collector publishes.
//!
//! rumqttc reconnects only while its event loop is polled, so this task never stops polling:
//! it subscribes on every ConnAck (the session is clean, so a reconnect forgets the
//! subscription), forwards publishes to the ingest queue without ever waiting on it, and backs
//! off while the broker is unreachable. Publishes from elsewhere arrive as requests on a bounded
//! channel and only this task touches the client. A request is answered when the broker's
//! PUBACK arrives: rumqttc reports the packet id it gives each QoS 1 publish as
//! `Outgoing::Publish`, in the order the publishes were handed to it, and the PUBACK names it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pantau_protocol::Topic;
use pantau_runtime::backoff::Backoff;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};
use thiserror::Error;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exposition::Telemetry;
use crate::ingest::Received;
use crate::readiness::Readiness;

/// Publish requests waiting for the connection task; more fail with `QueueFull`.
const REQUEST_QUEUE: usize = 256;
/// Publishes handed to rumqttc and not yet acknowledged. Kept below rumqttc's request channel
/// (`CLIENT_CAPACITY`), so handing one over never fails, and below its in-flight limit (100).
const WINDOW: usize = 32;
/// rumqttc's own request channel: the window plus room for the subscribe and the disconnect.
const CLIENT_CAPACITY: usize = WINDOW + 8;
/// A connection that lasted this long was healthy: the next failure backs off from the start.
/// Resetting on every ConnAck instead would let a broker that accepts and then drops the
/// connection (say, over a retained message that breaks the session) drive a tight loop.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long stopping waits for the broker to take the DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a publish through `MqttHandle` did not reach the broker.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker connection was lost before the broker acknowledged the message")]
    ConnectionLost,
    #[error("the collector is stopping")]
    Stopping,
    #[error("{0} publishes are already waiting for the broker connection")]
    QueueFull(usize),
}

/// Why the connection task ended before shutdown.
#[derive(Debug, Error)]
pub enum MqttTaskError {
    #[error("the ingest queue is closed: the decoder is gone")]
    QueueClosed,
}

pub(crate) type Reply = oneshot::Sender<Result<(), PublishError>>;

/// One publish for the connection task, answered through `reply`.
#[derive(Debug)]
pub(crate) struct PublishRequest {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) retain: bool,
    pub(crate) reply: Reply,
}

/// Publishes through the connection task; clone it freely.
#[derive(Debug, Clone)]
pub struct MqttHandle {
    requests: mpsc::Sender<PublishRequest>,
}

impl MqttHandle {
    /// A handle and the receiving end its requests arrive on (tests answer them directly).
    pub(crate) fn channel(capacity: usize) -> (Self, mpsc::Receiver<PublishRequest>) {
        let (requests, receiver) = mpsc::channel(capacity);
        (Self { requests }, receiver)
    }

    /// Publishes at QoS 1; resolves once the broker has acknowledged the message. Never waits
    /// for room: with too many publishes pending it fails at once with `QueueFull`.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), PublishError> {
        let (reply, answer) = oneshot::channel();
        let request = PublishRequest {
            topic,
            payload,
            retain,
            reply,
        };
        self.requests
            .try_send(request)
            .map_err(|error| match error {
                TrySendError::Full(_) => PublishError::QueueFull(self.requests.max_capacity()),
                TrySendError::Closed(_) => PublishError::Stopping,
            })?;
        // A reply dropped unanswered means the connection task has ended.
        answer.await.unwrap_or(Err(PublishError::Stopping))
    }
}

/// Publishes handed to rumqttc, waiting for their packet id and then for their PUBACK.
#[derive(Debug, Default)]
struct Acks {
    /// Handed to rumqttc, in order; rumqttc numbers them in the same order.
    handed: VecDeque<Reply>,
    /// Sent, by packet id.
    in_flight: HashMap<u16, Reply>,
}

impl Acks {
    fn window_open(&self) -> bool {
        self.handed.len() + self.in_flight.len() < WINDOW
    }

    fn handed(&mut self, reply: Reply) {
        self.handed.push_back(reply);
    }

    /// rumqttc wrote the oldest handed publish as packet `pkid`.
    fn sent(&mut self, pkid: u16) {
        if let Some(reply) = self.handed.pop_front() {
            self.in_flight.insert(pkid, reply);
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(reply) = self.in_flight.remove(&pkid) {
            // The caller may have stopped waiting; that is its business.
            let _ = reply.send(Ok(()));
        }
    }

    /// Answers every pending publish with `error`. After a connection loss that is the truth:
    /// on the new clean session rumqttc drops whatever it had not had acknowledged.
    fn fail_all(&mut self, error: &PublishError) {
        let replies = self
            .handed
            .drain(..)
            .chain(self.in_flight.drain().map(|(_, reply)| reply));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// The reconnect delay, reset only after a connection has proved stable.
#[derive(Debug)]
struct Reconnect {
    backoff: Backoff,
    connected_since: Option<Instant>,
}

impl Reconnect {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            connected_since: None,
        }
    }

    fn connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    fn is_connected(&self) -> bool {
        self.connected_since.is_some()
    }

    /// The connection failed (or never came up) at `now`: how long to wait before retrying.
    fn failed(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.connected_since.take()
            && now.saturating_duration_since(since) >= STABLE_AFTER
        {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }
}

/// The connection task; run it with `run`.
pub struct Connection {
    eventloop: EventLoop,
    session: Session,
}

/// Everything but the event loop, so it can be used while a `poll()` is in flight.
struct Session {
    client: AsyncClient,
    filter: String,
    queue: mpsc::Sender<Received>,
    requests: mpsc::Receiver<PublishRequest>,
    requests_open: bool,
    acks: Acks,
    reconnect: Reconnect,
    telemetry: Arc<Telemetry>,
    readiness: Readiness,
    drop_log: LogLimiter,
}

impl Connection {
    /// The task that will connect with `options`, subscribe to everything under `prefix` and
    /// forward it to `queue`, and the handle to publish through it.
    pub fn new(
        mut options: MqttOptions,
        prefix: &str,
        queue: mpsc::Sender<Received>,
        telemetry: Arc<Telemetry>,
        readiness: Readiness,
    ) -> (Self, MqttHandle) {
        // `Acks::fail_all` on a connection loss relies on it: a resumed session would make
        // rumqttc resend old publishes and report packet ids for them.
        options.set_clean_session(true);
        let (client, eventloop) = AsyncClient::new(options, CLIENT_CAPACITY);
        let (handle, requests) = MqttHandle::channel(REQUEST_QUEUE);
        let session = Session {
            client,
            filter: Topic::subscription_filter(prefix),
            queue,
            requests,
            requests_open: true,
            acks: Acks::default(),
            reconnect: Reconnect::new(),
            telemetry,
            readiness,
            drop_log: LogLimiter::new(Duration::from_secs(10)),
        };
        (Self { eventloop, session }, handle)
    }

    /// Runs until `shutdown`, then answers what is pending and disconnects. Fails only when
    /// the decoder has gone away.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), MqttTaskError> {
        let Connection {
            mut eventloop,
            mut session,
        } = self;
        let result = session.drive(&mut eventloop, &shutdown).await;
        session.stop(&mut eventloop).await;
        result
    }
}

impl Session {
    async fn drive(
        &mut self,
        eventloop: &mut EventLoop,
        shutdown: &CancellationToken,
    ) -> Result<(), MqttTaskError> {
        let mut retry_at = None;
        loop {
            if let Some(retry_at) = retry_at.take() {
                let sleep = tokio::time::sleep_until(retry_at);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = &mut sleep => break,
                        request = self.requests.recv(), if self.requests_open => {
                            self.on_request(request);
                        }
                    }
                }
            }
            // A poll() in flight is only dropped when stopping: rumqttc abandons a connection
            // whose CONNACK it is awaiting when its future is dropped.
            let poll = eventloop.poll();
            tokio::pin!(poll);
            let event = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    event = &mut poll => break event,
                    request = self.requests.recv(), if self.requests_open && self.acks.window_open() => {
                        self.on_request(request);
                    }
                }
            };
            match event {
                Ok(event) => self.on_event(event)?,
                Err(error) => {
                    let was_connected = self.reconnect.is_connected();
                    let delay = self.reconnect.failed(Instant::now());
                    self.readiness.set_subscribed(false);
                    self.telemetry.mqtt_connected.set(0);
                    self.acks.fail_all(&PublishError::ConnectionLost);
                    if was_connected {
                        warn!(%error, retry_in = ?delay, "lost the broker connection, reconnecting");
                    } else {
                        debug!(%error, retry_in = ?delay, "broker not reachable");
                    }
                    retry_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), MqttTaskError> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.reconnect.connected(Instant::now());
                self.telemetry.mqtt_connections.inc();
                info!(filter = %self.filter, "connected to broker, subscribing");
                if let Err(error) = self
                    .client
                    .try_subscribe(self.filter.clone(), QoS::AtLeastOnce)
                {
                    warn!(%error, "cannot queue the subscription");
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    // Typically an ACL; nothing will arrive, so stay not ready and say why.
                    warn!(filter = %self.filter, "the broker refused the subscription");
                } else {
                    debug!(?ack, "subscribed");
                    self.readiness.set_subscribed(true);
                    self.telemetry.mqtt_connected.set(1);
                }
            }
            Event::Incoming(Packet::Publish(publish)) => self.forward(publish)?,
            Event::Outgoing(Outgoing::Publish(pkid)) => self.acks.sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => self.acks.acked(ack.pkid),
            _ => {}
        }
        Ok(())
    }

    /// Queues a received publish for the decoder; never waits, a full queue drops it.
    fn forward(&mut self, publish: Publish) -> Result<(), MqttTaskError> {
        self.telemetry.received.inc();
        let received = Received {
            topic: publish.topic,
            payload: publish.payload,
            retained: publish.retain,
        };
        match self.queue.try_send(received) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(dropped)) => {
                self.telemetry.dropped.inc();
                if let Verdict::Log { suppressed } = self.drop_log.check("queue_full") {
                    warn!(topic = %dropped.topic, suppressed, "ingest queue full, dropping message");
                }
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(MqttTaskError::QueueClosed),
        }
    }

    fn on_request(&mut self, request: Option<PublishRequest>) {
        let Some(PublishRequest {
            topic,
            payload,
            retain,
            reply,
        }) = request
        else {
            // Every handle is gone; stop asking (recv() would return None at once, forever).
            self.requests_open = false;
            return;
        };
        if !self.reconnect.is_connected() {
            let _ = reply.send(Err(PublishError::NotConnected));
            return;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => self.acks.handed(reply),
            // Not expected while the window is smaller than rumqttc's channel.
            Err(error) => {
                warn!(%error, "rumqttc refused a publish");
                let _ = reply.send(Err(PublishError::QueueFull(CLIENT_CAPACITY)));
            }
        }
    }

    /// Answers every pending publish and disconnects cleanly if connected.
    async fn stop(&mut self, eventloop: &mut EventLoop) {
        self.readiness.set_subscribed(false);
        self.telemetry.mqtt_connected.set(0);
        self.acks.fail_all(&PublishError::Stopping);
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(PublishError::Stopping));
        }
        if !self.reconnect.is_connected() || self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + DISCONNECT_TIMEOUT;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    debug!("the broker did not take the disconnect in time");
                    return;
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => {
                        debug!("disconnected from broker");
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

    #[tokio::test]
    async fn a_publish_resolves_on_its_own_puback() {
        let (handle, mut requests) = MqttHandle::channel(4);
        let publish = |topic: &str, retain| {
            let (handle, topic) = (handle.clone(), topic.to_owned());
            tokio::spawn(async move { handle.publish(topic, Vec::new(), retain).await })
        };
        let first = publish("t/1", true);
        tokio::task::yield_now().await;
        let second = publish("t/2", false);
        let mut acks = Acks::default();
        for (topic, retain) in [("t/1", true), ("t/2", false)] {
            let request = requests.recv().await.unwrap();
            assert_eq!((request.topic.as_str(), request.retain), (topic, retain));
            assert!(request.payload.is_empty());
            acks.handed(request.reply);
        }
        // rumqttc numbers them in hand-off order; the broker acks the second one first.
        acks.sent(7);
        acks.sent(8);
        acks.acked(8);
        acks.acked(8); // a repeated ack changes nothing
        assert_eq!(second.await.unwrap(), Ok(()));
        assert!(!first.is_finished());
        acks.acked(7);
        assert_eq!(first.await.unwrap(), Ok(()));
        assert!(acks.handed.is_empty() && acks.in_flight.is_empty());
    }

    #[tokio::test]
    async fn a_lost_connection_fails_what_was_pending() {
        let mut acks = Acks::default();
        let (sent, sent_answer) = oneshot::channel();
        let (handed, handed_answer) = oneshot::channel();
        acks.handed(sent);
        acks.sent(1);
        acks.handed(handed);
        acks.fail_all(&PublishError::ConnectionLost);
        assert_eq!(
            sent_answer.await.unwrap(),
            Err(PublishError::ConnectionLost)
        );
        assert_eq!(
            handed_answer.await.unwrap(),
            Err(PublishError::ConnectionLost)
        );
        assert!(acks.window_open());
    }

    #[tokio::test]
    async fn a_full_queue_or_a_gone_task_fails_at_once() {
        let (handle, requests) = MqttHandle::channel(1);
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.publish("t".to_owned(), Vec::new(), false).await }
        });
        tokio::task::yield_now().await;
        let full = handle.publish("t".to_owned(), Vec::new(), false).await;
        assert_eq!(full, Err(PublishError::QueueFull(1)));
        drop(requests);
        assert_eq!(waiting.await.unwrap(), Err(PublishError::Stopping));
        let closed = handle.publish("t".to_owned(), Vec::new(), false).await;
        assert_eq!(closed, Err(PublishError::Stopping));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_resets_only_after_a_stable_connection() {
        let mut reconnect = Reconnect::new();
        // A broker that accepts and drops at once: the delay keeps growing.
        let mut delays = Vec::new();
        for _ in 0..6 {
            reconnect.connected(Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
            delays.push(reconnect.failed(Instant::now()));
        }
        assert!(delays[5] >= Duration::from_secs(4), "{delays:?}");

        // A connection that held for STABLE_AFTER starts over.
        reconnect.connected(Instant::now());
        tokio::time::advance(STABLE_AFTER).await;
        assert!(reconnect.failed(Instant::now()) <= Duration::from_millis(250));
        // Failing without having connected does not reset.
        let next = reconnect.failed(Instant::now());
        assert!(next >= Duration::from_millis(250), "{next:?}");
    }
}
