//! Stops not yet acknowledged. A stop for an agent that is offline would otherwise be lost
//! (the broker keeps no QoS 1 message for a client that is not connected with a session), and
//! an announcement that reaches the agent after it reconnects would then play in full. So each
//! stop is kept until its agent answers it (`command_completed` or `command_rejected`, with
//! the stop's `command_id`) or until it expires, and resent meanwhile, like announcements.
//! The table only holds what is outstanding: answered and expired stops are deleted.

use rusqlite::params;

use super::{Store, StoreError};

/// One outstanding stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStop {
    /// The stop command's own id (what the agent answers with).
    pub stop_id: String,
    pub agent: String,
    /// The announcement it stops, and the target's command id (what the agent is told to stop).
    pub announcement: String,
    pub target: String,
    pub expires_ms: i64,
}

impl Store {
    /// Keeps `stop` until it is answered or expires.
    pub fn insert_stop(&self, stop: &PendingStop) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO stops (stop_id, agent, announcement, target, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                stop.stop_id,
                stop.agent,
                stop.announcement,
                stop.target,
                stop.expires_ms
            ],
        )?;
        Ok(())
    }

    /// Agent `agent` answered `stop_id`: it is not sent again. False if no such stop waits.
    pub fn stop_answered(&self, agent: &str, stop_id: &str) -> Result<bool, StoreError> {
        let gone = self.conn.execute(
            "DELETE FROM stops WHERE stop_id = ?1 AND agent = ?2",
            params![stop_id, agent],
        )?;
        Ok(gone > 0)
    }

    /// Stops to send again at `now_ms`; those past their expiry are dropped (the agent would
    /// refuse them, and the announcement they stop cannot start any more either).
    pub fn pending_stops(&self, now_ms: i64) -> Result<Vec<PendingStop>, StoreError> {
        self.conn
            .execute("DELETE FROM stops WHERE expires_ms < ?1", params![now_ms])?;
        let mut statement = self.conn.prepare(
            "SELECT stop_id, agent, announcement, target, expires_ms FROM stops ORDER BY stop_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(PendingStop {
                stop_id: row.get(0)?,
                agent: row.get(1)?,
                announcement: row.get(2)?,
                target: row.get(3)?,
                expires_ms: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
