//! From the broker to `State`: one task owns the MQTT event loop (polling it is what makes
//! rumqttc reconnect) and forwards publishes over a bounded queue; a second task decodes,
//! validates and applies them. Bad input is counted, logged at a limited rate, and dropped;
//! it never stops either task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use pantau_protocol::{Limits, Topic, decode};
use pantau_runtime::backoff::Backoff;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exposition::{SharedState, TYPE_CONFLICT, Telemetry};
use crate::state::{Moment, Outcome, Transition};

/// A publish as received, waiting to be decoded.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub retained: bool,
}

/// Whether the collector is subscribed; `/readyz` reads it.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// Owns the MQTT connection: subscribes on every ConnAck (the session is clean, so a
/// reconnect forgets the subscription), forwards publishes, and backs off while the broker is
/// unreachable. Returns when `shutdown` is cancelled or the decoder has gone away.
pub async fn run_connection(
    client: AsyncClient,
    mut eventloop: EventLoop,
    prefix: String,
    queue: mpsc::Sender<Received>,
    telemetry: Arc<Telemetry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let filter = Topic::subscription_filter(&prefix);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut connected = false;
    let drop_log = LogLimiter::new(Duration::from_secs(10));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                backoff.reset();
                telemetry.mqtt_connections.inc();
                info!(filter = %filter, "connected to broker, subscribing");
                if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    warn!(%error, "cannot queue the subscription");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                debug!(?ack, "subscribed");
                readiness.set(true);
                telemetry.mqtt_connected.set(1);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                telemetry.received.inc();
                let received = Received {
                    topic: publish.topic,
                    payload: publish.payload,
                    retained: publish.retain,
                };
                match queue.try_send(received) {
                    Ok(()) => {}
                    Err(TrySendError::Full(dropped)) => {
                        telemetry.dropped.inc();
                        if let Verdict::Log { suppressed } = drop_log.check("queue_full") {
                            warn!(topic = %dropped.topic, suppressed, "ingest queue full, dropping message");
                        }
                    }
                    Err(TrySendError::Closed(_)) => break,
                }
            }
            Ok(_) => {}
            Err(error) => {
                readiness.set(false);
                telemetry.mqtt_connected.set(0);
                let delay = backoff.next_delay();
                if connected {
                    warn!(%error, "lost the broker connection, reconnecting");
                } else {
                    debug!(%error, retry_in = ?delay, "broker not reachable");
                }
                connected = false;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    readiness.set(false);
    let _ = client.try_disconnect();
}

/// Decodes and applies queued messages until the queue closes.
pub async fn run_decoder(
    mut queue: mpsc::Receiver<Received>,
    state: SharedState,
    telemetry: Arc<Telemetry>,
    prefix: String,
    limits: Limits,
) {
    let reject_log = LogLimiter::new(Duration::from_secs(10));
    while let Some(received) = queue.recv().await {
        let decoded = match decode(&prefix, &received.topic, &received.payload, &limits) {
            Ok(decoded) => decoded,
            Err(error) => {
                let reason = error.reason().as_str();
                telemetry.rejected.with_label_values(&[reason]).inc();
                if let Verdict::Log { suppressed } = reject_log.check(reason) {
                    warn!(topic = %received.topic, reason, %error, suppressed, "rejected message");
                }
                continue;
            }
        };
        let agent = decoded.topic.agent.clone();
        let outcome = {
            let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
            state.apply(decoded, received.retained, Moment::now())
        };
        match outcome {
            Outcome::Accepted | Outcome::Ignored => {}
            Outcome::Duplicate => debug!(agent = %agent, "dropped a repeated message"),
            Outcome::StaleStatus => {
                telemetry.stale_status.inc();
                info!(agent = %agent, "ignored an offline status from an older connection");
            }
            Outcome::TypeConflict { name, known } => {
                telemetry.rejected.with_label_values(&[TYPE_CONFLICT]).inc();
                if let Verdict::Log { suppressed } = reject_log.check(TYPE_CONFLICT) {
                    warn!(
                        agent = %agent,
                        metric = %name,
                        known_type = known.as_str(),
                        suppressed,
                        reason = TYPE_CONFLICT,
                        "rejected message: metric already exposed with another type"
                    );
                }
            }
        }
    }
}

/// Logs agents going up, down and being forgotten, once a second.
pub async fn run_sweeper(state: SharedState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let transitions = {
            let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
            state.sweep(tokio::time::Instant::now())
        };
        for transition in transitions {
            match transition {
                Transition::Up { agent } => info!(agent = %agent, "agent up"),
                Transition::Down { agent } => warn!(agent = %agent, "agent down"),
                Transition::Forgotten { agent } => info!(agent = %agent, "agent forgotten"),
            }
        }
    }
}
