//! `/console/send`: text (with an estimate of how long it takes to speak) or a clip from the
//! agents' lists, to speakers or zones, with a priority. An `emergency` is sent only after a
//! confirmation page, checked on the server.

use std::collections::BTreeSet;
use std::time::SystemTime;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use pantau_protocol::sound::Priority;

use super::now::{encode, sound_agents};
use super::{ConsoleError, Page, Visitor, field, render, values};
use crate::api::AppState;
use crate::api::accounts::Role;

/// espeak-ng's default rate.
pub const WORDS_PER_MINUTE: u64 = 175;

/// Seconds espeak-ng takes to say `text` at its default rate, rounded up; the page's script
/// shows the same while typing.
pub fn spoken_seconds(text: &str) -> u64 {
    let words = text.split_whitespace().count() as u64;
    (words * 60).div_ceil(WORDS_PER_MINUTE)
}

#[derive(Template)]
#[template(path = "console/send.html")]
struct SendPage {
    page: Page,
    agents: Vec<String>,
    clips: Vec<String>,
    zones: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    page: Page,
    text: String,
    seconds: u64,
    /// The form's fields, sent again with `confirm=yes`.
    fields: Vec<(String, String)>,
}

/// `GET /console/send`: viewers see it without the send button.
pub async fn page(State(app): State<AppState>, visitor: Visitor) -> Result<Response, ConsoleError> {
    let announcer = visitor.announcer(&app)?;
    let agents: Vec<String> = sound_agents(&app).into_iter().map(|view| view.id).collect();
    let mut clips = BTreeSet::new();
    {
        let store = announcer.store();
        for agent in &agents {
            if let Ok(Some((_, list))) = store.agent(agent) {
                clips.extend(list);
            }
        }
    }
    let zones = announcer
        .zones()
        .iter()
        .map(|zone| zone.name.clone())
        .collect();
    Ok(render(&SendPage {
        page: visitor.page("send"),
        agents,
        clips: clips.into_iter().collect(),
        zones,
    }))
}

fn priority(name: &str) -> Option<Priority> {
    match name {
        "emergency" => Some(Priority::Emergency),
        "alert" => Some(Priority::Alert),
        "operator" | "" => Some(Priority::Operator),
        _ => None,
    }
}

/// `POST /console/send`: operator.
pub async fn submit(
    State(app): State<AppState>,
    visitor: Visitor,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    visitor.check_csrf(&app, &fields)?;
    visitor.require(&app, Role::Operator, "send")?;
    let announcer = visitor.announcer(&app)?;
    let text = field(&fields, "text")
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let clip = field(&fields, "clip").filter(|c| !c.is_empty());
    let priority_name = field(&fields, "priority").unwrap_or("operator");
    let priority = priority(priority_name).ok_or_else(|| {
        visitor.refuse(
            StatusCode::BAD_REQUEST,
            format!("`priority`: '{priority_name}' is not emergency, alert or operator"),
        )
    })?;
    if priority == Priority::Emergency && field(&fields, "confirm") != Some("yes") {
        let resend: Vec<(String, String)> = fields
            .iter()
            .filter(|(key, _)| key != "csrf" && key != "confirm")
            .cloned()
            .collect();
        let text = text.map_or_else(|| clip.unwrap_or_default().to_owned(), str::to_owned);
        return Ok(render(&ConfirmPage {
            page: visitor.page("send"),
            seconds: spoken_seconds(&text),
            text,
            fields: resend,
        }));
    }
    let request = crate::announce::AnnouncementRequest {
        text: text.map(str::to_owned),
        clip: if text.is_some() {
            None
        } else {
            clip.map(str::to_owned)
        },
        tone: None,
        targets: values(&fields, "targets"),
        zones: values(&fields, "zones"),
        priority: Some(priority),
        repeat: None,
        chime: None,
        volume: None,
        expires_in_seconds: None,
    };
    let row = announcer
        .create(&visitor.session.user, request, SystemTime::now())
        .await
        .map_err(|error| visitor.announce_error(error))?;
    Ok(Redirect::to(&format!("/console/now?sent={}", encode(&row.id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_at_175_words_a_minute() {
        assert_eq!(spoken_seconds(""), 0);
        assert_eq!(spoken_seconds("Perhatian"), 1);
        let words = vec!["kata"; 175].join(" ");
        assert_eq!(spoken_seconds(&words), 60);
        assert_eq!(spoken_seconds("  Mohon   tetap memakai masker "), 2);
    }
}
