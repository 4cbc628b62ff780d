//! `MqttHandle`: how any part of the collector publishes. Requests go over a bounded channel
//! to the connection task, which alone touches the rumqttc client, and each is answered once
//! the broker has acknowledged it (QoS 1 PUBACK) or with the reason it never will be.
//!
//! `Acks` matches the answers to PUBACKs: rumqttc gives each QoS 1 publish a packet id and
//! reports it as `Outgoing::Publish(pkid)` in the order the publishes were handed to it (also
//! when a packet id collision makes it wait), and the PUBACK names that id.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::WINDOW;

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
pub(super) struct Acks {
    /// Handed to rumqttc, in order; rumqttc numbers them in the same order.
    handed: VecDeque<Reply>,
    /// Sent, by packet id.
    in_flight: HashMap<u16, Reply>,
}

impl Acks {
    pub(super) fn window_open(&self) -> bool {
        self.handed.len() + self.in_flight.len() < WINDOW
    }

    pub(super) fn handed(&mut self, reply: Reply) {
        self.handed.push_back(reply);
    }

    /// rumqttc wrote the oldest handed publish as packet `pkid`.
    pub(super) fn sent(&mut self, pkid: u16) {
        if let Some(reply) = self.handed.pop_front() {
            self.in_flight.insert(pkid, reply);
        }
    }

    pub(super) fn acked(&mut self, pkid: u16) {
        if let Some(reply) = self.in_flight.remove(&pkid) {
            // The caller may have stopped waiting; that is its business.
            let _ = reply.send(Ok(()));
        }
    }

    /// Answers every pending publish with `error`. After a connection loss that is the truth:
    /// on the new clean session rumqttc drops whatever it had not had acknowledged.
    pub(super) fn fail_all(&mut self, error: &PublishError) {
        let replies = self
            .handed
            .drain(..)
            .chain(self.in_flight.drain().map(|(_, reply)| reply));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
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
}
