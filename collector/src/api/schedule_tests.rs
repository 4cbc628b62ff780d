//! `/api/v1/schedules` through `app(state).oneshot(request)`: config schedules read-only, API
//! ones created, edited, paused and deleted by admins, each change a new retained, signed
//! schedule per agent, and the versions the agents applied.

use std::time::SystemTime;

use axum::http::StatusCode;
use pantau_protocol::{Event, Severity};
use serde_json::json;

use super::test_support::{TOKEN, basic, call, error, fixture, verify_sent};
use crate::announce::Observation;

fn schedule_body(name: &str) -> serde_json::Value {
    json!({"name": name, "zones": ["lobby"], "times": ["12:00"], "weekdays": ["fri"],
           "announce": {"text": "Waktunya salat Jumat"}})
}

#[tokio::test]
async fn config_schedules_are_published_retained_and_read_only() {
    let f = fixture();
    f.announcer.sync_schedules(SystemTime::now()).await;
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let (topic, message, retain) = &sent[0];
    assert_eq!(topic, "pantau/v1/dc/aula/cmd/schedule");
    assert!(retain);
    verify_sent(topic, message);
    assert_eq!(message.expires_ms, None);
    assert_eq!(message.args["entries"][0]["name"], "config-pagi");
    let version = message.args["version"].as_u64().unwrap();
    assert_eq!(message.id, format!("s{version}"));

    let (status, value) = call(&f.app, "GET", "/api/v1/schedules", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["schedules"][0]["source"], "config");
    assert_eq!(value["agents"][0]["agent"], "aula");
    assert_eq!(value["agents"][0]["version"], version);
    assert_eq!(value["agents"][0]["published"], true);
    assert_eq!(
        value["agents"][0]["applied_version"],
        serde_json::Value::Null
    );

    // The agent says it took it: API and metric show the applied version.
    f.announcer.observe(
        Observation::Events {
            agent: "aula".to_owned(),
            events: vec![Event {
                kind: "schedule_applied".to_owned(),
                severity: Severity::Info,
                message: "applied".to_owned(),
                labels: [("version".to_owned(), version.to_string())].into(),
            }],
        },
        SystemTime::now(),
    );
    let (_, value) = call(&f.app, "GET", "/api/v1/schedules", None, None).await;
    assert_eq!(value["agents"][0]["applied_version"], version);
    let gauge = &f.app.telemetry.schedule_version;
    assert_eq!(
        gauge.with_label_values(&["aula", "applied"]).get() as u64,
        version
    );

    let admin = basic("adi:rahasia-adi");
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules/config-pagi/pause",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error(&value),
        "schedule 'config-pagi' comes from the config ([[announcements.schedules]]); change it there"
    );
    // Nothing changed: nothing more is sent.
    f.announcer.sync_schedules(SystemTime::now()).await;
    assert_eq!(f.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn admins_create_edit_pause_and_delete_and_each_change_is_a_new_version() {
    let f = fixture();
    f.announcer.sync_schedules(SystemTime::now()).await;
    let admin = basic("adi:rahasia-adi");
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules",
        Some(TOKEN),
        Some(schedule_body("jumat")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        error(&value).ends_with("has the role operator; this needs an admin"),
        "{value}"
    );

    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules",
        Some(&admin),
        Some(schedule_body("jumat")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let latest = |agent: &str| {
        f.sent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(topic, _, _)| topic == &format!("pantau/v1/dc/{agent}/cmd/schedule"))
            .map(|(_, message, _)| message.args.clone())
            .unwrap()
    };
    let aula = latest("aula");
    assert_eq!(aula["entries"].as_array().unwrap().len(), 2, "{aula}");
    assert_eq!(latest("lobi")["entries"][0]["name"], "jumat");
    let first = aula["version"].as_u64().unwrap();

    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules",
        Some(&admin),
        Some(schedule_body("jumat")),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error(&value), "schedule 'jumat' exists; edit it with PUT");

    let mut edited = schedule_body("jumat");
    edited["times"] = json!(["11:45"]);
    let (status, value) = call(
        &f.app,
        "PUT",
        "/api/v1/schedules/jumat",
        Some(&admin),
        Some(edited),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let aula = latest("aula");
    assert!(aula["version"].as_u64().unwrap() > first);
    assert_eq!(aula["entries"][1]["times"], json!(["11:45"]));

    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules/jumat/pause",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["paused"], true);
    assert_eq!(latest("lobi")["entries"], json!([]));
    assert_eq!(latest("aula")["entries"].as_array().unwrap().len(), 1);
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/schedules/jumat/resume",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest("lobi")["entries"][0]["name"], "jumat");

    let (status, _) = call(
        &f.app,
        "DELETE",
        "/api/v1/schedules/jumat",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(latest("lobi")["entries"], json!([]));
    let (status, value) = call(
        &f.app,
        "DELETE",
        "/api/v1/schedules/jumat",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&value), "no schedule 'jumat'");

    let (_, value) = call(&f.app, "GET", "/api/v1/audit", None, None).await;
    let actions: Vec<&str> = value["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "schedule_delete",
            "schedule_resume",
            "schedule_pause",
            "schedule_edit",
            "schedule_create"
        ]
    );
    assert_eq!(value["entries"][0]["who"], "adi");
}

#[tokio::test]
async fn the_time_zone_is_carried_to_the_agent_and_used_for_the_next_run() {
    let f = fixture();
    f.announcer.sync_schedules(SystemTime::now()).await;
    let admin = basic("adi:rahasia-adi");
    let mut body = schedule_body("jayapura");
    body["time_zone"] = json!("Asia/Jayapura");
    body["targets"] = json!(["lobi"]);
    body["zones"] = json!([]);
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/schedules",
        Some(&admin),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    assert_eq!(value["time_zone"], "Asia/Jayapura");
    let sent = f.sent.lock().unwrap().clone();
    let (_, message, _) = sent
        .iter()
        .rev()
        .find(|(topic, _, _)| topic == "pantau/v1/dc/lobi/cmd/schedule")
        .unwrap();
    verify_sent("pantau/v1/dc/lobi/cmd/schedule", message);
    assert_eq!(message.args["entries"][0]["time_zone"], "Asia/Jayapura");

    let (_, value) = call(&f.app, "GET", "/api/v1/schedules", None, None).await;
    let listed = value["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "jayapura")
        .unwrap()
        .clone();
    assert_eq!(listed["time_zone"], "Asia/Jayapura");
    // Fridays 12:00 in Jayapura (UTC+9) are 03:00 UTC, whatever this machine's zone.
    let next = listed["next_run_ms"].as_i64().unwrap();
    let next = jiff::Timestamp::from_millisecond(next).unwrap();
    let utc = jiff::tz::TimeZone::UTC.to_datetime(next);
    assert_eq!(
        (utc.weekday(), utc.hour(), utc.minute()),
        (jiff::civil::Weekday::Friday, 3, 0)
    );
    // A config schedule without a zone is in Jakarta.
    let config = &value["schedules"][0];
    assert_eq!(config["source"], "config");
    assert_eq!(config["time_zone"], "Asia/Jakarta");
}

#[tokio::test]
async fn bad_schedules_name_what_is_wrong() {
    let f = fixture();
    let admin = basic("adi:rahasia-adi");
    let mut both = schedule_body("x");
    both["cron"] = json!("0 8 * * *");
    let mut no_target = schedule_body("x");
    no_target["zones"] = json!([]);
    let mut ghost = schedule_body("x");
    ghost["targets"] = json!(["ghost"]);
    let mut clip = schedule_body("x");
    clip["announce"] = json!({"clip": "sirene.wav"});
    let mut cron = schedule_body("x");
    cron.as_object_mut().unwrap().remove("times");
    cron.as_object_mut().unwrap().remove("weekdays");
    cron["cron"] = json!("61 8 * * *");
    let mut day = schedule_body("x");
    day["weekdays"] = json!(["jumat"]);
    let mut zone = schedule_body("x");
    zone["time_zone"] = json!("Asia/Bandung");
    let cases = [
        (
            zone,
            "(x): time_zone \"Asia/Bandung\" is not an IANA time zone",
        ),
        (
            cron,
            "(x): cron minute \"61\": \"61\" is not a number from 0 to 59",
        ),
        (
            day,
            "(x): weekday \"jumat\" is not one of mon, tue, ..., sun",
        ),
        (both, "(x): give either `cron` or `times`"),
        (no_target, "give at least one of `targets` or `zones`"),
        (
            ghost,
            "`targets`: unknown agent 'ghost' (no birth message seen from it)",
        ),
        (
            clip,
            "`announce.clip`: agent 'aula' has no clip 'sirene.wav'",
        ),
    ];
    for (body, message) in cases {
        let (status, value) = call(
            &f.app,
            "POST",
            "/api/v1/schedules",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&value), message, "{body}");
    }
    let (status, value) = call(
        &f.app,
        "PUT",
        "/api/v1/schedules/y",
        Some(&admin),
        Some(schedule_body("x")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&value), "`name`: 'x' differs from the path's 'y'");
    let (status, value) = call(
        &f.app,
        "PUT",
        "/api/v1/schedules/x",
        Some(&admin),
        Some(schedule_body("x")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&value), "no schedule 'x'");
}

/// 2025-11-28 08:00 in Asia/Jakarta: a due time of `config-pagi`.
const PAGI_DUE_S: u64 = 1_764_291_600;

/// Publishes the config schedule, has `aula` apply it, and forgets what was sent.
async fn aula_applies_config_pagi(f: &super::test_support::Fixture) {
    f.announcer.sync_schedules(SystemTime::now()).await;
    let (_, value) = call(&f.app, "GET", "/api/v1/schedules", None, None).await;
    let version = value["agents"][0]["version"].as_u64().unwrap();
    f.announcer.observe(
        Observation::Events {
            agent: "aula".to_owned(),
            events: vec![Event {
                kind: "schedule_applied".to_owned(),
                severity: Severity::Info,
                message: String::new(),
                labels: [("version".to_owned(), version.to_string())].into(),
            }],
        },
        SystemTime::now(),
    );
    f.sent.lock().unwrap().clear();
}

/// An event of play `play` of `schedule`.
fn play_event(kind: &str, schedule: &str, play: &str) -> Event {
    Event {
        kind: kind.to_owned(),
        severity: Severity::Info,
        message: format!("{play}: {kind}"),
        labels: [
            ("announcement".to_owned(), play.to_owned()),
            ("priority".to_owned(), "scheduled".to_owned()),
            ("schedule".to_owned(), schedule.to_owned()),
        ]
        .into(),
    }
}

fn at_seconds(seconds: u64) -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)
}

#[tokio::test]
async fn scheduled_plays_are_in_the_history_from_the_agents_events() {
    let f = fixture();
    aula_applies_config_pagi(&f).await;
    let event = |kind: &str| Event {
        kind: kind.to_owned(),
        severity: Severity::Info,
        message: format!("config-pagi@1764291600: {kind}"),
        labels: [
            (
                "announcement".to_owned(),
                "config-pagi@1764291600".to_owned(),
            ),
            ("priority".to_owned(), "scheduled".to_owned()),
            ("schedule".to_owned(), "config-pagi".to_owned()),
        ]
        .into(),
    };
    for kind in [
        "announcement_queued",
        "announcement_started",
        "announcement_finished",
    ] {
        f.announcer.observe(
            Observation::Events {
                agent: "aula".to_owned(),
                events: vec![event(kind)],
            },
            at_seconds(PAGI_DUE_S + 30),
        );
    }
    let (status, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements?schedule=config-pagi&outcome=finished&target=aula",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let play = &value["announcements"][0];
    assert_eq!(play["id"], "config-pagi@1764291600");
    assert_eq!(play["schedule"], "config-pagi");
    assert_eq!(play["created_by"], "schedule");
    // 2025-11-28 01:00 UTC: the due time in the play's id.
    assert_eq!(play["created_ms"], 1_764_291_600_000_i64);
    assert_eq!(play["args"]["text"], "Selamat pagi");
    assert_eq!(play["args"]["priority"], "scheduled");
    assert_eq!(play["targets"][0]["agent"], "aula");
    assert_eq!(play["targets"][0]["status"], "finished");
    let (_, value) = call(
        &f.app,
        "GET",
        "/api/v1/announcements/config-pagi@1764291600",
        None,
        None,
    )
    .await;
    assert_eq!(value["targets"][0]["status"], "finished", "{value}");
    // Nothing is resent for a play the agent started by itself, and it cannot be stopped by id.
    f.announcer.resend(SystemTime::now()).await;
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements/config-pagi@1764291600/stop",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{value}");
    assert!(
        error(&value).starts_with("'config-pagi@1764291600' is a play of schedule 'config-pagi'"),
        "{value}"
    );
    assert!(f.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn scheduled_play_events_are_believed_only_where_they_can_be_true() {
    let f = fixture();
    let play = format!("config-pagi@{PAGI_DUE_S}");
    let near = at_seconds(PAGI_DUE_S + 30);
    let rows = |f: &super::test_support::Fixture| {
        f.announcer
            .store()
            .history(0, i64::MAX, &crate::announce::HistoryFilter::default(), 100)
            .unwrap()
            .len()
    };
    let observe = |agent: &str, event: Event, at: SystemTime| {
        f.announcer.observe(
            Observation::Events {
                agent: agent.to_owned(),
                events: vec![event],
            },
            at,
        );
    };
    // Sent to aula, but not yet applied.
    f.announcer.sync_schedules(SystemTime::now()).await;
    observe(
        "aula",
        play_event("announcement_finished", "config-pagi", &play),
        near,
    );
    assert_eq!(rows(&f), 0, "a version aula never applied");
    aula_applies_config_pagi(&f).await;
    // lobi was never sent config-pagi; nobody was sent `gone`.
    observe(
        "lobi",
        play_event("announcement_finished", "config-pagi", &play),
        near,
    );
    observe(
        "aula",
        play_event(
            "announcement_finished",
            "gone",
            &format!("gone@{PAGI_DUE_S}"),
        ),
        near,
    );
    // Due in the year 9999, and at a time config-pagi is never due.
    for due in [253_402_300_740_u64, PAGI_DUE_S + 60] {
        observe(
            "aula",
            play_event(
                "announcement_finished",
                "config-pagi",
                &format!("config-pagi@{due}"),
            ),
            at_seconds(due.min(PAGI_DUE_S + 60)),
        );
    }
    // The real play, reported too late to be true.
    observe(
        "aula",
        play_event("announcement_finished", "config-pagi", &play),
        at_seconds(PAGI_DUE_S + 3 * 3600),
    );
    assert_eq!(rows(&f), 0);
    observe(
        "aula",
        play_event("announcement_finished", "config-pagi", &play),
        near,
    );
    assert_eq!(rows(&f), 1, "the real play, at its time");
}

#[tokio::test]
async fn a_play_reported_with_the_version_it_belongs_to_in_one_message_is_believed() {
    let f = fixture();
    f.announcer.sync_schedules(SystemTime::now()).await;
    let (_, value) = call(&f.app, "GET", "/api/v1/schedules", None, None).await;
    let version = value["agents"][0]["version"].as_u64().unwrap();
    let play = format!("config-pagi@{PAGI_DUE_S}");
    let applied = Event {
        kind: "schedule_applied".to_owned(),
        severity: Severity::Info,
        message: String::new(),
        labels: [("version".to_owned(), version.to_string())].into(),
    };
    // The play before the version is refused; the same message then takes the version, and
    // the next event of the play is believed.
    f.announcer.observe(
        Observation::Events {
            agent: "aula".to_owned(),
            events: vec![
                play_event("announcement_queued", "config-pagi", &play),
                applied,
                play_event("announcement_started", "config-pagi", &play),
            ],
        },
        at_seconds(PAGI_DUE_S + 5),
    );
    let row = f.announcer.store().announcement(&play).unwrap().unwrap();
    assert_eq!(row.targets[0].status, "started");
}

#[tokio::test]
async fn every_retained_schedule_is_signed_again_when_the_announcer_starts() {
    let f = fixture();
    f.announcer.sync_schedules(SystemTime::now()).await;
    assert_eq!(f.sent.lock().unwrap().len(), 1, "published once");
    // A start (after an upgrade, or with a new master key) publishes the same version again,
    // signed as now, replacing what the broker retained.
    let (_tap, observations) = crate::announce::Tap::channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(f.announcer.clone().run(observations, shutdown.clone()));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.sent.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "published again at start");
    let (topic, message, retain) = &sent[1];
    assert!(retain);
    verify_sent(topic, message);
    assert_eq!(
        message.args, sent[0].1.args,
        "the same schedule and version"
    );
}
