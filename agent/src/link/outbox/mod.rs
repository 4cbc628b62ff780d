//! Messages between their composition and the broker's acknowledgement.
//!
//! The link talks to the outbox only through [`Outbox`], so a disk-backed store can replace
//! the memory one without touching the link: messages are kept by sequence number, handed out
//! in order once each, forgotten when acknowledged, and handed out again from the oldest after
//! a reconnect (the collector drops repeats by sequence number). `DiskOutbox` keeps them
//! through crashes and restarts, in memory only while its directory cannot be written.

mod disk;

pub use disk::DiskOutbox;

/// What the agent reports about its outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    pub messages: u64,
    pub bytes: u64,
    /// When the oldest waiting message was stored (Unix ms).
    pub oldest_ms: Option<i64>,
    /// Whether new messages reach the disk (false: they wait in memory for now).
    pub on_disk: bool,
    /// Torn or unreadable records found and dropped.
    pub corrupt_records: u64,
    /// Messages dropped for being older than the age limit.
    pub expired: u64,
}

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
    /// full the oldest messages make room; their sequence numbers are returned.
    fn push(&mut self, envelope: Envelope) -> Vec<u64>;
    /// The oldest message numbered `from` or above (below `until`) not handed out since the
    /// last rewind, now marked as handed out.
    fn next_unsent(&mut self, from: u64, until: u64) -> Option<Envelope>;
    /// The broker acknowledged `seq`: it leaves the outbox. Unknown numbers are ignored (the
    /// message may have been dropped to make room while in flight).
    fn acknowledge(&mut self, seq: u64);
    /// The connection was lost: every unacknowledged message is handed out again, oldest first.
    fn rewind(&mut self);
    /// Messages not yet acknowledged.
    fn len(&self) -> usize;
    /// Sizes and health, for the agent's own series.
    fn stats(&self) -> OutboxStats;
}
