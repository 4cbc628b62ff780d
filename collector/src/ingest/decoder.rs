//! The decoder: takes received publishes off the queue, validates them with
//! `pantau_protocol::decode`, applies them to `State`, and counts each rejection under its
//! `RejectReason`.
//!
//! A rejected message the broker replayed as retained would come back on every reconnect, be
//! rejected and logged again, forever; so the decoder removes it from the broker by publishing
//! an empty retained payload to its topic through the `MqttHandle`. Empty payloads are that
//! idiom (ours echoing back, or an operator's `mosquitto_pub -r -n`), carry no data, and are
//! ignored without counting them as rejections.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use pantau_protocol::{Channel, DropReason, Limits, RejectReason, Topic, decode};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Received;
use super::known_shape;
use crate::announce::Tap;
use crate::backfill::Backfill;
use crate::exposition::Telemetry;
use crate::mqtt::MqttHandle;
use crate::state::{FAMILY_DROPPED, MESSAGE_REJECTED, Moment, Outcome, SharedState};

/// Decodes and applies what the MQTT task receives.
pub struct Decoder {
    prefix: String,
    limits: Limits,
    state: SharedState,
    telemetry: Arc<Telemetry>,
    mqtt: MqttHandle,
    reject_log: LogLimiter,
    clear_log: Arc<LogLimiter>,
    /// Clears waiting for the broker's acknowledgement; bounded by the handle's queue, which
    /// refuses more at once.
    clears: JoinSet<()>,
    /// Where statuses and events go for the announcements, when they are on.
    tap: Option<Tap>,
    sensors: Option<std::sync::Arc<crate::sensors::Sensors>>,
    /// Where samples that are history go (late, or older than the live window).
    backfill: Option<Backfill>,
    /// The values of the message being read against its agent's stored shapes; kept so
    /// that the steady state allocates nothing for them.
    values: Vec<f64>,
}

impl Decoder {
    /// A decoder for topics under `prefix`, clearing rejected retained messages through `mqtt`.
    pub fn new(
        prefix: String,
        limits: Limits,
        state: SharedState,
        telemetry: Arc<Telemetry>,
        mqtt: MqttHandle,
    ) -> Self {
        Self {
            prefix,
            limits,
            state,
            telemetry,
            mqtt,
            reject_log: LogLimiter::new(Duration::from_secs(10)),
            clear_log: Arc::new(LogLimiter::new(Duration::from_secs(10))),
            clears: JoinSet::new(),
            tap: None,
            sensors: None,
            backfill: None,
            values: Vec::new(),
        }
    }

    /// Hands samples that are history to `backfill` (without one they are only left out of
    /// `/metrics`).
    pub fn with_backfill(mut self, backfill: Backfill) -> Self {
        self.backfill = Some(backfill);
        self
    }

    /// Also offers every accepted status and announcement events to `tap`.
    /// Room sensors' messages (topics outside the agents' prefix) go to `sensors`.
    pub fn with_sensors(mut self, sensors: std::sync::Arc<crate::sensors::Sensors>) -> Self {
        self.sensors = Some(sensors);
        self
    }

    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Decodes and applies queued messages until the queue closes (the MQTT task has stopped),
    /// then waits for the clears still pending, which the stopped task has answered.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Received>) {
        loop {
            tokio::select! {
                received = queue.recv() => match received {
                    Some(received) => self.handle(received),
                    None => break,
                },
                Some(_) = self.clears.join_next(), if !self.clears.is_empty() => {}
            }
        }
        while self.clears.join_next().await.is_some() {}
    }

    fn handle(&mut self, received: Received) {
        if received.payload.is_empty() {
            debug!(topic = ?received.topic, retained = received.retained, "ignored an empty payload (a retained message being cleared)");
            return;
        }
        if let Some(sensors) = &self.sensors
            && !received
                .topic
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
            && sensors.ingest(
                &received.topic,
                &received.payload,
                std::time::Instant::now(),
            )
        {
            return;
        }
        let now = Moment::now();
        if let Some((agent, outcome, replayed)) = self.apply_known_shape(&received, now) {
            // Metrics are nothing the announcements observe.
            self.settle(agent, None, outcome, replayed, now);
            return;
        }
        self.telemetry.decoded.full.inc();
        let decoded = match decode(
            &self.prefix,
            &received.topic,
            &received.payload,
            &self.limits,
        ) {
            Ok(decoded) => decoded,
            Err(error) => {
                let reason = error.reason();
                self.count_rejection(reason);
                if let Verdict::Log { suppressed } = self.reject_log.check(reason.as_str()) {
                    // `?` on everything that came from the network: Debug escapes it, so a
                    // topic or a name cannot forge log lines.
                    warn!(topic = ?received.topic, reason = reason.as_str(), retained = received.retained, error = ?error.to_string(), suppressed, "rejected message");
                }
                // Tell the agent, if it is one the collector follows.
                if let Ok(topic) = Topic::parse(&self.prefix, &received.topic) {
                    let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                    state.record_rejection(
                        &topic.agent,
                        MESSAGE_REJECTED,
                        reason.as_str(),
                        &error.to_string(),
                        now.wall,
                    );
                }
                if received.retained && clears(reason) {
                    self.clear(received.topic, reason);
                }
                return;
            }
        };
        let agent = decoded.topic.agent.clone();
        let observation = self.tap.as_ref().and_then(|_| Tap::observe(&decoded));
        let (outcome, replayed) = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let outcome = state.apply(decoded, received.retained, now);
            (outcome, state.take_replayed())
        };
        self.settle(agent, observation, outcome, replayed, now);
    }

    /// Reads a metrics message against its agent's stored shapes (`known_shape`) and applies
    /// it, under one lock; `None` when it needs the full decode: not a metrics topic, too
    /// big, or another shape. The lock is the state's write lock: reading a message is a few
    /// microseconds, and the shapes it was read against cannot change before it is applied.
    fn apply_known_shape(
        &mut self,
        received: &Received,
        now: Moment,
    ) -> Option<(String, Outcome, Vec<crate::backfill::Replayed>)> {
        if received.payload.len() > self.limits.max_payload_bytes {
            return None;
        }
        let topic = Topic::parse(&self.prefix, &received.topic).ok()?;
        if topic.channel != Channel::Metrics {
            return None;
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let stored = state.families_of(&topic.agent)?;
        let known = known_shape::read(&topic, &received.payload, stored, &mut self.values)?;
        match known.reader {
            known_shape::Reader::Bytes => self.telemetry.decoded.bytes.inc(),
            known_shape::Reader::Serde => self.telemetry.decoded.shape.inc(),
        }
        let outcome = state.apply_known(&topic, known, &self.values, now);
        let replayed = state.take_replayed();
        Some((topic.agent, outcome, replayed))
    }

    /// What follows applying a message: history to the backfill, observations to the
    /// announcements, and the outcome counted and logged.
    fn settle(
        &mut self,
        agent: String,
        observation: Option<crate::announce::Observation>,
        outcome: Outcome,
        replayed: Vec<crate::backfill::Replayed>,
        now: Moment,
    ) {
        if let Some(backfill) = &self.backfill
            && !replayed.is_empty()
        {
            backfill.offer(replayed);
        }
        // Only what the state took (not a duplicate, a stale will or a refused message).
        if let (Some(tap), Some(observation)) = (&self.tap, observation)
            && matches!(
                outcome,
                Outcome::Accepted | Outcome::Late | Outcome::Partly { .. }
            )
        {
            tap.offer(observation);
        }
        match outcome {
            Outcome::Accepted | Outcome::Ignored => {}
            Outcome::Late => debug!(agent = ?agent, "accepted a late message"),
            Outcome::Duplicate => debug!(agent = ?agent, "dropped a repeated message"),
            Outcome::StaleStatus => {
                self.telemetry.stale_status.inc();
                info!(agent = ?agent, "ignored an offline status from an older connection");
            }
            Outcome::Rejected(reason) => {
                // Out-of-window rejections are in the agent's list already; too many agents
                // has no agent to tell.
                self.count_rejection(reason);
                if let Verdict::Log { suppressed } = self.reject_log.check(reason.as_str()) {
                    warn!(agent = ?agent, reason = reason.as_str(), suppressed, "rejected message");
                }
            }
            Outcome::Partly { conflicts } => {
                let reason = DropReason::TypeConflict;
                self.telemetry
                    .dropped_families
                    .with_label_values(&[reason.as_str()])
                    .inc_by(conflicts.len() as u64);
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                for conflict in &conflicts {
                    let detail = format!(
                        "family {:?} left out: the name is a {} here",
                        conflict.name,
                        conflict.known.as_str()
                    );
                    state.record_rejection(
                        &agent,
                        FAMILY_DROPPED,
                        reason.as_str(),
                        &detail,
                        now.wall,
                    );
                }
                drop(state);
                if let (Some(first), Verdict::Log { suppressed }) =
                    (conflicts.first(), self.reject_log.check(reason.as_str()))
                {
                    warn!(
                        agent = ?agent,
                        metric = ?first.name,
                        known_type = first.known.as_str(),
                        families = conflicts.len(),
                        suppressed,
                        reason = reason.as_str(),
                        "dropped families: metric already exposed with another type"
                    );
                }
            }
        }
    }

    fn count_rejection(&self, reason: RejectReason) {
        self.telemetry
            .rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Publishes an empty retained payload to `topic`, which removes its retained message.
    fn clear(&mut self, topic: String, reason: RejectReason) {
        let mqtt = self.mqtt.clone();
        let telemetry = self.telemetry.clone();
        let log = self.clear_log.clone();
        self.clears.spawn(async move {
            let result = mqtt.publish(topic.clone(), Vec::new(), true).await;
            let key = if result.is_ok() { "cleared" } else { "failed" };
            let verdict = log.check(key);
            match (result, verdict) {
                (Ok(()), verdict) => {
                    telemetry.cleared_retained.inc();
                    if let Verdict::Log { suppressed } = verdict {
                        info!(topic = ?topic, reason = reason.as_str(), suppressed, "cleared a rejected retained message from the broker");
                    }
                }
                (Err(error), Verdict::Log { suppressed }) => {
                    warn!(topic = ?topic, %error, suppressed, "cannot clear a rejected retained message");
                }
                (Err(_), Verdict::Suppress) => {}
            }
        });
    }
}

/// Whether a retained message refused for `reason` is removed from the broker. Not for an
/// unknown schema: that is a newer protocol version's message, which its own collector may
/// well read, not garbage.
fn clears(reason: RejectReason) -> bool {
    reason != RejectReason::UnknownSchema
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use super::*;
    use crate::mqtt::PublishError;
    use crate::state::{Liveness, State};

    struct Fixture {
        decoder: Decoder,
        requests: mpsc::Receiver<crate::mqtt::PublishRequest>,
        telemetry: Arc<Telemetry>,
        state: SharedState,
    }

    fn fixture() -> Fixture {
        let state = Arc::new(RwLock::new(State::new(Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(15),
            forget_after: Duration::from_secs(3600),
        })));
        let telemetry = Arc::new(Telemetry::new(state.clone()).unwrap());
        let (mqtt, requests) = MqttHandle::channel(8);
        let decoder = Decoder::new(
            "pantau".to_owned(),
            Limits::default(),
            state.clone(),
            telemetry.clone(),
            mqtt,
        );
        Fixture {
            decoder,
            requests,
            telemetry,
            state,
        }
    }

    fn received(topic: &str, payload: &[u8], retained: bool) -> Received {
        Received {
            topic: topic.to_owned(),
            payload: bytes::Bytes::copy_from_slice(payload),
            retained,
        }
    }

    fn rejected(telemetry: &Telemetry, reason: RejectReason) -> u64 {
        telemetry
            .rejected
            .with_label_values(&[reason.as_str()])
            .get()
    }

    #[tokio::test]
    async fn a_rejected_retained_message_is_cleared_and_counted_once_acknowledged() {
        let mut f = fixture();
        let topic = "pantau/v1/dc/x/status";
        f.decoder.handle(received(topic, b"not json", true));
        assert_eq!(rejected(&f.telemetry, RejectReason::InvalidJson), 1);

        let request = f.requests.recv().await.unwrap();
        assert_eq!(request.topic, topic);
        assert!(request.payload.is_empty() && request.retain);
        assert_eq!(f.telemetry.cleared_retained.get(), 0, "not before the ack");
        request.reply.send(Ok(())).unwrap();
        f.decoder.clears.join_next().await.unwrap().unwrap();
        assert_eq!(f.telemetry.cleared_retained.get(), 1);

        // The clear echoes back (retained or not): ignored, counted nowhere, not cleared again.
        f.decoder.handle(received(topic, b"", true));
        f.decoder.handle(received(topic, b"", false));
        let total: u64 = RejectReason::ALL
            .iter()
            .map(|reason| rejected(&f.telemetry, *reason))
            .sum();
        assert_eq!(total, 1);
        assert!(f.requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_failed_clear_is_not_counted() {
        let mut f = fixture();
        f.decoder
            .handle(received("pantau/v1/dc/x/status", b"{}", true));
        let request = f.requests.recv().await.unwrap();
        request.reply.send(Err(PublishError::NotConnected)).unwrap();
        f.decoder.clears.join_next().await.unwrap().unwrap();
        assert_eq!(f.telemetry.cleared_retained.get(), 0);
        assert_eq!(rejected(&f.telemetry, RejectReason::InvalidSchema), 1);
    }

    #[tokio::test]
    async fn only_retained_messages_of_this_protocol_version_are_cleared() {
        let mut f = fixture();
        // Live (not replayed) garbage is gone once delivered; nothing to clear.
        f.decoder
            .handle(received("pantau/v1/dc/x/status", b"not json", false));
        // A newer protocol's retained status belongs to a newer collector.
        f.decoder
            .handle(received("pantau/v2/dc/x/status", b"{}", true));
        assert_eq!(rejected(&f.telemetry, RejectReason::InvalidJson), 1);
        assert_eq!(rejected(&f.telemetry, RejectReason::UnknownSchema), 1);
        assert!(f.decoder.clears.is_empty());
        assert!(f.requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_good_events_message_is_applied() {
        let mut f = fixture();
        let payload = br#"{"schema":1,"agent":"a","site":"dc","seq":5,"timestamp_ms":9,
            "events":[{"kind":"agent_started","severity":"info","message":"hi"}]}"#;
        f.decoder
            .handle(received("pantau/v1/dc/a/events", payload, false));
        let events = f.state.read().unwrap().events("a").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "agent_started");
    }

    #[tokio::test]
    async fn the_tap_gets_births_and_announcement_events_once() {
        let f = fixture();
        let (tap, mut observations) = crate::announce::Tap::channel();
        let mut decoder = f.decoder.with_tap(tap);
        let birth = br#"{"schema":1,"agent":"a","site":"dc","state":"online","timestamp_ms":1,
            "clips":["bel.wav"]}"#;
        decoder.handle(received("pantau/v1/dc/a/status", birth, false));
        let events = br#"{"schema":1,"agent":"a","site":"dc","seq":5,"timestamp_ms":9,
            "events":[{"kind":"agent_started","severity":"info","message":"hi"},
                      {"kind":"announcement_queued","severity":"info","message":"queued",
                       "labels":{"announcement":"a1-0"}}]}"#;
        decoder.handle(received("pantau/v1/dc/a/events", events, false));
        // A QoS 1 redelivery is a duplicate: not offered again.
        decoder.handle(received("pantau/v1/dc/a/events", events, false));
        let metrics =
            br#"{"schema":1,"agent":"a","site":"dc","seq":6,"timestamp_ms":9,"families":[]}"#;
        decoder.handle(received("pantau/v1/dc/a/metrics", metrics, false));
        match observations.try_recv().unwrap() {
            crate::announce::Observation::Status { agent, site, clips } => {
                assert_eq!((agent.as_str(), site.as_str()), ("a", "dc"));
                assert_eq!(clips, ["bel.wav"]);
            }
            other => panic!("{other:?}"),
        }
        match observations.try_recv().unwrap() {
            crate::announce::Observation::Events { events, .. } => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kind, "announcement_queued");
            }
            other => panic!("{other:?}"),
        }
        assert!(observations.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_rejection_is_listed_in_the_events_of_a_followed_agent_only() {
        let mut f = fixture();
        let birth = br#"{"schema":1,"agent":"a","site":"dc","state":"online","timestamp_ms":1}"#;
        f.decoder
            .handle(received("pantau/v1/dc/a/status", birth, false));
        let bad =
            br#"{"schema":1,"agent":"a","site":"dc","seq":1,"timestamp_ms":-3,"families":[]}"#;
        f.decoder
            .handle(received("pantau/v1/dc/a/metrics", bad, false));
        let bad_stranger = String::from_utf8_lossy(bad).replace("\"a\"", "\"stranger\"");
        f.decoder.handle(received(
            "pantau/v1/dc/stranger/metrics",
            bad_stranger.as_bytes(),
            false,
        ));
        assert_eq!(rejected(&f.telemetry, RejectReason::OutOfRange), 2);
        let state = f.state.read().unwrap();
        let events = state.events("a").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "message_rejected");
        assert_eq!(events[0].labels["reason"], "out_of_range");
        assert!(
            events[0].message.contains("timestamp_ms -3"),
            "{}",
            events[0].message
        );
        assert!(state.events("stranger").is_none());
    }

    #[tokio::test]
    async fn a_type_conflict_drops_the_family_and_counts_it() {
        let mut f = fixture();
        let now_ms = crate::test_support_now_ms();
        let payload = format!(
            r#"{{"schema":1,"agent":"a","site":"dc","seq":1,"timestamp_ms":{now_ms},
            "families":[{{"name":"node_load1","type":"counter","samples":[{{"value":1}}]}},
                        {{"name":"other","type":"gauge","samples":[{{"value":1}}]}}]}}"#
        );
        f.decoder.handle(received(
            "pantau/v1/dc/a/metrics",
            payload.as_bytes(),
            false,
        ));
        let dropped = f
            .telemetry
            .dropped_families
            .with_label_values(&["type_conflict"])
            .get();
        assert_eq!(dropped, 1);
        let total: u64 = RejectReason::ALL
            .iter()
            .map(|reason| rejected(&f.telemetry, *reason))
            .sum();
        assert_eq!(total, 0, "the message itself was accepted");
        let events = f.state.read().unwrap().events("a").unwrap();
        assert_eq!(events[0].kind, "family_dropped");
    }
}
