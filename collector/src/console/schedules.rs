//! `/console/schedules`: the reminder schedules with their next run in WIB, each sound agent's
//! schedule version (sent and applied), and for an admin: create, edit, pause, resume, delete.
//! Schedules from the config file are shown read-only.

use std::time::SystemTime;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use pantau_protocol::schedule::Schedule;
use pantau_protocol::sound::{AnnounceArgs, Priority, ScheduleArgs, default_time_zone};

use super::now::sound_agents;
use super::{ConsoleError, Page, Visitor, field, render, summary, values};
use crate::announce::schedules::{AgentSchedule, ScheduleSpec};
use crate::api::AppState;
use crate::api::accounts::Role;

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

pub struct Item {
    pub name: String,
    pub when: String,
    pub what: String,
    pub targets: String,
    pub next: String,
    pub paused: bool,
    pub from_config: bool,
}

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    page: Page,
    flash: Option<String>,
    items: Vec<Item>,
    agents: Vec<AgentSchedule>,
}

#[derive(Template)]
#[template(path = "console/schedule_form.html")]
struct FormPage {
    page: Page,
    /// `None` for a new schedule.
    editing: Option<String>,
    spec: ScheduleSpec,
    text: String,
    times: String,
    agents: Vec<String>,
    zones: Vec<String>,
    weekdays: [&'static str; 7],
}

impl FormPage {
    fn has_day(&self, day: &str) -> bool {
        self.spec.weekdays.iter().any(|d| d == day)
    }
    fn has_target(&self, agent: &str) -> bool {
        self.spec.targets.iter().any(|t| t == agent)
    }
    fn has_zone(&self, zone: &str) -> bool {
        self.spec.zones.iter().any(|z| z == zone)
    }
    fn priority_is(&self, name: &str) -> bool {
        serde_json::to_value(self.spec.announce.priority)
            .ok()
            .is_some_and(|value| value == name)
    }
}

/// The next time `spec` plays, in WIB; `None` when it never will (paused, or past its dates).
pub fn next_run(spec: &ScheduleSpec, after: jiff::Timestamp) -> Option<String> {
    if spec.paused {
        return None;
    }
    let args = ScheduleArgs {
        version: 1,
        time_zone: default_time_zone(),
        entries: vec![spec.entry().ok()?],
    };
    let (at, _) = Schedule::parse(&args).ok()?.next_due(after)?;
    let zone = jiff::tz::TimeZone::get("Asia/Jakarta").ok()?;
    Some(
        at.to_zoned_datetime(zone)
            .strftime("%a %Y-%m-%d %H:%M WIB")
            .to_string(),
    )
}

fn describe_when(spec: &ScheduleSpec) -> String {
    match &spec.cron {
        Some(cron) => format!("cron {cron}"),
        None if spec.weekdays.is_empty() => spec.times.join(", "),
        None => format!("{} ({})", spec.times.join(", "), spec.weekdays.join(", ")),
    }
}

#[derive(serde::Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /console/schedules?done=saved|deleted`.
pub async fn page(
    State(app): State<AppState>,
    visitor: Visitor,
    Query(done): Query<Done>,
) -> Result<Response, ConsoleError> {
    let flash = match done.done.as_deref() {
        Some("saved") => Some("sched.saved"),
        Some("deleted") => Some("sched.deleted"),
        _ => None,
    };
    render_list(&app, &visitor, flash)
}

fn render_list(
    app: &AppState,
    visitor: &Visitor,
    flash: Option<&str>,
) -> Result<Response, ConsoleError> {
    let announcer = visitor.announcer(app)?;
    let views = announcer
        .schedule_views(SystemTime::now())
        .map_err(|error| visitor.announce_error(error))?;
    let agents = announcer
        .agent_schedules()
        .map_err(|error| visitor.announce_error(error))?;
    let now = jiff::Timestamp::now();
    let page = visitor.page("schedules");
    let items = views
        .into_iter()
        .map(|view| Item {
            when: describe_when(&view.spec),
            what: summary(&serde_json::to_value(&view.spec.announce).unwrap_or_default()),
            targets: view
                .spec
                .targets
                .iter()
                .chain(&view.spec.zones)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            next: next_run(&view.spec, now).unwrap_or_else(|| page.t("sched.never").to_owned()),
            paused: view.spec.paused,
            from_config: view.source == "config",
            name: view.spec.name,
        })
        .collect();
    let flash = flash.map(|key| page.t(key).to_owned());
    Ok(render(&SchedulesPage {
        page,
        flash,
        items,
        agents,
    }))
}

fn form_page(
    app: &AppState,
    visitor: &Visitor,
    editing: Option<String>,
    spec: ScheduleSpec,
) -> Result<Response, ConsoleError> {
    let announcer = visitor.announcer(app)?;
    let zones = announcer
        .zones()
        .iter()
        .map(|zone| zone.name.clone())
        .collect();
    let agents = sound_agents(app).into_iter().map(|view| view.id).collect();
    Ok(render(&FormPage {
        page: visitor.page("schedules"),
        editing,
        text: spec.announce.text.clone().unwrap_or_default(),
        times: spec.times.join(", "),
        spec,
        agents,
        zones,
        weekdays: WEEKDAYS,
    }))
}

/// `GET /console/schedules/new`: admin.
pub async fn new_form(
    State(app): State<AppState>,
    visitor: Visitor,
) -> Result<Response, ConsoleError> {
    visitor.require(&app, Role::Admin, "schedules")?;
    let spec = ScheduleSpec {
        name: String::new(),
        targets: Vec::new(),
        zones: Vec::new(),
        cron: None,
        times: Vec::new(),
        weekdays: Vec::new(),
        valid_from: None,
        valid_until: None,
        time_zone: default_time_zone(),
        announce: AnnounceArgs::default(),
        paused: false,
    };
    form_page(&app, &visitor, None, spec)
}

/// `GET /console/schedules/{name}`: admin; the edit form.
pub async fn edit_form(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    visitor.require(&app, Role::Admin, "schedules")?;
    let announcer = visitor.announcer(&app)?;
    let view = announcer
        .schedule_views(SystemTime::now())
        .map_err(|error| visitor.announce_error(error))?
        .into_iter()
        .find(|view| view.spec.name == name && view.source == "api")
        .ok_or_else(|| {
            visitor.refuse(
                StatusCode::NOT_FOUND,
                format!("no schedule '{name}' made here"),
            )
        })?;
    form_page(&app, &visitor, Some(name), view.spec)
}

/// A schedule from the form's fields.
fn spec_of(fields: &[(String, String)], paused: bool) -> Result<ScheduleSpec, String> {
    let text = |name: &str| {
        field(fields, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let priority = match field(fields, "priority").unwrap_or("scheduled") {
        "scheduled" => Priority::Scheduled,
        "operator" => Priority::Operator,
        "alert" => Priority::Alert,
        "emergency" => Priority::Emergency,
        other => return Err(format!("`priority`: '{other}' is not a priority")),
    };
    Ok(ScheduleSpec {
        name: text("name").unwrap_or_default(),
        targets: values(fields, "targets"),
        zones: values(fields, "zones"),
        cron: text("cron"),
        times: text("times")
            .map(|times| {
                times
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        weekdays: values(fields, "weekdays"),
        valid_from: text("valid_from"),
        valid_until: text("valid_until"),
        // Kept from the schedule being edited (a hidden field); WIB for a new one.
        time_zone: text("time_zone").unwrap_or_else(default_time_zone),
        announce: AnnounceArgs {
            text: text("text"),
            priority,
            ..AnnounceArgs::default()
        },
        paused,
    })
}

/// `POST /console/schedules`: admin; creates.
pub async fn create(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    save(app, visitor, None, fields).await
}

/// `POST /console/schedules/{name}`: admin; replaces.
pub async fn edit(
    State(app): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    save(app, visitor, Some(name), fields).await
}

async fn save(
    app: AppState,
    visitor: Visitor,
    editing: Option<String>,
    fields: Vec<(String, String)>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "schedules")?;
    let announcer = visitor.announcer(&app)?;
    let paused = field(&fields, "paused") == Some("true");
    let mut spec =
        spec_of(&fields, paused).map_err(|why| visitor.refuse(StatusCode::BAD_REQUEST, why))?;
    if let Some(name) = &editing {
        // The name is the schedule's key: an edit keeps it.
        spec.name = name.clone();
    }
    announcer
        .put_schedule(
            &visitor.session.user,
            spec,
            editing.is_none(),
            SystemTime::now(),
        )
        .await
        .map_err(|error| visitor.announce_error(error))?;
    Ok(Redirect::to("/console/schedules?done=saved").into_response())
}

/// `POST /console/schedules/{name}/pause|resume|delete`: admin.
pub async fn action(
    State(app): State<AppState>,
    visitor: Visitor,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Admin, "schedules")?;
    let announcer = visitor.announcer(&app)?;
    let who = visitor.session.user.clone();
    let now = SystemTime::now();
    let result = match action.as_str() {
        "pause" => announcer
            .pause_schedule(&who, &name, true, now)
            .await
            .map(drop),
        "resume" => announcer
            .pause_schedule(&who, &name, false, now)
            .await
            .map(drop),
        "delete" => announcer.delete_schedule(&who, &name, now).await,
        other => {
            return Err(visitor.refuse(
                StatusCode::NOT_FOUND,
                format!("no schedule action '{other}'"),
            ));
        }
    };
    result.map_err(|error| visitor.announce_error(error))?;
    let done = if action == "delete" {
        "deleted"
    } else {
        "saved"
    };
    Ok(Redirect::to(&format!("/console/schedules?done={done}")).into_response())
}
