//! Announcements through the collector's API end to end: real Mosquitto, a real collector
//! signing with the sound agents' key and keeping its history in SQLite, and a real sound agent
//! whose audio goes through ALSA into a capture file.

use std::time::Duration;

use std::process::{Command, Output};

use pantau_tests::{
    Agent, Alertmanager, AudioCapture, Collector, Mosquitto, TestDir, derive_agent_key_file,
    example_config, http_post, pantau_binary, run_with_timeout, wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
const TOKEN: &str = "operator-token-0123456789";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;
const AGENT: &str = "aula-sound";

struct Setup {
    config: std::path::PathBuf,
    agent: Option<Agent>,
    collector: Option<Collector>,
    broker: Mosquitto,
    capture: AudioCapture,
    dir: TestDir,
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with(None)
    }

    /// With `config` (TOML) as the collector's config file instead of the example.
    fn start_with(config: Option<&str>) -> Setup {
        let dir = TestDir::new();
        let config = match config {
            Some(text) => dir.write("collector.toml", text),
            None => example_config("collector.toml"),
        };
        let broker = Mosquitto::start();
        dir.write("sound.key", KEY);
        dir.write("api-tokens", format!("# operators\n{TOKEN}\n"));
        std::fs::create_dir_all(dir.join("clips")).expect("create the clips dir");
        let users = dir.join("api-users").display().to_string();
        let added = user(
            &["add", "rina", "--role", "operator", "--file", &users],
            "rahasia-rina\n",
        );
        assert!(added.status.success(), "{added:?}");
        let added = user(
            &["add", "adi", "--role", "admin", "--file", &users],
            "rahasia-adi\n",
        );
        assert!(added.status.success(), "{added:?}");
        let capture = AudioCapture::new(&dir);
        let mut setup = Setup {
            config,
            agent: None,
            collector: None,
            broker,
            capture,
            dir,
        };
        setup.start_collector();
        setup.start_agent();
        setup
    }

    fn start_collector(&mut self) {
        let key = self.dir.join("sound.key").display().to_string();
        let tokens = self.dir.join("api-tokens").display().to_string();
        let storage = self.dir.join("storage").display().to_string();
        let users = self.dir.join("api-users").display().to_string();
        self.collector = Some(Collector::with_config(
            &self.dir,
            &self.broker,
            &self.config,
            &[
                ("PANTAU_ANNOUNCEMENTS__KEY_FILE", key.as_str()),
                ("PANTAU_ANNOUNCEMENTS__RESEND_INTERVAL_SECONDS", "1"),
                ("PANTAU_API__TOKEN_FILE", tokens.as_str()),
                ("PANTAU_API__USERS_FILE", users.as_str()),
                ("PANTAU_STORAGE__DIR", storage.as_str()),
            ],
        ));
    }

    fn start_agent(&mut self) {
        let key = derive_agent_key_file(self.dir.path(), &self.dir.join("sound.key"), AGENT)
            .display()
            .to_string();
        let clips = self.dir.join("clips").display().to_string();
        let mut env: Vec<(String, String)> = self.capture.env();
        env.push(("PANTAU_SOUND__KEY_FILE".to_owned(), key));
        env.push(("PANTAU_SOUND__CLIPS_DIR".to_owned(), clips));
        env.push(("PANTAU_SOUND__QUIET_HOURS".to_owned(), String::new()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut agent = Agent::start_config(
            &self.dir,
            "agent-sound.toml",
            AGENT,
            "office",
            &self.broker.url(),
            1,
            &env,
        );
        agent.guard().wait_for_log("subscribed to commands", WAIT);
        self.agent = Some(agent);
    }

    fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("the collector runs")
    }

    fn announce(&self, body: Value) -> (u16, Value) {
        let url = format!("{}/api/v1/announcements", self.collector().url());
        let auth = format!("Bearer {TOKEN}");
        let body = serde_json::to_vec(&body).expect("JSON");
        let (status, text) = http_post(
            &url,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            &body,
        )
        .expect("the collector answers");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn status_of(&self, id: &str) -> String {
        let (_, body) = self.collector().api(&format!("/api/v1/announcements/{id}"));
        body["targets"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_for_status(&self, id: &str, status: &str) {
        wait_until(&format!("announcement {id} to be {status}"), WAIT, || {
            (self.status_of(id) == status).then_some(())
        });
    }

    /// Waits until the collector has the agent's birth (its site) in its store.
    fn wait_for_agent(&self) {
        wait_until("the agent to be known", WAIT, || {
            let (status, body) = self.announce(json!({"text": "uji", "targets": ["nobody"]}));
            (status == 400
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("'nobody'")))
            .then_some(())
        });
        wait_until("the collector to know the agent", WAIT, || {
            let (_, body) = self.collector().api(&format!("/api/v1/agents/{AGENT}"));
            (body["online"] == true).then_some(())
        });
    }

    fn loud_seconds(&self) -> f64 {
        self.capture
            .loud_spans(LOUD, 25)
            .iter()
            .map(|(first, last)| last.time - first.time)
            .sum()
    }
}

/// `pantau-collector user ARGS` with `stdin`.
fn user(args: &[&str], stdin: &str) -> Output {
    run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .arg("user")
            .args(args),
        stdin.as_bytes(),
        Duration::from_secs(30),
    )
}

#[test]
fn user_subcommands_edit_the_users_file_that_the_config_check_reads() {
    let dir = TestDir::new();
    let file = dir.join("api-users").display().to_string();
    let check = |file: &str| {
        run_with_timeout(
            Command::new(pantau_binary("pantau-collector"))
                .arg("--config")
                .arg(example_config("collector.toml"))
                .arg("--check-config")
                .env("PANTAU_BROKER__PASSWORD_FILE", "")
                .env("PANTAU_BROKER__LISTEN", "127.0.0.1:1883")
                .env("PANTAU_API__USERS_FILE", file),
            b"",
            Duration::from_secs(30),
        )
    };
    let out = user(
        &["add", "rina", "--role", "admin", "--file", &file],
        "rahasia-rina\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "added user 'rina'\n");
    let out = user(&["add", "rina", "--file", &file], "rahasia-rina\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user 'rina' exists; use `user passwd`"));
    let out = user(&["add", "budi", "--file", &file], "pendek\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"),
        "{out:?}"
    );
    let out = user(
        &["passwd", "rina", "--role", "viewer", "--file", &file],
        "kata-sandi-baru\n",
    );
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\nrina:viewer:$argon2id$"), "{text}");
    assert!(!text.contains("kata-sandi-baru"));
    let out = check(&file);
    assert!(out.status.success(), "{out:?}");
    let out = user(&["remove", "rina", "--file", &file], "");
    assert!(out.status.success(), "{out:?}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("rina"));
    let out = check("/nonexistent/api-users");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("api.users_file: '/nonexistent/api-users' cannot be read"),
        "{out:?}"
    );
}

#[test]
fn an_api_announcement_plays_and_its_history_survives_a_restart() {
    let mut setup = Setup::start();
    setup.wait_for_agent();

    let (status, body) = setup.announce(
        json!({"text": "Mohon tetap memakai masker", "targets": [AGENT], "chime": false}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    setup.wait_for_status(&id, "finished");
    assert!(
        setup.loud_seconds() > 1.0,
        "too little sound: {:?}",
        setup.capture.loud_spans(LOUD, 25)
    );

    // A wrong token changes nothing.
    let url = format!("{}/api/v1/announcements", setup.collector().url());
    let (status, _) = http_post(
        &url,
        &[("Authorization", "Bearer nope-nope-nope-nope")],
        b"{}",
    )
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        setup
            .collector()
            .sample(r#"pantau_collector_api_auth_failures_total{reason="wrong"}"#),
        Some(1.0)
    );

    setup.collector = None;
    setup.start_collector();
    let (_, body) = setup
        .collector()
        .api("/api/v1/announcements?outcome=finished");
    assert_eq!(body["announcements"][0]["id"], id.as_str(), "{body}");
    let (_, body) = setup.collector().api("/api/v1/audit");
    assert_eq!(body["entries"][0]["action"], "announce", "{body}");
    // A backup while the collector runs is a whole SQLite database holding the history.
    let copy = setup.dir.join("backup.sqlite");
    // It finds the database through the collector's config, as the service does.
    let storage = setup.dir.join("storage").display().to_string();
    let config = setup
        .dir
        .write("backup.toml", format!("[storage]\ndir = {storage:?}\n"));
    let out = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .arg("backup")
            .arg("--config")
            .arg(&config)
            .arg(&copy),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&copy).expect("the backup exists");
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    assert!(
        bytes.windows(id.len()).any(|w| w == id.as_bytes()),
        "the backup holds {id}"
    );
    let again = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .arg("backup")
            .arg("--config")
            .arg(&config)
            .arg(&copy),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; give a new file"));
    let elsewhere = setup.dir.write(
        "elsewhere.toml",
        format!(
            "[storage]\ndir = {:?}\n",
            setup.dir.join("empty").display().to_string()
        ),
    );
    let wrong = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .arg("backup")
            .arg("--config")
            .arg(&elsewhere)
            .arg(setup.dir.join("other.sqlite")),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("storage.dir: no database in"),
        "{wrong:?}"
    );
    // The agent's site was kept: a new announcement goes out before any new birth.
    let (status, body) =
        setup.announce(json!({"text": "Sekali lagi", "targets": [AGENT], "chime": false}));
    assert_eq!(status, 201, "{body}");
    setup.wait_for_status(body["id"].as_str().unwrap(), "finished");
}

#[test]
fn an_announcement_waits_for_a_disconnected_agent_unless_it_expires() {
    let mut setup = Setup::start();
    setup.wait_for_agent();
    setup.agent = None;

    let (status, body) = setup.announce(json!({"text": "Rapat dimulai", "targets": [AGENT], "chime": false, "expires_in_seconds": 2}));
    assert_eq!(status, 201, "{body}");
    let expired = body["id"].as_str().unwrap().to_owned();
    let (status, body) = setup.announce(json!({"text": "Mohon tetap memakai masker", "targets": [AGENT], "chime": false, "expires_in_seconds": 120}));
    assert_eq!(status, 201, "{body}");
    let waiting = body["id"].as_str().unwrap().to_owned();
    setup.wait_for_status(&expired, "expired");
    assert_eq!(setup.status_of(&waiting), "pending");

    setup.start_agent();
    setup.wait_for_status(&waiting, "finished");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(setup.status_of(&expired), "expired");
    let spans = setup.capture.loud_spans(LOUD, 25);
    assert_eq!(
        spans.len(),
        1,
        "played once, and only the live one: {spans:?}"
    );
}

#[test]
fn stop_ends_a_playing_announcement() {
    let setup = Setup::start();
    setup.wait_for_agent();
    let text = "Perhatian. Gedung akan ditutup. ".repeat(6);
    let (status, body) = setup.announce(json!({"text": text, "targets": [AGENT], "chime": false}));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    setup.wait_for_status(&id, "started");
    let url = format!("{}/api/v1/announcements/{id}/stop", setup.collector().url());
    // An operator from the users file, with HTTP Basic (rina:rahasia-rina).
    let auth = "Basic cmluYTpyYWhhc2lhLXJpbmE=";
    let (status, text) = http_post(&url, &[("Authorization", auth)], b"").unwrap();
    assert_eq!(status, 200, "{text}");
    let (_, body) = setup.collector().api("/api/v1/audit");
    assert_eq!(body["entries"][0]["who"], "rina", "{body}");
    assert_eq!(body["entries"][0]["action"], "stop", "{body}");
    setup.wait_for_status(&id, "stopped");
    assert!(
        setup.loud_seconds() < 10.0,
        "kept playing: {}",
        setup.loud_seconds()
    );
}

/// `HH:MM:SS` in UTC, `ahead` from now: a schedule time that is due soon.
fn utc_time_of_day_in(ahead: Duration) -> String {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        + ahead;
    let seconds = at.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[test]
fn a_schedule_made_through_the_api_plays_at_its_time_and_is_in_the_history() {
    let setup = Setup::start();
    setup.wait_for_agent();
    let url = format!("{}/api/v1/schedules", setup.collector().url());
    // adi:rahasia-adi, an admin.
    let admin = "Basic YWRpOnJhaGFzaWEtYWRp";
    // Due 20 s from now, given in UTC (the field is checked, carried to the agent and used by
    // it): time enough to publish and apply the schedule on a loaded machine.
    let due = utc_time_of_day_in(Duration::from_secs(20));
    let body = json!({"name": "masker-pagi", "targets": [AGENT], "times": [due],
                      "time_zone": "UTC",
                      "announce": {"text": "Mohon tetap memakai masker", "chime": false}});
    let body = serde_json::to_vec(&body).unwrap();
    let (status, text) = http_post(
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", admin),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(status, 201, "{text}");
    let version = wait_until("the agent to apply the schedule", WAIT, || {
        let (_, body) = setup.collector().api("/api/v1/schedules");
        let agent = &body["agents"][0];
        (agent["agent"] == AGENT
            && agent["published"] == true
            && agent["applied_version"] == agent["version"])
            .then(|| agent["version"].as_u64().unwrap())
    });
    let series =
        format!(r#"pantau_collector_sound_schedule_version{{instance="{AGENT}",state="applied"}}"#);
    assert_eq!(setup.collector().sample(&series), Some(version as f64));
    let agent_series =
        format!(r#"pantau_sound_schedule_version{{instance="{AGENT}",site="office"}}"#);
    setup
        .collector()
        .wait_for_sample(&agent_series, WAIT, |value| value == version as f64);
    // The collector and the agent agree on when it is due.
    let (_, body) = setup.collector().api("/api/v1/schedules");
    let next_run_ms = body["schedules"][0]["next_run_ms"]
        .as_i64()
        .expect("a next run");
    let next_series = format!(
        r#"pantau_sound_next_scheduled_timestamp_seconds{{instance="{AGENT}",site="office"}}"#
    );
    setup
        .collector()
        .wait_for_sample(&next_series, WAIT, |value| {
            (value * 1000.0).round() as i64 == next_run_ms
        });

    // It plays by itself at its time, and the agent's events put it in the history.
    let play = wait_until(
        "the scheduled play to finish",
        Duration::from_secs(60),
        || {
            let (_, body) = setup
                .collector()
                .api("/api/v1/announcements?schedule=masker-pagi&outcome=finished");
            let play = &body["announcements"][0];
            play.is_object().then(|| play.clone())
        },
    );
    assert_eq!(play["created_ms"].as_i64(), Some(next_run_ms), "{play}");
    assert_eq!(play["created_by"], "schedule", "{play}");
    assert_eq!(play["args"]["text"], "Mohon tetap memakai masker", "{play}");
    assert_eq!(play["targets"][0]["agent"], AGENT, "{play}");
    assert_eq!(play["targets"][0]["status"], "finished", "{play}");
    let spans = setup.capture.loud_spans(LOUD, 25);
    assert_eq!(spans.len(), 1, "played once: {spans:?}");
    let (first, _) = &spans[0];
    let started = first.time * 1000.0;
    assert!(
        started >= next_run_ms as f64 - 500.0,
        "played before its time: {started} < {next_run_ms}"
    );
}

#[test]
fn an_alert_from_alertmanager_is_announced_once() {
    let setup = Setup::start_with(Some(
        r#"
[[announcements.alert_rules]]
name = "link-down"
alertname = "LinkDown"
message = "Perhatian: jaringan {{ $labels.link }} terputus"
targets = ["aula-sound"]
chime = false
"#,
    ));
    setup.wait_for_agent();
    let webhook = format!("{}/api/v1/alertmanager", setup.collector().url());
    let alertmanager = Alertmanager::start_with_bearer(&webhook, Some(TOKEN));
    let alert =
        json!([{"labels": {"alertname": "LinkDown", "link": "gor-dc", "severity": "critical"}}]);
    let alerts = format!("{}/api/v2/alerts", alertmanager.url());
    let (status, body) = pantau_tests::http_post_json(&alerts, &alert).unwrap();
    assert_eq!(status, 200, "{body}");
    let id = wait_until("the alert to be announced", WAIT, || {
        let (_, body) = setup.collector().api("/api/v1/announcements");
        body["announcements"][0]["id"].as_str().map(str::to_owned)
    });
    let (_, body) = setup
        .collector()
        .api(&format!("/api/v1/announcements/{id}"));
    assert_eq!(
        body["args"]["text"], "Perhatian: jaringan gor-dc terputus",
        "{body}"
    );
    assert_eq!(body["args"]["priority"], "alert");
    setup.wait_for_status(&id, "finished");
    assert!(setup.loud_seconds() > 1.0);
    // The same alert posted again: one announcement still (Alertmanager itself holds a repeat
    // for its repeat_interval; the collector's own limit per rule is in the API tests).
    let (status, _) = pantau_tests::http_post_json(&alerts, &alert).unwrap();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(4));
    let (_, body) = setup.collector().api("/api/v1/announcements");
    assert_eq!(
        body["announcements"].as_array().unwrap().len(),
        1,
        "{body}\n{}",
        alertmanager.logs()
    );
    let (_, body) = setup.collector().api("/api/v1/audit");
    let reasons: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alert")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 1, "{body}");
    assert!(
        reasons[0].starts_with("rule 'link-down': alert LinkDown firing"),
        "{body}"
    );
}
