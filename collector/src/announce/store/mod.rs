//! `Store`: the announcement history, each target's status, the audit log and what the
//! collector last heard of each agent (site, clips), in one SQLite file under `storage.dir`.
//!
//! The schema is versioned with SQLite's `user_version`; `MIGRATIONS[n]` takes version n to
//! n+1, so a collector opening an older file brings it up to date at start.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use thiserror::Error;

use schema::MIGRATIONS;

/// The database file inside `storage.dir`.
pub const FILE_NAME: &str = "pantau.sqlite";

/// Why the store cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage.dir: '{dir}' cannot be created: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("storage.dir: '{path}' cannot be opened as a Pantau database: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "storage.dir: '{path}' is from a newer collector (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// An agent's event named a scheduled play with an id that is not `<schedule>@<seconds>`.
    #[error("'{0}' is not the id of a scheduled play (<schedule>@<unix seconds>)")]
    NotAPlay(String),
}

/// One target of an announcement as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetRow {
    pub agent: String,
    pub command_id: String,
    pub status: String,
    pub detail: String,
    pub sends: u32,
    pub updated_ms: i64,
}

/// One announcement as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnouncementRow {
    pub id: String,
    pub created_ms: i64,
    pub created_by: String,
    pub expires_ms: i64,
    pub args: serde_json::Value,
    pub stopped_ms: Option<i64>,
    /// The schedule entry that played it (priority `scheduled`); none for API and alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub targets: Vec<TargetRow>,
}

/// The open database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating it if needed) the database in `dir` and migrates it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_error)?;
        // A corrupt file or an unwritable directory shows here, at start, not at the first write.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        let store = Self { conn };
        store.migrate().map_err(|error| match error {
            StoreError::Sql(source) => open_error(source),
            other => other,
        })?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: self.conn.path().map(PathBuf::from).unwrap_or_default(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        // Touch the file, so an unwritable one fails now.
        self.conn
            .execute_batch("CREATE TABLE IF NOT EXISTS probe_write (x); DROP TABLE probe_write;")?;
        Ok(())
    }

    /// The connection, for the other tables' own queries (schedules).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Remembers where agent `id` is and which clips it has.
    pub fn upsert_agent(
        &self,
        id: &str,
        site: &str,
        clips: Option<&[String]>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let clips = clips.map(|clips| serde_json::to_string(clips).unwrap_or_default());
        self.conn.execute(
            "INSERT INTO agents (id, site, clips, updated_ms) VALUES (?1, ?2, COALESCE(?3, '[]'), ?4)
             ON CONFLICT(id) DO UPDATE SET site = ?2, clips = COALESCE(?3, clips), updated_ms = ?4",
            params![id, site, clips, now_ms],
        )?;
        Ok(())
    }

    /// The site and clips of agent `id`, if it was ever heard of.
    pub fn agent(&self, id: &str) -> Result<Option<(String, Vec<String>)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT site, clips FROM agents WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(site, clips)| (site, serde_json::from_str(&clips).unwrap_or_default())))
    }

    /// Stores a new announcement with its targets, all `pending`.
    pub fn insert_announcement(
        &self,
        row: &AnnouncementRow,
        targets: &[(String, String)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO announcements (id, created_ms, created_by, expires_ms, args, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?2)",
            params![
                row.id,
                row.created_ms,
                row.created_by,
                row.expires_ms,
                row.args.to_string()
            ],
        )?;
        for (agent, command_id) in targets {
            tx.execute(
                "INSERT INTO targets (announcement, agent, command_id, status, updated_ms) VALUES (?1, ?2, ?3, 'pending', ?4)",
                params![row.id, agent, command_id, row.created_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets the status of the target with `command_id`; false if no target has that id.
    pub fn set_status(
        &self,
        command_id: &str,
        status: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE targets SET status = ?2, detail = ?3, updated_ms = ?4 WHERE command_id = ?1",
            params![command_id, status, detail, now_ms],
        )?;
        Ok(changed > 0)
    }

    /// As `set_status`, only if the target is `agent`'s: an agent's events never change
    /// another agent's targets.
    pub fn set_status_of(
        &self,
        agent: &str,
        command_id: &str,
        status: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE targets SET status = ?3, detail = ?4, updated_ms = ?5
             WHERE command_id = ?1 AND agent = ?2",
            params![command_id, agent, status, detail, now_ms],
        )?;
        Ok(changed > 0)
    }

    /// Counts one more send of the target with `command_id`.
    pub fn count_send(&self, command_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE targets SET sends = sends + 1 WHERE command_id = ?1",
            params![command_id],
        )?;
        Ok(())
    }

    /// Targets still waiting for their agent's answer: (command id, agent, announcement).
    pub fn pending(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT command_id, agent, announcement FROM targets WHERE status = 'pending'",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks an announcement stopped.
    pub fn mark_stopped(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE announcements SET stopped_ms = ?2 WHERE id = ?1 AND stopped_ms IS NULL",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// Deletes announcements (with their targets) and audit rows the collector received
    /// before `before_ms`; returns how many announcements went. A scheduled play's
    /// `created_ms` is the due time its agent claims, so it never decides.
    pub fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM targets WHERE announcement IN
               (SELECT id FROM announcements WHERE COALESCE(received_ms, 0) < ?1)",
            params![before_ms],
        )?;
        let gone = tx.execute(
            "DELETE FROM announcements WHERE COALESCE(received_ms, 0) < ?1",
            params![before_ms],
        )?;
        tx.execute("DELETE FROM audit WHERE at_ms < ?1", params![before_ms])?;
        tx.execute(
            "DELETE FROM stops WHERE expires_ms < ?1",
            params![before_ms],
        )?;
        tx.commit()?;
        Ok(gone)
    }

    /// Writes a consistent copy of the database to `path` (SQLite's `VACUUM INTO`), safe
    /// while a collector is writing to it.
    pub fn backup(&self, path: &Path) -> Result<(), StoreError> {
        let target = path.to_string_lossy().into_owned();
        self.conn.execute("VACUUM INTO ?1", params![target])?;
        Ok(())
    }

    /// One announcement with its targets.
    pub fn announcement(&self, id: &str) -> Result<Option<AnnouncementRow>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, created_ms, created_by, expires_ms, args, stopped_ms, schedule FROM announcements WHERE id = ?1",
                params![id],
                read_announcement,
            )
            .optional()?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        row.targets = self.targets(id)?;
        Ok(Some(row))
    }

    fn targets(&self, id: &str) -> Result<Vec<TargetRow>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT agent, command_id, status, detail, sends, updated_ms FROM targets
             WHERE announcement = ?1 ORDER BY agent",
        )?;
        let rows = statement.query_map(params![id], |row| {
            Ok(TargetRow {
                agent: row.get(0)?,
                command_id: row.get(1)?,
                status: row.get(2)?,
                detail: row.get(3)?,
                sends: row.get(4)?,
                updated_ms: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn read_announcement(row: &rusqlite::Row<'_>) -> rusqlite::Result<AnnouncementRow> {
    let args: String = row.get(4)?;
    Ok(AnnouncementRow {
        id: row.get(0)?,
        created_ms: row.get(1)?,
        created_by: row.get(2)?,
        expires_ms: row.get(3)?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        stopped_ms: row.get(5)?,
        schedule: row.get(6)?,
        targets: Vec::new(),
    })
}

mod history;
mod limits;
pub mod scheduled;
mod schema;
mod sites;
mod stops;

pub use history::HistoryFilter;
pub use sites::{PinnedSite, SiteClaim};
pub use stops::PendingStop;
#[cfg(test)]
mod tests;
