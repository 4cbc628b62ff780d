//! Reminder schedules: `[[announcements.schedules]]` from the config (read-only) and those made
//! through `/api/v1/schedules` (kept in SQLite). Every change recomputes, for each sound agent
//! concerned, its whole schedule (`ScheduleArgs`, a version that only goes up), which is
//! published signed and retained on `cmd/schedule`; the agent's `schedule_applied` event says
//! which version it took.

use std::collections::BTreeMap;

use pantau_protocol::sound::AnnounceArgs;
use pantau_protocol::sound::{ScheduleArgs, ScheduleEntry, default_time_zone};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{AnnounceError, Store, StoreError, Zone};

/// One schedule: when, to whom, what. The same shape in the config and in the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique; shown in the agent's events (`masker-pagi`).
    pub name: String,
    /// Agent ids.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Zone names from `[[announcements.zones]]`.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Five-field cron expression; or `times` (and `weekdays`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Local `HH:MM` times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<String>,
    /// `mon` .. `sun`; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// IANA time zone of `times`, `cron` and the validity dates (default `Asia/Jakarta`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// What to play (priority `scheduled` unless given).
    pub announce: AnnounceArgs,
    /// A paused schedule is kept but not sent to the agents.
    #[serde(default)]
    pub paused: bool,
}

/// A schedule as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// `config` (read-only) or `api`.
    pub source: &'static str,
    pub updated_by: Option<String>,
    /// When it plays next (Unix ms), computed in its `time_zone`; none if paused or never.
    pub next_run_ms: Option<i64>,
}

/// What one agent was sent and took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSchedule {
    pub agent: String,
    pub version: u64,
    /// Whether the broker has acknowledged the retained publish of `version`.
    pub published: bool,
    /// The version the agent reported in its last `schedule_applied`.
    pub applied_version: Option<u64>,
    /// The agent's reason if it refused the schedule.
    pub detail: String,
    pub entries: usize,
}

impl ScheduleSpec {
    /// The protocol entry, and a check of everything the collector can check.
    pub fn entry(&self) -> Result<ScheduleEntry, String> {
        let entry = ScheduleEntry {
            name: self.name.clone(),
            cron: self.cron.clone(),
            times: self.times.clone(),
            weekdays: self.weekdays.clone(),
            valid_from: self.valid_from.clone(),
            valid_until: self.valid_until.clone(),
            time_zone: Some(self.time_zone.clone()),
            announce: self.announce.clone(),
        };
        // The agent's own parser: times, weekdays, dates and cron expressions are refused here,
        // naming the field, rather than by the agent after the schedule was sent.
        let args = ScheduleArgs {
            version: 1,
            time_zone: default_time_zone(),
            entries: vec![entry.clone()],
        };
        pantau_protocol::schedule::Schedule::parse(&args)
            .map_err(|why| why.replacen("entries[0] ", "", 1))?;
        entry.announce.validate()?;
        Ok(entry)
    }

    /// When it is next due strictly after `after_ms` (Unix ms), by the agents' own arithmetic
    /// in the schedule's time zone; none if paused, invalid or never again.
    pub fn next_run_ms(&self, after_ms: i64) -> Option<i64> {
        if self.paused {
            return None;
        }
        let args = ScheduleArgs {
            version: 1,
            time_zone: default_time_zone(),
            entries: vec![self.entry().ok()?],
        };
        let schedule = pantau_protocol::schedule::Schedule::parse(&args).ok()?;
        let after = jiff::Timestamp::from_millisecond(after_ms).ok()?;
        let (at, _) = schedule.next_due(after)?;
        Some(at.as_millisecond())
    }

    /// The agents it targets, each once.
    pub fn agents(&self, zones: &[Zone]) -> Result<Vec<String>, String> {
        let mut agents: Vec<String> = self.targets.clone();
        for name in &self.zones {
            let zone = zones
                .iter()
                .find(|zone| &zone.name == name)
                .ok_or_else(|| format!("`zones`: unknown zone '{name}'"))?;
            agents.extend(zone.agents.iter().cloned());
        }
        if agents.is_empty() {
            return Err("give at least one of `targets` or `zones`".to_owned());
        }
        agents.sort();
        agents.dedup();
        Ok(agents)
    }
}

/// Schedules made through the API: (spec, updated_by).
pub fn stored(store: &Store) -> Result<Vec<(ScheduleSpec, String)>, StoreError> {
    let mut statement = store
        .conn()
        .prepare("SELECT spec, updated_by FROM schedules ORDER BY name")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
    let mut specs = Vec::new();
    for row in rows {
        let (spec, by) = row?;
        if let Ok(spec) = serde_json::from_str(&spec) {
            specs.push((spec, by));
        }
    }
    Ok(specs)
}

/// Inserts or replaces an API schedule.
pub fn save(
    store: &Store,
    spec: &ScheduleSpec,
    who: &str,
    now_ms: i64,
) -> Result<(), AnnounceError> {
    let text =
        serde_json::to_string(spec).map_err(|error| AnnounceError::Invalid(error.to_string()))?;
    store
        .conn()
        .execute(
            "INSERT INTO schedules (name, spec, updated_ms, updated_by) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET spec = ?2, updated_ms = ?3, updated_by = ?4",
            params![spec.name, text, now_ms, who],
        )
        .map_err(StoreError::from)?;
    Ok(())
}

/// Deletes an API schedule; false if there was none.
pub fn delete(store: &Store, name: &str) -> Result<bool, StoreError> {
    Ok(store
        .conn()
        .execute("DELETE FROM schedules WHERE name = ?1", params![name])?
        > 0)
}

/// Recomputes every agent's whole schedule from `specs`; an agent whose entries changed gets
/// a new version (above its last, and at least the Unix time in seconds, so a lost database
/// never makes the agents refuse the next one as outdated), to be published.
pub fn recompute(
    store: &Store,
    specs: &[ScheduleSpec],
    zones: &[Zone],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut per_agent: BTreeMap<String, Vec<ScheduleEntry>> = BTreeMap::new();
    for spec in specs.iter().filter(|spec| !spec.paused) {
        let (Ok(entry), Ok(agents)) = (spec.entry(), spec.agents(zones)) else {
            continue;
        };
        for agent in agents {
            per_agent.entry(agent).or_default().push(entry.clone());
        }
    }
    let mut known: Vec<String> = {
        let mut statement = store.conn().prepare("SELECT agent FROM agent_schedules")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    known.retain(|agent| !per_agent.contains_key(agent));
    for agent in known {
        per_agent.insert(agent, Vec::new());
    }
    for (agent, entries) in per_agent {
        let current: Option<(u64, String)> = store
            .conn()
            .query_row(
                "SELECT version, args FROM agent_schedules WHERE agent = ?1",
                params![agent],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let entries_text = serde_json::to_string(&entries).unwrap_or_default();
        if current
            .as_ref()
            .is_some_and(|(_, args)| *args == entries_text)
        {
            continue;
        }
        let seconds = u64::try_from(now_ms / 1000).unwrap_or(0);
        let version = current.map_or(0, |(version, _)| version + 1).max(seconds);
        store.conn().execute(
            "INSERT INTO agent_schedules (agent, version, args, published, detail) VALUES (?1, ?2, ?3, 0, '')
             ON CONFLICT(agent) DO UPDATE SET version = ?2, args = ?3, published = 0, detail = ''",
            params![agent, version, entries_text],
        )?;
        keep_version(store, &agent, version, &entries_text)?;
    }
    Ok(())
}

/// Versions of one agent's schedule kept besides the one it applied last: enough for the
/// plays of a version being replaced while the agent takes the next, bounded however often
/// schedules are edited.
pub const KEPT_VERSIONS: usize = 8;

/// Keeps `version` of `agent`'s schedule (its `entries`, as JSON), and forgets versions older
/// than the newest `KEPT_VERSIONS`, except the newest one the agent applied.
fn keep_version(store: &Store, agent: &str, version: u64, entries: &str) -> Result<(), StoreError> {
    store.conn().execute(
        "INSERT OR REPLACE INTO schedule_versions (agent, version, entries) VALUES (?1, ?2, ?3)",
        params![agent, version, entries],
    )?;
    store.conn().execute(
        "DELETE FROM schedule_versions WHERE agent = ?1
           AND version NOT IN (SELECT version FROM schedule_versions WHERE agent = ?1
                               ORDER BY version DESC LIMIT ?2)
           AND version IS NOT (SELECT MAX(version) FROM schedule_versions
                               WHERE agent = ?1 AND applied = 1)",
        params![agent, KEPT_VERSIONS as i64],
    )?;
    Ok(())
}

/// One kept version of an agent's schedule.
#[derive(Debug, Clone)]
pub struct KeptVersion {
    /// The broker acknowledged it: the collector sent it to that agent.
    pub sent: bool,
    /// The agent reported taking it (`schedule_applied`).
    pub applied: bool,
    pub entries: Vec<ScheduleEntry>,
}

/// One kept version's entry of a given name.
#[derive(Debug, Clone)]
pub struct KeptEntry {
    pub sent: bool,
    pub applied: bool,
    pub entry: ScheduleEntry,
}

/// The kept versions of `agent`'s schedule, newest first.
pub fn kept_versions(store: &Store, agent: &str) -> Result<Vec<KeptVersion>, StoreError> {
    let mut statement = store.conn().prepare(
        "SELECT sent, applied, entries FROM schedule_versions WHERE agent = ?1
         ORDER BY version DESC",
    )?;
    let rows = statement.query_map(params![agent], |row| {
        Ok((
            row.get::<_, bool>(0)?,
            row.get::<_, bool>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut kept = Vec::new();
    for row in rows {
        let (sent, applied, entries) = row?;
        kept.push(KeptVersion {
            sent,
            applied,
            entries: serde_json::from_str(&entries).unwrap_or_default(),
        });
    }
    Ok(kept)
}

/// The entry named `name` in each of `versions` that holds one, in their order.
pub fn entries_named(versions: &[KeptVersion], name: &str) -> Vec<KeptEntry> {
    versions
        .iter()
        .filter_map(|version| {
            let entry = version.entries.iter().find(|entry| entry.name == name)?;
            Some(KeptEntry {
                sent: version.sent,
                applied: version.applied,
                entry: entry.clone(),
            })
        })
        .collect()
}

/// The entry named `name` in each kept version of `agent`'s schedule, newest first.
#[cfg(test)]
pub fn kept_entries(store: &Store, agent: &str, name: &str) -> Result<Vec<KeptEntry>, StoreError> {
    Ok(entries_named(&kept_versions(store, agent)?, name))
}

/// Schedules not yet acknowledged by the broker: (agent, the args to sign).
pub fn unpublished(store: &Store) -> Result<Vec<(String, ScheduleArgs)>, StoreError> {
    let mut statement = store
        .conn()
        .prepare("SELECT agent, version, args FROM agent_schedules WHERE published = 0")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, u64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (agent, version, entries) = row?;
        let entries = serde_json::from_str(&entries).unwrap_or_default();
        out.push((
            agent,
            ScheduleArgs {
                version,
                time_zone: default_time_zone(),
                entries,
            },
        ));
    }
    Ok(out)
}

/// Marks every agent's schedule to be published (signed) again.
pub fn republish_all(store: &Store) -> Result<(), StoreError> {
    store
        .conn()
        .execute("UPDATE agent_schedules SET published = 0", [])?;
    Ok(())
}

/// Marks `version` of `agent`'s schedule acknowledged by the broker.
pub fn mark_published(store: &Store, agent: &str, version: u64) -> Result<(), StoreError> {
    store.conn().execute(
        "UPDATE agent_schedules SET published = 1 WHERE agent = ?1 AND version = ?2",
        params![agent, version],
    )?;
    store.conn().execute(
        "UPDATE schedule_versions SET sent = 1 WHERE agent = ?1 AND version = ?2",
        params![agent, version],
    )?;
    Ok(())
}

/// Publishes `agent`'s current schedule again (it moved to another site).
pub fn republish(store: &Store, agent: &str) -> Result<(), StoreError> {
    store.conn().execute(
        "UPDATE agent_schedules SET published = 0 WHERE agent = ?1",
        params![agent],
    )?;
    Ok(())
}

/// Records the agent's `schedule_applied` (version) or its refusal of command `s<version>`.
pub fn record_answer(
    store: &Store,
    agent: &str,
    applied: Option<u64>,
    refusal: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(version) = applied {
        store.conn().execute(
            "UPDATE agent_schedules SET applied_version = ?2, detail = '' WHERE agent = ?1",
            params![agent, version],
        )?;
        // Only a version the collector made for this agent can be applied: an agent naming
        // any other number marks nothing.
        store.conn().execute(
            "UPDATE schedule_versions SET applied = 1 WHERE agent = ?1 AND version = ?2",
            params![agent, version],
        )?;
    }
    if let Some(why) = refusal {
        store.conn().execute(
            "UPDATE agent_schedules SET detail = ?2 WHERE agent = ?1",
            params![agent, why],
        )?;
    }
    Ok(())
}

/// Every agent's schedule state, by agent id.
pub fn agents(store: &Store) -> Result<Vec<AgentSchedule>, StoreError> {
    let mut statement = store.conn().prepare(
        "SELECT agent, version, published, applied_version, detail, args FROM agent_schedules ORDER BY agent",
    )?;
    let rows = statement.query_map([], |row| {
        let args: String = row.get(5)?;
        let entries: Vec<serde_json::Value> = serde_json::from_str(&args).unwrap_or_default();
        Ok(AgentSchedule {
            agent: row.get(0)?,
            version: row.get(1)?,
            published: row.get(2)?,
            applied_version: row.get(3)?,
            detail: row.get(4)?,
            entries: entries.len(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Event kind of an agent that took a new schedule (label `version`).
pub const SCHEDULE_APPLIED: &str = "schedule_applied";

/// The command id of version `version` of a schedule.
pub fn command_id(version: u64) -> String {
    format!("s{version}")
}

/// Follows an agent's answers to its schedule: `schedule_applied`, or a `command_rejected` of
/// a schedule command (its reason kept as the detail).
pub fn apply_event(
    store: &Store,
    agent: &str,
    event: &pantau_protocol::Event,
) -> Result<(), StoreError> {
    if event.kind == SCHEDULE_APPLIED {
        let version = event.labels.get("version").and_then(|v| v.parse().ok());
        return record_answer(store, agent, version, None);
    }
    if event.kind == pantau_protocol::COMMAND_REJECTED
        && event.labels.get("command").map(String::as_str) == Some(pantau_protocol::sound::SCHEDULE)
    {
        let reason = event.labels.get("reason").cloned().unwrap_or_default();
        return record_answer(
            store,
            agent,
            None,
            Some(&format!("{reason}: {}", event.message)),
        );
    }
    Ok(())
}
