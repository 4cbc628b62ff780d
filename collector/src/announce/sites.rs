//! The `Announcer`'s side of pinned sites: a status naming another site than the pinned one
//! is held as a claim (a WARN line at a limited rate, an audit row, a counter, the console's
//! Now page), and commands keep going to the pinned site until an admin confirms the move,
//! or `announcements.sites` names the site.

use std::time::SystemTime;

use tracing::{info, warn};

use super::metrics::SiteMove;
use super::store::SiteClaim;
use super::{AnnounceError, Announcer, PinnedSite, Store, StoreError, unix_ms};
use pantau_runtime::ratelimit::Verdict;

/// An agent's pinned site as the API shows it: the store's row, and whether the config or
/// the agent's first status set it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteView {
    #[serde(flatten)]
    pub pinned: PinnedSite,
    /// `config` (`announcements.sites`; a claim cannot be confirmed) or `status`.
    pub source: &'static str,
}

impl Announcer {
    /// Applies a status of `agent` naming `site`.
    pub(super) fn observe_site(
        &self,
        store: &Store,
        agent: &str,
        site: &str,
        clips: Option<&[String]>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let SiteClaim::Held {
            pinned,
            claimed,
            audit,
        } = store.claim_site(agent, site, clips, now_ms)?
        else {
            return Ok(());
        };
        let outcome = if self.settings.sites.contains_key(agent) {
            SiteMove::Refused
        } else {
            SiteMove::Held
        };
        // One key for every agent: the limiter keeps a window per key, and agent ids come
        // from senders.
        if let Verdict::Log { suppressed } = self.refusals_log.check("site_move") {
            warn!(agent, pinned = %pinned, claimed = %claimed, outcome = outcome.as_str(), suppressed,
                "a status names another site than the agent's pinned one: commands stay at the \
                 pinned site until an admin confirms the move on the console's Now page");
        }
        if audit {
            let detail = format!("pinned {pinned}; claimed {claimed}; {}", outcome.as_str());
            store.audit(
                now_ms,
                &format!("agent:{agent}"),
                "site_move_claimed",
                agent,
                &detail,
            )?;
        }
        // Counted last: whoever sees the count also finds the log line and the audit row.
        if let Some(metrics) = &self.metrics {
            // The gauge first: a scrape that sees the count sees the claim waiting.
            if let Ok(waiting) = store.claims_waiting() {
                metrics.site_moves_waiting.set(waiting);
            }
            metrics.site_move(outcome);
        }
        Ok(())
    }

    /// Every agent's pinned site and waiting claim, by id.
    pub fn sites(&self) -> Result<Vec<SiteView>, AnnounceError> {
        let pinned = self.store().pinned_sites()?;
        Ok(pinned
            .into_iter()
            .map(|pinned| SiteView {
                source: if self.settings.sites.contains_key(&pinned.agent) {
                    "config"
                } else {
                    "status"
                },
                pinned,
            })
            .collect())
    }

    /// An admin's answer to `agent`'s claim of `site`: `confirm` moves the agent there (its
    /// schedule is published again, to the new site), otherwise the claim is dismissed.
    pub async fn settle_site(
        &self,
        who: &str,
        agent: &str,
        site: &str,
        confirm: bool,
        now: SystemTime,
    ) -> Result<(), AnnounceError> {
        if confirm && let Some(configured) = self.settings.sites.get(agent) {
            return Err(AnnounceError::Conflict(format!(
                "agent '{agent}' is pinned to site '{configured}' by announcements.sites; \
                 change it there"
            )));
        }
        let now_ms = unix_ms(now);
        {
            let store = self.store();
            let done = if confirm {
                store.confirm_site(agent, site, now_ms)?
            } else {
                store.dismiss_site(agent, site)?
            };
            if !done {
                return Err(AnnounceError::NotFound(format!(
                    "agent '{agent}' has no claim of site '{site}' waiting"
                )));
            }
            let (action, outcome) = if confirm {
                ("site_move_confirmed", SiteMove::Confirmed)
            } else {
                ("site_move_dismissed", SiteMove::Dismissed)
            };
            store.audit(now_ms, who, action, agent, site)?;
            if confirm {
                super::schedules::republish(&store, agent)?;
            }
            if let Some(metrics) = &self.metrics {
                metrics.site_moves_waiting.set(store.claims_waiting()?);
                metrics.site_move(outcome);
            }
        }
        info!(who, agent, site, confirm, "site claim settled");
        if confirm {
            self.publish_schedules().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::announce::{AnnounceMetrics, Observation, Settings};
    use crate::mqtt::MqttHandle;

    #[tokio::test]
    async fn a_site_the_config_names_wins_and_cannot_be_confirmed_away() {
        let dir = tempfile::tempdir().unwrap();
        let (mqtt, _requests) = MqttHandle::channel(8);
        let settings = Settings {
            prefix: "pantau".to_owned(),
            key: b"sixteen-byte-key-for-tests".to_vec(),
            zones: Vec::new(),
            default_expires: Duration::from_secs(300),
            resend_interval: Duration::from_secs(5),
            schedules: Vec::new(),
            alert_rules: Vec::new(),
            retention: Duration::from_secs(86_400),
            sites: BTreeMap::from([("aula".to_owned(), "dc".to_owned())]),
            max_unexpired_per_agent: 1000,
        };
        let registry = prometheus::Registry::new();
        let announcer = Announcer::new(Store::open(dir.path()).unwrap(), settings, mqtt)
            .with_metrics(AnnounceMetrics::register(&registry).unwrap());
        let status = |site: &str| Observation::Status {
            agent: "aula".to_owned(),
            site: site.to_owned(),
            clips: vec!["bel.wav".to_owned()],
        };
        // Pinned by the config before any status; its first status elsewhere is no pin.
        announcer.observe(status("gor"), SystemTime::now());
        let sites = announcer.sites().unwrap();
        assert_eq!(sites[0].source, "config");
        assert_eq!(sites[0].pinned.site, "dc");
        assert_eq!(sites[0].pinned.claimed_site.as_deref(), Some("gor"));
        let error = announcer
            .settle_site("adi", "aula", "gor", true, SystemTime::now())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("announcements.sites"), "{error}");
        announcer
            .settle_site("adi", "aula", "gor", false, SystemTime::now())
            .await
            .unwrap();
        announcer.observe(status("dc"), SystemTime::now());
        assert_eq!(
            announcer.store().agent("aula").unwrap(),
            Some(("dc".to_owned(), vec!["bel.wav".to_owned()]))
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            "pantau_collector_site_moves_total{outcome=\"refused\"} 1",
            "pantau_collector_site_moves_total{outcome=\"held\"} 0",
            "pantau_collector_site_moves_total{outcome=\"dismissed\"} 1",
            "pantau_collector_site_moves_waiting 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
