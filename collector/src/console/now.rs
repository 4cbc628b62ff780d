//! `/console/now`: each sound agent (connection, audio device up or down, what it plays, its
//! queue, a test-tone button), the site moves its status claims (an admin confirms or
//! dismisses them) and the recent announcements with their status per target and a stop
//! button while any target may still play.

use std::sync::PoisonError;
use std::time::SystemTime;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use pantau_protocol::sound::{Priority, Tone};
use serde::Deserialize;
use tokio::time::Instant;

use super::{ConsoleError, Page, Visitor, field, is_final, render, summary, wib};
use crate::announce::sites::SiteView;
use crate::announce::{AnnouncementRequest, AnnouncementRow, HistoryFilter};
use crate::api::AppState;
use crate::api::accounts::Role;
use crate::state::AgentView;

/// Announcements the page lists at most.
const RECENT: u32 = 30;

pub struct Speaker {
    pub id: String,
    /// Where its commands go; none before its first status.
    pub site: Option<String>,
    pub online: bool,
    /// `pantau_sound_device_up`, when the agent reported it.
    pub device_up: Option<bool>,
    pub playing: bool,
    pub queue: Option<u64>,
    /// Announcements playing on it now.
    pub now_playing: Vec<String>,
    /// Announcements waiting for it (sent or queued).
    pub waiting: Vec<String>,
}

pub struct Row {
    pub id: String,
    pub time: String,
    pub by: String,
    pub what: String,
    pub priority: String,
    /// (agent, status, detail)
    pub targets: Vec<(String, String, String)>,
    pub active: bool,
}

impl Row {
    pub fn new(row: &AnnouncementRow) -> Self {
        Row {
            id: row.id.clone(),
            time: wib(row.created_ms),
            by: row.created_by.clone(),
            what: summary(&row.args),
            priority: row.args["priority"]
                .as_str()
                .unwrap_or("operator")
                .to_owned(),
            targets: row
                .targets
                .iter()
                .map(|t| (t.agent.clone(), t.status.clone(), t.detail.clone()))
                .collect(),
            active: row.stopped_ms.is_none() && row.targets.iter().any(|t| !is_final(&t.status)),
        }
    }
}

/// A site move a status claims, waiting for an admin.
pub struct Move {
    pub agent: String,
    pub pinned: String,
    pub claimed: String,
    pub since: String,
    /// `announcements.sites` names the site: it cannot be confirmed here.
    pub configured: bool,
}

impl Move {
    fn of(view: &SiteView) -> Option<Self> {
        Some(Move {
            agent: view.pinned.agent.clone(),
            pinned: view.pinned.site.clone(),
            claimed: view.pinned.claimed_site.clone()?,
            since: view.pinned.claimed_ms.map(wib).unwrap_or_default(),
            configured: view.source == "config",
        })
    }
}

#[derive(Template)]
#[template(path = "console/now.html")]
struct NowPage {
    page: Page,
    flash: Option<(String, String)>,
    speakers: Vec<Speaker>,
    moves: Vec<Move>,
    rows: Vec<Row>,
}

/// The value of a sound agent's single-sample gauge.
fn gauge(view: &AgentView, name: &str) -> Option<f64> {
    view.families
        .as_ref()?
        .iter()
        .find(|family| family.name() == name)?
        .first_value()
}

/// The agents that said they have the sound role, sorted by id.
pub fn sound_agents(app: &AppState) -> Vec<AgentView> {
    let state = app.state.read().unwrap_or_else(PoisonError::into_inner);
    state
        .views(Instant::now())
        .into_iter()
        .filter(|view| view.roles.iter().any(|role| role == "sound"))
        .collect()
}

#[derive(Deserialize)]
pub struct Flash {
    sent: Option<String>,
    stopped: Option<String>,
    tone: Option<String>,
    site: Option<String>,
}

/// `GET /console/now`.
pub async fn page(
    State(app): State<AppState>,
    visitor: Visitor,
    Query(flash): Query<Flash>,
) -> Result<Response, ConsoleError> {
    let announcer = visitor.announcer(&app)?;
    let history = announcer
        .store()
        .history(0, i64::MAX, &HistoryFilter::default(), RECENT)
        .map_err(|error| visitor.announce_error(error.into()))?;
    let rows: Vec<Row> = history.iter().map(Row::new).collect();
    let sites = announcer
        .sites()
        .map_err(|error| visitor.announce_error(error))?;
    let moves: Vec<Move> = sites.iter().filter_map(Move::of).collect();
    let speakers = sound_agents(&app)
        .into_iter()
        .map(|view| {
            let mut now_playing = Vec::new();
            let mut waiting = Vec::new();
            for row in &rows {
                for (agent, status, _) in &row.targets {
                    if agent != &view.id {
                        continue;
                    }
                    match status.as_str() {
                        "started" => now_playing.push(row.what.clone()),
                        "pending" | "sent" | "queued" => waiting.push(row.what.clone()),
                        _ => {}
                    }
                }
            }
            Speaker {
                site: sites
                    .iter()
                    .find(|site| site.pinned.agent == view.id)
                    .map(|site| site.pinned.site.clone()),
                online: view.online,
                device_up: gauge(&view, "pantau_sound_device_up").map(|v| v > 0.0),
                playing: gauge(&view, "pantau_sound_playing").is_some_and(|v| v > 0.0),
                queue: gauge(&view, "pantau_sound_queue_length").map(|v| v.max(0.0) as u64),
                id: view.id,
                now_playing,
                waiting,
            }
        })
        .collect();
    let page = visitor.page("now");
    let flash = match (flash.sent, flash.stopped, flash.tone, flash.site) {
        (Some(id), _, _, _) => Some((page.t("now.sent").to_owned(), id)),
        (_, Some(id), _, _) => Some((page.t("now.stopped").to_owned(), id)),
        (_, _, Some(agent), _) => Some((page.t("now.tone_sent").to_owned(), agent)),
        (_, _, _, Some(agent)) => Some((page.t("now.site_settled").to_owned(), agent)),
        _ => None,
    };
    Ok(render(&NowPage {
        page,
        flash,
        speakers,
        moves,
        rows,
    }))
}

/// `POST /console/now/stop/{id}`: operator.
pub async fn stop(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Operator, "stop")?;
    let announcer = visitor.announcer(&app)?;
    announcer
        .stop(&visitor.session.user, &id, SystemTime::now())
        .await
        .map_err(|error| visitor.announce_error(error))?;
    Ok(Redirect::to(&format!(
        "/console/now?stopped={}",
        encode(&id)
    )))
}

/// `POST /console/now/tone/{agent}`: operator; a 2-second 1 kHz sine on that speaker.
pub async fn tone(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(agent): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Operator, "test tone")?;
    let announcer = visitor.announcer(&app)?;
    let request = AnnouncementRequest {
        text: None,
        clip: None,
        tone: Some(Tone {
            frequency_hz: 1000.0,
            seconds: 2.0,
        }),
        targets: vec![agent.clone()],
        zones: Vec::new(),
        priority: Some(Priority::Operator),
        repeat: None,
        chime: Some(false),
        volume: None,
        expires_in_seconds: Some(60),
    };
    announcer
        .create(&visitor.session.user, request, SystemTime::now())
        .await
        .map_err(|error| visitor.announce_error(error))?;
    Ok(Redirect::to(&format!(
        "/console/now?tone={}",
        encode(&agent)
    )))
}

/// `POST /console/now/site/{agent}`: admin; `action=confirm` moves the agent to the claimed
/// `site` (commands go there from now on), `action=dismiss` forgets the claim. Audited.
pub async fn site(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(agent): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "site move")?;
    let announcer = visitor.announcer(&app)?;
    let site = field(&fields, "site").unwrap_or_default();
    let confirm = match field(&fields, "action") {
        Some("confirm") => true,
        Some("dismiss") => false,
        other => {
            return Err(visitor.refuse(
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    "`action`: '{}' is not confirm or dismiss",
                    other.unwrap_or_default()
                ),
            ));
        }
    };
    announcer
        .settle_site(
            &visitor.session.user,
            &agent,
            site,
            confirm,
            SystemTime::now(),
        )
        .await
        .map_err(|error| visitor.announce_error(error))?;
    Ok(Redirect::to(&format!(
        "/console/now?site={}",
        encode(&agent)
    )))
}

/// Percent-encodes a query value (ids are plain, but agent ids come from senders).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
