//! The announcer's own series: announcements refused before anything was sent, events of
//! scheduled plays it refused, and sound agents' statuses that named another site than the
//! pinned one.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::believe::Refusal;

/// `reason` of an announcement refused because a target agent has as many unexpired
/// announcements as `announcements.max_unexpired_per_agent` allows.
pub const AGENT_CAP: &str = "agent_cap";

/// What became of a status naming another site than the agent's pinned one; the `outcome`
/// label of `pantau_collector_site_moves_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteMove {
    /// Kept as a claim for an admin; commands still go to the pinned site.
    Held,
    /// `announcements.sites` names another site for the agent.
    Refused,
    /// An admin moved the agent to the claimed site.
    Confirmed,
    /// An admin dismissed the claim.
    Dismissed,
}

impl SiteMove {
    pub const ALL: [SiteMove; 4] = [
        SiteMove::Held,
        SiteMove::Refused,
        SiteMove::Confirmed,
        SiteMove::Dismissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SiteMove::Held => "held",
            SiteMove::Refused => "refused",
            SiteMove::Confirmed => "confirmed",
            SiteMove::Dismissed => "dismissed",
        }
    }
}

/// Registered once with the collector's registry.
#[derive(Debug, Clone)]
pub struct AnnounceMetrics {
    /// `pantau_collector_rejected_events_total{reason}`.
    rejected_events: IntCounterVec,
    /// `pantau_collector_site_moves_total{outcome}`.
    site_moves: IntCounterVec,
    /// `pantau_collector_site_moves_waiting`.
    pub site_moves_waiting: IntGauge,
    /// `pantau_collector_api_refused_announcements_total{reason}`.
    refused: IntCounterVec,
}

impl AnnounceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rejected_events = IntCounterVec::new(
            Opts::new(
                "pantau_collector_rejected_events_total",
                "Events of scheduled plays left out of the history, by reason: the entry was \
                 never sent to that agent, or in no version it applied; the due time is not \
                 near now or not one of the entry's; the play's id is malformed; or the \
                 agent's rows of that entry today reached the daily bound.",
            ),
            &["reason"],
        )?;
        let site_moves = IntCounterVec::new(
            Opts::new(
                "pantau_collector_site_moves_total",
                "Statuses of sound agents that named another site than the pinned one, by \
                 outcome: held for an admin, refused (the config names the site), and the \
                 admins' confirmations and dismissals.",
            ),
            &["outcome"],
        )?;
        let site_moves_waiting = IntGauge::new(
            "pantau_collector_site_moves_waiting",
            "Sound agents whose status names another site than the pinned one, waiting for \
             an admin in the console.",
        )?;
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
        registry.register(Box::new(rejected_events.clone()))?;
        registry.register(Box::new(site_moves.clone()))?;
        registry.register(Box::new(site_moves_waiting.clone()))?;
        for refusal in Refusal::ALL {
            rejected_events.with_label_values(&[refusal.reason()]);
        }
        for outcome in SiteMove::ALL {
            site_moves.with_label_values(&[outcome.as_str()]);
        }
        Ok(Self {
            rejected_events,
            site_moves,
            site_moves_waiting,
            refused,
        })
    }

    pub fn rejected(&self, refusal: Refusal) {
        self.rejected_events
            .with_label_values(&[refusal.reason()])
            .inc();
    }

    pub fn site_move(&self, outcome: SiteMove) {
        self.site_moves.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(super) fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}
