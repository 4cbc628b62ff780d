//! Scheduled plays in the history. A sound agent plays its schedule by itself, so the
//! collector learns of a play only from the agent's events (`announcement_queued`, `_started`,
//! `_finished`, ...), which carry the entry's name in a `schedule` label and the agent's id
//! of the play, `<entry>@<unix seconds>`. The first event of a play creates its row; every
//! agent playing the same entry at the same moment is one target of that one row.

use pantau_protocol::sound::SCHEDULED_VALIDITY_MS;
use rusqlite::params;

use super::{Store, StoreError};

/// `created_by` of a scheduled play.
pub const SCHEDULER: &str = "schedule";

/// The target's command id: unique across agents (the play's id is the same on each).
pub fn target_id(agent: &str, play: &str) -> String {
    format!("{agent}/{play}")
}

/// One event of a scheduled play.
#[derive(Debug, Clone, Copy)]
pub struct PlayEvent<'a> {
    pub agent: &'a str,
    /// The schedule entry's name (the `schedule` label).
    pub schedule: &'a str,
    /// The agent's id of the play, `<entry>@<unix seconds>` (the `announcement` label).
    pub play: &'a str,
    /// `queued`, `started`, `finished`, ...
    pub outcome: &'a str,
    pub detail: &'a str,
}

/// The due time (Unix ms) in the id of a play of entry `schedule`. The id is
/// `<schedule>@<due seconds>`, nothing else: so an agent's event can never add a target to an
/// announcement made through the API (ids without '@').
pub fn due_ms(schedule: &str, play: &str) -> Option<i64> {
    let seconds = play.strip_prefix(schedule)?.strip_prefix('@')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seconds.parse::<i64>().ok()?.checked_mul(1000)
}

impl Store {
    /// Whether agent `agent` already has a row for play `play` (a later event of it).
    pub fn has_play(&self, agent: &str, play: &str) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM targets WHERE command_id = ?1)",
            params![target_id(agent, play)],
            |row| row.get(0),
        )?)
    }

    /// Rows of plays of entry `schedule` on `agent` the collector received since `since_ms`.
    pub fn plays_since(
        &self,
        agent: &str,
        schedule: &str,
        since_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM targets t JOIN announcements a ON a.id = t.announcement
             WHERE t.agent = ?1 AND a.schedule = ?2 AND a.received_ms >= ?3",
            params![agent, schedule, since_ms],
            |row| row.get(0),
        )?)
    }

    /// Records `event`, creating the play's announcement and the agent's target at the first
    /// event. `args` is what the entry plays, as the collector knows it (null if the entry is
    /// gone).
    pub fn record_scheduled(
        &self,
        event: &PlayEvent<'_>,
        args: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let PlayEvent {
            agent,
            schedule,
            play,
            outcome,
            detail,
        } = *event;
        let due_ms = due_ms(schedule, play).ok_or_else(|| StoreError::NotAPlay(play.to_owned()))?;
        let command_id = target_id(agent, play);
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO announcements (id, created_ms, created_by, expires_ms, args, schedule, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                play,
                due_ms,
                SCHEDULER,
                due_ms.saturating_add(SCHEDULED_VALIDITY_MS),
                args.to_string(),
                schedule,
                now_ms
            ],
        )?;
        tx.execute(
            "INSERT INTO targets (announcement, agent, command_id, status, detail, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(command_id) DO UPDATE SET status = ?4, detail = ?5, updated_ms = ?6",
            params![play, agent, command_id, outcome, detail, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::HistoryFilter;
    use super::*;

    #[test]
    fn a_play_is_one_row_whatever_the_number_of_agents_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let args = serde_json::json!({"text": "Selamat pagi"});
        let play = "pagi@1764300000";
        for (agent, outcome, at) in [
            ("aula", "queued", 1),
            ("lobi", "queued", 2),
            ("aula", "started", 3),
            ("aula", "finished", 4),
            ("lobi", "refused", 5),
        ] {
            let event = PlayEvent {
                agent,
                schedule: "pagi",
                play,
                outcome,
                detail: "",
            };
            store.record_scheduled(&event, &args, at).unwrap();
        }
        let row = store.announcement(play).unwrap().unwrap();
        assert_eq!(row.schedule.as_deref(), Some("pagi"));
        assert_eq!(row.created_by, SCHEDULER);
        assert_eq!(
            row.created_ms, 1_764_300_000_000,
            "the due time, not the first event"
        );
        assert_eq!(row.args, args);
        let statuses: Vec<_> = row
            .targets
            .iter()
            .map(|t| (t.agent.as_str(), t.status.as_str(), t.command_id.as_str()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("aula", "finished", "aula/pagi@1764300000"),
                ("lobi", "refused", "lobi/pagi@1764300000")
            ]
        );
        // The history's filters see it; scheduled plays are never resent.
        let filter = HistoryFilter {
            agent: Some("aula"),
            outcome: Some("finished"),
            schedule: Some("pagi"),
        };
        assert_eq!(store.history(0, i64::MAX, &filter, 10).unwrap().len(), 1);
        let other = HistoryFilter {
            schedule: Some("sore"),
            ..HistoryFilter::default()
        };
        assert!(store.history(0, i64::MAX, &other, 10).unwrap().is_empty());
        assert!(store.pending().unwrap().is_empty());
    }

    #[test]
    fn an_event_cannot_touch_an_announcement_that_is_not_its_play() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let row = super::super::AnnouncementRow {
            id: "a17643000000001".to_owned(),
            created_ms: 1,
            created_by: "token:ops".to_owned(),
            expires_ms: 100,
            args: serde_json::json!({"text": "halo"}),
            stopped_ms: None,
            schedule: None,
            targets: Vec::new(),
        };
        store
            .insert_announcement(&row, &[("aula".to_owned(), "a17643000000001-0".to_owned())])
            .unwrap();
        for (schedule, play) in [
            ("pagi", "a17643000000001"),
            ("a17643000000001", "a17643000000001"),
            ("pagi", "sore@1764300000"),
            ("pagi", "pagi@"),
            ("pagi", "pagi@12x"),
        ] {
            let event = PlayEvent {
                agent: "lobi",
                schedule,
                play,
                outcome: "finished",
                detail: "",
            };
            let error = store
                .record_scheduled(&event, &serde_json::Value::Null, 5)
                .unwrap_err();
            assert!(matches!(error, StoreError::NotAPlay(_)), "{play}: {error}");
        }
        assert_eq!(
            store
                .announcement("a17643000000001")
                .unwrap()
                .unwrap()
                .targets
                .len(),
            1
        );
    }
}
