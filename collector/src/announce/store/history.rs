//! Reading the history back: announcements in a time range with filters, and the audit log.

use rusqlite::params;
use serde::Serialize;

use super::{AnnouncementRow, Store, StoreError, read_announcement};

/// Optional narrowing of `Store::history`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryFilter<'a> {
    /// Only announcements with this target agent.
    pub agent: Option<&'a str>,
    /// Only those with a target in this status.
    pub outcome: Option<&'a str>,
    /// Only the plays of this schedule entry.
    pub schedule: Option<&'a str>,
}

/// One write through the API: who did what to which, when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub at_ms: i64,
    pub who: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

impl Store {
    /// Announcements created in `[from_ms, to_ms]`, newest first, at most `limit`, narrowed
    /// by `filter`.
    pub fn history(
        &self,
        from_ms: i64,
        to_ms: i64,
        filter: &HistoryFilter<'_>,
        limit: u32,
    ) -> Result<Vec<AnnouncementRow>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT id, created_ms, created_by, expires_ms, args, stopped_ms, schedule FROM announcements a
             WHERE created_ms BETWEEN ?1 AND ?2 AND (?6 IS NULL OR a.schedule = ?6)
               AND EXISTS (SELECT 1 FROM targets t WHERE t.announcement = a.id
                           AND (?3 IS NULL OR t.agent = ?3) AND (?4 IS NULL OR t.status = ?4))
             ORDER BY created_ms DESC, id DESC LIMIT ?5",
        )?;
        let rows = statement
            .query_map(
                params![
                    from_ms,
                    to_ms,
                    filter.agent,
                    filter.outcome,
                    limit,
                    filter.schedule
                ],
                read_announcement,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|mut row| {
                row.targets = self.targets(&row.id)?;
                Ok(row)
            })
            .collect()
    }

    /// Appends one row to the audit log.
    pub fn audit(
        &self,
        now_ms: i64,
        who: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit (at_ms, who, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ms, who, action, subject, detail],
        )?;
        Ok(())
    }

    /// The audit log, newest first, at most `limit` rows.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT at_ms, who, action, subject, detail FROM audit ORDER BY rowid DESC LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit], |row| {
            Ok(AuditRow {
                at_ms: row.get(0)?,
                who: row.get(1)?,
                action: row.get(2)?,
                subject: row.get(3)?,
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
