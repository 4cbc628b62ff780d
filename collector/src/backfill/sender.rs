//! The backfill's two threads. The writer takes history from the decoder, encodes it and
//! appends it to the queue; the sender posts batches to the endpoint, marks them sent on 2xx,
//! drops them (counted) on a 4xx other than 429, and otherwise retries with exponential
//! backoff. Both are plain threads: their work is disk and blocking HTTP, and the queue
//! between them is behind one mutex (no lock is held during a request).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::BackfillMetrics;
use super::proto::{self, TargetLabels};
use super::queue::{Cursor, Queue};
use super::{RemoteWriteConfig, Replayed};

/// How often idle threads look at the shutdown token.
const TICK: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest answer body kept for the log.
const MAX_ERROR_TEXT: u64 = 512;

/// The queue and a signal that it has news.
pub struct Shared {
    queue: Mutex<Queue>,
    pushed: Condvar,
}

impl Shared {
    pub fn new(queue: Queue) -> Self {
        Self {
            queue: Mutex::new(queue),
            pushed: Condvar::new(),
        }
    }
}

/// What the sender needs to know.
pub struct Settings {
    url: String,
    batch_samples: u64,
    http: ureq::Agent,
}

impl Settings {
    pub fn new(url: String, config: &RemoteWriteConfig) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(config.timeout_seconds)))
            .max_redirects(0)
            .build()
            .into();
        Self {
            url,
            batch_samples: config.batch_samples as u64,
            http,
        }
    }
}

/// Encodes what the decoder hands over and queues it, until shutdown.
pub fn write_loop(
    shared: &Shared,
    receiver: Receiver<Replayed>,
    target: &TargetLabels,
    metrics: &BackfillMetrics,
    shutdown: &CancellationToken,
) {
    let log = LogLimiter::new(Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let replayed = match receiver.recv_timeout(TICK) {
            Ok(replayed) => replayed,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let request = proto::write_request(&replayed, target);
        let samples = request.timeseries.len() as u64;
        if samples == 0 {
            continue;
        }
        let encoded = request.encode_to_vec();
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let count = u32::try_from(samples).unwrap_or(u32::MAX);
        match queue.push(count, replayed.timestamp_ms, &encoded) {
            Ok(dropped) => {
                metrics.queued.inc_by(samples);
                if dropped > 0 {
                    metrics.dropped("queue_full", dropped);
                    if let Verdict::Log { suppressed } = log.check("queue_full") {
                        warn!(
                            dropped,
                            suppressed, "backfill queue full: dropped the oldest samples"
                        );
                    }
                }
            }
            Err(error) => {
                metrics.dropped("write_error", samples);
                if let Verdict::Log { suppressed } = log.check("write_error") {
                    warn!(%error, suppressed, "cannot queue samples for backfill");
                }
            }
        }
        metrics.observe_queue(&queue);
        drop(queue);
        shared.pushed.notify_one();
    }
    // Ended by shutdown, or by the decoder's end (which its own task reports): nothing more
    // will come.
}

/// How one request went.
enum Answer {
    Sent,
    /// 4xx other than 429: the request itself is wrong; resending would not help.
    Refused(u16, String),
    /// 5xx, 429 or no answer: retried.
    Failed(String),
}

/// Posts batches until shutdown.
pub fn send_loop(
    shared: &Shared,
    settings: &Settings,
    metrics: &BackfillMetrics,
    shutdown: &CancellationToken,
) {
    let log = LogLimiter::new(Duration::from_secs(10));
    let mut backoff = FIRST_BACKOFF;
    // After a refused batch, its records go one by one up to here: the endpoint refuses a
    // whole request for one bad sample (Prometheus: one older than its out-of-order window),
    // and the good ones must not go with it.
    let mut isolate: Option<Cursor> = None;
    while !shutdown.is_cancelled() {
        let limit = match isolate {
            Some(_) => 1,
            None => settings.batch_samples,
        };
        let batch = {
            let queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            metrics.observe_queue(&queue);
            match queue.peek(limit) {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    // Woken by the writer, or at the next tick to look at the token.
                    let _ = shared.pushed.wait_timeout(queue, TICK);
                    continue;
                }
                Err(error) => {
                    drop(queue);
                    if let Verdict::Log { suppressed } = log.check("read") {
                        warn!(%error, suppressed, "cannot read the backfill queue");
                    }
                    pause(backoff, shutdown);
                    continue;
                }
            }
        };
        let answer = post(settings, &batch.payload);
        if let Answer::Failed(why) = &answer {
            metrics.failed_requests.inc();
            metrics.failed_samples.inc_by(batch.samples);
            if let Verdict::Log { suppressed } = log.check("failed") {
                warn!(url = settings.url, why, retry_in = ?backoff, suppressed, "remote write failed");
            }
            pause(backoff, shutdown);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = FIRST_BACKOFF;
        if let Answer::Refused(..) = answer
            && batch.records > 1
            && isolate.is_none()
        {
            isolate = Some(batch.end);
            continue;
        }
        if isolate.is_some_and(|end| batch.end >= end) {
            isolate = None;
        }
        match answer {
            Answer::Sent => metrics.sent.inc_by(batch.samples),
            Answer::Refused(status, body) => {
                metrics.dropped("rejected", batch.samples);
                if let Verdict::Log { suppressed } = log.check("rejected") {
                    warn!(url = settings.url, status, body = ?body, samples = batch.samples, suppressed, "remote write refused samples; dropped");
                }
            }
            Answer::Failed(_) => {}
        }
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = queue.ack(batch.end, batch.samples)
            && let Verdict::Log { suppressed } = log.check("ack")
        {
            warn!(%error, suppressed, "cannot mark backfilled samples as sent");
        }
        metrics.observe_queue(&queue);
    }
}

/// Sleeps `duration`, or less if shutdown comes first.
fn pause(duration: Duration, shutdown: &CancellationToken) {
    let until = Instant::now() + duration;
    while !shutdown.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(TICK));
    }
}

fn post(settings: &Settings, payload: &[u8]) -> Answer {
    let body = match proto::compress(payload) {
        Ok(body) => body,
        Err(error) => return Answer::Refused(0, format!("snappy: {error}")),
    };
    let result = settings
        .http
        .post(&settings.url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header(
            "User-Agent",
            concat!("pantau-collector/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(&body[..]);
    let mut response = match result {
        Ok(response) => response,
        Err(error) => return Answer::Failed(error.to_string()),
    };
    let status = response.status().as_u16();
    let mut text = || {
        response
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_TEXT)
            .read_to_string()
            .unwrap_or_default()
    };
    match status {
        200..=299 => Answer::Sent,
        429 => Answer::Failed(format!("HTTP 429: {}", text())),
        400..=499 => Answer::Refused(status, text()),
        _ => Answer::Failed(format!("HTTP {status}: {}", text())),
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
