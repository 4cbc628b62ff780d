//! The sound role: the PC wired to the amplifier plays announcements from the collector
//! (`announce`, `stop`) and keeps the reminder schedule (`schedule`) by itself.
//!
//! Commands must be signed with this agent's own key (`guard.rs`), and their ids are kept
//! until they expire (`replay.rs`); audio runs on its own thread
//! (`player.rs`) fed by a channel; the schedule is kept on disk and played by a timer task
//! here, so a broker, collector or link outage, or a restart without a broker, never silences
//! the reminders.

mod config;
mod guard;
mod player;
mod queue;
mod replay;
mod source;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use pantau_protocol::sound::{self as protocol, AnnounceArgs, Priority, ScheduleArgs, StopArgs};
use pantau_protocol::{Command, CommandRejectReason, CommandRejection, Event, Family, Severity};
use pantau_runtime::config::ConfigError;
use pantau_runtime::supervise::Supervisor;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::SoundConfig;
use guard::Guard;
use pantau_protocol::schedule::Schedule;
use player::{AudioThread, Outcome, Request, SharedStatus};
use queue::Announcement;
use replay::Room;

use crate::message::unix_millis;
use crate::metric::FamilyBuilder;
use crate::role::{EventSender, RoleContext};

/// Requests waiting for the audio thread; more are refused.
const REQUEST_QUEUE: usize = 64;
/// The timer looks again at least this often, so a changed clock is noticed.
const SCHEDULER_MAX_SLEEP: Duration = Duration::from_secs(30);
/// Audio file extensions offered as clips.
const CLIP_EXTENSIONS: [&str; 4] = ["wav", "mp3", "ogg", "flac"];

/// The sound role.
pub struct SoundRole {
    settings: player::Settings,
    guard: Guard,
    schedule_path: PathBuf,
    schedule: watch::Sender<Option<Arc<Schedule>>>,
    next_due_ms: Arc<AtomicI64>,
    requests: Option<SyncSender<Request>>,
    status: SharedStatus,
    events: Option<EventSender>,
    clips: Vec<String>,
}

impl SoundRole {
    pub const COMMANDS: &'static [&'static str] =
        &[protocol::ANNOUNCE, protocol::SCHEDULE, protocol::STOP];

    /// Prepares the role: checks the config, reads the key, the remembered command ids and
    /// the stored schedule.
    pub fn new(config: &SoundConfig, state_dir: &Path) -> Result<Self, ConfigError> {
        let checked = config.check()?;
        let now_ms = unix_millis(SystemTime::now());
        let schedule_path = state_dir.join("sound-schedule.json");
        let stored = load_schedule(&schedule_path);
        let clips = list_clips(&checked.settings.clips_dir);
        Ok(Self {
            guard: Guard::open(checked.key, state_dir, checked.remembered, now_ms),
            settings: checked.settings,
            schedule_path,
            schedule: watch::Sender::new(stored.map(Arc::new)),
            next_due_ms: Arc::new(AtomicI64::new(0)),
            requests: None,
            status: SharedStatus::default(),
            events: None,
            clips,
        })
    }

    /// The clips this agent can play, for its birth message.
    pub fn clips(&self) -> Vec<String> {
        self.clips.clone()
    }

    /// Starts the audio thread and the schedule timer.
    pub fn start(&mut self, context: &RoleContext, supervisor: &mut Supervisor) {
        let (requests, receiver) = sync_channel(REQUEST_QUEUE);
        let thread = AudioThread::new(
            self.settings.clone(),
            context.events.clone(),
            self.status.clone(),
        );
        if let Err(error) = supervisor.spawn_thread("sound-player", move || thread.run(receiver)) {
            error!(%error, "cannot start the audio thread");
        }
        supervisor.spawn(
            "sound-schedule",
            run_schedule(
                self.schedule.subscribe(),
                requests.clone(),
                self.next_due_ms.clone(),
                supervisor.shutdown(),
            ),
        );
        self.requests = Some(requests);
        self.events = Some(context.events.clone());
        if let Some(schedule) = self.schedule.borrow().as_ref() {
            info!(
                version = schedule.version,
                entries = schedule.entries.len(),
                "playing the stored schedule"
            );
        }
    }

    /// Carries out `announce`, `stop` or `schedule`.
    pub fn handle(&mut self, command: &Command) -> Result<String, CommandRejection> {
        let now_ms = unix_millis(SystemTime::now());
        let invalid =
            |why: String| CommandRejection::of(command, CommandRejectReason::InvalidArguments, why);
        match command.name.as_str() {
            protocol::ANNOUNCE => {
                self.guard.verify(command)?;
                let args: AnnounceArgs = serde_json::from_value(command.message.args.clone())
                    .map_err(|error| invalid(error.to_string()))?;
                args.validate().map_err(invalid)?;
                if let Some(clip) = &args.clip
                    && !self.clips.contains(clip)
                {
                    return Err(invalid(format!("no clip {clip:?} on this agent")));
                }
                let room = match args.priority {
                    Priority::Emergency => Room::Priority,
                    _ => Room::Ordinary,
                };
                let admitted = self.guard.admit(command, room, now_ms)?;
                self.send(
                    command,
                    Request::Play(Announcement {
                        id: command.message.id.clone(),
                        args,
                        expires_ms: command.message.expires_ms,
                        received: Instant::now(),
                        schedule: None,
                    }),
                )?;
                // Only now: a command the audio thread did not take may be sent again.
                self.guard.remember(admitted, now_ms);
                Ok("taken; its events follow".to_owned())
            }
            protocol::STOP => {
                self.guard.verify(command)?;
                let args: StopArgs = serde_json::from_value(command.message.args.clone())
                    .map_err(|error| invalid(error.to_string()))?;
                args.validate().map_err(invalid)?;
                let admitted = self.guard.admit(command, Room::Priority, now_ms)?;
                self.send(command, Request::Stop(args))?;
                self.guard.remember(admitted, now_ms);
                Ok("stopping".to_owned())
            }
            protocol::SCHEDULE => self.apply_schedule(command),
            other => Err(CommandRejection::of(
                command,
                CommandRejectReason::UnknownCommand,
                format!("the sound role does not handle {other:?}"),
            )),
        }
    }

    fn apply_schedule(&mut self, command: &Command) -> Result<String, CommandRejection> {
        self.guard.verify(command)?;
        let args: ScheduleArgs =
            serde_json::from_value(command.message.args.clone()).map_err(|error| {
                CommandRejection::of(
                    command,
                    CommandRejectReason::InvalidArguments,
                    error.to_string(),
                )
            })?;
        let current = self.schedule.borrow().as_ref().map(|s| s.version);
        match current {
            Some(current) if args.version < current => {
                return Err(CommandRejection::of(
                    command,
                    CommandRejectReason::Outdated,
                    format!(
                        "version {} is older than the applied version {current}",
                        args.version
                    ),
                ));
            }
            Some(current) if args.version == current => {
                return Ok(format!("version {current} is already applied"));
            }
            _ => {}
        }
        let schedule = Schedule::parse(&args).map_err(|why| {
            CommandRejection::of(command, CommandRejectReason::InvalidArguments, why)
        })?;
        if let Err(error) = save_schedule(&self.schedule_path, &args) {
            // It still plays until a restart; the loss is worth a loud line.
            error!(%error, path = %self.schedule_path.display(), "cannot store the schedule");
        }
        let version = schedule.version;
        let entries = schedule.entries.len();
        self.schedule.send_replace(Some(Arc::new(schedule)));
        if let Some(events) = &self.events {
            events.emit(Event {
                kind: "schedule_applied".to_owned(),
                severity: Severity::Info,
                message: format!("schedule version {version} applied ({entries} entries)"),
                labels: [("version".to_owned(), version.to_string())].into(),
            });
        }
        info!(version, entries, "schedule applied");
        Ok(format!("schedule version {version} applied"))
    }

    fn send(&self, command: &Command, request: Request) -> Result<(), CommandRejection> {
        let failed = |why: &str| CommandRejection::of(command, CommandRejectReason::Failed, why);
        let requests = self
            .requests
            .as_ref()
            .ok_or_else(|| failed("the sound role is not started"))?;
        requests.try_send(request).map_err(|error| match error {
            TrySendError::Full(_) => failed("too many requests at once"),
            TrySendError::Disconnected(_) => failed("the audio thread has stopped"),
        })
    }

    /// The role's series.
    pub fn families(&self) -> Vec<Family> {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outcomes = FamilyBuilder::counter(
            "pantau_sound_announcements_total",
            "Announcements by priority and how they ended (finished, failed, preempted, stopped, \
             expired, refused, collapsed).",
        );
        for priority in Priority::ALL {
            for outcome in Outcome::ALL {
                let count = status
                    .outcomes
                    .get(&(priority, outcome))
                    .copied()
                    .unwrap_or(0);
                outcomes.sample(
                    &[
                        ("priority", priority.as_str()),
                        ("outcome", outcome.as_str()),
                    ],
                    count as f64,
                );
            }
        }
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let mut families = self.replay_families();
        families.extend([
            FamilyBuilder::gauge(
                "pantau_sound_device_up",
                "1 if the audio output device is open and usable now, else 0.",
            )
            .single(flag(status.device_up)),
            FamilyBuilder::gauge(
                "pantau_sound_queue_length",
                "Announcements waiting to play.",
            )
            .single(status.queue_length as f64),
            FamilyBuilder::gauge(
                "pantau_sound_playing",
                "1 while an announcement plays, else 0.",
            )
            .single(flag(status.playing.is_some())),
            outcomes.build(),
            FamilyBuilder::gauge(
                "pantau_sound_schedule_version",
                "Version of the schedule this agent plays (0: none).",
            )
            .single(
                self.schedule
                    .borrow()
                    .as_ref()
                    .map_or(0.0, |s| s.version as f64),
            ),
        ]);
        if let Some(at) = status.last_success {
            let seconds = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            families.push(
                FamilyBuilder::gauge(
                    "pantau_sound_last_success_timestamp_seconds",
                    "When an announcement last played to its end.",
                )
                .single(seconds),
            );
        }
        let next = self.next_due_ms.load(Ordering::Relaxed);
        if next > 0 {
            families.push(
                FamilyBuilder::gauge(
                    "pantau_sound_next_scheduled_timestamp_seconds",
                    "When the next scheduled announcement is due.",
                )
                .single(next as f64 / 1000.0),
            );
        }
        families
    }
}

impl SoundRole {
    /// How full each room of the replay memory is, its size, its floor and what it forgot.
    fn replay_families(&self) -> Vec<Family> {
        let now_ms = unix_millis(SystemTime::now());
        let memory = self.guard.memory();
        let mut remembered = FamilyBuilder::gauge(
            "pantau_sound_remembered_commands",
            "Ids of signed commands kept until they expire, to refuse replays, by room \
             (ordinary: announcements; priority: stops and emergencies).",
        );
        let mut capacity = FamilyBuilder::gauge(
            "pantau_sound_remembered_commands_capacity",
            "Most ids a room of the replay memory keeps (sound.max_remembered_commands, \
             sound.max_remembered_priority_commands).",
        );
        let mut floor = FamilyBuilder::gauge(
            "pantau_sound_remembered_commands_floor_timestamp_seconds",
            "Latest expiry a full room forgot; commands expiring no later are refused \
             (over_capacity). 0: nothing forgotten.",
        );
        let mut forgotten = FamilyBuilder::counter(
            "pantau_sound_forgotten_commands_total",
            "Ids a full room of the replay memory forgot (the soonest to expire) since start.",
        );
        for room in Room::ALL {
            let labels = [("room", room.as_str())];
            remembered.sample(&labels, memory.len(room, now_ms) as f64);
            capacity.sample(&labels, memory.capacity(room) as f64);
            floor.sample(&labels, memory.floor_ms(room) as f64 / 1000.0);
            forgotten.sample(&labels, memory.forgotten(room) as f64);
        }
        vec![
            remembered.build(),
            capacity.build(),
            floor.build(),
            forgotten.build(),
        ]
    }
}

/// Plays the schedule's entries when they are due, until shutdown.
async fn run_schedule(
    mut schedule: watch::Receiver<Option<Arc<Schedule>>>,
    requests: SyncSender<Request>,
    next_due_ms: Arc<AtomicI64>,
    shutdown: CancellationToken,
) {
    loop {
        let current = schedule.borrow_and_update().clone();
        let now = Timestamp::now();
        let due = current
            .as_ref()
            .and_then(|s| s.next_due(now).map(|(at, entry)| (at, entry.clone())));
        next_due_ms.store(
            due.as_ref().map_or(0, |(at, _)| at.as_millisecond()),
            Ordering::Relaxed,
        );
        let wait = due.as_ref().map_or(SCHEDULER_MAX_SLEEP, |(at, _)| {
            Duration::try_from(at.duration_since(now))
                .unwrap_or_default()
                .min(SCHEDULER_MAX_SLEEP)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = schedule.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {
                let Some((at, entry)) = due else { continue };
                if Timestamp::now() < at {
                    continue;
                }
                let mut args = entry.announce.clone();
                args.priority = args.priority.max(Priority::Scheduled);
                let announcement = Announcement {
                    id: format!("{}@{}", entry.name, at.as_second()),
                    args,
                    expires_ms: Some(at.as_millisecond() + protocol::SCHEDULED_VALIDITY_MS),
                    received: Instant::now(),
                    schedule: Some(entry.name.clone()),
                };
                if requests.try_send(Request::Play(announcement)).is_err() {
                    warn!(entry = %entry.name, "the audio thread is not taking requests; entry skipped");
                }
            }
        }
    }
}

fn load_schedule(path: &Path) -> Option<Schedule> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            error!(%error, path = %path.display(), "cannot read the stored schedule");
            return None;
        }
    };
    let parsed = serde_json::from_slice::<ScheduleArgs>(&bytes)
        .map_err(|error| error.to_string())
        .and_then(|args| Schedule::parse(&args));
    match parsed {
        Ok(schedule) => Some(schedule),
        Err(why) => {
            error!(why, path = %path.display(), "the stored schedule cannot be used");
            None
        }
    }
}

fn save_schedule(path: &Path, args: &ScheduleArgs) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(args)?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// The playable files in the clips directory, by name.
fn list_clips(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        warn!(dir = %dir.display(), "no clips directory; only speech and tones can play");
        return Vec::new();
    };
    let mut clips: Vec<String> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| protocol::validate_clip_name(name).is_ok())
        .filter(|name| {
            Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CLIP_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    clips.sort();
    clips.truncate(500);
    clips
}

#[cfg(test)]
mod tests {
    use pantau_protocol::{CommandMessage, Limits, decode_command};

    use super::*;

    const KEY: &[u8] = b"office-key-0123456789";

    fn role(dir: &Path) -> SoundRole {
        std::fs::write(dir.join("key"), KEY).unwrap();
        let config: SoundConfig = serde_json::from_value(serde_json::json!({
            "key_file": dir.join("key"),
            "clips_dir": dir.join("clips"),
        }))
        .unwrap();
        SoundRole::new(&config, dir).unwrap()
    }

    fn command(name: &str, id: &str, args: serde_json::Value, key: &[u8]) -> Command {
        let now = unix_millis(SystemTime::now());
        let mut message: CommandMessage = serde_json::from_value(serde_json::json!({
            "schema": 1, "agent": "snd", "site": "office", "id": id, "timestamp_ms": now,
            "expires_ms": now + 60_000, "args": args
        }))
        .unwrap();
        message.sign(key, "pantau", name);
        let payload = serde_json::to_vec(&message).unwrap();
        let topic = format!("pantau/v1/office/snd/cmd/{name}");
        decode_command("pantau", &topic, &payload, &Limits::default(), now).unwrap()
    }

    fn schedule(version: u64) -> serde_json::Value {
        serde_json::json!({"version": version, "entries": [
            {"name": "pagi", "times": ["08:00"], "announce": {"text": "Selamat pagi"}}]})
    }

    #[test]
    fn schedule_versions_only_go_up_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut sound = role(dir.path());
        let reason = |result: Result<String, CommandRejection>| result.unwrap_err().reason;
        assert!(
            sound
                .handle(&command("schedule", "s2", schedule(2), KEY))
                .is_ok()
        );
        // The retained schedule comes again on every reconnect: taken again, quietly.
        let again = sound
            .handle(&command("schedule", "s2b", schedule(2), KEY))
            .unwrap();
        assert!(again.contains("already applied"), "{again}");
        assert_eq!(
            reason(sound.handle(&command("schedule", "s1", schedule(1), KEY))),
            CommandRejectReason::Outdated
        );
        assert_eq!(
            reason(sound.handle(&command(
                "schedule",
                "s3",
                schedule(3),
                b"a stranger's key!!"
            ))),
            CommandRejectReason::BadSignature
        );
        let restarted = role(dir.path());
        let stored = restarted.schedule.borrow().as_ref().map(|s| s.version);
        assert_eq!(stored, Some(2), "the schedule is kept on disk");
    }

    #[test]
    fn announcements_need_a_known_clip_and_are_remembered_once_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut sound = role(dir.path());
        let unknown = sound
            .handle(&command(
                "announce",
                "a1",
                serde_json::json!({"clip": "nope.ogg"}),
                KEY,
            ))
            .unwrap_err();
        assert_eq!(unknown.reason, CommandRejectReason::InvalidArguments);
        assert!(unknown.detail.contains("nope.ogg"), "{}", unknown.detail);
        let tone = serde_json::json!({"tone": {}});
        let signed = command("announce", "a2", tone, KEY);
        // Not started here, so the audio thread is missing: not taken, so not remembered,
        // and the collector's resend is tried again rather than refused as a replay.
        assert_eq!(
            sound.handle(&signed).unwrap_err().reason,
            CommandRejectReason::Failed
        );
        assert_eq!(
            sound.handle(&signed).unwrap_err().reason,
            CommandRejectReason::Failed
        );
        assert_eq!(sound.guard.memory().len(Room::Ordinary, 0), 0);
        // Once the audio thread takes it, it is carried out once.
        let (requests, taken) = sync_channel(4);
        sound.requests = Some(requests);
        assert!(sound.handle(&signed).is_ok());
        assert!(matches!(taken.try_recv(), Ok(Request::Play(_))));
        assert_eq!(
            sound.handle(&signed).unwrap_err().reason,
            CommandRejectReason::Replayed
        );
    }

    #[test]
    fn stops_and_emergencies_pass_a_full_ordinary_room() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), KEY).unwrap();
        let config: SoundConfig = serde_json::from_value(serde_json::json!({
            "key_file": dir.path().join("key"),
            "clips_dir": dir.path().join("clips"),
            "max_remembered_commands": 3,
            "max_remembered_priority_commands": 2,
        }))
        .unwrap();
        let mut sound = SoundRole::new(&config, dir.path()).unwrap();
        let (requests, taken) = sync_channel(64);
        sound.requests = Some(requests);
        for n in 0..3 {
            let text = serde_json::json!({"text": format!("pesan {n}")});
            sound
                .handle(&command("announce", &format!("o{n}"), text, KEY))
                .unwrap();
        }
        let gauge = |sound: &SoundRole, room: &str| {
            let families = sound.families();
            let family = families
                .iter()
                .find(|f| f.name == "pantau_sound_remembered_commands")
                .unwrap();
            family
                .samples
                .iter()
                .find(|s| s.labels["room"] == room)
                .unwrap()
                .value
        };
        assert_eq!(gauge(&sound, "ordinary"), 3.0, "the ordinary room is full");
        let stop = serde_json::json!({"up_to": "emergency"});
        sound.handle(&command("stop", "s1", stop, KEY)).unwrap();
        let emergency = serde_json::json!({"text": "Evakuasi", "priority": "emergency"});
        sound
            .handle(&command("announce", "e1", emergency, KEY))
            .unwrap();
        assert_eq!(gauge(&sound, "priority"), 2.0);
        assert_eq!(gauge(&sound, "ordinary"), 3.0);
        assert_eq!(taken.try_iter().count(), 5);
    }
}
