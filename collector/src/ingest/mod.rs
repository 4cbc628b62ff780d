//! From the broker to `State`. The MQTT task (`crate::mqtt`) puts every publish it receives
//! on a bounded queue; the decoder takes them off, validates and applies them; the sweeper
//! notes agents going up and down. Bad input is counted, logged at a limited rate, and
//! dropped; it never stops any of them.

mod accounting;
mod decoder;
pub(crate) mod known_shape;
mod sweeper;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use accounting::{Accounting, AccountingError};
pub use decoder::Decoder;
pub use known_shape::KnownShape;
pub use sweeper::run as run_sweeper;

/// A publish as received, waiting to be decoded.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    /// Set by the broker on a retained message it replays when the subscription is made; a
    /// message published while subscribed arrives with it unset, retained or not (MQTT 3.1.1,
    /// 3.3.1.3).
    pub retained: bool,
}

/// The queue between the MQTT task and the decoder. It is bounded so that a slow decoder
/// costs dropped (and counted) messages rather than memory or the connection's keep-alive.
pub fn queue(capacity: usize) -> (mpsc::Sender<Received>, mpsc::Receiver<Received>) {
    mpsc::channel(capacity)
}
