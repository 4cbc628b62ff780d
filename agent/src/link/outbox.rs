//! Messages between their composition and the broker's acknowledgement.
//!
//! The link talks to the outbox only through [`Outbox`], so a disk-backed store can replace
//! the memory one without touching the link: messages are kept by sequence number, handed out
//! in order once each, forgotten when acknowledged, and handed out again from the oldest after
//! a reconnect (the collector drops repeats by sequence number).

use std::collections::BTreeMap;
use std::ops::Bound;

/// A metrics or events message waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Where unacknowledged messages wait.
pub trait Outbox: Send {
    /// Stores `envelope` (sequence numbers arrive in increasing order). When the outbox is
    /// full the oldest message makes room and is returned.
    fn push(&mut self, envelope: Envelope) -> Option<Envelope>;
    /// The oldest message not handed out since the last rewind, now marked as handed out.
    fn next_unsent(&mut self) -> Option<Envelope>;
    /// The broker acknowledged `seq`: it leaves the outbox. Unknown numbers are ignored (the
    /// message may have been dropped to make room while in flight).
    fn acknowledge(&mut self, seq: u64);
    /// The connection was lost: every unacknowledged message is handed out again, oldest first.
    fn rewind(&mut self);
    /// Messages not yet acknowledged.
    fn len(&self) -> usize;
    /// Most messages kept.
    fn capacity(&self) -> usize;
}

/// The outbox in memory, bounded, oldest dropped first. Lost if the agent restarts.
#[derive(Debug)]
pub struct MemoryOutbox {
    capacity: usize,
    pending: BTreeMap<u64, Envelope>,
    /// The last sequence number handed out since the last rewind.
    handed_up_to: Option<u64>,
}

impl MemoryOutbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            pending: BTreeMap::new(),
            handed_up_to: None,
        }
    }
}

impl Outbox for MemoryOutbox {
    fn push(&mut self, envelope: Envelope) -> Option<Envelope> {
        let dropped = if self.pending.len() >= self.capacity {
            self.pending.pop_first().map(|(_, oldest)| oldest)
        } else {
            None
        };
        self.pending.insert(envelope.seq, envelope);
        dropped
    }

    fn next_unsent(&mut self) -> Option<Envelope> {
        let from = match self.handed_up_to {
            Some(seq) => Bound::Excluded(seq),
            None => Bound::Unbounded,
        };
        let (seq, envelope) = self.pending.range((from, Bound::Unbounded)).next()?;
        self.handed_up_to = Some(*seq);
        Some(envelope.clone())
    }

    fn acknowledge(&mut self, seq: u64) {
        self.pending.remove(&seq);
    }

    fn rewind(&mut self) {
        self.handed_up_to = None;
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
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

    fn seqs(outbox: &mut impl Outbox) -> Vec<u64> {
        std::iter::from_fn(|| outbox.next_unsent().map(|e| e.seq)).collect()
    }

    #[test]
    fn hands_out_in_order_once_and_again_after_a_rewind() {
        let mut outbox = MemoryOutbox::new(10);
        for seq in 1..=4 {
            outbox.push(envelope(seq));
        }
        assert_eq!(seqs(&mut outbox), [1, 2, 3, 4]);
        assert_eq!(seqs(&mut outbox), Vec::<u64>::new());
        outbox.acknowledge(1);
        outbox.acknowledge(3);
        assert_eq!(outbox.len(), 2);
        outbox.rewind();
        assert_eq!(seqs(&mut outbox), [2, 4]);
    }

    #[test]
    fn messages_pushed_after_handing_out_follow() {
        let mut outbox = MemoryOutbox::new(10);
        outbox.push(envelope(1));
        assert_eq!(seqs(&mut outbox), [1]);
        outbox.push(envelope(2));
        assert_eq!(seqs(&mut outbox), [2]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let mut outbox = MemoryOutbox::new(2);
        assert_eq!(outbox.push(envelope(1)), None);
        assert_eq!(outbox.push(envelope(2)), None);
        assert_eq!(outbox.push(envelope(3)), Some(envelope(1)));
        assert_eq!(outbox.len(), 2);
        // An acknowledgement of the dropped message changes nothing.
        outbox.acknowledge(1);
        assert_eq!(seqs(&mut outbox), [2, 3]);
    }
}
