//! The backfill's own metrics, `pantau_collector_backfill_*`.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::queue::Queue;

/// Why samples were dropped instead of sent.
pub const DROP_REASONS: [&str; 6] = [
    // No remote_write.url.
    "no_endpoint",
    // The queue reached remote_write.max_queue_bytes: the oldest went.
    "queue_full",
    // The endpoint answered 4xx (not 429): resending would not help.
    "rejected",
    // The writer thread fell behind by HANDOVER_CAPACITY messages.
    "handover_full",
    // The queue could not be written (disk full, permissions).
    "write_error",
    // Shutting down.
    "stopped",
];

#[derive(Clone)]
pub struct BackfillMetrics {
    pub queued: IntCounter,
    pub sent: IntCounter,
    pub failed_samples: IntCounter,
    pub failed_requests: IntCounter,
    dropped: IntCounterVec,
    queue_bytes: IntGauge,
    oldest_age: Gauge,
}

impl BackfillMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let queued = IntCounter::new(
            "pantau_collector_backfill_queued_samples_total",
            "Samples older than the live window or late, queued for remote write.",
        )?;
        let sent = IntCounter::new(
            "pantau_collector_backfill_sent_samples_total",
            "Samples the remote write endpoint accepted.",
        )?;
        let failed_samples = IntCounter::new(
            "pantau_collector_backfill_failed_samples_total",
            "Samples in remote write requests that failed and are retried (counted per attempt).",
        )?;
        let failed_requests = IntCounter::new(
            "pantau_collector_backfill_failed_requests_total",
            "Remote write requests that failed (5xx, 429 or no connection) and are retried.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "pantau_collector_backfill_dropped_samples_total",
                "Samples that were history but are not backfilled, by reason.",
            ),
            &["reason"],
        )?;
        for reason in DROP_REASONS {
            dropped.with_label_values(&[reason]);
        }
        let queue_bytes = IntGauge::new(
            "pantau_collector_backfill_queue_bytes",
            "Bytes of the backfill queue on disk.",
        )?;
        let oldest_age = Gauge::new(
            "pantau_collector_backfill_queue_oldest_sample_age_seconds",
            "Age of the oldest sample waiting in the backfill queue, 0 when empty; it must \
             stay inside the endpoint's out-of-order window.",
        )?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed_samples.clone()))?;
        registry.register(Box::new(failed_requests.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(queue_bytes.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        Ok(Self {
            queued,
            sent,
            failed_samples,
            failed_requests,
            dropped,
            queue_bytes,
            oldest_age,
        })
    }

    pub fn dropped(&self, reason: &str, samples: u64) {
        self.dropped.with_label_values(&[reason]).inc_by(samples);
    }

    /// Sets the queue gauges from `queue`.
    pub fn observe_queue(&self, queue: &Queue) {
        self.queue_bytes
            .set(i64::try_from(queue.bytes()).unwrap_or(i64::MAX));
        let age = match queue.oldest_ms() {
            Some(oldest) => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                (now_ms.saturating_sub(oldest).max(0) as f64) / 1000.0
            }
            None => 0.0,
        };
        self.oldest_age.set(age);
    }

    #[cfg(test)]
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped.with_label_values(&[reason]).get()
    }
}
