//! Nothing a stranger sends may make the speakers talk: sound commands must be signed with
//! this agent's own key for the topic they arrive on, announcements and stops must expire
//! within a day, and their ids are kept on disk until they expire (`replay.rs`), so a
//! recorded command replayed later, even after a restart, is refused.

use std::path::{Path, PathBuf};

use pantau_protocol::{Command, CommandRejectReason, CommandRejection, SignatureError};
use tracing::warn;

use super::replay::{OnDisk, Refusal, ReplayMemory, Room, Stored};

/// The longest an announcement or stop may stay valid, which bounds the replay store.
pub const MAX_VALIDITY_MS: i64 = 24 * 3600 * 1000;

/// Checks signatures and remembers the ids carried out.
pub struct Guard {
    key: Vec<u8>,
    path: PathBuf,
    memory: ReplayMemory,
}

/// A command that passed every check of the guard, to be remembered once carried out.
#[derive(Debug)]
pub struct Admitted {
    room: Room,
    id: String,
    expires_ms: i64,
}

impl Guard {
    /// Loads the ids remembered in `state_dir` (a missing or unreadable file starts empty,
    /// with a warning: expiries still bound what a replay could do); `capacity` is the
    /// ordinary and the priority room's size.
    pub fn open(key: Vec<u8>, state_dir: &Path, capacity: (usize, usize), now_ms: i64) -> Self {
        let path = state_dir.join("sound-commands.json");
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<OnDisk>(&bytes)
                .map(Stored::from)
                .unwrap_or_else(|error| {
                    warn!(%error, path = %path.display(), "cannot read the remembered command ids; starting afresh");
                    Stored::default()
                }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(error) => {
                warn!(%error, path = %path.display(), "cannot read the remembered command ids; starting afresh");
                Stored::default()
            }
        };
        let memory = ReplayMemory::new(stored, capacity.0, capacity.1, now_ms);
        Self { key, path, memory }
    }

    /// The replay memory, for the role's series.
    pub fn memory(&self) -> &ReplayMemory {
        &self.memory
    }

    /// Checks the signature only (schedules: no expiry, versions instead).
    pub fn verify(&self, command: &Command) -> Result<(), CommandRejection> {
        command.verify(&self.key).map_err(|error| {
            let reason = match error {
                SignatureError::Unsigned => CommandRejectReason::Unsigned,
                SignatureError::Mismatch | SignatureError::Version(_) => {
                    CommandRejectReason::BadSignature
                }
            };
            CommandRejection::of(command, reason, error.to_string())
        })
    }

    /// Checks signature, expiry, replay and the room's floor; remembers nothing. Call
    /// [`Guard::remember`] with the result once the command is carried out.
    pub fn admit(
        &self,
        command: &Command,
        room: Room,
        now_ms: i64,
    ) -> Result<Admitted, CommandRejection> {
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
        match self.memory.check(room, &command.message.id, expires_ms) {
            Ok(()) => Ok(Admitted {
                room,
                id: command.message.id.clone(),
                expires_ms,
            }),
            Err(Refusal::Seen) => refuse(
                CommandRejectReason::Replayed,
                format!("command {} was already carried out", command.message.id),
            ),
            Err(Refusal::BelowFloor { floor_ms }) => refuse(
                CommandRejectReason::OverCapacity,
                format!(
                    "the {} replay memory was full and forgot commands expiring up to {floor_ms} (Unix ms); \
                     this one expires at {expires_ms}, so it cannot be told from a replay: send it with a later expiry",
                    room.as_str()
                ),
            ),
        }
    }

    /// Remembers a command that was carried out, and writes the memory to disk.
    pub fn remember(&mut self, admitted: Admitted, now_ms: i64) {
        self.memory
            .remember(admitted.room, &admitted.id, admitted.expires_ms, now_ms);
        self.save();
    }

    fn save(&self) {
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(self.memory.stored())?;
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
    const KEY: &[u8] = b"0123456789abcdef0123";
    const ROOMS: (usize, usize) = (20_000, 1_000);

    fn command_on(topic: &str, id: &str, expires_ms: Option<i64>, key: Option<&[u8]>) -> Command {
        let mut message: CommandMessage = serde_json::from_value(serde_json::json!({
            "schema": 1, "agent": "snd", "site": "office", "id": id, "timestamp_ms": NOW,
            "args": {"text": "Tes"}
        }))
        .unwrap();
        message.expires_ms = expires_ms;
        if let Some(key) = key {
            message.sign(key, "pantau", "announce");
        }
        let payload = serde_json::to_vec(&message).unwrap();
        decode_command("pantau", topic, &payload, &Limits::default(), NOW).unwrap()
    }

    fn command(id: &str, expires_ms: Option<i64>, key: Option<&[u8]>) -> Command {
        command_on("pantau/v1/office/snd/cmd/announce", id, expires_ms, key)
    }

    /// Admits and remembers, as the role does for a command it carried out.
    fn admit_once(
        guard: &mut Guard,
        command: &Command,
        now_ms: i64,
    ) -> Result<(), CommandRejection> {
        let admitted = guard.admit(command, Room::Ordinary, now_ms)?;
        guard.remember(admitted, now_ms);
        Ok(())
    }

    #[test]
    fn unsigned_wrongly_signed_and_misplaced_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW);
        let mut reason = |c: &Command| admit_once(&mut guard, c, NOW).unwrap_err().reason;
        assert_eq!(
            reason(&command("a", Some(NOW + 1000), None)),
            CommandRejectReason::Unsigned
        );
        assert_eq!(
            reason(&command("a", Some(NOW + 1000), Some(b"another key of 16+"))),
            CommandRejectReason::BadSignature
        );
        // Signed for `announce`, published on `stop`.
        assert_eq!(
            reason(&command_on(
                "pantau/v1/office/snd/cmd/stop",
                "a",
                Some(NOW + 1000),
                Some(KEY)
            )),
            CommandRejectReason::BadSignature
        );
        assert_eq!(
            reason(&command("a", None, Some(KEY))),
            CommandRejectReason::InvalidArguments
        );
        assert_eq!(
            reason(&command("a", Some(NOW + MAX_VALIDITY_MS + 1), Some(KEY))),
            CommandRejectReason::InvalidArguments
        );
    }

    #[test]
    fn an_old_style_signature_is_a_bad_signature() {
        use hmac::Mac;
        let dir = tempfile::tempdir().unwrap();
        let guard = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW);
        let mut old = command("a", Some(NOW + 1000), None);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
        mac.update(&serde_json::to_vec(&old.message).unwrap());
        let tag: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        old.message.hmac = Some(tag);
        let refused = guard.admit(&old, Room::Ordinary, NOW).unwrap_err();
        assert_eq!(refused.reason, CommandRejectReason::BadSignature);
        assert!(
            refused.detail.contains("hmac_version"),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn a_replay_is_refused_even_after_a_restart_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let signed = command("a-1", Some(NOW + 60_000), Some(KEY));
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW);
        admit_once(&mut guard, &signed, NOW).unwrap();
        assert_eq!(
            admit_once(&mut guard, &signed, NOW).unwrap_err().reason,
            CommandRejectReason::Replayed
        );
        let mut restarted = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW + 1000);
        assert_eq!(
            admit_once(&mut restarted, &signed, NOW + 1000)
                .unwrap_err()
                .reason,
            CommandRejectReason::Replayed
        );
        // Once expired the id is forgotten (decode_command refuses the command as expired).
        let later = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW + 61_000);
        assert_eq!(later.memory().len(Room::Ordinary, NOW + 61_000), 0);
    }

    #[test]
    fn an_admitted_command_is_remembered_only_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW);
        let signed = command("a-2", Some(NOW + 60_000), Some(KEY));
        // Admitted but not carried out (say, the audio queue was full): a resend is taken.
        drop(guard.admit(&signed, Room::Ordinary, NOW).unwrap());
        let admitted = guard.admit(&signed, Room::Ordinary, NOW).unwrap();
        guard.remember(admitted, NOW);
        assert_eq!(
            guard
                .admit(&signed, Room::Ordinary, NOW)
                .unwrap_err()
                .reason,
            CommandRejectReason::Replayed
        );
    }

    #[test]
    fn past_a_full_room_a_forgotten_command_stays_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), (2, 1), NOW);
        let first = command("o-1", Some(NOW + 10_000), Some(KEY));
        admit_once(&mut guard, &first, NOW).unwrap();
        admit_once(
            &mut guard,
            &command("o-2", Some(NOW + 20_000), Some(KEY)),
            NOW,
        )
        .unwrap();
        admit_once(
            &mut guard,
            &command("o-3", Some(NOW + 30_000), Some(KEY)),
            NOW,
        )
        .unwrap();
        let mut restarted = Guard::open(KEY.to_vec(), dir.path(), (2, 1), NOW + 1);
        let refused = admit_once(&mut restarted, &first, NOW + 1).unwrap_err();
        assert_eq!(refused.reason, CommandRejectReason::OverCapacity);
        assert!(
            refused.detail.contains("later expiry"),
            "{}",
            refused.detail
        );
    }

    /// Not a check: the cost of one command into a full 20,000-id room, each written whole to
    /// disk (BENCHMARKS.md). Run with
    /// `cargo test -p pantau-agent --release --bin pantau-agent a_full_room_costs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn a_full_room_costs_one_whole_write_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut stored = Stored::default();
        for n in 0..20_000 {
            stored
                .ordinary
                .ids
                .insert(format!("a{NOW}{n:05}-0"), NOW + 23 * 3_600_000 + n);
        }
        std::fs::write(
            dir.path().join("sound-commands.json"),
            serde_json::to_vec(&stored).unwrap(),
        )
        .unwrap();
        let mut guard = Guard::open(KEY.to_vec(), dir.path(), ROOMS, NOW);
        let commands: Vec<Command> = (0..100)
            .map(|n| {
                command(
                    &format!("new-{n}"),
                    Some(NOW + 24 * 3_600_000 - 100 + n),
                    Some(KEY),
                )
            })
            .collect();
        let start = std::time::Instant::now();
        for command in &commands {
            admit_once(&mut guard, command, NOW).unwrap();
        }
        let file = std::fs::metadata(dir.path().join("sound-commands.json")).unwrap();
        eprintln!(
            "{:?} per command into a full room of 20000 ids; file {} bytes",
            start.elapsed() / 100,
            file.len()
        );
        assert_eq!(guard.memory().len(Room::Ordinary, NOW), 20_000);
    }
}
