//! The one task that owns the collector's MQTT connection, and `MqttHandle`, through which any
//! other part of the collector publishes.
//!
//! rumqttc reconnects only while its event loop is polled, so this task never stops polling:
//! it subscribes on every ConnAck (a clean session forgets the subscription), forwards
//! publishes to the ingest queue without ever waiting on it, and backs off while the broker is
//! unreachable, moving to the next broker of `mqtt.url` after each failure. With `mqtt.sites`
//! it subscribes to the owned sites only (`sites.rs`). Publishes from elsewhere (`handle.rs`)
//! arrive as requests on a bounded channel; only this task touches the client, and it answers
//! each request when the broker's PUBACK for it arrives.

mod handle;
mod metrics;
mod sites;

use std::sync::Arc;
use std::time::Duration;

use pantau_runtime::backoff::Backoff;
use pantau_runtime::mqtt::Brokers;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use rumqttc::{
    AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exposition::Telemetry;
use crate::ingest::Received;
use crate::readiness::Readiness;
use handle::Acks;
pub(crate) use handle::PublishRequest;
pub use handle::{MqttHandle, PublishError};
use metrics::ConnectionMetrics;
pub use sites::SiteFilter;

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

/// Why the connection task ended before shutdown.
#[derive(Debug, Error)]
pub enum MqttTaskError {
    #[error("the ingest queue is closed: the decoder is gone")]
    QueueClosed,
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
    brokers: Brokers,
    session: Session,
}

/// Everything but the event loop, so it can be used while a `poll()` is in flight.
struct Session {
    client: AsyncClient,
    /// The agents' topics: everything under the prefix, or the owned sites' part of it.
    filters: Vec<String>,
    sites: SiteFilter,
    metrics: ConnectionMetrics,
    /// Further filters (room sensors' topics), subscribed with the agents' one.
    extra_filters: Vec<String>,
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
    /// Also subscribes to `filters` (room sensors' topics) on every connect.
    pub fn also_subscribe(mut self, filters: Vec<String>) -> Self {
        self.session.extra_filters = filters;
        self
    }

    /// The task that will connect to the current one of `brokers` (failing over to the next
    /// one after a failure), subscribe to the topics of the sites in `sites` and forward them
    /// to `queue`, and the handle to publish through it. Each broker's options must already
    /// say whether the session is persistent.
    pub fn new(
        brokers: Brokers,
        sites: SiteFilter,
        queue: mpsc::Sender<Received>,
        telemetry: Arc<Telemetry>,
        readiness: Readiness,
    ) -> Result<(Self, MqttHandle), prometheus::Error> {
        let metrics = ConnectionMetrics::register(telemetry.registry())?;
        metrics.set_broker(brokers.current());
        let (client, eventloop) = AsyncClient::new(brokers.options(), CLIENT_CAPACITY);
        let (handle, requests) = MqttHandle::channel(REQUEST_QUEUE);
        let session = Session {
            client,
            filters: sites.filters(),
            sites,
            metrics,
            extra_filters: Vec::new(),
            queue,
            requests,
            requests_open: true,
            acks: Acks::default(),
            reconnect: Reconnect::new(),
            telemetry,
            readiness,
            drop_log: LogLimiter::new(Duration::from_secs(10)),
        };
        Ok((
            Self {
                eventloop,
                brokers,
                session,
            },
            handle,
        ))
    }

    /// Runs until `shutdown`, then answers what is pending and disconnects. Fails only when
    /// the decoder has gone away.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), MqttTaskError> {
        let Connection {
            mut eventloop,
            mut brokers,
            mut session,
        } = self;
        let result = session.drive(&mut eventloop, &mut brokers, &shutdown).await;
        session.stop(&mut eventloop).await;
        result
    }
}

impl Session {
    async fn drive(
        &mut self,
        eventloop: &mut EventLoop,
        brokers: &mut Brokers,
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
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        event = &mut poll => break event,
                        request = self.requests.recv(), if self.requests_open && self.acks.window_open() => {
                            self.on_request(request);
                        }
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
                    // Those publishes were answered as lost (their senders resend); rumqttc
                    // must not also resend them in a resumed session, or packet ids would no
                    // longer match the requests waiting for them.
                    eventloop.pending.clear();
                    if was_connected {
                        warn!(%error, retry_in = ?delay, "lost the broker connection, reconnecting");
                    } else if pantau_runtime::mqtt_tls::is_tls_error(&error) {
                        // A configuration problem, not an outage: say so at every attempt
                        // (the reconnect backoff spaces them out).
                        warn!(
                            %error,
                            retry_in = ?delay,
                            "TLS with the broker failed: check mqtt.ca_file, that the broker's \
                             certificate names the host in mqtt.url, and mqtt.client_cert_file"
                        );
                    } else if pantau_runtime::mqtt_tls::is_not_mqtt(&error) {
                        warn!(
                            %error,
                            retry_in = ?delay,
                            "the broker's answer is not MQTT: most likely a TLS port reached \
                             with mqtt:// (use mqtts://)"
                        );
                    } else {
                        debug!(%error, retry_in = ?delay, "broker not reachable");
                    }
                    let from = brokers.current().to_string();
                    if brokers.fail_over(eventloop) {
                        self.metrics.failed_over(brokers.current());
                        // Repeats at each attempt while every broker is down: rate-limited.
                        if let Verdict::Log { suppressed } = self.drop_log.check("failover") {
                            info!(from, to = %brokers.current(), suppressed, "failing over to the next broker");
                        }
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
                info!(filters = ?self.filters, "connected to broker, subscribing");
                let filters = self
                    .filters
                    .iter()
                    .chain(&self.extra_filters)
                    .map(|filter| SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
                if let Err(error) = self.client.try_subscribe_many(filters) {
                    warn!(%error, "cannot queue the subscription");
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    // Typically an ACL; nothing will arrive, so stay not ready and say why.
                    warn!(filters = ?self.filters, "the broker refused the subscription");
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
        if self.sites.is_foreign(&publish.topic) {
            self.metrics.foreign_site.inc();
            if let Verdict::Log { suppressed } = self.drop_log.check("foreign_site") {
                info!(topic = ?publish.topic, suppressed, "ignored a message of a site outside mqtt.sites");
            }
            return Ok(());
        }
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
                    warn!(topic = ?dropped.topic, suppressed, "ingest queue full, dropping message");
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
                    // rumqttc has already acknowledged publishes it read before the
                    // disconnect (some were read by the poll that shutdown interrupted): the
                    // broker has let them go, so dropping them here would lose them. The
                    // decoder applies them before it ends.
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = self.forward(publish);
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
