//! Another agent's login cannot divert or bury the announcements. On the embedded broker
//! (which has no topic rules) agent `dc-srv-01` publishes a status for the sound agent under
//! another site, and floods its own events topic with plays of schedules that never were: the
//! speaker keeps playing what the office sends it, commands keep going to its pinned site
//! until an admin confirms the move in the console, and the history keeps only plays that
//! can be true.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use pantau_tests::{
    Agent, AudioCapture, Collector, TestDir, http_post, pantau_binary, run_with_timeout,
    wait_until, write_password_file,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
const TOKEN: &str = "operator-token-0123456789";
const SPEAKER: &str = "office-sound";
const STRANGER: &str = "dc-srv-01";
const WATCHER: &str = "watcher";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;
/// adi:rahasia-adi, an admin.
const ADMIN: (&str, &str) = ("adi", "rahasia-adi");

struct Setup {
    collector: Collector,
    _speaker: Agent,
    capture: AudioCapture,
    _dir: TestDir,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Setup {
    /// A collector with its embedded broker admitting the speaker, the stranger and a watcher
    /// (any client id `watcher-*`), announcements on, and the real sound agent at `office`.
    fn start() -> Setup {
        let dir = TestDir::new();
        let users = dir.join("broker-users");
        write_password_file(
            &users,
            &[(SPEAKER, "speaker-pw"), (STRANGER, "stranger-pw")],
            &[],
        );
        let watcher_file = dir.join("watcher-user");
        write_password_file(&watcher_file, &[(WATCHER, "watcher-pw")], &[]);
        let line = std::fs::read_to_string(&watcher_file).expect("read the watcher line");
        let mut text = std::fs::read_to_string(&users).expect("read the users");
        text.push_str(&format!("{}:watcher-*\n", line.trim()));
        std::fs::write(&users, text).expect("write the users");

        let key = dir.write("sound.key", KEY);
        let tokens = dir.write("api-tokens", format!("{TOKEN}\n"));
        let api_users = dir.join("api-users");
        let added = run_with_timeout(
            Command::new(pantau_binary("pantau-collector"))
                .args(["user", "add", ADMIN.0, "--role", "admin", "--file"])
                .arg(&api_users),
            format!("{}\n", ADMIN.1).as_bytes(),
            WAIT,
        );
        assert!(added.status.success(), "{added:?}");
        let env = [
            ("PANTAU_BROKER__PASSWORD_FILE", path(&users)),
            ("PANTAU_ANNOUNCEMENTS__KEY_FILE", path(&key)),
            (
                "PANTAU_ANNOUNCEMENTS__RESEND_INTERVAL_SECONDS",
                "1".to_owned(),
            ),
            ("PANTAU_API__TOKEN_FILE", path(&tokens)),
            ("PANTAU_API__USERS_FILE", path(&api_users)),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let collector = Collector::embedded_with_env(&dir, &env);

        let capture = AudioCapture::new(&dir);
        let clips = dir.join("clips");
        std::fs::create_dir_all(&clips).expect("create the clips dir");
        // The speaker holds only its own key, derived from the collector's master key.
        let speaker_key = pantau_tests::derive_agent_key_file(dir.path(), &key, SPEAKER);
        let mut agent_env = capture.env();
        for (name, value) in [
            ("PANTAU_SOUND__KEY_FILE", path(&speaker_key)),
            ("PANTAU_SOUND__CLIPS_DIR", path(&clips)),
            ("PANTAU_SOUND__QUIET_HOURS", String::new()),
            ("PANTAU_MQTT__USERNAME", SPEAKER.to_owned()),
            ("PANTAU_MQTT__PASSWORD", "speaker-pw".to_owned()),
        ] {
            agent_env.push((name.to_owned(), value));
        }
        let agent_env: Vec<(&str, &str)> = agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut speaker = Agent::start_config(
            &dir,
            "agent-sound.toml",
            SPEAKER,
            "office",
            &collector.broker_url(),
            1,
            &agent_env,
        );
        speaker.guard().wait_for_log("subscribed to commands", WAIT);
        let setup = Setup {
            collector,
            _speaker: speaker,
            capture,
            _dir: dir,
        };
        setup.collector.wait_for_api(
            &format!("/api/v1/agents/{SPEAKER}/site"),
            200,
            WAIT,
            |site| site["site"] == "office",
        );
        setup
    }

    /// `mosquitto_pub` logged in as `user` (its own client id); asserts the broker took it.
    fn publish_as(&self, user: &str, topic: &str, payload: &Value, retain: bool) {
        let password = if user == SPEAKER {
            "speaker-pw"
        } else {
            "stranger-pw"
        };
        let port = self.collector.broker_port().to_string();
        let client_id = format!("pantau-agent-{user}");
        let body = payload.to_string();
        let mut command = Command::new("mosquitto_pub");
        command.args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", &client_id]);
        command.args(["-u", user, "-P", password, "-t", topic, "-m", &body]);
        if retain {
            command.arg("-r");
        }
        let out = run_with_timeout(&mut command, b"", WAIT);
        assert!(out.status.success(), "the login must succeed: {out:?}");
    }

    /// A `mosquitto_sub` of `topic` as the watcher that exits after one message or `WAIT`.
    fn watch(&self, topic: &str, client: &str) -> Child {
        let port = self.collector.broker_port().to_string();
        let client_id = format!("watcher-{client}");
        let wait = WAIT.as_secs().to_string();
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", &client_id])
            .args(["-u", WATCHER, "-P", "watcher-pw", "-t", topic])
            .args(["-C", "1", "-W", &wait, "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub")
    }

    fn announce(&self, body: Value) -> String {
        let url = format!("{}/api/v1/announcements", self.collector.url());
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
        assert_eq!(status, 201, "{text}");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        value["id"].as_str().expect("an id").to_owned()
    }

    fn status_of(&self, id: &str) -> String {
        let (_, body) = self.collector.api(&format!("/api/v1/announcements/{id}"));
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

    fn loud_spans(&self) -> usize {
        self.capture.loud_spans(LOUD, 25).len()
    }

    fn sample(&self, series: &str) -> f64 {
        self.collector.sample(series).unwrap_or(0.0)
    }

    /// The history's rows (the API's first page at its largest).
    fn history(&self) -> Vec<Value> {
        let (status, body) = self.collector.api("/api/v1/announcements?limit=1000");
        assert_eq!(status, 200, "{body}");
        body["announcements"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first page as the API and console show it by default.
    fn first_page_ids(&self) -> Vec<String> {
        let (_, body) = self.collector.api("/api/v1/announcements");
        body["announcements"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| row["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn status_payload(agent: &str, site: &str) -> Value {
    json!({
        "schema": 1, "agent": agent, "site": site, "state": "online",
        "timestamp_ms": now_ms(), "interval_seconds": 1, "roles": ["sound"],
        "connected_ms": now_ms(), "clips": ["palsu.wav"]
    })
}

/// The console as a browser without JavaScript sees it: a login, then forms with the
/// session's CSRF token.
struct Console {
    base: String,
    agent: ureq::Agent,
    session: String,
}

fn set_cookie(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let pair = value.split(';').next()?;
            let (key, value) = pair.split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.to_owned())
        })
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("the end of the value")].to_owned()
}

impl Console {
    fn login(base: &str, user: &str, password: &str) -> Console {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .max_redirects(0)
            .build()
            .into();
        let mut form = agent
            .get(&format!("{base}/console/login"))
            .call()
            .expect("GET the login form");
        let login_cookie = set_cookie(&form, "pantau_login").expect("a login cookie");
        let html = form.body_mut().read_to_string().expect("the form");
        let body = format!("csrf={}&user={user}&password={password}", csrf_of(&html));
        let answer = agent
            .post(&format!("{base}/console/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Cookie", &format!("pantau_login={login_cookie}"))
            .send(body.as_bytes())
            .expect("POST the login");
        assert_eq!(answer.status().as_u16(), 303, "the login must succeed");
        let session = set_cookie(&answer, "pantau_session").expect("a session cookie");
        Console {
            base: base.to_owned(),
            agent,
            session,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &format!("pantau_session={}", self.session))
            .call()
            .expect("GET a console page");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// Posts `fields` (already URL-safe) with the session's CSRF token; the status.
    fn post(&self, path: &str, fields: &str) -> u16 {
        let (_, page) = self.get("/console/now");
        let body = format!("csrf={}&{fields}", csrf_of(&page));
        self.agent
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Cookie", &format!("pantau_session={}", self.session))
            .send(body.as_bytes())
            .expect("POST a console form")
            .status()
            .as_u16()
    }
}

#[test]
fn a_status_forged_under_another_site_does_not_divert_the_speaker() {
    let mut setup = Setup::start();
    let site_path = format!("/api/v1/agents/{SPEAKER}/site");

    // The row as written: the stranger's own login publishes a retained status for the
    // speaker under site `nowhere`.
    setup.publish_as(
        STRANGER,
        &format!("pantau/v1/nowhere/{SPEAKER}/status"),
        &status_payload(SPEAKER, "nowhere"),
        true,
    );
    let site = setup.collector.wait_for_api(&site_path, 200, WAIT, |site| {
        site["claimed_site"] == "nowhere"
    });
    assert_eq!(site["site"], "office", "{site}");
    assert_eq!(site["source"], "status", "{site}");
    setup.collector.wait_for_sample(
        r#"pantau_collector_site_moves_total{outcome="held"}"#,
        WAIT,
        |v| v >= 1.0,
    );
    assert_eq!(setup.sample("pantau_collector_site_moves_waiting"), 1.0);
    wait_until("the WARN line of the claim", WAIT, || {
        setup
            .collector
            .logs()
            .lines()
            .any(|line| {
                line.contains("WARN")
                    && line.contains("names another site than the agent's pinned one")
                    && line.contains("nowhere")
            })
            .then_some(())
    });
    let audit = setup
        .collector
        .wait_for_api("/api/v1/audit", 200, WAIT, |audit| {
            audit["entries"].as_array().is_some_and(|rows| {
                rows.iter().any(|row| {
                    row["action"] == "site_move_claimed"
                        && row["subject"] == SPEAKER
                        && row["who"] == format!("agent:{SPEAKER}")
                })
            })
        });
    assert!(audit.to_string().contains("claimed nowhere"), "{audit}");
    let console = Console::login(&setup.collector.url(), ADMIN.0, ADMIN.1);
    let (status, now) = console.get("/console/now");
    assert_eq!(status, 200);
    let card = &now[now
        .find(&format!("id=\"move-{SPEAKER}\""))
        .expect("the move's card")..];
    assert!(card.contains("nowhere") && card.contains("office"), "{now}");
    assert!(card.contains(&format!("id=\"confirm-site-{SPEAKER}\"")));

    // The pin is in the store: a restart keeps it (and ends the console's sessions).
    drop(console);
    setup.collector.restart();
    let console = Console::login(&setup.collector.url(), ADMIN.0, ADMIN.1);
    let site = setup
        .collector
        .wait_for_api(&site_path, 200, WAIT, |_| true);
    assert_eq!(
        (site["site"].as_str(), site["claimed_site"].as_str()),
        (Some("office"), Some("nowhere")),
        "{site}"
    );

    // The emergency still reaches the real speaker, and is heard.
    let before = setup.loud_spans();
    let id = setup.announce(json!({
        "text": "Keadaan darurat, harap tenang", "targets": [SPEAKER],
        "priority": "emergency", "chime": false
    }));
    setup.wait_for_status(&id, "finished");
    assert!(setup.loud_spans() > before, "the emergency was not heard");

    // Variant: a birth that is not retained, under a real other site. The claim follows it,
    // commands do not.
    setup.publish_as(
        STRANGER,
        &format!("pantau/v1/gor/{SPEAKER}/status"),
        &status_payload(SPEAKER, "gor"),
        false,
    );
    setup
        .collector
        .wait_for_api(&site_path, 200, WAIT, |site| site["claimed_site"] == "gor");
    let id = setup.announce(json!({"text": "Rapat pukul sepuluh", "targets": [SPEAKER]}));
    setup.wait_for_status(&id, "finished");

    // A stale claim cannot be confirmed, a form without its token is refused, and only then
    // an admin's confirmation moves the commands.
    assert_eq!(
        console.post(
            &format!("/console/now/site/{SPEAKER}"),
            "site=nowhere&action=confirm"
        ),
        404
    );
    let forged = console
        .agent
        .post(&format!(
            "{}/console/now/site/{SPEAKER}",
            setup.collector.url()
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Cookie", &format!("pantau_session={}", console.session))
        .send("csrf=forged&site=gor&action=confirm".as_bytes())
        .expect("POST")
        .status()
        .as_u16();
    assert_eq!(forged, 403);
    assert_eq!(
        setup.collector.api(&site_path).1["site"],
        "office",
        "nothing moved yet"
    );
    assert_eq!(
        console.post(
            &format!("/console/now/site/{SPEAKER}"),
            "site=gor&action=confirm"
        ),
        303
    );
    let site = setup
        .collector
        .wait_for_api(&site_path, 200, WAIT, |_| true);
    assert_eq!(site["site"], "gor", "{site}");
    assert!(site.get("claimed_site").is_none(), "{site}");
    assert_eq!(
        setup.sample(r#"pantau_collector_site_moves_total{outcome="confirmed"}"#),
        1.0
    );
    assert_eq!(setup.sample("pantau_collector_site_moves_waiting"), 0.0);
    let (_, audit) = setup.collector.api("/api/v1/audit");
    assert_eq!(
        audit["entries"][0]["action"], "site_move_confirmed",
        "{audit}"
    );
    assert_eq!(audit["entries"][0]["who"], ADMIN.0, "{audit}");

    // The next announcement is signed for `gor` and published there (where the real speaker
    // does not listen).
    let watcher = setup.watch(&format!("pantau/v1/gor/{SPEAKER}/cmd/announce"), "gor");
    let id = setup.announce(json!({"text": "Ke lokasi baru", "targets": [SPEAKER]}));
    let out = watcher.wait_with_output().expect("mosquitto_sub ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&id) && text.contains("\"site\":\"gor\""),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `count` `announcement_finished` events of plays of `schedule` due at `due_s`, as one
/// events message of `agent` with sequence number `seq`.
fn forged_events(agent: &str, schedule: &str, due_s: u64, seq: u64, count: usize) -> Value {
    let events: Vec<Value> = (0..count)
        .map(|index| {
            let play = format!("{schedule}@{}", due_s + index as u64 * 60);
            json!({
                "kind": "announcement_finished", "severity": "info",
                "message": format!("{play}: finished"),
                "labels": {"announcement": play, "schedule": schedule, "priority": "scheduled"}
            })
        })
        .collect();
    json!({
        "schema": 1, "agent": agent, "site": "office", "seq": seq,
        "timestamp_ms": now_ms(), "events": events
    })
}

#[test]
fn forged_scheduled_plays_do_not_fill_the_history() {
    let setup = Setup::start();
    let events_topic = format!("pantau/v1/office/{STRANGER}/events");
    let rejected =
        |reason: &str| format!(r#"pantau_collector_rejected_events_total{{reason="{reason}"}}"#);
    // A real emergency first, heard on the speaker.
    let emergency = setup.announce(json!({
        "text": "Keadaan darurat, harap tenang", "targets": [SPEAKER],
        "priority": "emergency", "chime": false
    }));
    setup.wait_for_status(&emergency, "finished");
    let rows_before = setup.history().len();

    // The row as written: 50 messages of 64 plays of a schedule that never existed, due in
    // the year 9999, on the stranger's own events topic.
    let year_9999 = 253_402_300_740;
    for seq in 1..=50 {
        setup.publish_as(
            STRANGER,
            &events_topic,
            &forged_events(STRANGER, "ghost", year_9999, seq, 64),
            false,
        );
    }
    setup
        .collector
        .wait_for_sample(&rejected("schedule_not_sent"), WAIT, |v| v >= 3200.0);
    assert_eq!(setup.history().len(), rows_before, "no row was added");
    assert!(
        setup.first_page_ids().contains(&emergency),
        "the emergency stays on the first page"
    );
    // 3,200 refusals, a handful of log lines.
    let refusal_lines = || {
        setup
            .collector
            .logs()
            .lines()
            .filter(|line| {
                line.contains("WARN") && line.contains("event of a scheduled play refused")
            })
            .count()
    };
    wait_until("a WARN line of the refusals", WAIT, || {
        (refusal_lines() >= 1).then_some(())
    });
    let lines = refusal_lines();
    assert!(
        lines <= 5,
        "{lines} lines: the refusals are logged at a limited rate"
    );

    // A real schedule, sent to the speaker (which applies it) and to the stranger (which
    // said it was a sound agent, and never applies it). It is valid only from 2099, so it
    // never plays here.
    setup.publish_as(
        STRANGER,
        &format!("pantau/v1/office/{STRANGER}/status"),
        &status_payload(STRANGER, "office"),
        false,
    );
    setup.collector.wait_for_api(
        &format!("/api/v1/agents/{STRANGER}/site"),
        200,
        WAIT,
        |_| true,
    );
    let url = format!("{}/api/v1/schedules", setup.collector.url());
    let admin = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1))
    );
    let body = json!({
        "name": "masker", "targets": [SPEAKER, STRANGER], "times": ["08:00"],
        "valid_from": "2099-01-01", "announce": {"text": "Mohon tetap memakai masker"}
    });
    let (status, text) = http_post(
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &admin),
        ],
        body.to_string().as_bytes(),
    )
    .expect("the collector answers");
    assert_eq!(status, 201, "{text}");
    let schedules = setup
        .collector
        .wait_for_api("/api/v1/schedules", 200, WAIT, |s| {
            s["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["agent"] == SPEAKER && a["applied_version"] == a["version"])
            })
        });
    let now_s = u64::try_from(now_ms() / 60_000 * 60).unwrap_or(0);

    // Variant: the real name, a version the stranger never applied.
    setup.publish_as(
        STRANGER,
        &events_topic,
        &forged_events(STRANGER, "masker", now_s, 51, 64),
        false,
    );
    setup
        .collector
        .wait_for_sample(&rejected("version_not_applied"), WAIT, |v| v >= 64.0);

    // Variant: the stranger says it applied that version, then claims plays years away, and
    // at a time the entry is never due.
    let version = schedules["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["agent"] == STRANGER))
        .map(|a| a["version"].clone())
        .expect("the stranger's version");
    setup.publish_as(
        STRANGER,
        &events_topic,
        &json!({
            "schema": 1, "agent": STRANGER, "site": "office", "seq": 52,
            "timestamp_ms": now_ms(),
            "events": [{"kind": "schedule_applied", "severity": "info", "message": "",
                        "labels": {"version": version.to_string()}}]
        }),
        false,
    );
    // Events are applied in the order the broker delivers them: the version is taken first.
    let in_2030 = 1_893_456_000;
    setup.publish_as(
        STRANGER,
        &events_topic,
        &forged_events(STRANGER, "masker", in_2030, 53, 64),
        false,
    );
    setup
        .collector
        .wait_for_sample(&rejected("due_time_outside_window"), WAIT, |v| v >= 64.0);
    setup.publish_as(
        STRANGER,
        &events_topic,
        &forged_events(STRANGER, "masker", now_s, 54, 1),
        false,
    );
    setup
        .collector
        .wait_for_sample(&rejected("not_due_then"), WAIT, |v| v >= 1.0);

    // Variant: an agent that was never sent the schedule. The embedded broker has no topic
    // rules, so the stranger's login can speak for `lobi-sound` too.
    setup.publish_as(
        STRANGER,
        "pantau/v1/office/lobi-sound/events",
        &forged_events("lobi-sound", "masker", now_s, 1, 64),
        false,
    );
    setup
        .collector
        .wait_for_sample(&rejected("schedule_not_sent"), WAIT, |v| v >= 3264.0);

    assert_eq!(setup.history().len(), rows_before, "still no row was added");
    assert_eq!(setup.first_page_ids()[0], emergency);
    assert_eq!(setup.status_of(&emergency), "finished");
}
