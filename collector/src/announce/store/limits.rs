//! The alert rate limit, kept with the rest so a collector restart (an upgrade, a crash while
//! an alert keeps firing) does not announce the same alert again at once. Bounded twice: rows
//! older than the longest `repeat_interval_seconds` are deleted by the hourly prune, and at
//! most `MAX_ALERT_LIMITS` rows are kept (the oldest go first).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// The longest an announcement may live (`expires_in_seconds` is at most a day), in ms.
const MAX_VALIDITY_MS: i64 = super::super::request::MAX_EXPIRES_IN_SECONDS as i64 * 1000;

/// Most (rule, alert, status) slots remembered.
pub const MAX_ALERT_LIMITS: i64 = 10_000;

impl Store {
    /// Whether (rule, alert, status) was announced less than `interval_ms` before `now_ms`;
    /// if not, `now_ms` is recorded as its last announcement.
    pub fn alert_rate_limited(
        &self,
        rule: &str,
        alert: &str,
        status: &str,
        now_ms: i64,
        interval_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_ms FROM alert_limits WHERE rule = ?1 AND alert = ?2 AND status = ?3",
                params![rule, alert, status],
                |row| row.get(0),
            )
            .optional()?;
        if last.is_some_and(|at| now_ms.saturating_sub(at) < interval_ms) {
            return Ok(true);
        }
        tx.execute(
            "INSERT INTO alert_limits (rule, alert, status, last_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(rule, alert, status) DO UPDATE SET last_ms = ?4",
            params![rule, alert, status, now_ms],
        )?;
        tx.execute(
            "DELETE FROM alert_limits WHERE rowid IN (SELECT rowid FROM alert_limits
             ORDER BY last_ms DESC LIMIT -1 OFFSET ?1)",
            params![MAX_ALERT_LIMITS],
        )?;
        tx.commit()?;
        Ok(false)
    }

    /// Announcements to `agent` not expired at `now_ms`, emergencies and schedule plays
    /// aside: the commands the agent's ordinary replay memory may still hold.
    pub fn unexpired_announcements(&self, agent: &str, now_ms: i64) -> Result<i64, StoreError> {
        // Nothing lives longer than a day, so the index on created_ms bounds the scan.
        let created_after = now_ms.saturating_sub(MAX_VALIDITY_MS);
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM announcements a JOIN targets t ON t.announcement = a.id
             WHERE a.created_ms >= ?2 AND a.expires_ms >= ?3 AND t.agent = ?1
               AND a.schedule IS NULL
               AND COALESCE(json_extract(a.args, '$.priority'), '') <> 'emergency'",
            params![agent, created_after, now_ms],
            |row| row.get(0),
        )?)
    }

    /// Forgets announcements of alerts before `before_ms` (past every rule's interval).
    pub fn prune_alert_limits(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM alert_limits WHERE last_ms < ?1",
            params![before_ms],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_survives_a_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(
                !store
                    .alert_rate_limited("link", "fp1", "firing", 1_000, 600_000)
                    .unwrap()
            );
            assert!(
                store
                    .alert_rate_limited("link", "fp1", "firing", 2_000, 600_000)
                    .unwrap()
            );
            // Another alert, or the same one resolved, has its own slot.
            assert!(
                !store
                    .alert_rate_limited("link", "fp2", "firing", 2_000, 600_000)
                    .unwrap()
            );
            assert!(
                !store
                    .alert_rate_limited("link", "fp1", "resolved", 2_000, 600_000)
                    .unwrap()
            );
        }
        // A restarted collector still knows fp1 was announced at 1 000.
        let store = Store::open(dir.path()).unwrap();
        assert!(
            store
                .alert_rate_limited("link", "fp1", "firing", 500_000, 600_000)
                .unwrap()
        );
        assert!(
            !store
                .alert_rate_limited("link", "fp1", "firing", 601_000, 600_000)
                .unwrap()
        );
        // Pruned past the interval.
        assert_eq!(store.prune_alert_limits(100_000).unwrap(), 2);
        assert!(
            !store
                .alert_rate_limited("link", "fp2", "firing", 700_000, 600_000)
                .unwrap()
        );

        let count = |store: &Store| -> i64 {
            store
                .conn
                .query_row("SELECT COUNT(*) FROM alert_limits", [], |row| row.get(0))
                .unwrap()
        };
        let before = count(&store);
        let tx = store.conn.unchecked_transaction().unwrap();
        for n in 0..MAX_ALERT_LIMITS {
            tx.execute(
                "INSERT INTO alert_limits (rule, alert, status, last_ms) VALUES ('r', ?1, 'firing', ?2)",
                params![format!("bulk{n}"), 10 + n],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(count(&store), before + MAX_ALERT_LIMITS);
        assert!(
            !store
                .alert_rate_limited("link", "new", "firing", 900_000, 600_000)
                .unwrap()
        );
        assert_eq!(count(&store), MAX_ALERT_LIMITS, "the oldest slots went");
        assert!(
            store
                .alert_rate_limited("link", "new", "firing", 900_001, 600_000)
                .unwrap(),
            "the newest slot stays"
        );
    }
}
