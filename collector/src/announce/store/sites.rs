//! Pinned sites. A sound agent's site is what its first status said (or what
//! `announcements.sites` names); a later status naming another site does not move it but is
//! kept as a claim, which an admin confirms (or dismisses) in the console. Commands go to the
//! pinned site meanwhile, so a status forged under another login cannot divert them.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError};

/// What a status did to its agent's pinned site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteClaim {
    /// The first status of this agent: its site is pinned now.
    Pinned,
    /// The pinned site: clips updated.
    Same,
    /// Another site: kept as a claim, the pinned site unchanged. `audit` is true for a new
    /// claim: none was waiting, or another site was claimed and the last claim is at least
    /// `CLAIM_AUDIT_INTERVAL_MS` old (so a sender alternating sites adds few audit rows).
    Held {
        pinned: String,
        claimed: String,
        audit: bool,
    },
}

/// How long claims must pause before a change of the claimed site is audited again.
pub const CLAIM_AUDIT_INTERVAL_MS: i64 = 60_000;

/// An agent's pinned site and the move waiting for an admin, as the API and console show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedSite {
    pub agent: String,
    /// Where its commands go.
    pub site: String,
    /// A site its status named that is not the pinned one, waiting for an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_site: Option<String>,
    /// When the collector received that claim (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_ms: Option<i64>,
}

fn clips_text(clips: Option<&[String]>) -> Option<String> {
    clips.map(|clips| serde_json::to_string(clips).unwrap_or_default())
}

impl Store {
    /// Applies a status of agent `id` naming `site` (and `clips`, none for a last will): pins
    /// the site of an agent heard of for the first time, updates the clips of the pinned site,
    /// and keeps any other site as a claim without moving the agent.
    pub fn claim_site(
        &self,
        id: &str,
        site: &str,
        clips: Option<&[String]>,
        now_ms: i64,
    ) -> Result<SiteClaim, StoreError> {
        let known: Option<(String, Option<String>, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT site, claimed_site, claimed_ms FROM agents WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        match known {
            None => {
                self.upsert_agent(id, site, clips, now_ms)?;
                Ok(SiteClaim::Pinned)
            }
            Some((pinned, _, _)) if pinned == site => {
                self.upsert_agent(id, site, clips, now_ms)?;
                Ok(SiteClaim::Same)
            }
            Some((pinned, claimed, claimed_ms)) => {
                let audit = match (claimed.as_deref(), claimed_ms) {
                    (Some(waiting), _) if waiting == site => false,
                    (Some(_), Some(last)) => now_ms.saturating_sub(last) >= CLAIM_AUDIT_INTERVAL_MS,
                    _ => true,
                };
                // The claim's clips stay with the claim: a forged status changes nothing an
                // announcement is checked against until the move is confirmed.
                self.conn().execute(
                    "UPDATE agents SET claimed_site = ?2, claimed_ms = ?3,
                         claimed_clips = COALESCE(?4, claimed_clips)
                     WHERE id = ?1",
                    params![id, site, now_ms, clips_text(clips)],
                )?;
                Ok(SiteClaim::Held {
                    pinned,
                    claimed: site.to_owned(),
                    audit,
                })
            }
        }
    }

    /// Pins agent `id` to `site` because the config says so (`announcements.sites`); a claim
    /// of that very site is then settled.
    pub fn pin_site(&self, id: &str, site: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO agents (id, site, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET site = ?2,
                 clips = CASE WHEN claimed_site = ?2 THEN COALESCE(claimed_clips, clips) ELSE clips END,
                 claimed_clips = CASE WHEN claimed_site = ?2 THEN NULL ELSE claimed_clips END,
                 claimed_ms = CASE WHEN claimed_site = ?2 THEN NULL ELSE claimed_ms END,
                 claimed_site = CASE WHEN claimed_site = ?2 THEN NULL ELSE claimed_site END",
            params![id, site, now_ms],
        )?;
        Ok(())
    }

    /// Moves agent `id` to its claimed site, if that is `site` (so a confirmation never takes
    /// a claim that arrived after the admin read the page); false otherwise.
    pub fn confirm_site(&self, id: &str, site: &str, now_ms: i64) -> Result<bool, StoreError> {
        let moved = self.conn().execute(
            "UPDATE agents SET site = claimed_site,
                 clips = COALESCE(claimed_clips, clips), updated_ms = ?3,
                 claimed_site = NULL, claimed_clips = NULL, claimed_ms = NULL
             WHERE id = ?1 AND claimed_site = ?2",
            params![id, site, now_ms],
        )?;
        Ok(moved > 0)
    }

    /// Forgets agent `id`'s claim of `site`; false if it claims no such site.
    pub fn dismiss_site(&self, id: &str, site: &str) -> Result<bool, StoreError> {
        let gone = self.conn().execute(
            "UPDATE agents SET claimed_site = NULL, claimed_clips = NULL, claimed_ms = NULL
             WHERE id = ?1 AND claimed_site = ?2",
            params![id, site],
        )?;
        Ok(gone > 0)
    }

    /// Every agent's pinned site and claim, by id.
    pub fn pinned_sites(&self) -> Result<Vec<PinnedSite>, StoreError> {
        let mut statement = self
            .conn()
            .prepare("SELECT id, site, claimed_site, claimed_ms FROM agents ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok(PinnedSite {
                agent: row.get(0)?,
                site: row.get(1)?,
                claimed_site: row.get(2)?,
                claimed_ms: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many agents have a claim waiting.
    pub fn claims_waiting(&self) -> Result<i64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM agents WHERE claimed_site IS NOT NULL",
            [],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_pinned_at_the_first_status_and_a_move_waits_for_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clips = ["bel.wav".to_owned()];
        assert_eq!(
            store.claim_site("aula", "office", Some(&clips), 1).unwrap(),
            SiteClaim::Pinned
        );
        assert_eq!(
            store.claim_site("aula", "office", None, 2).unwrap(),
            SiteClaim::Same
        );
        let forged = ["lain.wav".to_owned()];
        assert_eq!(
            store
                .claim_site("aula", "nowhere", Some(&forged), 3)
                .unwrap(),
            SiteClaim::Held {
                pinned: "office".to_owned(),
                claimed: "nowhere".to_owned(),
                audit: true
            }
        );
        assert!(matches!(
            store.claim_site("aula", "nowhere", None, 4).unwrap(),
            SiteClaim::Held { audit: false, .. }
        ));
        // Alternating sites is audited again only after a pause.
        assert!(matches!(
            store.claim_site("aula", "gor", None, 5).unwrap(),
            SiteClaim::Held { audit: false, .. }
        ));
        assert!(matches!(
            store
                .claim_site("aula", "nowhere", None, 5 + CLAIM_AUDIT_INTERVAL_MS)
                .unwrap(),
            SiteClaim::Held { audit: true, .. }
        ));
        store.claim_site("aula", "nowhere", None, 4).unwrap();
        // Commands still go to the pinned site, with its clips.
        assert_eq!(
            store.agent("aula").unwrap(),
            Some(("office".to_owned(), clips.to_vec()))
        );
        assert_eq!(store.claims_waiting().unwrap(), 1);
        assert_eq!(
            store.pinned_sites().unwrap(),
            [PinnedSite {
                agent: "aula".to_owned(),
                site: "office".to_owned(),
                claimed_site: Some("nowhere".to_owned()),
                claimed_ms: Some(4),
            }]
        );
        // A confirmation of another site than the one waiting changes nothing.
        assert!(!store.confirm_site("aula", "gor", 5).unwrap());
        assert!(store.confirm_site("aula", "nowhere", 6).unwrap());
        assert_eq!(
            store.agent("aula").unwrap(),
            Some(("nowhere".to_owned(), forged.to_vec()))
        );
        assert_eq!(store.claims_waiting().unwrap(), 0);
    }

    #[test]
    fn a_dismissed_claim_leaves_the_pin_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.claim_site("aula", "office", None, 1).unwrap();
            store.claim_site("aula", "nowhere", None, 2).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.claims_waiting().unwrap(), 1);
        assert!(!store.dismiss_site("aula", "gor").unwrap());
        assert!(store.dismiss_site("aula", "nowhere").unwrap());
        assert_eq!(store.agent("aula").unwrap().unwrap().0, "office");
        assert_eq!(store.claims_waiting().unwrap(), 0);
    }

    #[test]
    fn the_config_pins_a_site_and_settles_a_claim_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.pin_site("lobi", "gor", 1).unwrap();
        assert!(matches!(
            store.claim_site("lobi", "office", None, 2).unwrap(),
            SiteClaim::Held { .. }
        ));
        store.pin_site("lobi", "gor", 3).unwrap();
        assert_eq!(store.claims_waiting().unwrap(), 1, "office still claimed");
        store
            .claim_site("lobi", "gor", Some(&["a.wav".to_owned()]), 4)
            .unwrap();
        store.pin_site("aula", "office", 5).unwrap();
        store.claim_site("aula", "office-2", None, 6).unwrap();
        store.pin_site("aula", "office-2", 7).unwrap();
        let sites = store.pinned_sites().unwrap();
        assert_eq!(sites[0].site, "office-2");
        assert_eq!(sites[0].claimed_site, None);
        assert_eq!(store.agent("lobi").unwrap().unwrap().1, ["a.wav"]);
    }
}
