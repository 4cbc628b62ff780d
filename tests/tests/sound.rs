//! The sound role end to end: signed commands through real Mosquitto to a real agent whose
//! audio goes through ALSA into a capture file read at real time, and the announcement's
//! events at the collector.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_tests::{
    Agent, AudioCapture, BYTES_PER_SECOND, Collector, Mosquitto, TestDir, rms, run_with_timeout,
    signed_command, tone_hz, wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;

/// A broker, a collector and a sound agent whose audio is captured.
struct Sound {
    // Dropped in this order: the processes before the dir that holds their logs.
    agent: Option<Agent>,
    collector: Collector,
    broker: Mosquitto,
    capture: AudioCapture,
    id: String,
    dir: TestDir,
}

impl Sound {
    fn start(id: &str) -> Sound {
        let mut sound = Sound::prepare(id, AudioCapture::new);
        sound.start_agent();
        sound
    }

    /// Everything but the agent, which `start_agent` starts.
    fn prepare(id: &str, capture: impl FnOnce(&TestDir) -> AudioCapture) -> Sound {
        let dir = TestDir::new();
        // Persistence keeps the collector's session across a broker restart, so what the agent
        // sends before the collector is back is queued for it, not lost.
        let broker = Mosquitto::builder().persistence(true).start();
        let collector = Collector::with_broker(&dir, &broker);
        let capture = capture(&dir);
        dir.write("sound.key", KEY);
        std::fs::create_dir_all(dir.join("clips")).expect("create the clips dir");
        Sound {
            dir,
            broker,
            collector,
            capture,
            agent: None,
            id: id.to_owned(),
        }
    }

    fn start_agent(&mut self) {
        self.start_agent_offline();
        if let Some(agent) = self.agent.as_mut() {
            agent.guard().wait_for_log("subscribed to commands", WAIT);
        }
    }

    /// Starts the agent without waiting for the broker.
    fn start_agent_offline(&mut self) {
        let key = self.dir.join("sound.key").display().to_string();
        let clips = self.dir.join("clips").display().to_string();
        let mut env: Vec<(String, String)> = self.capture.env();
        env.push(("PANTAU_SOUND__KEY_FILE".to_owned(), key));
        env.push(("PANTAU_SOUND__CLIPS_DIR".to_owned(), clips));
        env.push(("PANTAU_SOUND__QUIET_HOURS".to_owned(), String::new()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.agent = Some(Agent::start_config(
            &self.dir,
            "agent-sound.toml",
            &self.id,
            "office",
            &self.broker.url(),
            1,
            &env,
        ));
    }

    fn command(
        &self,
        name: &str,
        id: &str,
        args: Value,
        valid_ms: Option<i64>,
        key: Option<&[u8]>,
    ) {
        let payload = signed_command(&self.id, "office", name, id, args, valid_ms, key);
        self.broker.mosquitto_pub(
            &format!("pantau/v1/office/{}/cmd/{name}", self.id),
            &payload,
            false,
        );
    }

    fn announce(&self, id: &str, args: Value) {
        self.command("announce", id, args, Some(60_000), Some(KEY));
    }

    /// The agent's events at the collector, oldest first.
    fn events(&self) -> Vec<Value> {
        let (_, body) = self
            .collector
            .api(&format!("/api/v1/agents/{}/events", self.id));
        let mut events = body["events"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// Kinds of the events about announcement `id`, oldest first.
    fn life_of(&self, id: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["labels"]["announcement"] == id)
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn wait_for_event(&self, id: &str, kind: &str) -> Value {
        wait_until(&format!("{kind} of {id}"), WAIT, || {
            self.events()
                .into_iter()
                .find(|e| e["labels"]["announcement"] == id && e["kind"] == kind)
        })
    }

    fn wait_for_rejection(&self, command_id: &str) -> Value {
        wait_until(&format!("the rejection of {command_id}"), WAIT, || {
            self.events().into_iter().find(|e| {
                e["kind"] == "command_rejected" && e["labels"]["command_id"] == command_id
            })
        })
    }

    fn sample(&self, name: &str, labels: &str) -> Option<f64> {
        let labels = match labels {
            "" => format!(r#"instance="{}",site="office""#, self.id),
            extra => format!(r#"instance="{}",{extra},site="office""#, self.id),
        };
        self.collector.sample(&format!("{name}{{{labels}}}"))
    }

    fn logs(&self) -> String {
        self.agent.as_ref().map(Agent::logs).unwrap_or_default()
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long espeak-ng speaks `text` with the agent's settings, from its own WAV.
fn speech_seconds(dir: &TestDir, text: &str) -> f64 {
    let wav: PathBuf = dir.join("reference.wav");
    let output = run_with_timeout(
        Command::new("espeak-ng")
            .args(["-v", "id", "-s", "160", "-p", "50", "-w"])
            .arg(&wav)
            .arg(text),
        b"",
        Duration::from_secs(20),
    );
    assert!(output.status.success());
    let bytes = std::fs::read(&wav).expect("espeak-ng wrote its WAV");
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    (bytes.len() - 44) as f64 / 2.0 / f64::from(rate)
}

/// A mono 16-bit WAV of a `hz` sine lasting `seconds`, as a clip.
fn write_tone_clip(path: &std::path::Path, hz: f64, seconds: f64) {
    let rate = 48_000u32;
    let samples = (f64::from(rate) * seconds) as u32;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&(samples * 2).to_le_bytes());
    for n in 0..samples {
        let t = f64::from(n) / f64::from(rate);
        let value = (0.5 * (std::f64::consts::TAU * hz * t).sin() * 32767.0) as i16;
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write the clip");
}

#[test]
fn a_signed_announcement_is_spoken_and_its_life_reported_in_order() {
    let sound = Sound::start("office-sound-1");
    let text = "Mohon tetap memakai masker, menjaga jarak, dan mencuci tangan";
    let expected = speech_seconds(&sound.dir, text);
    sound.announce(
        "ann-1",
        json!({"text": text, "priority": "operator", "chime": false}),
    );
    sound.wait_for_event("ann-1", "announcement_finished");
    assert_eq!(
        sound.life_of("ann-1"),
        [
            "announcement_queued",
            "announcement_started",
            "announcement_finished"
        ],
        "{}",
        sound.logs()
    );
    let spans = sound.capture.loud_spans(LOUD, 25);
    let (first, last) = *spans
        .first()
        .unwrap_or_else(|| panic!("nothing played\n{}", sound.logs()));
    let played = (last.end_byte - first.end_byte) as f64 / BYTES_PER_SECOND + 0.02;
    assert!(
        (played - expected).abs() <= expected * 0.2,
        "played {played:.2} s of speech, espeak-ng makes {expected:.2} s"
    );
    let speech = sound.capture.left(first.end_byte, last.end_byte);
    let loudness = rms(&speech);
    assert!(loudness > 0.02, "speech RMS {loudness:.3}");
    // The counters arrive with the next metrics message.
    wait_until("the finished counter", WAIT, || {
        sound
            .sample(
                "pantau_sound_announcements_total",
                r#"outcome="finished",priority="operator""#,
            )
            .filter(|v| *v == 1.0)
    });
    assert_eq!(sound.sample("pantau_sound_device_up", ""), Some(1.0));
    assert!(
        sound
            .sample("pantau_sound_last_success_timestamp_seconds", "")
            .is_some_and(|at| (at - now()).abs() < 60.0)
    );
}

#[test]
fn a_clip_plays_after_the_chime() {
    let mut sound = Sound::prepare("office-sound-2", AudioCapture::new);
    write_tone_clip(&sound.dir.join("clips/tes-440.wav"), 440.0, 1.5);
    sound.start_agent();
    sound.announce("clip-1", json!({"clip": "tes-440.wav", "chime": true}));
    sound.wait_for_event("clip-1", "announcement_finished");
    let spans = sound.capture.loud_spans(LOUD, 10);
    let (first, last) = *spans
        .first()
        .unwrap_or_else(|| panic!("nothing played\n{}", sound.logs()));
    let played = (last.end_byte - first.end_byte) as f64 / BYTES_PER_SECOND + 0.02;
    assert!(
        (played - 2.3).abs() <= 2.3 * 0.2,
        "chime 0.8 s + clip 1.5 s, played {played:.2} s"
    );
    // The chime's bell (880 then 660 Hz) comes first, the clip's 440 Hz after it.
    let at = |offset: f64| first.end_byte + (offset * BYTES_PER_SECOND) as usize;
    let chime = tone_hz(&sound.capture.left(at(0.05), at(0.35)));
    let clip = tone_hz(&sound.capture.left(at(1.2), at(1.9)));
    assert!((800.0..960.0).contains(&chime), "chime at {chime:.0} Hz");
    assert!((420.0..460.0).contains(&clip), "clip at {clip:.0} Hz");
}

#[test]
fn an_emergency_preempts_a_long_scheduled_announcement_within_100_ms() {
    let sound = Sound::start("office-sound-3");
    sound.announce(
        "long-1",
        json!({"tone": {"frequency_hz": 440, "seconds": 20}, "priority": "scheduled", "chime": false}),
    );
    sound.wait_for_event("long-1", "announcement_started");
    // Let it play a moment, so the switch is visible in the capture.
    wait_until("the long tone in the capture", WAIT, || {
        (sound.capture.loud_spans(LOUD, 10).len() == 1
            && sound
                .capture
                .chunks()
                .iter()
                .filter(|c| c.peak >= LOUD)
                .count()
                > 25)
            .then_some(())
    });
    let sent = now();
    sound.announce(
        "emergency-1",
        json!({"tone": {"frequency_hz": 1000, "seconds": 1}, "priority": "emergency", "chime": false}),
    );
    sound.wait_for_event("long-1", "announcement_preempted");
    sound.wait_for_event("emergency-1", "announcement_finished");
    // The first 20 ms chunk whose tone is the emergency's.
    let chunks = sound.capture.chunks();
    let mut previous_end = 0;
    let switched = chunks.iter().find_map(|chunk| {
        let samples = sound.capture.left(previous_end, chunk.end_byte);
        previous_end = chunk.end_byte;
        (chunk.time > sent - 1.0 && (900.0..1100.0).contains(&tone_hz(&samples)))
            .then_some(chunk.time)
    });
    let switched = switched.unwrap_or_else(|| panic!("no 1 kHz tone captured\n{}", sound.logs()));
    let latency = switched - sent;
    eprintln!(
        "switched {:.0} ms after the command was sent",
        latency * 1000.0
    );
    assert!(
        latency < 0.1,
        "switched {:.0} ms after the command",
        latency * 1000.0
    );
    // The pre-empted one plays again from the start afterwards (its default policy).
    let preempted = sound.wait_for_event("long-1", "announcement_preempted");
    assert!(
        preempted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("plays again"),
        "{preempted}"
    );
}

#[test]
fn stop_ends_a_playing_announcement_within_100_ms() {
    let sound = Sound::start("office-sound-4");
    sound.announce(
        "tone-1",
        json!({"tone": {"frequency_hz": 600, "seconds": 20}, "priority": "operator", "chime": false}),
    );
    wait_until("the tone in the capture", WAIT, || {
        (sound
            .capture
            .chunks()
            .iter()
            .filter(|c| c.peak >= LOUD)
            .count()
            > 25)
            .then_some(())
    });
    let sent = now();
    sound.command(
        "stop",
        "stop-1",
        json!({"announcement": "tone-1"}),
        Some(60_000),
        Some(KEY),
    );
    sound.wait_for_event("tone-1", "announcement_stopped");
    let silent = wait_until("silence in the capture", WAIT, || {
        sound
            .capture
            .chunks()
            .into_iter()
            .find(|c| c.time > sent && c.peak < LOUD)
    });
    let latency = silent.time - sent;
    eprintln!("silent {:.0} ms after the stop was sent", latency * 1000.0);
    for chunk in sound
        .capture
        .chunks()
        .iter()
        .filter(|c| (c.time - sent).abs() < 0.6)
    {
        eprintln!("{:.3} {} {}", chunk.time, chunk.end_byte, chunk.peak);
    }
    eprintln!(
        "{}",
        sound
            .logs()
            .lines()
            .filter(|l| l.contains("command carried out"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        latency < 0.1,
        "silent {:.0} ms after the stop",
        latency * 1000.0
    );
}

#[test]
fn refused_commands_play_nothing_and_say_why() {
    let sound = Sound::start("office-sound-5");
    let args = json!({"tone": {"seconds": 1}, "chime": false});
    sound.command("announce", "unsigned-1", args.clone(), Some(60_000), None);
    sound.command(
        "announce",
        "wrong-key-1",
        args.clone(),
        Some(60_000),
        Some(b"not the office key at all"),
    );
    sound.command(
        "announce",
        "expired-1",
        args.clone(),
        Some(-1000),
        Some(KEY),
    );
    sound.broker.mosquitto_pub(
        &format!("pantau/v1/office/{}/cmd/announce", sound.id),
        b"{\"schema\":1,\"agent\":",
        false,
    );
    sound.command(
        "announce",
        "bad-args-1",
        json!({"text": "a", "clip": "b.wav"}),
        Some(60_000),
        Some(KEY),
    );
    for (id, reason) in [
        ("unsigned-1", "unsigned"),
        ("wrong-key-1", "bad_signature"),
        ("expired-1", "expired"),
        ("bad-args-1", "invalid_arguments"),
    ] {
        let event = sound.wait_for_rejection(id);
        assert_eq!(event["labels"]["reason"], reason, "{event}");
    }
    wait_until("the malformed command's rejection", WAIT, || {
        sound
            .events()
            .into_iter()
            .find(|e| e["kind"] == "command_rejected" && e["labels"]["reason"] == "invalid_json")
    });
    // A replay of a command already carried out is refused, even a byte-identical one.
    let payload = signed_command(
        &sound.id,
        "office",
        "announce",
        "once-1",
        json!({"tone": {"seconds": 0.2}, "chime": false}),
        Some(60_000),
        Some(KEY),
    );
    let topic = format!("pantau/v1/office/{}/cmd/announce", sound.id);
    sound.broker.mosquitto_pub(&topic, &payload, false);
    sound.wait_for_event("once-1", "announcement_finished");
    // The tone's last frames are still in the audio buffers when the player reports it
    // finished: wait for silence in the capture before the replay.
    let before_replay = wait_until("silence after once-1", WAIT, || {
        let chunks = sound.capture.chunks();
        let last_loud = chunks.iter().rposition(|c| c.peak >= LOUD)?;
        (chunks.len() > last_loud + 5).then_some(chunks.len())
    });
    sound.broker.mosquitto_pub(&topic, &payload, false);
    assert_eq!(
        sound.wait_for_rejection("once-1")["labels"]["reason"],
        "replayed"
    );
    // Nothing but the one accepted tone was ever played.
    let spans = sound.capture.loud_spans(LOUD, 10);
    assert_eq!(spans.len(), 1, "only once-1 played: {spans:?}");
    assert!(
        sound.capture.chunks()[before_replay..]
            .iter()
            .all(|c| c.peak < LOUD)
    );
    for reason in [
        "unsigned",
        "bad_signature",
        "expired",
        "replayed",
        "invalid_json",
    ] {
        let counter = format!(r#"reason="{reason}""#);
        wait_until(&format!("the {reason} counter"), WAIT, || {
            sound
                .sample("pantau_agent_rejected_commands_total", &counter)
                .filter(|v| *v >= 1.0)
        });
    }
}

#[test]
fn without_a_device_announcements_fail_and_the_device_comes_back_without_a_restart() {
    let mut sound = Sound::prepare("office-sound-6", AudioCapture::without_device);
    sound.start_agent();
    wait_until("device_up 0", WAIT, || {
        sound
            .sample("pantau_sound_device_up", "")
            .filter(|v| *v == 0.0)
    });
    sound.announce("nodev-1", json!({"tone": {"seconds": 1}, "chime": false}));
    let failed = sound.wait_for_event("nodev-1", "announcement_failed");
    assert!(
        failed["labels"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no audio device"),
        "{failed}"
    );
    sound.capture.connect_device();
    wait_until("device_up 1", WAIT, || {
        sound
            .sample("pantau_sound_device_up", "")
            .filter(|v| *v == 1.0)
    });
    sound.announce("dev-1", json!({"tone": {"seconds": 0.5}, "chime": false}));
    sound.wait_for_event("dev-1", "announcement_finished");
    assert!(!sound.capture.loud_spans(LOUD, 10).is_empty());
}

#[test]
fn the_stored_schedule_plays_with_no_broker_after_a_restart() {
    let mut sound = Sound::start("office-sound-7");
    // An entry a few seconds from now, in WIB (UTC+7, no daylight saving).
    let due = (now() + 12.0).floor();
    let local = (due as i64 + 7 * 3600).rem_euclid(86_400);
    let time = format!(
        "{:02}:{:02}:{:02}",
        local / 3600,
        local / 60 % 60,
        local % 60
    );
    let schedule = json!({"version": 7, "entries": [{
        "name": "masker", "times": [time],
        "announce": {"tone": {"frequency_hz": 700, "seconds": 1}, "chime": false}
    }]});
    let payload = signed_command(
        &sound.id,
        "office",
        "schedule",
        "schedule-7",
        schedule,
        None,
        Some(KEY),
    );
    let topic = format!("pantau/v1/office/{}/cmd/schedule", sound.id);
    sound.broker.mosquitto_pub(&topic, &payload, true);
    wait_until("schedule_applied", WAIT, || {
        sound
            .events()
            .into_iter()
            .find(|e| e["kind"] == "schedule_applied" && e["labels"]["version"] == "7")
    });

    // The broker goes away, and the agent restarts without it.
    sound.broker.kill();
    sound.agent = None;
    sound.start_agent_offline();
    let played = wait_until("the scheduled tone", Duration::from_secs(30), || {
        sound
            .capture
            .loud_spans(LOUD, 10)
            .into_iter()
            .find(|(first, _)| first.time > due - 1.0)
    });
    let late = played.0.time - due;
    eprintln!(
        "the scheduled entry played {:.0} ms after its time",
        late * 1000.0
    );
    assert!(
        (0.0..1.5).contains(&late),
        "played {late:.2} s after its time"
    );

    // Back online, its events arrive.
    sound.broker.restart();
    let id = format!("masker@{}", due as i64);
    sound.wait_for_event(&id, "announcement_finished");
    assert_eq!(
        sound.life_of(&id),
        [
            "announcement_queued",
            "announcement_started",
            "announcement_finished"
        ]
    );
}
