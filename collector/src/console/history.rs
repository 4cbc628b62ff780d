//! `/console/history`: announcements filtered by date (WIB), target and outcome, newest first,
//! with the outcome per target.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::now::{Row, sound_agents};
use super::{ConsoleError, Page, Visitor, render};
use crate::announce::HistoryFilter;
use crate::api::AppState;

/// Rows shown at most.
const LIMIT: u32 = 200;

/// Outcomes offered in the filter.
pub const OUTCOMES: [&str; 10] = [
    "pending",
    "queued",
    "started",
    "finished",
    "failed",
    "expired",
    "preempted",
    "stopped",
    "rejected",
    "collapsed",
];

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    /// `YYYY-MM-DD`, WIB, from its start.
    #[serde(default)]
    pub from: String,
    /// `YYYY-MM-DD`, WIB, to its end.
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "console/history.html")]
struct HistoryPage {
    page: Page,
    filter: Filter,
    agents: Vec<String>,
    outcomes: [&'static str; 10],
    rows: Vec<Row>,
}

/// Milliseconds at the start of `date` (WIB), plus `days`.
fn day_start_ms(field: &str, date: &str, days: i64) -> Result<Option<i64>, String> {
    if date.is_empty() {
        return Ok(None);
    }
    let parsed: jiff::civil::Date = date
        .parse()
        .map_err(|_| format!("`{field}`: '{date}' is not a date YYYY-MM-DD"))?;
    let zone = jiff::tz::TimeZone::get("Asia/Jakarta").map_err(|e| e.to_string())?;
    let zoned = parsed
        .to_zoned_datetime(zone)
        .map_err(|e| e.to_string())?
        .checked_add(jiff::Span::new().days(days))
        .map_err(|e| e.to_string())?;
    Ok(Some(zoned.timestamp().as_millisecond()))
}

/// `GET /console/history?from=&to=&target=&outcome=`.
pub async fn page(
    State(app): State<AppState>,
    visitor: Visitor,
    Query(filter): Query<Filter>,
) -> Result<Response, ConsoleError> {
    let announcer = visitor.announcer(&app)?;
    let bad = |why: String| visitor.refuse(StatusCode::BAD_REQUEST, why);
    let from = day_start_ms("from", &filter.from, 0)
        .map_err(bad)?
        .unwrap_or(0);
    let to = day_start_ms("to", &filter.to, 1)
        .map_err(bad)?
        .map_or(i64::MAX, |end| end - 1);
    let target = Some(filter.target.as_str()).filter(|t| !t.is_empty());
    let outcome = Some(filter.outcome.as_str()).filter(|o| !o.is_empty());
    let history = announcer
        .store()
        .history(
            from,
            to,
            &HistoryFilter {
                agent: target,
                outcome,
                schedule: None,
            },
            LIMIT,
        )
        .map_err(|error| visitor.announce_error(error.into()))?;
    Ok(render(&HistoryPage {
        page: visitor.page("history"),
        agents: sound_agents(&app).into_iter().map(|view| view.id).collect(),
        outcomes: OUTCOMES,
        rows: history.iter().map(Row::new).collect(),
        filter,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_wib_days() {
        // 2026-11-28 00:00 WIB is 2026-11-27 17:00 UTC.
        assert_eq!(
            day_start_ms("from", "2026-11-28", 0).unwrap(),
            Some(1_795_798_800_000)
        );
        assert_eq!(day_start_ms("from", "", 0).unwrap(), None);
        assert_eq!(
            day_start_ms("from", "28/11", 0).unwrap_err(),
            "`from`: '28/11' is not a date YYYY-MM-DD"
        );
    }
}
