//! History put back into Prometheus: samples that are not news (a late message from an
//! agent's outbox, or one older than the live window) are never shown on `/metrics`; they are
//! sent by Prometheus remote write 1.0, with their own timestamps and the labels the scrape
//! gives the live ones, so a graph shows no hole where an outage was.
//!
//! The decoder hands them over (`Backfill::offer`, never blocking); a writer thread encodes
//! each message and appends it to the queue on disk (`queue`); a sender thread posts batches
//! and retries with backoff (`sender`). Without `remote_write.url` they are counted and
//! dropped.

mod config;
mod metrics;
mod proto;
mod queue;
mod record;
mod sender;

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use crate::state::StoredFamily;
use pantau_runtime::supervise::Supervisor;
use tracing::info;

pub use config::RemoteWriteConfig;
pub use metrics::BackfillMetrics;
pub use queue::QueueError;

/// One message's samples that are history: the agent, its site (labels as on `/metrics`),
/// when they were taken, and the families.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub agent: String,
    pub site: String,
    pub timestamp_ms: i64,
    pub families: Arc<Vec<StoredFamily>>,
}

impl Replayed {
    /// Series (so samples) it holds, as exposed: a histogram counts its buckets, sum, count.
    pub fn samples(&self) -> u64 {
        self.families.iter().map(|f| f.series() as u64).sum()
    }
}

/// Messages waiting for the writer thread; past this the decoder drops and counts them
/// rather than wait.
const HANDOVER_CAPACITY: usize = 10_000;

/// Where the decoder puts history.
#[derive(Clone)]
pub struct Backfill {
    metrics: BackfillMetrics,
    handover: Option<SyncSender<Replayed>>,
}

impl Backfill {
    /// Without an endpoint: everything offered is counted as dropped (`no_endpoint`).
    pub fn off(metrics: BackfillMetrics) -> Self {
        Self {
            metrics,
            handover: None,
        }
    }

    /// Opens the queue under `dir` and starts the writer and sender threads as essential
    /// tasks of `supervisor` (they stop at its shutdown).
    pub fn start(
        config: &RemoteWriteConfig,
        dir: &std::path::Path,
        metrics: BackfillMetrics,
        supervisor: &mut Supervisor,
    ) -> Result<Self, StartError> {
        let Some(url) = config.url.clone() else {
            return Ok(Self::off(metrics));
        };
        let (queue, recovered) = queue::Queue::open(dir, config.max_queue_bytes)?;
        info!(
            url,
            dir = %dir.display(),
            queued_samples = recovered.samples,
            cut_bytes = recovered.cut_bytes,
            "backfill by remote write on"
        );
        metrics.observe_queue(&queue);
        let (handover, receiver) = std::sync::mpsc::sync_channel(HANDOVER_CAPACITY);
        let shared = Arc::new(sender::Shared::new(queue));
        let target = proto::TargetLabels {
            job: config.job.clone(),
            instance: config.instance.clone(),
        };
        let shutdown = supervisor.shutdown();
        let (writer_shared, writer_metrics, writer_stop) =
            (shared.clone(), metrics.clone(), shutdown.clone());
        supervisor
            .spawn_thread("backfill-writer", move || -> Result<(), String> {
                sender::write_loop(
                    &writer_shared,
                    receiver,
                    &target,
                    &writer_metrics,
                    &writer_stop,
                );
                park_forever()
            })
            .map_err(StartError::Spawn)?;
        let settings = sender::Settings::new(url, config);
        let sender_metrics = metrics.clone();
        supervisor
            .spawn_thread("backfill-sender", move || -> Result<(), String> {
                sender::send_loop(&shared, &settings, &sender_metrics, &shutdown);
                park_forever()
            })
            .map_err(StartError::Spawn)?;
        Ok(Self {
            metrics,
            handover: Some(handover),
        })
    }

    /// Takes history from the decoder, never waiting.
    pub fn offer(&self, replayed: Vec<Replayed>) {
        for message in replayed {
            let samples = message.samples();
            let Some(handover) = &self.handover else {
                self.metrics.dropped("no_endpoint", samples);
                continue;
            };
            match handover.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.metrics.dropped("handover_full", samples),
                Err(TrySendError::Disconnected(_)) => self.metrics.dropped("stopped", samples),
            }
        }
    }
}

/// Where a backfill thread waits once its loop has ended at shutdown: a thread that returns
/// reads as a failed essential task to the supervisor, and these end with the process.
/// Nothing is lost by not joining them: every queued record is already written.
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot start a backfill thread: {0}")]
    Spawn(std::io::Error),
}

#[cfg(test)]
mod tests;
