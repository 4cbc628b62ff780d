//! The announcer's own series: announcements refused before anything was sent.

use prometheus::{IntCounterVec, Opts, Registry};

/// `reason` of an announcement refused because a target agent has as many unexpired
/// announcements as `announcements.max_unexpired_per_agent` allows.
pub const AGENT_CAP: &str = "agent_cap";

/// Registered once, cloned into the announcer.
#[derive(Debug, Clone)]
pub struct AnnounceMetrics {
    refused: IntCounterVec,
}

impl AnnounceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refused = IntCounterVec::new(
            Opts::new(
                "pantau_collector_api_refused_announcements_total",
                "Announcements refused before sending (API, console, Alertmanager webhook), by \
                 reason (agent_cap: a target has announcements.max_unexpired_per_agent \
                 unexpired announcements).",
            ),
            &["reason"],
        )?;
        refused.with_label_values(&[AGENT_CAP]);
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { refused })
    }

    pub(super) fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}
