//! `[remote_write]`: where replayed history goes, and what counts as live.

use std::time::Duration;

use pantau_runtime::config::ConfigError;
use serde::Deserialize;

/// `[remote_write]`: samples older than the live window (an agent's outbox replaying an
/// outage) are sent here with their own timestamps instead of being shown on `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Prometheus remote write 1.0 endpoint, e.g. `http://prometheus:9090/api/v1/write`
    /// (Prometheus with `--web.enable-remote-write-receiver`, VictoriaMetrics, Mimir, Thanos
    /// receive). Plain `http://` only. Unset: replayed samples are counted and dropped.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub url: Option<String>,
    /// The `job` label: the `job_name` of the Prometheus scrape job that scrapes this
    /// collector, or backfilled samples land in other series than the scraped ones.
    #[serde(default = "default_job")]
    pub job: String,
    /// Leave unset when the scrape job has `honor_labels: true` (as Pantau's example does):
    /// then each agent's own `instance` label is the one Prometheus keeps. With
    /// `honor_labels: false`, set it to the scrape target (`host:port`): the agent's label
    /// then becomes `exported_instance`, as the scrape renames it.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub instance: Option<String>,
    /// Samples per request, at most.
    #[serde(default = "default_batch_samples")]
    pub batch_samples: usize,
    /// Most bytes the queue under `<storage.dir>/backfill` keeps while the endpoint is down;
    /// past it the oldest go first, counted as `reason="queue_full"`.
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// How long one request may take.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// A sample older than this is history, not news: it is never shown on `/metrics` and is
    /// backfilled instead. Unset: twice the agent's own interval. Agents' clocks must agree
    /// with the collector's to well within it (NTP).
    #[serde(default)]
    pub live_window_seconds: Option<u64>,
}

fn default_job() -> String {
    "pantau".to_owned()
}

fn default_batch_samples() -> usize {
    2000
}

fn default_max_queue_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_timeout_seconds() -> u64 {
    30
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            url: None,
            job: default_job(),
            instance: None,
            batch_samples: default_batch_samples(),
            max_queue_bytes: default_max_queue_bytes(),
            timeout_seconds: default_timeout_seconds(),
            live_window_seconds: None,
        }
    }
}

/// Smallest queue: a few segments' worth, so dropping one never empties it.
const MIN_QUEUE_BYTES: u64 = 1024 * 1024;

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url
            && !url.starts_with("http://")
        {
            return Err(ConfigError::invalid(
                "remote_write.url",
                url,
                "must start with http:// (https is not supported yet)",
            ));
        }
        if self.job.trim().is_empty() {
            return Err(ConfigError::invalid(
                "remote_write.job",
                &self.job,
                "must not be empty: it is the scrape job's job_name",
            ));
        }
        if !(1..=100_000).contains(&self.batch_samples) {
            return Err(ConfigError::invalid(
                "remote_write.batch_samples",
                self.batch_samples,
                "must be 1 to 100000",
            ));
        }
        if self.max_queue_bytes < MIN_QUEUE_BYTES {
            return Err(ConfigError::invalid(
                "remote_write.max_queue_bytes",
                self.max_queue_bytes,
                format!("must be at least {MIN_QUEUE_BYTES}"),
            ));
        }
        if !(1..=600).contains(&self.timeout_seconds) {
            return Err(ConfigError::invalid(
                "remote_write.timeout_seconds",
                self.timeout_seconds,
                "must be 1 to 600",
            ));
        }
        if self.live_window_seconds == Some(0) {
            return Err(ConfigError::invalid(
                "remote_write.live_window_seconds",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The configured live window, if any (else twice each agent's interval).
    pub fn live_window(&self) -> Option<Duration> {
        self.live_window_seconds.map(Duration::from_secs)
    }
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    Ok(text.filter(|text| !text.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_named() {
        let config = RemoteWriteConfig {
            url: Some("https://x/api/v1/write".to_owned()),
            ..RemoteWriteConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("remote_write.url"), "{error}");
        let config = RemoteWriteConfig {
            batch_samples: 0,
            ..RemoteWriteConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("remote_write.batch_samples"), "{error}");
        assert!(RemoteWriteConfig::default().validate().is_ok());
    }
}
