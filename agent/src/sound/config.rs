//! `[sound]`: the sound role's config. The section's presence switches the role on.

use std::path::PathBuf;
use std::time::Duration;

use jiff::tz::TimeZone;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;

use super::player::Settings;
use super::source::Voice;
use pantau_protocol::schedule::QuietHours;

/// The largest replay memory room accepted: each id is written to disk with every change.
const MAX_REMEMBERED: usize = 1_000_000;

/// `[sound]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoundConfig {
    /// ALSA output device (a PCM name such as `default` or `hw:CARD=PCH,DEV=0`); the default
    /// device when unset.
    pub device: Option<String>,
    /// Where audio clips (WAV, MP3, OGG Vorbis, FLAC) are; their file names are the clip names.
    #[serde(default = "default_clips_dir")]
    pub clips_dir: PathBuf,
    /// This agent's own command key (HMAC-SHA256), derived from the collector's master key
    /// for this agent's id: `pantau-collector key derive ID --key-file MASTER --output FILE`.
    /// At least 16 bytes. Commands not signed with it are refused.
    pub key_file: PathBuf,
    /// espeak-ng voice for text (`id`: Indonesian).
    #[serde(default = "default_voice")]
    pub voice: String,
    /// Speech rate in words per minute (80 to 450).
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Speech pitch, 0 to 99.
    #[serde(default = "default_pitch")]
    pub pitch: u32,
    /// Play the chime before announcements that do not say otherwise.
    #[serde(default = "default_true")]
    pub chime: bool,
    /// Global volume, 0.0 to 1.0, multiplied with each announcement's own.
    #[serde(default = "default_volume")]
    pub volume: f64,
    /// Announcements waiting at most; what does not fit is refused and reported.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// An identical announcement within this many seconds of one waiting or playing is
    /// collapsed into it.
    #[serde(default = "default_collapse_window_seconds")]
    pub collapse_window_seconds: u64,
    /// `HH:MM-HH:MM` (local, may wrap past midnight): scheduled announcements do not play then;
    /// operator, alert and emergency ones do.
    pub quiet_hours: Option<String>,
    /// Time zone of the quiet hours (schedules name their own).
    #[serde(default = "pantau_protocol::sound::default_time_zone")]
    pub time_zone: String,
    /// Ids of ordinary announcements remembered until they expire (refusing replays). When
    /// full, the one expiring soonest is forgotten, and commands expiring no later than it
    /// are refused as `over_capacity`.
    #[serde(default = "default_max_remembered_commands")]
    pub max_remembered_commands: usize,
    /// The same for `stop` and emergency announcements, in a room of their own, so ordinary
    /// announcements can never crowd them out.
    #[serde(default = "default_max_remembered_priority_commands")]
    pub max_remembered_priority_commands: usize,
}

fn default_clips_dir() -> PathBuf {
    PathBuf::from("/var/lib/pantau-agent/clips")
}

fn default_voice() -> String {
    "id".to_owned()
}

fn default_rate() -> u32 {
    160
}

fn default_pitch() -> u32 {
    50
}

fn default_true() -> bool {
    true
}

fn default_volume() -> f64 {
    1.0
}

fn default_queue_capacity() -> usize {
    50
}

fn default_collapse_window_seconds() -> u64 {
    60
}

fn default_max_remembered_commands() -> usize {
    20_000
}

/// A stop per announcement and the rare emergency: a day of them fits many times over.
fn default_max_remembered_priority_commands() -> usize {
    5_000
}

/// The config after checking: what the role runs with.
#[derive(Debug, Clone)]
pub struct Checked {
    pub settings: Settings,
    pub key: Vec<u8>,
    /// Replay memory: the ordinary room's and the priority room's size.
    pub remembered: (usize, usize),
}

impl SoundConfig {
    /// Checks every value (no file is read); errors name the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(|_| ())
    }

    /// Checks every value and reads the key file.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        let settings = self.settings()?;
        let key = pantau_protocol::read_key(&self.key_file)
            .map_err(|why| ConfigError::invalid("sound.key_file", self.key_file.display(), why))?;
        Ok(Checked {
            settings,
            key,
            remembered: (
                self.max_remembered_commands,
                self.max_remembered_priority_commands,
            ),
        })
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        if !(80..=450).contains(&self.rate) {
            return Err(ConfigError::invalid(
                "sound.rate",
                self.rate,
                "must be 80 to 450",
            ));
        }
        if self.pitch > 99 {
            return Err(ConfigError::invalid(
                "sound.pitch",
                self.pitch,
                "must be 0 to 99",
            ));
        }
        if !(0.0..=1.0).contains(&self.volume) {
            return Err(ConfigError::invalid(
                "sound.volume",
                self.volume,
                "must be 0.0 to 1.0",
            ));
        }
        if !(1..=1000).contains(&self.queue_capacity) {
            return Err(ConfigError::invalid(
                "sound.queue_capacity",
                self.queue_capacity,
                "must be 1 to 1000",
            ));
        }
        for (field, value) in [
            (
                "sound.max_remembered_commands",
                self.max_remembered_commands,
            ),
            (
                "sound.max_remembered_priority_commands",
                self.max_remembered_priority_commands,
            ),
        ] {
            if !(1..=MAX_REMEMBERED).contains(&value) {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be 1 to {MAX_REMEMBERED}"),
                ));
            }
        }
        if !self.clips_dir.is_absolute() {
            return Err(ConfigError::invalid(
                "sound.clips_dir",
                self.clips_dir.display(),
                "must be an absolute path",
            ));
        }
        // An empty value (`PANTAU_SOUND__QUIET_HOURS=`) switches quiet hours off.
        let quiet_hours = self
            .quiet_hours
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(QuietHours::parse)
            .transpose()
            .map_err(|why| {
                ConfigError::invalid(
                    "sound.quiet_hours",
                    self.quiet_hours.as_deref().unwrap_or(""),
                    why,
                )
            })?;
        let time_zone = TimeZone::get(&self.time_zone).map_err(|_| {
            ConfigError::invalid(
                "sound.time_zone",
                &self.time_zone,
                "is not an IANA time zone",
            )
        })?;
        Ok(Settings {
            device: self.device.clone(),
            clips_dir: self.clips_dir.clone(),
            voice: Voice {
                voice: self.voice.clone(),
                rate: self.rate,
                pitch: self.pitch,
            },
            chime: self.chime,
            volume: self.volume as f32,
            queue_capacity: self.queue_capacity,
            collapse_window: Duration::from_secs(self.collapse_window_seconds),
            quiet_hours,
            time_zone,
        })
    }
}
