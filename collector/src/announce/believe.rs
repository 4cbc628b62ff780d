//! Whether an event of a scheduled play can be true. A sound agent plays its schedule by
//! itself, so the history learns of a play only from that agent's word; any login that may
//! publish events could otherwise fill the history with plays of entries that never existed,
//! at times that never come. An `announcement_*` event with a `schedule` label is taken only
//! when the collector sent that entry to that agent, in a version the agent applied, and the
//! play's due time is a due time of that entry close to now.

use jiff::Timestamp;
use pantau_protocol::schedule::Schedule;
use pantau_protocol::sound::{
    SCHEDULED_VALIDITY_MS, ScheduleArgs, ScheduleEntry, default_time_zone,
};

use super::schedules::{self, KeptEntry, KeptVersion};
use super::store::scheduled;
use super::{Store, StoreError};

/// How long after its due time a play may still report: it may start up to
/// `SCHEDULED_VALIDITY_MS` late, then last up to ten repeats of a text of about a minute
/// with chimes, and its events may wait in the agent's outbox through a short outage.
pub const LATE_ALLOWANCE_MS: i64 = 15 * 60_000;

/// Rows one agent may add for one entry in a day: one a minute, the most a cron entry is due.
pub const MAX_PLAYS_PER_DAY: u64 = 24 * 60;

const DAY_MS: i64 = 86_400_000;

/// Why an event of a scheduled play was refused; the `reason` label of
/// `pantau_collector_rejected_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its id is not `<entry>@<unix seconds>`.
    NotAPlay,
    /// No kept version sent to this agent holds an entry of that name.
    NotSent,
    /// The entry was sent, but in no version the agent applied.
    NotApplied,
    /// The due time is too far from now: in the future, or long past.
    OutsideWindow,
    /// The entry is never due at that time.
    NotDue,
    /// The agent already has `MAX_PLAYS_PER_DAY` rows of this entry in the last day.
    DailyLimit,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::NotAPlay,
        Refusal::NotSent,
        Refusal::NotApplied,
        Refusal::OutsideWindow,
        Refusal::NotDue,
        Refusal::DailyLimit,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotAPlay => "not_a_play",
            Refusal::NotSent => "schedule_not_sent",
            Refusal::NotApplied => "version_not_applied",
            Refusal::OutsideWindow => "due_time_outside_window",
            Refusal::NotDue => "not_due_then",
            Refusal::DailyLimit => "daily_limit",
        }
    }
}

/// Whether `now_ms` is within the time a play due at `due_ms` may be reported: from one
/// validity before (the agent's clock may run ahead) to a validity and the late allowance
/// after.
pub fn within_window(due_ms: i64, now_ms: i64) -> bool {
    let earliest = due_ms.saturating_sub(SCHEDULED_VALIDITY_MS);
    let latest = due_ms
        .saturating_add(SCHEDULED_VALIDITY_MS)
        .saturating_add(LATE_ALLOWANCE_MS);
    (earliest..=latest).contains(&now_ms)
}

/// Whether `entry` is due exactly at `due_ms`, by the agents' own schedule arithmetic (its
/// times or cron, weekdays, validity dates and time zone).
pub fn is_due_at(entry: &ScheduleEntry, due_ms: i64) -> bool {
    let args = ScheduleArgs {
        version: 1,
        time_zone: default_time_zone(),
        entries: vec![entry.clone()],
    };
    let Ok(schedule) = Schedule::parse(&args) else {
        return false;
    };
    let Ok(before) = Timestamp::from_millisecond(due_ms.saturating_sub(1000)) else {
        return false;
    };
    schedule
        .next_due(before)
        .is_some_and(|(at, _)| at.as_millisecond() == due_ms)
}

/// Checks one play against the kept versions of its entry (newest first) on that agent.
pub fn check_kept(kept: &[KeptEntry], due_ms: i64, now_ms: i64) -> Result<(), Refusal> {
    if !kept.iter().any(|kept| kept.sent || kept.applied) {
        return Err(Refusal::NotSent);
    }
    let applied: Vec<&KeptEntry> = kept.iter().filter(|kept| kept.applied).collect();
    if applied.is_empty() {
        return Err(Refusal::NotApplied);
    }
    if !within_window(due_ms, now_ms) {
        return Err(Refusal::OutsideWindow);
    }
    if !applied.iter().any(|kept| is_due_at(&kept.entry, due_ms)) {
        return Err(Refusal::NotDue);
    }
    Ok(())
}

/// Whether the event of play `play` of entry `schedule` from `agent`, received at `now_ms`,
/// may go into the history (the announcer reads the versions once per message instead).
#[cfg(test)]
pub fn scheduled_play(
    store: &Store,
    agent: &str,
    schedule: &str,
    play: &str,
    now_ms: i64,
) -> Result<Result<(), Refusal>, StoreError> {
    let versions = schedules::kept_versions(store, agent)?;
    scheduled_play_of(store, &versions, agent, schedule, play, now_ms)
}

/// Whether the event of play `play` of entry `schedule` from `agent`, received at `now_ms`,
/// may go into the history, against `agent`'s kept schedule `versions` read once for all the
/// events of a message: an agent with a large schedule sending many events costs one read.
pub fn scheduled_play_of(
    store: &Store,
    versions: &[KeptVersion],
    agent: &str,
    schedule: &str,
    play: &str,
    now_ms: i64,
) -> Result<Result<(), Refusal>, StoreError> {
    let Some(due_ms) = scheduled::due_ms(schedule, play) else {
        return Ok(Err(Refusal::NotAPlay));
    };
    let kept = schedules::entries_named(versions, schedule);
    if let Err(refusal) = check_kept(&kept, due_ms, now_ms) {
        return Ok(Err(refusal));
    }
    // A later event of a play already in the history only updates its row.
    if !store.has_play(agent, play)?
        && store.plays_since(agent, schedule, now_ms.saturating_sub(DAY_MS))? >= MAX_PLAYS_PER_DAY
    {
        return Ok(Err(Refusal::DailyLimit));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-11-28 08:00 in Asia/Jakarta.
    const EIGHT_WIB_MS: i64 = 1_764_291_600_000;

    fn entry(times: &[&str]) -> ScheduleEntry {
        serde_json::from_value(serde_json::json!({
            "name": "pagi", "times": times, "time_zone": "Asia/Jakarta",
            "announce": {"text": "Selamat pagi"}
        }))
        .unwrap()
    }

    fn kept(sent: bool, applied: bool) -> KeptEntry {
        KeptEntry {
            sent,
            applied,
            entry: entry(&["08:00"]),
        }
    }

    #[test]
    fn the_window_reaches_one_validity_before_and_a_play_after() {
        assert!(within_window(EIGHT_WIB_MS, EIGHT_WIB_MS));
        assert!(within_window(
            EIGHT_WIB_MS,
            EIGHT_WIB_MS - SCHEDULED_VALIDITY_MS
        ));
        assert!(!within_window(
            EIGHT_WIB_MS,
            EIGHT_WIB_MS - SCHEDULED_VALIDITY_MS - 1
        ));
        let latest = EIGHT_WIB_MS + SCHEDULED_VALIDITY_MS + LATE_ALLOWANCE_MS;
        assert!(within_window(EIGHT_WIB_MS, latest));
        assert!(!within_window(EIGHT_WIB_MS, latest + 1));
        // The year 9999, and the far past, are never near now.
        assert!(!within_window(253_402_300_799_000, EIGHT_WIB_MS));
        assert!(!within_window(0, EIGHT_WIB_MS));
        assert!(!within_window(i64::MAX, EIGHT_WIB_MS));
    }

    #[test]
    fn a_due_time_must_be_one_of_the_entry() {
        assert!(is_due_at(&entry(&["08:00"]), EIGHT_WIB_MS));
        assert!(!is_due_at(&entry(&["08:00"]), EIGHT_WIB_MS + 60_000));
        assert!(!is_due_at(&entry(&["08:00"]), EIGHT_WIB_MS + 1000));
        assert!(is_due_at(&entry(&["07:59", "08:00"]), EIGHT_WIB_MS));
        let mut ended = entry(&["08:00"]);
        ended.valid_until = Some("2025-11-27".to_owned());
        assert!(!is_due_at(&ended, EIGHT_WIB_MS), "past its validity dates");
    }

    #[test]
    fn each_condition_has_its_reason() {
        let now = EIGHT_WIB_MS + 30_000;
        assert_eq!(check_kept(&[], EIGHT_WIB_MS, now), Err(Refusal::NotSent));
        assert_eq!(
            check_kept(&[kept(false, false)], EIGHT_WIB_MS, now),
            Err(Refusal::NotSent),
            "made but never acknowledged by the broker"
        );
        assert_eq!(
            check_kept(&[kept(true, false)], EIGHT_WIB_MS, now),
            Err(Refusal::NotApplied)
        );
        let both = [kept(true, false), kept(true, true)];
        assert_eq!(check_kept(&both, EIGHT_WIB_MS, now), Ok(()));
        assert_eq!(
            check_kept(&both, 253_402_300_740_000, now),
            Err(Refusal::OutsideWindow)
        );
        assert_eq!(
            check_kept(&both, EIGHT_WIB_MS - 60_000, now),
            Err(Refusal::NotDue)
        );
    }

    #[test]
    fn an_agent_adds_at_most_a_day_of_rows_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spec: schedules::ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "menit", "targets": ["aula"], "cron": "* * * * *",
            "announce": {"text": "Tes"}
        }))
        .unwrap();
        let now_ms = EIGHT_WIB_MS;
        schedules::recompute(&store, &[spec], &[], now_ms).unwrap();
        let version = schedules::agents(&store).unwrap()[0].version;
        schedules::mark_published(&store, "aula", version).unwrap();
        schedules::record_answer(&store, "aula", Some(version), None).unwrap();
        let play = |due_ms: i64| format!("menit@{}", due_ms / 1000);
        assert_eq!(
            scheduled_play(&store, "aula", "menit", &play(now_ms), now_ms).unwrap(),
            Ok(())
        );
        let first = scheduled::PlayEvent {
            agent: "aula",
            schedule: "menit",
            play: &play(now_ms),
            outcome: "queued",
            detail: "",
        };
        store
            .record_scheduled(&first, &serde_json::Value::Null, now_ms)
            .unwrap();
        // The rest of a day of rows received (their claimed times do not matter).
        let rest = MAX_PLAYS_PER_DAY - 1;
        store
            .conn()
            .execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rest})
                 INSERT INTO announcements (id, created_ms, created_by, expires_ms, args, schedule, received_ms)
                     SELECT 'menit@' || i, i * 1000, 'schedule', 0, 'null', 'menit', {now_ms} FROM n;
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rest})
                 INSERT INTO targets (announcement, agent, command_id, status, updated_ms)
                     SELECT 'menit@' || i, 'aula', 'aula/menit@' || i, 'finished', {now_ms} FROM n;"
            ))
            .unwrap();
        let next = now_ms + 60_000;
        assert_eq!(
            scheduled_play(&store, "aula", "menit", &play(next), next).unwrap(),
            Err(Refusal::DailyLimit)
        );
        // A later event of a play already in the history still updates it.
        assert_eq!(
            scheduled_play(&store, "aula", "menit", &play(now_ms), next).unwrap(),
            Ok(())
        );
        let kept = store.plays_since("aula", "menit", now_ms - DAY_MS).unwrap();
        assert_eq!(kept, MAX_PLAYS_PER_DAY);
        // A day later the count starts again.
        let tomorrow = now_ms + DAY_MS + 60_000;
        assert_eq!(
            scheduled_play(&store, "aula", "menit", &play(tomorrow), tomorrow).unwrap(),
            Ok(())
        );
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let mut reasons: Vec<&str> = Refusal::ALL.iter().map(|r| r.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), Refusal::ALL.len());
    }
}
