//! Stopping announcements: a signed `cmd/stop` per target, kept in the store and sent again
//! with the other resends until its agent answers or the announcement could no longer play
//! (`store/stops.rs` says why).

use std::time::SystemTime;

use pantau_protocol::sound::{STOP, StopArgs};
use tracing::warn;

use super::{AnnounceError, AnnouncementRow, Announcer, PENDING, PendingStop, unix_ms};

impl Announcer {
    /// Stops announcement `id` on every target: pending targets are not sent any more, the
    /// others get a signed `cmd/stop`.
    pub async fn stop(
        &self,
        who: &str,
        id: &str,
        now: SystemTime,
    ) -> Result<AnnouncementRow, AnnounceError> {
        let now_ms = unix_ms(now);
        let row = {
            let store = self.store();
            let row = store
                .announcement(id)?
                .ok_or_else(|| AnnounceError::NotFound(format!("no announcement '{id}'")))?;
            // The agent names a scheduled play `<entry>@<seconds>`, which is not a command id
            // a stop can carry: say so rather than send a stop the agent must refuse.
            if let Some(schedule) = &row.schedule {
                return Err(AnnounceError::Conflict(format!(
                    "'{id}' is a play of schedule '{schedule}', which the agent started by itself; it cannot be stopped by id (pause the schedule for the next plays)"
                )));
            }
            store.mark_stopped(id, now_ms)?;
            store.audit(now_ms, who, "stop", id, "")?;
            for target in row.targets.iter().filter(|t| t.status == PENDING) {
                store.set_status(
                    &target.command_id,
                    "stopped",
                    "stopped before delivery",
                    now_ms,
                )?;
            }
            row
        };
        // Kept until answered, and resent until the announcement could no longer start (at
        // least a minute, so a stop of an already expired one still reaches a playing agent).
        let expires_ms = row.expires_ms.max(now_ms + 60_000);
        for target in &row.targets {
            // Unique per stop: the agent refuses a repeated id as a replay, and a second stop
            // (say, of an announcement the agent queued again after a reconnect) must work.
            let stop = PendingStop {
                stop_id: format!("{}-stop-{now_ms}", target.command_id),
                agent: target.agent.clone(),
                announcement: row.id.clone(),
                target: target.command_id.clone(),
                expires_ms,
            };
            self.store().insert_stop(&stop)?;
            self.send_stop(&stop).await;
        }
        let store = self.store();
        Ok(store.announcement(id)?.unwrap_or(row))
    }

    /// Sends one stop (signed; its answer removes it from the store).
    async fn send_stop(&self, stop: &PendingStop) -> bool {
        let args = StopArgs {
            announcement: Some(stop.target.clone()),
            up_to: None,
        };
        let args = serde_json::to_value(args).unwrap_or_default();
        self.send(
            &stop.agent,
            &stop.stop_id,
            STOP,
            args,
            Some(stop.expires_ms),
        )
        .await
    }

    /// Sends every unanswered stop again; expired ones are dropped by the store.
    pub(super) async fn resend_stops(&self, now_ms: i64) {
        let stops = self.store().pending_stops(now_ms);
        match stops {
            Ok(stops) => {
                for stop in stops {
                    self.send_stop(&stop).await;
                }
            }
            Err(error) => warn!(%error, "cannot read pending stops"),
        }
    }
}
