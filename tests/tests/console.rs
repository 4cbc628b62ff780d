//! The web console in a real browser: Debian's Chromium, headless, driven through WebDriver
//! (chromedriver), against a real collector (Mosquitto, SQLite) and a real sound agent whose
//! audio goes through ALSA into a capture file. Screenshots of every page at phone (390×844)
//! and desk (1366×768) size are saved under `target/console-screenshots/` (or
//! `$PANTAU_ARTIFACTS_DIR/console-screenshots/`).

use std::process::Command;
use std::time::Duration;

use pantau_tests::{
    Agent, AudioCapture, Browser, Collector, Mosquitto, TestDir, derive_agent_key_file,
    example_config, http_post, pantau_binary, poll_until, run_with_timeout, screenshot_dir,
    tone_hz, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;
const AGENT: &str = "aula-sound";

/// Declared so that the browser goes first and the dir last.
struct Setup {
    browser: Browser,
    _agent: Agent,
    collector: Collector,
    _broker: Mosquitto,
    capture: AudioCapture,
    dir: TestDir,
}

fn user(users: &str, name: &str, role: &str, password: &str) {
    let output = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .args(["user", "add", name, "--role", role, "--file", users]),
        format!("{password}\n").as_bytes(),
        WAIT,
    );
    assert!(output.status.success(), "{output:?}");
}

impl Setup {
    fn start() -> Setup {
        let dir = TestDir::new();
        let broker = Mosquitto::start();
        dir.write("sound.key", KEY);
        std::fs::create_dir_all(dir.join("clips")).expect("create the clips dir");
        let users = dir.join("api-users").display().to_string();
        user(&users, "rina", "operator", "rahasia-rina");
        user(&users, "adi", "admin", "rahasia-adi");
        user(&users, "tamu", "viewer", "rahasia-tamu");
        let capture = AudioCapture::new(&dir);
        let key = dir.join("sound.key").display().to_string();
        let storage = dir.join("storage").display().to_string();
        let collector = Collector::with_config(
            &dir,
            &broker,
            &example_config("collector.toml"),
            &[
                ("PANTAU_ANNOUNCEMENTS__KEY_FILE", key.as_str()),
                ("PANTAU_ANNOUNCEMENTS__RESEND_INTERVAL_SECONDS", "1"),
                ("PANTAU_API__USERS_FILE", users.as_str()),
                ("PANTAU_STORAGE__DIR", storage.as_str()),
            ],
        );
        let clips = dir.join("clips").display().to_string();
        let mut env: Vec<(String, String)> = capture.env();
        let key = derive_agent_key_file(dir.path(), &dir.join("sound.key"), AGENT)
            .display()
            .to_string();
        env.push(("PANTAU_SOUND__KEY_FILE".to_owned(), key));
        env.push(("PANTAU_SOUND__CLIPS_DIR".to_owned(), clips));
        env.push(("PANTAU_SOUND__QUIET_HOURS".to_owned(), String::new()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut agent = Agent::start_config(
            &dir,
            "agent-sound.toml",
            AGENT,
            "office",
            &broker.url(),
            1,
            &env,
        );
        agent.guard().wait_for_log("subscribed to commands", WAIT);
        wait_until("the collector to know the agent", WAIT, || {
            let (_, body) = collector.api(&format!("/api/v1/agents/{AGENT}"));
            (body["online"] == true).then_some(())
        });
        let browser = Browser::start(&dir);
        Setup {
            browser,
            _agent: agent,
            collector,
            _broker: broker,
            capture,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.collector.url())
    }

    fn login(&self, name: &str, password: &str) {
        let b = &self.browser;
        b.goto(&self.url("/console/login"));
        b.type_text(&b.wait_for("#user-name", WAIT), name);
        b.type_text(&b.wait_for("#password", WAIT), password);
        b.click(&b.wait_for("#login", WAIT));
        b.wait_for_url(&self.url("/console/now"), WAIT);
    }

    fn logout(&self) {
        self.browser.click(&self.browser.wait_for("#logout", WAIT));
        self.browser.wait_for_url(&self.url("/console/login"), WAIT);
    }

    /// Fills the send form with `text` to the sound agent and sends it; returns its id.
    fn send(&self, text: &str) -> String {
        let b = &self.browser;
        b.goto(&self.url("/console/send"));
        b.type_text(&b.wait_for("#text", WAIT), text);
        b.click(&b.wait_for(&format!("#target-{AGENT}"), WAIT));
        b.click(&b.wait_for("#send-button", WAIT));
        b.wait_for_url(&self.url("/console/now?sent="), WAIT);
        let flash = b.wait_for("#flash", WAIT);
        b.attribute(&flash, "data-id")
            .expect("the sent announcement's id")
    }

    /// The status announcement `id` shows for the agent (the `data-status` behind the
    /// translated label), if it is on the page.
    fn status_on_page(&self, id: &str) -> Option<String> {
        let element = self.browser.find(&format!("#ann-{id} .status"))?;
        self.browser.attribute(&element, "data-status")
    }

    /// Reloads the Now page until announcement `id` shows `status` for the agent.
    fn wait_for_status(&self, id: &str, status: &str) {
        let found = poll_until(WAIT, || {
            self.browser.goto(&self.url("/console/now"));
            (self.status_on_page(id).as_deref() == Some(status)).then_some(())
        });
        assert!(
            found.is_some(),
            "announcement {id} never showed '{status}' on the Now page; last: {:?}",
            self.status_on_page(id)
        );
    }

    /// Spans of sound in the capture, in seconds each.
    fn loud_spans(&self) -> Vec<f64> {
        self.capture
            .loud_spans(LOUD, 25)
            .iter()
            .map(|(first, last)| last.time - first.time)
            .collect()
    }

    /// Screenshots of the current page at phone and desk size, as `NAME-390x844.png` and
    /// `NAME-1366x768.png`.
    fn screenshots(&self, name: &str) {
        let dir = screenshot_dir();
        for (width, height) in [(390, 844), (1366, 768)] {
            self.browser.viewport(width, height);
            self.browser
                .screenshot(&dir.join(format!("{name}-{width}x{height}.png")));
        }
        self.browser.viewport(1366, 768);
    }
}

#[test]
fn staff_send_stop_schedule_and_review_in_a_real_browser() {
    let setup = Setup::start();
    let b = &setup.browser;
    b.goto(&setup.url("/console/login"));
    b.wait_for("#login", WAIT);
    setup.screenshots("login");
    setup.login("adi", "rahasia-adi");

    // Sends from the form; the estimate follows the typing (4 words at 175 a minute: 2 s).
    b.goto(&setup.url("/console/send"));
    b.type_text(&b.wait_for("#text", WAIT), "Mohon tetap memakai masker");
    b.wait_for_text("#estimate", "2", WAIT);
    setup.screenshots("send");
    let id = setup.send("Mohon tetap memakai masker");
    setup.wait_for_status(&id, "finished");
    // Shown to staff in Indonesian.
    b.wait_for_text(&format!("#ann-{id} .status"), "selesai", WAIT);
    let spans = setup.loud_spans();
    assert_eq!(
        spans.len(),
        1,
        "the speech is in the capture once: {spans:?}"
    );
    assert!(spans[0] > 1.0, "about 2 s of speech: {spans:?}");

    // A long announcement, stopped from the Now page while it plays.
    let long = "Perhatian. Gedung akan ditutup. ".repeat(12);
    let id = setup.send(&long);
    setup.wait_for_status(&id, "started");
    let stop = format!("#stop-{id}");
    let clicked = poll_until(WAIT, || {
        b.goto(&setup.url("/console/now"));
        let button = b.find(&stop)?;
        b.click(&button);
        Some(())
    });
    assert!(clicked.is_some(), "no stop button for {id}");
    b.wait_for_url(&setup.url("/console/now?stopped="), WAIT);
    setup.wait_for_status(&id, "stopped");
    // The agent reported the stop: the sound ended with it.
    let spans = setup.loud_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    // 12 repetitions take about 20 s to say; it stopped long before.
    assert!(spans[1] < 10.0, "kept playing after the stop: {spans:?}");
    // The test-tone button of the speaker: a 1 kHz sine reaches the capture.
    b.goto(&setup.url("/console/now"));
    b.click(&b.wait_for(&format!("#tone-{AGENT}"), WAIT));
    b.wait_for_url(&setup.url("/console/now?tone="), WAIT);
    // The tone's card (its text starts with the note sign), not merely the first card.
    let tone = wait_until("the tone on the Now page", WAIT, || {
        b.execute(
            "const card = [...document.querySelectorAll('.ann')]\
               .find(a => a.querySelector('.what').textContent.startsWith('\u{266a}'));\
             return card ? card.id : null;",
        )
        .as_str()
        .map(|id| id.trim_start_matches("ann-").to_owned())
    });
    setup.wait_for_status(&tone, "finished");
    // The tone (2 s) ends the capture. It can follow the stopped announcement closely enough to
    // share its loud span, so the frequency is taken from the capture's last second; the capture
    // reader may still be writing it when the agent reports the end.
    let last_second_hz = || {
        let (_, last) = *setup.capture.loud_spans(LOUD, 25).last()?;
        let from = last
            .end_byte
            .saturating_sub(pantau_tests::BYTES_PER_SECOND as usize);
        Some(tone_hz(&setup.capture.left(from, last.end_byte)))
    };
    let hz = poll_until(WAIT, || {
        last_second_hz().filter(|hz| (hz - 1000.0).abs() < 30.0)
    });
    assert!(hz.is_some(), "the test tone is {:?} Hz", last_second_hz());
    setup.screenshots("now");

    // An emergency needs the confirmation page.
    b.goto(&setup.url("/console/send"));
    b.type_text(&b.wait_for("#text", WAIT), "Harap segera keluar gedung");
    b.click(&b.wait_for(&format!("#target-{AGENT}"), WAIT));
    b.execute("document.getElementById('priority').value = 'emergency';");
    b.click(&b.wait_for("#send-button", WAIT));
    b.wait_for_text("#confirm-text", "Harap segera keluar gedung", WAIT);
    setup.screenshots("confirm");

    // A schedule made in the form, with its next run in WIB and the agent's applied version.
    b.goto(&setup.url("/console/schedules/new"));
    b.type_text(&b.wait_for("#name", WAIT), "masker-pagi");
    b.type_text(
        &b.wait_for("#text", WAIT),
        "Selamat pagi, mohon memakai masker",
    );
    b.type_text(&b.wait_for("#times", WAIT), "07:30");
    b.click(&b.wait_for(&format!("#target-{AGENT}"), WAIT));
    setup.screenshots("schedule-form");
    b.click(&b.wait_for("#save-schedule", WAIT));
    b.wait_for_url(&setup.url("/console/schedules?done=saved"), WAIT);
    let next = b.text(&b.wait_for("#sched-masker-pagi .next", WAIT));
    assert!(next.ends_with("07:30 WIB"), "next run: '{next}'");
    let applied = poll_until(WAIT, || {
        b.goto(&setup.url("/console/schedules"));
        let text = b.text_of(&format!("#version-{AGENT} .applied"));
        text.starts_with('1').then_some(text)
    });
    assert!(applied.is_some(), "the agent never applied the schedule");
    setup.screenshots("schedules");

    // History, filtered by outcome.
    b.goto(&setup.url("/console/history?outcome=stopped"));
    b.wait_for(&format!("#ann-{id}"), WAIT);
    b.wait_for_text(&format!("#ann-{id} .status"), "dihentikan", WAIT);
    assert!(
        !b.source().contains("Mohon tetap memakai masker"),
        "filtered out"
    );
    b.goto(&setup.url("/console/history"));
    b.wait_for(".ann", WAIT);
    setup.screenshots("history");

    // The admin's Users page.
    b.goto(&setup.url("/console/users"));
    b.wait_for("#user-tamu", WAIT);
    setup.screenshots("users");

    // English on request, kept by a cookie.
    b.wait_for_text("#nav-send", "Kirim", WAIT);
    b.click(&b.wait_for("#lang", WAIT));
    b.wait_for_url(&setup.url("/console/users"), WAIT);
    b.wait_for_text("#nav-send", "Send", WAIT);
    b.wait_for_text("#logout", "Log out", WAIT);
    b.goto(&setup.url("/console/now"));
    b.wait_for_text("#nav-history", "History", WAIT);
    setup.screenshots("now-english");
    assert_eq!(b.cookie("pantau_lang").as_deref(), Some("en"));
}

#[test]
fn the_console_refuses_strangers_forged_forms_and_viewers_who_send() {
    let setup = Setup::start();
    let b = &setup.browser;
    // Without a session every page goes to the login.
    for path in [
        "/console/now",
        "/console/send",
        "/console/schedules",
        "/console/schedules/new",
        "/console/history",
        "/",
    ] {
        b.goto(&setup.url(path));
        b.wait_for_url(&setup.url("/console/login"), WAIT);
    }

    // A form posted without its CSRF token: the browser's own form with the field removed.
    setup.login("rina", "rahasia-rina");
    b.goto(&setup.url("/console/send"));
    b.type_text(&b.wait_for("#text", WAIT), "Tanpa token");
    b.click(&b.wait_for(&format!("#target-{AGENT}"), WAIT));
    b.execute("document.querySelector('#send-form input[name=csrf]').remove();");
    b.click(&b.wait_for("#send-button", WAIT));
    let message = b.text(&b.wait_for("#message", WAIT));
    assert!(message.contains("Token keamanan formulir"), "{message}");
    // The same with the session's cookie from outside the browser: 403.
    let session = b.cookie("pantau_session").expect("the session cookie");
    let cookie = format!("pantau_session={session}");
    let form = format!("text=Tanpa+token&targets={AGENT}");
    let (status, body) = http_post(
        &setup.url("/console/send"),
        &[
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
    .expect("the collector answers");
    assert_eq!(status, 403, "{body}");
    assert!(
        setup
            .collector
            .sample(r#"pantau_collector_api_auth_failures_total{reason="csrf"}"#)
            .is_some_and(|v| v >= 2.0)
    );
    setup.logout();

    // A viewer sees the send page without its button, and a forged send is refused.
    setup.login("tamu", "rahasia-tamu");
    b.goto(&setup.url("/console/send"));
    b.wait_for("#viewer-note", WAIT);
    assert!(
        b.find("#send-button").is_none(),
        "a viewer has no send button"
    );
    setup.screenshots("send-viewer");
    let csrf = b
        .attribute(&b.wait_for("#send-form input[name=csrf]", WAIT), "value")
        .expect("the CSRF token");
    let session = b.cookie("pantau_session").expect("the session cookie");
    let cookie = format!("pantau_session={session}");
    let form = format!("csrf={csrf}&text=Palsu&targets={AGENT}");
    let (status, body) = http_post(
        &setup.url("/console/send"),
        &[
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
    .expect("the collector answers");
    assert_eq!(status, 403, "{body}");
    let (_, history) = setup.collector.api("/api/v1/announcements");
    assert_eq!(
        history["announcements"],
        serde_json::json!([]),
        "nothing sent"
    );
    assert!(setup.loud_spans().is_empty(), "nothing played");
    assert!(
        setup
            .collector
            .sample(r#"pantau_collector_api_auth_failures_total{reason="forbidden"}"#)
            .is_some_and(|v| v >= 1.0)
    );
    let _ = &setup.dir;
}

#[test]
fn a_collector_without_an_admin_says_how_to_make_one() {
    let dir = TestDir::new();
    let users = dir.join("api-users").display().to_string();
    user(&users, "rina", "operator", "rahasia-rina");
    let mut collector = Collector::embedded_with_env(&dir, &[("PANTAU_API__USERS_FILE", &users)]);
    collector.guard().wait_for_log(
        &format!("pantau-collector user add NAME --role admin --file {users}"),
        WAIT,
    );
    // The command it names works: with an admin the warning is gone.
    user(&users, "siti", "admin", "rahasia-siti");
    drop(collector);
    let again = TestDir::new();
    let collector = Collector::embedded_with_env(&again, &[("PANTAU_API__USERS_FILE", &users)]);
    assert!(
        !collector.logs().contains("no user has the admin role"),
        "warned although siti is an admin:\n{}",
        collector.logs()
    );
}
