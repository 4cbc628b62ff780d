//! The sound agent's replay memory never blocks a stop or an emergency: its ordinary room is
//! filled to the brim (the gauge says so) and a stop and an emergency still play within the
//! usual 100 ms, measured in the ALSA capture; a command the full room had to forget stays
//! refused. And the attack that filled it, ~20,000 day-long announcements, is stopped at the
//! collector: beyond `announcements.max_unexpired_per_agent` the API answers 429 and the
//! Alertmanager webhook announces nothing, each refusal counted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{CommandMessage, derive_agent_key};
use pantau_tests::{
    Agent, AudioCapture, Collector, Mosquitto, TestDir, derive_agent_key_file, example_config,
    http_post, tone_hz, wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const MASTER: &[u8] = b"kominfo-master-key-for-tests-0001";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;
const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now() -> f64 {
    now_ms() as f64 / 1000.0
}

/// Quiet hours from two hours ago to two hours ahead in Asia/Jakarta (UTC+7, no DST), so the
/// filling `scheduled` announcements are taken (and remembered) but never play.
fn quiet_hours_around_now() -> String {
    let minutes = (now_ms() / 60_000 + 7 * 60).rem_euclid(24 * 60);
    let at = |m: i64| {
        let m = m.rem_euclid(24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("{}-{}", at(minutes - 120), at(minutes + 120))
}

/// A broker, a collector that shows the agent's events and series, and a sound agent with
/// its own derived key and an ordinary room of `room` ids, playing into a capture.
struct Speaker {
    agent: Agent,
    collector: Collector,
    broker: Mosquitto,
    capture: AudioCapture,
    id: String,
    key: String,
    _dir: TestDir,
}

impl Speaker {
    fn start(id: &str, room: usize) -> Speaker {
        let dir = TestDir::new();
        let broker = Mosquitto::start();
        let collector = Collector::with_broker(&dir, &broker);
        let capture = AudioCapture::new(&dir);
        let master = dir.write("master.key", MASTER);
        let key_file = derive_agent_key_file(dir.path(), &master, id);
        let clips = dir.join("clips");
        std::fs::create_dir_all(&clips).expect("create the clips dir");
        let room = room.to_string();
        let quiet = quiet_hours_around_now();
        let mut env = capture.env();
        for (name, value) in [
            ("PANTAU_SOUND__KEY_FILE", key_file.display().to_string()),
            ("PANTAU_SOUND__CLIPS_DIR", clips.display().to_string()),
            ("PANTAU_SOUND__QUIET_HOURS", quiet),
            ("PANTAU_SOUND__MAX_REMEMBERED_COMMANDS", room),
        ] {
            env.push((name.to_owned(), value));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut agent = Agent::start_config(
            &dir,
            "agent-sound.toml",
            id,
            "office",
            &broker.url(),
            1,
            &env,
        );
        agent.guard().wait_for_log("subscribed to commands", WAIT);
        Speaker {
            agent,
            collector,
            broker,
            capture,
            id: id.to_owned(),
            key: derive_agent_key(MASTER, id),
            _dir: dir,
        }
    }

    /// The payload of command `name` signed with the agent's key, expiring at `expires_ms`.
    fn payload(&self, name: &str, id: &str, args: Value, expires_ms: i64) -> Vec<u8> {
        let mut message = CommandMessage {
            schema: pantau_protocol::SCHEMA_VERSION,
            agent: self.id.clone(),
            site: "office".to_owned(),
            id: id.to_owned(),
            timestamp_ms: now_ms(),
            expires_ms: Some(expires_ms),
            args,
            hmac_version: None,
            hmac: None,
        };
        message.sign(self.key.as_bytes(), "pantau", name);
        serde_json::to_vec(&message).expect("a command serializes")
    }

    fn publish(&self, name: &str, payload: &[u8]) {
        let topic = format!("pantau/v1/office/{}/cmd/{name}", self.id);
        self.broker.mosquitto_pub(&topic, payload, false);
    }

    fn events(&self) -> Vec<Value> {
        let (_, body) = self
            .collector
            .api(&format!("/api/v1/agents/{}/events", self.id));
        body["events"].as_array().cloned().unwrap_or_default()
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

    fn series(&self, name: &str, label: &str) -> String {
        format!(r#"{name}{{instance="{}",{label},site="office"}}"#, self.id)
    }

    fn room(&self, room: &str) -> Option<f64> {
        self.collector.sample(&self.series(
            "pantau_sound_remembered_commands",
            &format!(r#"room="{room}""#),
        ))
    }

    fn capacity(&self, room: &str) -> Option<f64> {
        self.collector.sample(&self.series(
            "pantau_sound_remembered_commands_capacity",
            &format!(r#"room="{room}""#),
        ))
    }

    /// The first capture chunk after `after` whose tone is within `hz`.
    fn first_tone(&self, after: f64, hz: std::ops::Range<f64>) -> Option<f64> {
        let chunks = self.capture.chunks();
        let mut previous_end = 0;
        chunks.iter().find_map(|chunk| {
            let samples = self.capture.left(previous_end, chunk.end_byte);
            previous_end = chunk.end_byte;
            (chunk.time > after && chunk.peak >= LOUD && hz.contains(&tone_hz(&samples)))
                .then_some(chunk.time)
        })
    }
}

#[test]
fn a_full_ordinary_room_still_lets_a_stop_and_an_emergency_play_within_100_ms() {
    const ROOM: usize = 40;
    let speaker = Speaker::start("replay-sound", ROOM);
    let start_ms = now_ms();
    // Day-long announcements, each expiring a second after the one before; `scheduled`, so
    // the quiet hours keep them silent, but each is taken and its id remembered.
    let fill: Vec<Vec<u8>> = (0..ROOM as i64)
        .map(|n| {
            speaker.payload(
                "announce",
                &format!("fill-{n}"),
                json!({"tone": {"frequency_hz": 300, "seconds": 0.2}, "chime": false}),
                start_ms + 23 * HOUR_MS + n * 1000,
            )
        })
        .collect();
    for payload in &fill {
        speaker.publish("announce", payload);
    }
    speaker.wait_for_event(&format!("fill-{}", ROOM - 1), "announcement_refused");
    speaker.collector.wait_for_sample(
        &speaker.series("pantau_sound_remembered_commands", r#"room="ordinary""#),
        WAIT,
        |v| v == ROOM as f64,
    );
    assert_eq!(speaker.capacity("ordinary"), Some(ROOM as f64));
    assert_eq!(speaker.room("priority"), Some(0.0));

    // An ordinary announcement still plays: the full room forgets fill-0, the soonest to
    // expire, and stays full.
    speaker.publish(
        "announce",
        &speaker.payload(
            "announce",
            "long-1",
            json!({"tone": {"frequency_hz": 440, "seconds": 20}, "priority": "operator", "chime": false}),
            now_ms() + 60_000,
        ),
    );
    speaker.wait_for_event("long-1", "announcement_started");
    wait_until("the long tone in the capture", WAIT, || {
        (speaker
            .capture
            .chunks()
            .iter()
            .filter(|c| c.peak >= LOUD)
            .count()
            > 25)
            .then_some(())
    });
    speaker.collector.wait_for_sample(
        &speaker.series(
            "pantau_sound_forgotten_commands_total",
            r#"room="ordinary""#,
        ),
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(
        speaker.room("ordinary"),
        Some(ROOM as f64),
        "the ordinary room is full"
    );

    // The emergency pre-empts at once.
    let sent = now();
    speaker.publish(
        "announce",
        &speaker.payload(
            "announce",
            "emergency-1",
            json!({"tone": {"frequency_hz": 1000, "seconds": 1}, "priority": "emergency", "chime": false}),
            now_ms() + 60_000,
        ),
    );
    speaker.wait_for_event("emergency-1", "announcement_finished");
    let switched = speaker
        .first_tone(sent - 1.0, 900.0..1100.0)
        .unwrap_or_else(|| panic!("no 1 kHz tone captured\n{}", speaker.agent.logs()));
    let latency = switched - sent;
    eprintln!("emergency {:.0} ms after it was sent", latency * 1000.0);
    assert!(
        latency < 0.1,
        "the emergency played {:.0} ms after it was sent",
        latency * 1000.0
    );

    // The long tone plays again after it; a stop ends it at once.
    let finished = now();
    wait_until("the long tone again", WAIT, || {
        speaker.first_tone(finished, 400.0..480.0)
    });
    let sent = now();
    speaker.publish(
        "stop",
        &speaker.payload(
            "stop",
            "stop-1",
            json!({"up_to": "emergency"}),
            now_ms() + 60_000,
        ),
    );
    speaker.wait_for_event("long-1", "announcement_stopped");
    let silent = wait_until("silence in the capture", WAIT, || {
        speaker
            .capture
            .chunks()
            .into_iter()
            .find(|c| c.time > sent && c.peak < LOUD)
    });
    let latency = silent.time - sent;
    eprintln!("silent {:.0} ms after the stop was sent", latency * 1000.0);
    assert!(
        latency < 0.1,
        "silent {:.0} ms after the stop",
        latency * 1000.0
    );
    speaker.collector.wait_for_sample(
        &speaker.series("pantau_sound_remembered_commands", r#"room="priority""#),
        WAIT,
        |v| v == 2.0,
    );

    // Forgetting reopened no replay: fill-0 again is refused by the floor, as is a new
    // command expiring no later; fill-1, still remembered, is a plain replay.
    speaker.publish("announce", &fill[0]);
    let refused = speaker.wait_for_rejection("fill-0");
    assert_eq!(refused["labels"]["reason"], "over_capacity", "{refused}");
    speaker.publish(
        "announce",
        &speaker.payload(
            "announce",
            "early-1",
            json!({"tone": {"seconds": 0.2}, "chime": false}),
            start_ms + 23 * HOUR_MS - 1000,
        ),
    );
    let refused = speaker.wait_for_rejection("early-1");
    assert_eq!(refused["labels"]["reason"], "over_capacity", "{refused}");
    speaker.publish("announce", &fill[1]);
    let refused = speaker.wait_for_rejection("fill-1");
    assert_eq!(refused["labels"]["reason"], "replayed", "{refused}");
    speaker.collector.wait_for_sample(
        &speaker.series(
            "pantau_agent_rejected_commands_total",
            r#"reason="over_capacity""#,
        ),
        WAIT,
        |v| v == 2.0,
    );
    assert!(
        !speaker.events().iter().any(|e| {
            e["labels"]["announcement"] == "fill-0" && e["kind"] == "announcement_started"
        }),
        "fill-0 never played"
    );
}

/// The collector's side of the ~20,000-announcement attack, with a cap of 20 instead of
/// 1,000: concurrent day-long announcements beyond it get 429 naming the count, the webhook
/// announces nothing more, emergencies and stops still go through, and each refusal is counted.
#[test]
fn the_collector_caps_unexpired_announcements_per_agent_through_the_api_and_the_webhook() {
    const CAP: usize = 20;
    const TOKEN: &str = "operator-token-0123456789abcdef";
    const SPEAKER: &str = "capped-sound";
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let master = dir.write("master.key", MASTER);
    let tokens = dir.write("api-tokens", format!("{TOKEN}\n"));
    let config = std::fs::read_to_string(example_config("collector.toml"))
        .expect("collector example")
        + &format!(
            r#"
[[announcements.alert_rules]]
name = "link-down"
alertname = "LinkDown"
message = "Perhatian: jaringan {{{{ $labels.link }}}} terputus"
targets = ["{SPEAKER}"]
"#
        );
    let config = dir.write("collector.toml", config);
    let master_path = master.display().to_string();
    let tokens = tokens.display().to_string();
    let storage = dir.join("storage").display().to_string();
    let cap = CAP.to_string();
    let collector = Collector::with_config(
        &dir,
        &broker,
        &config,
        &[
            ("PANTAU_ANNOUNCEMENTS__KEY_FILE", master_path.as_str()),
            (
                "PANTAU_ANNOUNCEMENTS__MAX_UNEXPIRED_PER_AGENT",
                cap.as_str(),
            ),
            ("PANTAU_ANNOUNCEMENTS__RESEND_INTERVAL_SECONDS", "1"),
            ("PANTAU_API__TOKEN_FILE", tokens.as_str()),
            ("PANTAU_STORAGE__DIR", storage.as_str()),
        ],
    );
    let capture = AudioCapture::new(&dir);
    let _sound = Agent::start_sound(&dir, SPEAKER, "office", &broker.url(), &capture, &master);
    let url = collector.url();
    let post = |path: &str, body: &Value| -> (u16, Value) {
        let (status, text) = http_post(
            &format!("{url}{path}"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {TOKEN}")),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|error| panic!("POST {path}: {error}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let quiet = json!({
        "tone": {"frequency_hz": 300, "seconds": 0.05}, "chime": false, "volume": 0.05,
        "targets": [SPEAKER], "expires_in_seconds": 86_400
    });
    // The first is taken once the collector has seen the agent's birth.
    let first = wait_until("the agent known to the collector", WAIT, || {
        let (status, body) = post("/api/v1/announcements", &quiet);
        (status == 201).then_some(body)
    });
    assert!(first["id"].is_string(), "{first}");

    // 40 more from 4 threads at once: the cap holds under concurrency.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..10)
                        .map(|_| post("/api/v1/announcements", &quiet))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a posting thread"))
            .collect()
    });
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(created + 1, CAP, "exactly the cap is taken: {answers:?}");
    assert_eq!(refused.len(), 41 - CAP, "{answers:?}");
    let message = refused[0]["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "agent '{SPEAKER}' has {CAP} unexpired announcements"
        )) && message.contains(&format!("({CAP})")),
        "{message}"
    );
    let counter = r#"pantau_collector_api_refused_announcements_total{reason="agent_cap"}"#;
    assert_eq!(collector.sample(counter), Some((41 - CAP) as f64));

    // The webhook goes through the same cap: nothing announced, the refusal listed.
    let webhook = json!({
        "version": "4", "status": "firing", "receiver": "pantau", "groupKey": "{}:{}",
        "alerts": [{
            "status": "firing", "fingerprint": "cap-1",
            "labels": {"alertname": "LinkDown", "link": "gor-dc"}, "annotations": {}
        }]
    });
    let (status, outcome) = post("/api/v1/alertmanager", &webhook);
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["announced"], json!([]), "{outcome}");
    let reason = outcome["skipped"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("has {CAP} unexpired announcements")),
        "{outcome}"
    );
    assert_eq!(collector.sample(counter), Some((42 - CAP) as f64));

    // An emergency and a stop are not capped, and the emergency plays.
    let (status, emergency) = post(
        "/api/v1/announcements",
        &json!({"tone": {"frequency_hz": 1000, "seconds": 0.3}, "chime": false,
                "priority": "emergency", "targets": [SPEAKER]}),
    );
    assert_eq!(status, 201, "{emergency}");
    let id = emergency["id"].as_str().unwrap_or_default().to_owned();
    collector.wait_for_api(&format!("/api/v1/announcements/{id}"), 200, WAIT, |row| {
        row["targets"][0]["status"] == "finished"
    });
    let first_id = first["id"].as_str().unwrap_or_default();
    let (status, stopped) = post(
        &format!("/api/v1/announcements/{first_id}/stop"),
        &json!({}),
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(collector.sample(counter), Some((42 - CAP) as f64));
}
