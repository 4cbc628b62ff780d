//! Site moves on the Now page through the router: a status naming another site shows as a
//! waiting move; an operator may not settle it, an admin confirms it (audited), and the next
//! announcement goes to the new site.

use std::time::SystemTime;

use axum::http::StatusCode;
use serde_json::json;

use super::test_support::{login, request};
use crate::announce::Observation;
use crate::api::test_support::{TOKEN, call, fixture};

#[tokio::test]
async fn a_site_move_waits_for_an_admin_on_the_now_page() {
    let f = fixture();
    f.announcer.observe(
        Observation::Status {
            agent: "aula".to_owned(),
            site: "<b>nowhere</b>".to_owned(),
            clips: Vec::new(),
        },
        SystemTime::now(),
    );
    let (status, site) = call(&f.app, "GET", "/api/v1/agents/aula/site", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        site,
        json!({"agent": "aula", "site": "dc", "source": "status",
               "claimed_site": "<b>nowhere</b>", "claimed_ms": site["claimed_ms"]})
    );
    let (status, _) = call(&f.app, "GET", "/api/v1/agents/nobody/site", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (operator, csrf) = login(&f.app, "rina", "rahasia-rina").await;
    let now = request(&f.app, "GET", "/console/now", &operator, None).await;
    assert!(now.body.contains("id=\"move-aula\""), "{}", now.body);
    assert!(now.body.contains("nowhere"), "{}", now.body);
    assert!(!now.body.contains("<b>nowhere"), "escaped");
    assert!(
        !now.body.contains("id=\"confirm-site-aula\""),
        "no button for an operator"
    );
    let form = format!("csrf={csrf}&site=%3Cb%3Enowhere%3C%2Fb%3E&action=confirm");
    let refused = request(
        &f.app,
        "POST",
        "/console/now/site/aula",
        &operator,
        Some(&form),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let (admin, csrf) = login(&f.app, "adi", "rahasia-adi").await;
    let now = request(&f.app, "GET", "/console/now", &admin, None).await;
    assert!(now.body.contains("id=\"confirm-site-aula\""));
    let bad = format!("csrf={csrf}&site=x&action=move");
    let bad = request(&f.app, "POST", "/console/now/site/aula", &admin, Some(&bad)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let stale = format!("csrf={csrf}&site=gor&action=confirm");
    let stale = request(
        &f.app,
        "POST",
        "/console/now/site/aula",
        &admin,
        Some(&stale),
    )
    .await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
    let sent_before = f.sent.lock().unwrap().len();
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "Masih di dc", "targets": ["aula"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        f.sent.lock().unwrap()[sent_before].0,
        "pantau/v1/dc/aula/cmd/announce"
    );

    let form = format!("csrf={csrf}&site=%3Cb%3Enowhere%3C%2Fb%3E&action=dismiss");
    let dismissed = request(
        &f.app,
        "POST",
        "/console/now/site/aula",
        &admin,
        Some(&form),
    )
    .await;
    assert_eq!(
        dismissed.status,
        StatusCode::SEE_OTHER,
        "{}",
        dismissed.body
    );
    f.announcer.observe(
        Observation::Status {
            agent: "aula".to_owned(),
            site: "gor".to_owned(),
            clips: Vec::new(),
        },
        SystemTime::now(),
    );
    let form = format!("csrf={csrf}&site=gor&action=confirm");
    let confirmed = request(
        &f.app,
        "POST",
        "/console/now/site/aula",
        &admin,
        Some(&form),
    )
    .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    assert_eq!(confirmed.location, "/console/now?site=aula");
    let (_, site) = call(&f.app, "GET", "/api/v1/agents/aula/site", None, None).await;
    assert_eq!(site["site"], "gor");
    let (_, audit) = call(&f.app, "GET", "/api/v1/audit", None, None).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["who"].as_str().unwrap(),
            )
        })
        .filter(|(action, _)| action.starts_with("site_move"))
        .collect();
    assert_eq!(
        actions,
        [
            ("site_move_confirmed", "adi"),
            ("site_move_claimed", "agent:aula"),
            ("site_move_dismissed", "adi"),
            ("site_move_claimed", "agent:aula"),
        ],
        "{audit}"
    );
    let sent_before = f.sent.lock().unwrap().len();
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(json!({"text": "Sudah di gor", "targets": ["aula"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        f.sent.lock().unwrap()[sent_before].0,
        "pantau/v1/gor/aula/cmd/announce"
    );
}
