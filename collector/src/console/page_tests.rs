//! Console pages through the router: what an operator and an admin may do, schedules with
//! their next run in WIB, escaping of untrusted text, the history's filters and the languages.

use axum::http::StatusCode;
use serde_json::json;

use super::test_support::{login, request};
use crate::api::test_support::{TOKEN, call, fixture};

#[tokio::test]
async fn an_operator_sends_stops_and_confirms_an_emergency_but_does_not_edit_schedules() {
    let f = fixture();
    let (cookie, csrf) = login(&f.app, "rina", "rahasia-rina").await;
    let form = format!("csrf={csrf}&text=Evakuasi&targets=aula&priority=emergency");
    let confirm = request(&f.app, "POST", "/console/send", &cookie, Some(&form)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("id=\"confirm\""));
    assert!(
        f.sent.lock().unwrap().is_empty(),
        "not before the confirmation"
    );
    let sent = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("{form}&confirm=yes")),
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let id = sent.location.rsplit('=').next().unwrap().to_owned();
    let stop = request(
        &f.app,
        "POST",
        &format!("/console/now/stop/{id}"),
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(stop.status, StatusCode::SEE_OTHER, "{}", stop.body);
    let tone = request(
        &f.app,
        "POST",
        "/console/now/tone/aula",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(tone.status, StatusCode::SEE_OTHER, "{}", tone.body);
    let tone_sent = f.sent.lock().unwrap().last().unwrap().1.args.clone();
    assert_eq!(tone_sent["tone"]["frequency_hz"], 1000.0);
    let clip = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=&clip=bel.wav&zones=lobby")),
    )
    .await;
    assert_eq!(clip.status, StatusCode::SEE_OTHER, "{}", clip.body);
    let clip_sent = f.sent.lock().unwrap().last().unwrap().1.args.clone();
    assert_eq!(clip_sent["clip"], "bel.wav");
    let unknown = request(
        &f.app,
        "POST",
        "/console/send",
        &cookie,
        Some(&format!("csrf={csrf}&text=x&targets=nowhere")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.body.contains("unknown agent &#39;nowhere&#39;")
            || unknown.body.contains("unknown agent &#x27;nowhere&#x27;"),
        "{}",
        unknown.body
    );
    let new = request(
        &f.app,
        "POST",
        "/console/schedules",
        &cookie,
        Some(&format!(
            "csrf={csrf}&name=x&text=y&times=08:00&targets=aula"
        )),
    )
    .await;
    assert_eq!(new.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_creates_pauses_and_deletes_a_schedule_with_its_next_run_in_wib() {
    let f = fixture();
    let (cookie, csrf) = login(&f.app, "adi", "rahasia-adi").await;
    let form = format!(
        "csrf={csrf}&name=masker-pagi&text=Pakai+masker&times=07%3A30&weekdays=mon&weekdays=fri&targets=aula&priority=scheduled"
    );
    let created = request(&f.app, "POST", "/console/schedules", &cookie, Some(&form)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let list = request(
        &f.app,
        "GET",
        "/console/schedules?done=saved",
        &cookie,
        None,
    )
    .await;
    assert!(list.body.contains("id=\"sched-masker-pagi\""));
    assert!(list.body.contains("07:30 WIB"), "{}", list.body);
    assert!(
        list.body.contains("dari berkas konfigurasi"),
        "the config schedule is read-only"
    );
    let edit = request(
        &f.app,
        "GET",
        "/console/schedules/masker-pagi",
        &cookie,
        None,
    )
    .await;
    assert!(edit.body.contains("value=\"07:30\""));
    // Edited: another time; the name in the form cannot rename it.
    let edited = request(
        &f.app,
        "POST",
        "/console/schedules/masker-pagi",
        &cookie,
        Some(&format!(
            "csrf={csrf}&name=other&text=Pakai+masker&times=08%3A15&targets=aula&paused=false"
        )),
    )
    .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let list = request(&f.app, "GET", "/console/schedules", &cookie, None).await;
    assert!(list.body.contains("08:15 WIB"), "{}", list.body);
    assert!(!list.body.contains("id=\"sched-other\""));
    let paused = request(
        &f.app,
        "POST",
        "/console/schedules/masker-pagi/pause",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    let list = request(&f.app, "GET", "/console/schedules", &cookie, None).await;
    assert!(list.body.contains("dijeda"));
    let bad = request(
        &f.app,
        "POST",
        "/console/schedules",
        &cookie,
        Some(&format!(
            "csrf={csrf}&name=salah&text=y&times=25:00&targets=aula"
        )),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let deleted = request(
        &f.app,
        "POST",
        "/console/schedules/masker-pagi/delete",
        &cookie,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let list = request(&f.app, "GET", "/console/schedules", &cookie, None).await;
    assert!(!list.body.contains("id=\"sched-masker-pagi\""));
}

#[tokio::test]
async fn untrusted_text_is_escaped_and_english_is_selectable() {
    let f = fixture();
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "<script>alert(1)</script>", "targets": ["aula"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (cookie, _) = login(&f.app, "rina", "rahasia-rina").await;
    for uri in ["/console/now", "/console/history"] {
        let page = request(&f.app, "GET", uri, &cookie, None).await;
        assert!(
            page.body
                .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{uri}"
        );
        assert!(!page.body.contains("<script>alert"), "{uri}");
        assert!(page.body.contains(">Keluar<"), "Indonesian by default");
    }
    let switch = request(
        &f.app,
        "GET",
        "/console/lang/en?back=/console/history",
        &cookie,
        None,
    )
    .await;
    assert_eq!(switch.location, "/console/history");
    assert!(switch.cookies[0].starts_with("pantau_lang=en"));
    let evil = request(
        &f.app,
        "GET",
        "/console/lang/en?back=https://evil.example/",
        &cookie,
        None,
    )
    .await;
    assert_eq!(evil.location, "/console/now", "never an open redirect");
    let page = request(
        &f.app,
        "GET",
        "/console/history?outcome=pending",
        &format!("{cookie}; pantau_lang=en"),
        None,
    )
    .await;
    assert!(page.body.contains(">Log out<"));
    assert!(page.body.contains("Targets and outcome") || page.body.contains("pending"));
    let bad = request(
        &f.app,
        "GET",
        "/console/history?from=kemarin",
        &cookie,
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Filters: a day long ago, another target, an outcome nobody has.
    for query in [
        "from=2000-01-01&to=2000-01-02",
        "target=lobi",
        "outcome=finished",
    ] {
        let page = request(
            &f.app,
            "GET",
            &format!("/console/history?{query}"),
            &cookie,
            None,
        )
        .await;
        assert!(page.body.contains("id=\"empty\""), "{query}");
    }
    let page = request(
        &f.app,
        "GET",
        "/console/history?target=aula&outcome=pending",
        &cookie,
        None,
    )
    .await;
    assert!(page.body.contains("alert(1)"), "matches");
}

#[tokio::test]
async fn an_admin_adds_changes_and_removes_users_who_can_then_log_in_or_not() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-users");
    let app = f.app.clone().with_users_file(Some(file.clone()));
    let (operator, _) = login(&app, "rina", "rahasia-rina").await;
    let refused = request(&app, "GET", "/console/users", &operator, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "users need an admin");
    let (admin, csrf) = login(&app, "adi", "rahasia-adi").await;
    let page = request(&app, "GET", "/console/users", &admin, None).await;
    assert!(page.body.contains("id=\"user-tamu\""));
    let added = request(
        &app,
        "POST",
        "/console/users",
        &admin,
        Some(&format!(
            "csrf={csrf}&name=budi&role=operator&password=rahasia-budi"
        )),
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("budi:operator:$argon2id$")
    );
    let (budi, _) = login(&app, "budi", "rahasia-budi").await;
    // A new role ends budi's session; the new password works.
    let edited = request(
        &app,
        "POST",
        "/console/users/budi",
        &admin,
        Some(&format!(
            "csrf={csrf}&role=viewer&password=rahasia-baru-budi"
        )),
    )
    .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let gone = request(&app, "GET", "/console/now", &budi, None).await;
    assert_eq!(gone.location, "/console/login");
    let (budi, _) = login(&app, "budi", "rahasia-baru-budi").await;
    let page = request(&app, "GET", "/console/send", &budi, None).await;
    assert!(
        page.body.contains("id=\"viewer-note\""),
        "budi is a viewer now"
    );
    let short = request(
        &app,
        "POST",
        "/console/users",
        &admin,
        Some(&format!(
            "csrf={csrf}&name=cici&role=viewer&password=pendek"
        )),
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let myself = request(
        &app,
        "POST",
        "/console/users/adi/remove",
        &admin,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(
        myself.status,
        StatusCode::BAD_REQUEST,
        "never remove oneself"
    );
    let removed = request(
        &app,
        "POST",
        "/console/users/budi/remove",
        &admin,
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert!(!std::fs::read_to_string(&file).unwrap().contains("budi:"));
    let gone = request(&app, "GET", "/console/now", &budi, None).await;
    assert_eq!(gone.location, "/console/login");
}
