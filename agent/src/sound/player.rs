//! The audio thread: owns the output device and the queue, plays one announcement at a time,
//! and reports every announcement's life as events. It runs on its own OS thread, fed by a
//! channel, so audio never blocks the async runtime, and it wakes on every request at once,
//! which is what lets an emergency pre-empt a lower announcement within 100 ms.
//!
//! The device is opened, not assumed: while it cannot be opened every announcement fails with
//! the reason, `pantau_sound_device_up` is 0, and the thread retries every few seconds, so
//! giving the host a device again brings audio back without a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use pantau_protocol::sound::{Priority, StopArgs};
use pantau_protocol::{Event, Severity};
use rodio::cpal::traits::{DeviceTrait, HostTrait};
use rodio::{DeviceSinkBuilder, MixerDeviceSink, Player};
use tokio::time::Instant;
use tracing::{info, warn};

use super::queue::{Admission, Announcement, Queue};
use super::source::{self, Speech, Voice};
use crate::message::unix_millis;
use crate::role::EventSender;
use pantau_protocol::schedule::QuietHours;

/// How often a missing device is tried again.
const DEVICE_RETRY: Duration = Duration::from_secs(3);
/// How often the thread looks at the playing announcement while nothing else happens.
const PLAYING_TICK: Duration = Duration::from_millis(10);
/// Frames of an output period asked for (two periods buffered): about 21 ms at 48 kHz, so a
/// switch is heard at once.
const BUFFER_FRAMES: u32 = 512;

/// A request to the audio thread.
#[derive(Debug)]
pub enum Request {
    Play(Announcement),
    Stop(StopArgs),
}

/// How an announcement ended (or did not start): the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Finished,
    Failed,
    Preempted,
    Stopped,
    Expired,
    Refused,
    Collapsed,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Finished,
        Outcome::Failed,
        Outcome::Preempted,
        Outcome::Stopped,
        Outcome::Expired,
        Outcome::Refused,
        Outcome::Collapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Failed => "failed",
            Outcome::Preempted => "preempted",
            Outcome::Stopped => "stopped",
            Outcome::Expired => "expired",
            Outcome::Refused => "refused",
            Outcome::Collapsed => "collapsed",
        }
    }
}

/// What the metrics read from the audio thread.
#[derive(Debug, Default)]
pub struct Status {
    pub device_up: bool,
    pub queue_length: usize,
    pub playing: Option<(String, Priority)>,
    pub last_success: Option<SystemTime>,
    pub outcomes: BTreeMap<(Priority, Outcome), u64>,
}

/// Shared with the role.
pub type SharedStatus = Arc<Mutex<Status>>;

/// The audio thread's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub device: Option<String>,
    pub clips_dir: PathBuf,
    pub voice: Voice,
    pub chime: bool,
    pub volume: f32,
    pub queue_capacity: usize,
    pub collapse_window: Duration,
    pub quiet_hours: Option<QuietHours>,
    pub time_zone: TimeZone,
}

/// The announcement playing now.
struct Playing {
    announcement: Announcement,
    player: Player,
    speech: Vec<Speech>,
    started: Instant,
}

/// The audio thread's state.
pub struct AudioThread {
    settings: Settings,
    events: EventSender,
    status: SharedStatus,
    queue: Queue,
    device: Option<MixerDeviceSink>,
    device_failed: Arc<AtomicBool>,
    device_error: Option<String>,
    next_retry: Instant,
    playing: Option<Playing>,
}

impl AudioThread {
    pub fn new(settings: Settings, events: EventSender, status: SharedStatus) -> Self {
        let queue = Queue::new(settings.queue_capacity, settings.collapse_window);
        Self {
            settings,
            events,
            status,
            queue,
            device: None,
            device_failed: Arc::new(AtomicBool::new(false)),
            device_error: None,
            next_retry: Instant::now(),
            playing: None,
        }
    }

    /// Serves requests until the channel closes.
    pub fn run(mut self, requests: Receiver<Request>) {
        self.check_device();
        loop {
            let wait = match (&self.playing, &self.device) {
                (Some(_), _) => PLAYING_TICK,
                (None, None) => self.next_retry.saturating_duration_since(Instant::now()),
                (None, Some(_)) => Duration::from_millis(500),
            };
            match requests.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Request::Play(announcement)) => self.admit(announcement),
                Ok(Request::Stop(stop)) => self.stop(&stop),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.check_device();
            self.check_playing();
            self.start_next();
            self.publish_status();
        }
        if let Some(mut playing) = self.playing.take() {
            playing.player.stop();
            playing.speech.iter_mut().for_each(Speech::stop);
        }
    }

    fn admit(&mut self, announcement: Announcement) {
        let now_ms = unix_millis(SystemTime::now());
        if announcement
            .expires_ms
            .is_some_and(|expires| now_ms > expires)
        {
            self.report(
                &announcement,
                Outcome::Expired,
                "expired before it could start",
            );
            return;
        }
        if let Some(quiet) = &self.settings.quiet_hours
            && announcement.priority() == Priority::Scheduled
            && quiet.contains(
                self.settings
                    .time_zone
                    .to_datetime(jiff::Timestamp::now())
                    .time(),
            )
        {
            self.report(&announcement, Outcome::Refused, "quiet hours");
            return;
        }
        let outranks = self
            .playing
            .as_ref()
            .is_some_and(|playing| announcement.priority() > playing.announcement.priority());
        let playing = self.playing.as_ref().map(|playing| &playing.announcement);
        match self.queue.push(announcement.clone(), playing) {
            Admission::Queued => self.event(
                &announcement,
                "announcement_queued",
                Severity::Info,
                "queued",
                &[],
            ),
            Admission::QueuedDisplacing(displaced) => {
                self.event(
                    &announcement,
                    "announcement_queued",
                    Severity::Info,
                    "queued",
                    &[],
                );
                self.report(
                    &displaced,
                    Outcome::Refused,
                    "pushed out of a full queue by a more urgent one",
                );
            }
            Admission::Collapsed { into } => {
                let why = format!("identical to {into}, received within the collapse window");
                self.report(&announcement, Outcome::Collapsed, &why);
                return;
            }
            Admission::Full => {
                self.report(&announcement, Outcome::Refused, "the queue is full");
                return;
            }
        }
        if outranks {
            self.preempt();
        }
    }

    /// Interrupts the playing announcement for a more urgent one.
    fn preempt(&mut self) {
        let Some(mut playing) = self.playing.take() else {
            return;
        };
        playing.player.stop();
        playing.speech.iter_mut().for_each(Speech::stop);
        let announcement = playing.announcement;
        let resumed = self.queue.requeue(announcement.clone());
        let why = match resumed {
            true => "interrupted by a more urgent announcement; it plays again from the start",
            false => "interrupted by a more urgent announcement; dropped",
        };
        self.report(&announcement, Outcome::Preempted, why);
    }

    fn stop(&mut self, stop: &StopArgs) {
        let matches = |announcement: &Announcement| match (&stop.announcement, stop.up_to) {
            (Some(id), _) => announcement.id == *id,
            (None, Some(up_to)) => announcement.priority() <= up_to,
            (None, None) => false,
        };
        if self
            .playing
            .as_ref()
            .is_some_and(|playing| matches(&playing.announcement))
            && let Some(mut playing) = self.playing.take()
        {
            playing.player.stop();
            playing.speech.iter_mut().for_each(Speech::stop);
            self.report(
                &playing.announcement,
                Outcome::Stopped,
                "stopped while playing",
            );
        }
        for announcement in self.queue.remove_where(matches) {
            self.report(&announcement, Outcome::Stopped, "stopped before it started");
        }
    }

    fn check_device(&mut self) {
        if self.device_failed.swap(false, Ordering::Relaxed) && self.device.take().is_some() {
            warn!("the audio device failed; reopening it");
            self.next_retry = Instant::now();
        }
        if self.device.is_some() || Instant::now() < self.next_retry {
            return;
        }
        let (opened, alsa_said) = alsa_messages(|| {
            open_device(self.settings.device.as_deref(), self.device_failed.clone())
        });
        match opened {
            Ok(device) => {
                let config = device.config();
                info!(
                    rate = config.sample_rate().get(),
                    channels = config.channel_count().get(),
                    buffer = ?config.buffer_size(),
                    "audio device open"
                );
                self.device = Some(device);
                self.device_error = None;
            }
            Err(error) => {
                if self.device_error.as_deref() != Some(error.as_str()) {
                    warn!(%error, alsa = ?alsa_said.trim(), "no audio device; announcements fail until it is back");
                }
                self.device_error = Some(error);
                self.next_retry = Instant::now() + DEVICE_RETRY;
            }
        }
    }

    fn check_playing(&mut self) {
        let finished = self
            .playing
            .as_ref()
            .is_some_and(|playing| playing.player.empty());
        if !finished {
            return;
        }
        if let Some(playing) = self.playing.take() {
            let played = playing.started.elapsed().as_secs_f64();
            playing.speech.into_iter().for_each(Speech::finish);
            lock(&self.status).last_success = Some(SystemTime::now());
            let seconds = format!("{played:.2}");
            self.count(&playing.announcement, Outcome::Finished);
            self.event(
                &playing.announcement,
                "announcement_finished",
                Severity::Info,
                &format!("finished after {seconds} s"),
                &[("played_seconds", &seconds)],
            );
        }
    }

    fn start_next(&mut self) {
        while self.playing.is_none() {
            let Some(announcement) = self.queue.pop() else {
                return;
            };
            let now_ms = unix_millis(SystemTime::now());
            if announcement
                .expires_ms
                .is_some_and(|expires| now_ms > expires)
            {
                self.report(&announcement, Outcome::Expired, "expired while waiting");
                continue;
            }
            let Some(device) = &self.device else {
                let why = format!(
                    "no audio device: {}",
                    self.device_error.as_deref().unwrap_or("not open")
                );
                self.report(&announcement, Outcome::Failed, &why);
                continue;
            };
            match build(&self.settings, device, &announcement) {
                Ok((player, speech)) => {
                    self.event(
                        &announcement,
                        "announcement_started",
                        Severity::Info,
                        "started",
                        &[],
                    );
                    self.playing = Some(Playing {
                        announcement,
                        player,
                        speech,
                        started: Instant::now(),
                    });
                }
                Err(why) => self.report(&announcement, Outcome::Failed, &why),
            }
        }
    }

    fn publish_status(&self) {
        let mut status = lock(&self.status);
        status.device_up = self.device.is_some();
        status.queue_length = self.queue.len();
        status.playing = self
            .playing
            .as_ref()
            .map(|p| (p.announcement.id.clone(), p.announcement.priority()));
    }

    /// Counts an outcome and publishes its event.
    fn report(&self, announcement: &Announcement, outcome: Outcome, why: &str) {
        self.count(announcement, outcome);
        let severity = match outcome {
            Outcome::Failed | Outcome::Refused => Severity::Warning,
            _ => Severity::Info,
        };
        let kind = format!("announcement_{}", outcome.as_str());
        self.event(announcement, &kind, severity, why, &[("reason", why)]);
    }

    fn count(&self, announcement: &Announcement, outcome: Outcome) {
        *lock(&self.status)
            .outcomes
            .entry((announcement.priority(), outcome))
            .or_default() += 1;
    }

    fn event(
        &self,
        announcement: &Announcement,
        kind: &str,
        severity: Severity,
        message: &str,
        extra: &[(&str, &str)],
    ) {
        let mut labels: BTreeMap<String, String> = [
            ("announcement".to_owned(), announcement.id.clone()),
            (
                "priority".to_owned(),
                announcement.priority().as_str().to_owned(),
            ),
        ]
        .into();
        if let Some(schedule) = &announcement.schedule {
            labels.insert("schedule".to_owned(), schedule.clone());
        }
        for (key, value) in extra {
            labels.insert((*key).to_owned(), (*value).to_owned());
        }
        self.events.emit(Event {
            kind: kind.to_owned(),
            severity,
            message: format!("{}: {message}", announcement.id),
            labels,
        });
    }
}

/// Prepares everything the announcement plays and starts it.
fn build(
    settings: &Settings,
    device: &MixerDeviceSink,
    announcement: &Announcement,
) -> Result<(Player, Vec<Speech>), String> {
    let args = &announcement.args;
    let player = Player::connect_new(device.mixer());
    player.pause();
    let volume = settings.volume * args.volume.unwrap_or(1.0) as f32;
    player.set_volume(volume);
    if args.chime.unwrap_or(settings.chime) {
        player.append(source::chime());
    }
    let mut speech = Vec::new();
    for _ in 0..args.repeat.unwrap_or(1) {
        if let Some(text) = &args.text {
            let voice = Voice {
                voice: args
                    .voice
                    .clone()
                    .unwrap_or_else(|| settings.voice.voice.clone()),
                ..settings.voice.clone()
            };
            let (running, source) = Speech::start(text, &voice).map_err(|e| e.to_string())?;
            speech.push(running);
            player.append(source);
        } else if let Some(clip) = &args.clip {
            player.append(source::clip(&settings.clips_dir, clip).map_err(|e| e.to_string())?);
        } else if let Some(tone) = &args.tone {
            player.append(source::tone(tone.frequency_hz, tone.seconds));
        }
    }
    player.play();
    Ok((player, speech))
}

/// Runs `body` with alsa-lib's messages on this thread going into a buffer, and returns them
/// with its result. alsa-lib writes them to stderr otherwise, a few lines at every retry of a
/// missing card, past the log's format and its one-warning-per-change. Each call starts a
/// new buffer (the last one is dropped), so what is kept is bounded by one call's messages.
fn alsa_messages<T>(body: impl FnOnce() -> T) -> (T, String) {
    let buffer = alsa::Output::local_error_handler().ok();
    let result = body();
    let said = buffer.map_or_else(String::new, |buffer| buffer.borrow().to_string());
    (result, said)
}

/// Opens the configured output device (or the default one) with a small buffer.
fn open_device(name: Option<&str>, failed: Arc<AtomicBool>) -> Result<MixerDeviceSink, String> {
    let host = rodio::cpal::default_host();
    let device = match name {
        None => host
            .default_output_device()
            .ok_or("no default output device")?,
        Some(name) => {
            let devices = host
                .output_devices()
                .map_err(|error| format!("cannot list output devices: {error}"))?;
            let mut seen = Vec::new();
            let mut found = None;
            for device in devices {
                let id = device.id().map(|id| id.to_string()).unwrap_or_default();
                let description = device
                    .description()
                    .map(|d| d.name().to_owned())
                    .unwrap_or_default();
                if id == name || id.ends_with(&format!(":{name}")) || description == name {
                    found = Some(device);
                    break;
                }
                seen.push(id);
            }
            found
                .ok_or_else(|| format!("no output device {name:?} (found: {})", seen.join(", ")))?
        }
    };
    let on_error = move |error: rodio::cpal::Error| {
        warn!(%error, "audio stream error");
        failed.store(true, Ordering::Relaxed);
    };
    let builder = |device| {
        DeviceSinkBuilder::from_device(device)
            .map_err(|error| format!("cannot use the output device: {error}"))
    };
    let small = builder(device.clone())?
        .with_buffer_size(rodio::cpal::BufferSize::Fixed(BUFFER_FRAMES))
        .with_error_callback(on_error.clone())
        .open_stream();
    let mut sink = match small {
        Ok(sink) => sink,
        // Not every device takes that buffer size; its default one is still usable.
        Err(error) => {
            warn!(%error, frames = BUFFER_FRAMES, "the output device refused a small buffer; using its default");
            builder(device)?
                .with_error_callback(on_error)
                .open_stream()
                .map_err(|error| format!("cannot open the output device: {error}"))?
        }
    };
    sink.log_on_drop(false);
    Ok(sink)
}

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}
