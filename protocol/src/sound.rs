//! The sound role's commands: `announce`, `schedule` and `stop`, carried in a command's `args`.
//!
//! The types are shared by the collector, which composes and signs them, and the sound agent,
//! which checks and carries them out. Limits are part of the protocol so both sides refuse the
//! same things.

use serde::{Deserialize, Serialize};

/// Command name of one announcement.
pub const ANNOUNCE: &str = "announce";
/// Command name of the whole schedule (published retained).
pub const SCHEDULE: &str = "schedule";
/// Command name that stops what is playing.
pub const STOP: &str = "stop";

/// Longest announcement text, in bytes (about a minute of speech).
pub const MAX_TEXT_BYTES: usize = 2000;
/// Most repeats of one announcement.
pub const MAX_REPEAT: u32 = 10;
/// Most entries in a schedule.
pub const MAX_SCHEDULE_ENTRIES: usize = 200;
/// Longest test tone, in seconds.
pub const MAX_TONE_SECONDS: f64 = 30.0;
/// How long after its due time a scheduled play may still start (it waits in the queue behind
/// more urgent ones at most this long); the collector's history shows it as the play's expiry.
pub const SCHEDULED_VALIDITY_MS: i64 = 300_000;

/// How urgent an announcement is; a higher one pre-empts a lower one at once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Scheduled,
    Operator,
    Alert,
    Emergency,
}

impl Priority {
    /// Every priority, lowest first: the label set of per-priority series.
    pub const ALL: [Priority; 4] = [
        Priority::Scheduled,
        Priority::Operator,
        Priority::Alert,
        Priority::Emergency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Scheduled => "scheduled",
            Priority::Operator => "operator",
            Priority::Alert => "alert",
            Priority::Emergency => "emergency",
        }
    }
}

/// What happens to an announcement when a higher priority interrupts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnPreempt {
    /// Played again from the start once the interruption is over.
    #[default]
    Resume,
    /// Dropped (reported as pre-empted).
    Drop,
}

/// A sine test tone, so staff can check a speaker without speaking into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tone {
    /// 20 to 20000 Hz.
    #[serde(default = "default_tone_hz")]
    pub frequency_hz: f64,
    /// Above 0, at most 30.
    #[serde(default = "default_tone_seconds")]
    pub seconds: f64,
}

fn default_tone_hz() -> f64 {
    1000.0
}

fn default_tone_seconds() -> f64 {
    2.0
}

/// `args` of `cmd/announce`, and what a schedule entry plays: exactly one of `text`, `clip`
/// or `tone`, and how to play it. The command's own `id` and `expires_ms` identify it and
/// bound when it may still play.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnnounceArgs {
    /// Spoken by the speech engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A file name in the agent's clips directory (listed in its birth message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<Tone>,
    #[serde(default)]
    pub priority: Priority,
    /// Play the chime first (default: the agent's `sound.chime` setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chime: Option<bool>,
    /// Times to play, 1 to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// 0.0 to 1.0, multiplied with the agent's `sound.volume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<f64>,
    /// Speech voice for text (default: the agent's `sound.voice`, `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(default)]
    pub on_preempt: OnPreempt,
}

/// `args` of `cmd/stop`: one announcement by id, or everything up to a priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    /// The id of the `announce` command to stop (playing or queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<String>,
    /// Stop everything playing or queued at this priority or below (`emergency` stops all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<Priority>,
}

/// `args` of `cmd/schedule`: the whole schedule of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleArgs {
    /// Only goes up; an older version is refused, the same one is taken again (the retained
    /// schedule is redelivered on every reconnect).
    pub version: u64,
    /// IANA time zone of the entries' times (default `Asia/Jakarta`, WIB).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default)]
    pub entries: Vec<ScheduleEntry>,
}

/// The default time zone of schedules.
pub fn default_time_zone() -> String {
    "Asia/Jakarta".to_owned()
}

/// One recurring announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Shown in events and the console, e.g. `masker-pagi`.
    pub name: String,
    /// A five-field cron expression (minute hour day-of-month month day-of-week, with `*`,
    /// lists, ranges and steps); or use `times` and `weekdays`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Local times `HH:MM` (or `HH:MM:SS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<String>,
    /// `mon` .. `sun`, with `times`; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
    /// First day the entry plays, `YYYY-MM-DD` (local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// Last day the entry plays, `YYYY-MM-DD` (local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// IANA time zone of this entry's times and dates, when it is not the schedule's own
    /// `time_zone`: one agent's schedule gathers entries from schedules made in different
    /// zones (a collector in Jakarta scheduling a speaker in Makassar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What to play and how (priority `scheduled` unless it says otherwise).
    pub announce: AnnounceArgs,
}

impl AnnounceArgs {
    /// Checks that exactly one source is given and everything is within limits.
    pub fn validate(&self) -> Result<(), String> {
        let given = [
            self.text.is_some(),
            self.clip.is_some(),
            self.tone.is_some(),
        ]
        .iter()
        .filter(|given| **given)
        .count();
        if given != 1 {
            return Err("give exactly one of `text`, `clip` or `tone`".to_owned());
        }
        if let Some(text) = &self.text {
            if text.trim().is_empty() {
                return Err("`text` is empty".to_owned());
            }
            if text.len() > MAX_TEXT_BYTES {
                return Err(format!("`text` is longer than {MAX_TEXT_BYTES} bytes"));
            }
        }
        if let Some(clip) = &self.clip {
            validate_clip_name(clip)?;
        }
        if let Some(tone) = &self.tone {
            if !(20.0..=20_000.0).contains(&tone.frequency_hz) {
                return Err("`tone.frequency_hz` must be 20 to 20000".to_owned());
            }
            if !(tone.seconds > 0.0 && tone.seconds <= MAX_TONE_SECONDS) {
                return Err(format!(
                    "`tone.seconds` must be above 0 and at most {MAX_TONE_SECONDS}"
                ));
            }
        }
        if let Some(repeat) = self.repeat
            && !(1..=MAX_REPEAT).contains(&repeat)
        {
            return Err(format!("`repeat` must be 1 to {MAX_REPEAT}"));
        }
        if let Some(volume) = self.volume
            && !(0.0..=1.0).contains(&volume)
        {
            return Err("`volume` must be 0.0 to 1.0".to_owned());
        }
        if let Some(voice) = &self.voice {
            validate_voice(voice)?;
        }
        Ok(())
    }
}

impl StopArgs {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.announcement, &self.up_to) {
            (Some(_), Some(_)) | (None, None) => {
                Err("give exactly one of `announcement` or `up_to`".to_owned())
            }
            (Some(id), None) => {
                crate::validate_id(id).map_err(|why| format!("`announcement`: {why}"))
            }
            (None, Some(_)) => Ok(()),
        }
    }
}

impl ScheduleArgs {
    /// Checks the shape; times, weekdays, dates and cron expressions are checked by the agent's
    /// schedule parser, which also computes when entries are due.
    pub fn validate(&self) -> Result<(), String> {
        if self.entries.len() > MAX_SCHEDULE_ENTRIES {
            return Err(format!("more than {MAX_SCHEDULE_ENTRIES} entries"));
        }
        let mut names = std::collections::HashSet::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let at = |why: String| format!("entries[{index}] ({}): {why}", entry.name);
            if entry.name.is_empty() || entry.name.len() > 64 {
                return Err(at("`name` must be 1 to 64 bytes".to_owned()));
            }
            if !names.insert(entry.name.as_str()) {
                return Err(at("`name` is used twice".to_owned()));
            }
            if entry.cron.is_some() != entry.times.is_empty() {
                return Err(at("give either `cron` or `times`".to_owned()));
            }
            entry.announce.validate().map_err(at)?;
        }
        Ok(())
    }
}

/// A clip is a plain file name in the clips directory: no path, no hidden files.
pub fn validate_clip_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "clip {name:?} must be a file name of letters, digits, '.', '_', '-'"
        )),
    }
}

fn validate_voice(voice: &str) -> Result<(), String> {
    let ok = !voice.is_empty()
        && voice.len() <= 32
        && voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '_'));
    match ok {
        true => Ok(()),
        false => Err(format!("voice {voice:?} is not a speech voice name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(value: serde_json::Value) -> Result<AnnounceArgs, String> {
        let args: AnnounceArgs = serde_json::from_value(value).map_err(|e| e.to_string())?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn announcements_parse_and_are_checked() {
        let args = announce(serde_json::json!({
            "text": "Mohon tetap memakai masker", "priority": "emergency", "repeat": 2
        }))
        .unwrap();
        assert_eq!(args.priority, Priority::Emergency);
        assert_eq!(args.text.as_deref(), Some("Mohon tetap memakai masker"));
        assert!(announce(serde_json::json!({"clip": "chime.wav", "volume": 0.5})).is_ok());
        assert!(announce(serde_json::json!({"tone": {}})).is_ok());
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"text": "a", "clip": "b.wav"}),
            serde_json::json!({"text": "  "}),
            serde_json::json!({"clip": "../etc/passwd"}),
            serde_json::json!({"text": "a", "repeat": 0}),
            serde_json::json!({"text": "a", "volume": 1.5}),
            serde_json::json!({"text": "a", "voice": "id; rm -rf"}),
            serde_json::json!({"text": "a", "priority": "urgent"}),
            serde_json::json!({"tone": {"seconds": 3600}}),
            serde_json::json!({"text": "a", "colour": "red"}),
        ] {
            assert!(announce(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn priorities_are_ordered() {
        assert!(Priority::Emergency > Priority::Alert);
        assert!(Priority::Alert > Priority::Operator);
        assert!(Priority::Operator > Priority::Scheduled);
    }

    #[test]
    fn stop_takes_one_target() {
        let stop = |value| {
            serde_json::from_value::<StopArgs>(value)
                .unwrap()
                .validate()
        };
        assert!(stop(serde_json::json!({"announcement": "a-1"})).is_ok());
        assert!(stop(serde_json::json!({"up_to": "alert"})).is_ok());
        assert!(stop(serde_json::json!({})).is_err());
        assert!(stop(serde_json::json!({"announcement": "a", "up_to": "alert"})).is_err());
    }

    #[test]
    fn schedules_are_checked() {
        let schedule = |value| {
            serde_json::from_value::<ScheduleArgs>(value)
                .map_err(|e| e.to_string())
                .and_then(|s: ScheduleArgs| s.validate().map(|()| s))
        };
        let good = schedule(serde_json::json!({"version": 3, "entries": [
            {"name": "pagi", "times": ["08:00"], "weekdays": ["mon"],
             "announce": {"text": "Selamat pagi"}},
            {"name": "masker", "cron": "*/30 8-16 * * 1-5", "announce": {"clip": "masker.ogg"}}
        ]}))
        .unwrap();
        assert_eq!(good.time_zone, "Asia/Jakarta");
        assert!(
            schedule(serde_json::json!({"version": 1, "entries": [
            {"name": "x", "times": ["08:00"], "cron": "* * * * *", "announce": {"text": "a"}}]}))
            .is_err()
        );
        assert!(
            schedule(serde_json::json!({"version": 1, "entries": [
            {"name": "x", "times": ["08:00"], "announce": {"text": "a"}},
            {"name": "x", "times": ["09:00"], "announce": {"text": "b"}}]}))
            .is_err()
        );
    }
}
