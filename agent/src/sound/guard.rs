//! Nothing a stranger sends may make the speakers talk: sound commands must be signed with the
//! shared key, announcements and stops must expire within a day, and their ids are kept on
//! disk until they expire, so a recorded command replayed later, even after a restart, is
//! refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pantau_protocol::{Command, CommandRejectReason, CommandRejection, SignatureError};
use tracing::warn;

/// The longest an announcement or stop may stay valid, which bounds the replay store.
pub const MAX_VALIDITY_MS: i64 = 24 * 3600 * 1000;
/// Ids kept at most; beyond this new commands are refused rather than old ids forgotten.
const MAX_REMEMBERED: usize = 20_000;

/// Checks signatures and remembers the ids carried out.
pub struct Guard {
    key: Vec<u8>,
    path: PathBuf,
    /// Command id -> its expiry (Unix ms).
    seen: HashMap<String, i64>,
}

impl Guard {
    /// Loads the ids remembered in `state_dir` (a missing or unreadable file starts empty,
    /// with a warning: expiries still bound what a replay could do).
    pub fn open(key: Vec<u8>, state_dir: &Path, now_ms: i64) -> Self {
        let path = state_dir.join("sound-commands.json");
        let seen = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<HashMap<String, i64>>(&bytes).unwrap_or_else(|error| {
                warn!(%error, path = %path.display(), "cannot read the remembered command ids; starting afresh");
                HashMap::new()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                warn!(%error, path = %path.display(), "cannot read the remembered command ids; starting afresh");
                HashMap::new()
            }
        };
        let mut guard = Self { key, path, seen };
        guard.seen.retain(|_, expires| *expires >= now_ms);
        guard
    }

    /// Checks the signature only (schedules: no expiry, versions instead).
    pub fn verify(&self, command: &Command) -> Result<(), CommandRejection> {
        command.message.verify(&self.key).map_err(|error| {
            let reason = match error {
                SignatureError::Unsigned => CommandRejectReason::Unsigned,
                SignatureError::Mismatch => CommandRejectReason::BadSignature,
            };
            CommandRejection::of(command, reason, error.to_string())
        })
    }

    /// Checks signature, expiry and replay, and remembers the id; call only for commands
    /// that are then carried out.
    pub fn admit_once(&mut self, command: &Command, now_ms: i64) -> Result<(), CommandRejection> {
        self.verify(command)?;
        let refuse = |reason, why: String| Err(CommandRejection::of(command, reason, why));
        let Some(expires_ms) = command.message.expires_ms else {
            return refuse(
                CommandRejectReason::InvalidArguments,
                "needs `expires_ms`, so that a recorded command cannot be replayed later"
                    .to_owned(),
            );
        };
        if expires_ms.saturating_sub(now_ms) > MAX_VALIDITY_MS {
            return refuse(
                CommandRejectReason::InvalidArguments,
                "`expires_ms` is more than 24 hours away".to_owned(),
            );
        }
        // `decode_command` already refused an expired one; this is the same clock.
        if self.seen.contains_key(&command.message.id) {
            return refuse(
                CommandRejectReason::Replayed,
                format!("command {} was already carried out", command.message.id),
            );
        }
        self.seen.retain(|_, expires| *expires >= now_ms);
        if self.seen.len() >= MAX_REMEMBERED {
            return refuse(
                CommandRejectReason::Failed,
                "too many commands in flight to remember; try again later".to_owned(),
            );
        }
        self.seen.insert(command.message.id.clone(), expires_ms);
        self.save();
        Ok(())
    }

    fn save(&self) {
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&self.seen)?;
            let temp = self.path.with_extension("tmp");
            std::fs::write(&temp, bytes)?;
            std::fs::rename(&temp, &self.path)
        };
        if let Err(error) = write() {
            // Memory still refuses replays until a restart; say so loudly.
            warn!(%error, path = %self.path.display(), "cannot persist the command ids");
        }
    }
}

#[cfg(test)]
mod tests {
    use pantau_protocol::{CommandMessage, Limits, decode_command};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn command(id: &str, expires_ms: Option<i64>, key: Option<&[u8]>) -> Command {
        let mut message: CommandMessage = serde_json::from_value(serde_json::json!({
            "schema": 1, "agent": "snd", "site": "office", "id": id, "timestamp_ms": NOW,
            "args": {"text": "Tes"}
        }))
        .unwrap();
        message.expires_ms = expires_ms;
        if let Some(key) = key {
            message.sign(key);
        }
        let payload = serde_json::to_vec(&message).unwrap();
        decode_command(
            "pantau",
            "pantau/v1/office/snd/cmd/announce",
            &payload,
            &Limits::default(),
            NOW,
        )
        .unwrap()
    }

    const KEY: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn unsigned_and_wrongly_signed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), NOW);
        let reason = |c: &Command, g: &mut Guard| g.admit_once(c, NOW).unwrap_err().reason;
        assert_eq!(
            reason(&command("a", Some(NOW + 1000), None), &mut guard),
            CommandRejectReason::Unsigned
        );
        assert_eq!(
            reason(
                &command("a", Some(NOW + 1000), Some(b"another key of 16+")),
                &mut guard
            ),
            CommandRejectReason::BadSignature
        );
        assert_eq!(
            reason(&command("a", None, Some(KEY)), &mut guard),
            CommandRejectReason::InvalidArguments
        );
        assert_eq!(
            reason(
                &command("a", Some(NOW + MAX_VALIDITY_MS + 1), Some(KEY)),
                &mut guard
            ),
            CommandRejectReason::InvalidArguments
        );
    }

    #[test]
    fn a_replay_is_refused_even_after_a_restart_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let signed = command("a-1", Some(NOW + 60_000), Some(KEY));
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), NOW);
        guard.admit_once(&signed, NOW).unwrap();
        assert_eq!(
            guard.admit_once(&signed, NOW).unwrap_err().reason,
            CommandRejectReason::Replayed
        );
        let mut restarted = Guard::open(KEY.to_vec(), dir.path(), NOW + 1000);
        assert_eq!(
            restarted
                .admit_once(&signed, NOW + 1000)
                .unwrap_err()
                .reason,
            CommandRejectReason::Replayed
        );
        // Once expired the id is forgotten (decode_command refuses the command as expired).
        let later = Guard::open(KEY.to_vec(), dir.path(), NOW + 61_000);
        assert!(later.seen.is_empty());
    }
}
