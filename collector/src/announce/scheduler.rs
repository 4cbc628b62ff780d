//! The `Announcer`'s schedule side: create, edit, pause, resume and delete schedules made
//! through the API, recompute each agent's whole schedule after every change, and publish
//! what the broker has not acknowledged yet (signed, retained).

use std::time::SystemTime;

use tracing::{info, warn};

use super::schedules::{self, ScheduleSpec, ScheduleView};
use super::{AnnounceError, Announcer, unix_ms};
use pantau_protocol::sound::SCHEDULE;

impl Announcer {
    /// Config schedules first, then the API's, each with where it comes from.
    pub fn schedule_views(&self, now: SystemTime) -> Result<Vec<ScheduleView>, AnnounceError> {
        let now_ms = unix_ms(now);
        let mut views: Vec<ScheduleView> = self
            .settings
            .schedules
            .iter()
            .map(|spec| ScheduleView {
                next_run_ms: spec.next_run_ms(now_ms),
                spec: spec.clone(),
                source: "config",
                updated_by: None,
            })
            .collect();
        for (spec, by) in schedules::stored(&self.store())? {
            views.push(ScheduleView {
                next_run_ms: spec.next_run_ms(now_ms),
                spec,
                source: "api",
                updated_by: Some(by),
            });
        }
        Ok(views)
    }

    /// Each agent's schedule version, published and applied.
    pub fn agent_schedules(&self) -> Result<Vec<schedules::AgentSchedule>, AnnounceError> {
        Ok(schedules::agents(&self.store())?)
    }

    /// Adds (`create`) or replaces an API schedule, then recomputes and publishes.
    pub async fn put_schedule(
        &self,
        who: &str,
        spec: ScheduleSpec,
        create: bool,
        now: SystemTime,
    ) -> Result<ScheduleSpec, AnnounceError> {
        let invalid = AnnounceError::Invalid;
        spec.entry().map_err(invalid)?;
        let agents = spec.agents(&self.settings.zones).map_err(invalid)?;
        {
            let store = self.store();
            for agent in &agents {
                let Some((_, clips)) = store.agent(agent)? else {
                    return Err(invalid(format!(
                        "`targets`: unknown agent '{agent}' (no birth message seen from it)"
                    )));
                };
                if let Some(clip) = &spec.announce.clip
                    && !clips.contains(clip)
                {
                    return Err(invalid(format!(
                        "`announce.clip`: agent '{agent}' has no clip '{clip}'"
                    )));
                }
            }
            self.check_editable(&spec.name)?;
            let exists = schedules::stored(&store)?
                .iter()
                .any(|(stored, _)| stored.name == spec.name);
            match (create, exists) {
                (true, true) => {
                    return Err(AnnounceError::Conflict(format!(
                        "schedule '{}' exists; edit it with PUT",
                        spec.name
                    )));
                }
                (false, false) => {
                    return Err(AnnounceError::NotFound(format!(
                        "no schedule '{}'",
                        spec.name
                    )));
                }
                _ => {}
            }
            let now_ms = unix_ms(now);
            schedules::save(&store, &spec, who, now_ms)?;
            let action = if create {
                "schedule_create"
            } else {
                "schedule_edit"
            };
            let detail = serde_json::to_string(&spec).unwrap_or_default();
            store.audit(now_ms, who, action, &spec.name, &detail)?;
        }
        self.sync_schedules(now).await;
        Ok(spec)
    }

    /// Pauses or resumes an API schedule.
    pub async fn pause_schedule(
        &self,
        who: &str,
        name: &str,
        paused: bool,
        now: SystemTime,
    ) -> Result<ScheduleSpec, AnnounceError> {
        self.check_editable(name)?;
        let spec = {
            let store = self.store();
            let mut spec = schedules::stored(&store)?
                .into_iter()
                .map(|(spec, _)| spec)
                .find(|spec| spec.name == name)
                .ok_or_else(|| AnnounceError::NotFound(format!("no schedule '{name}'")))?;
            spec.paused = paused;
            let now_ms = unix_ms(now);
            schedules::save(&store, &spec, who, now_ms)?;
            let action = if paused {
                "schedule_pause"
            } else {
                "schedule_resume"
            };
            store.audit(now_ms, who, action, name, "")?;
            spec
        };
        self.sync_schedules(now).await;
        Ok(spec)
    }

    /// Deletes an API schedule.
    pub async fn delete_schedule(
        &self,
        who: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), AnnounceError> {
        self.check_editable(name)?;
        {
            let store = self.store();
            if !schedules::delete(&store, name)? {
                return Err(AnnounceError::NotFound(format!("no schedule '{name}'")));
            }
            store.audit(unix_ms(now), who, "schedule_delete", name, "")?;
        }
        self.sync_schedules(now).await;
        Ok(())
    }

    fn check_editable(&self, name: &str) -> Result<(), AnnounceError> {
        if self.settings.schedules.iter().any(|spec| spec.name == name) {
            return Err(AnnounceError::Conflict(format!(
                "schedule '{name}' comes from the config ([[announcements.schedules]]); change it there"
            )));
        }
        Ok(())
    }

    /// Recomputes every agent's schedule from the config and the API's, then publishes what
    /// changed.
    pub async fn sync_schedules(&self, now: SystemTime) {
        let result = {
            let store = self.store();
            schedules::stored(&store).and_then(|stored| {
                let mut specs = self.settings.schedules.clone();
                specs.extend(stored.into_iter().map(|(spec, _)| spec));
                schedules::recompute(&store, &specs, &self.settings.zones, unix_ms(now))
            })
        };
        if let Err(error) = result {
            warn!(%error, "cannot recompute the schedules");
        }
        self.publish_schedules().await;
    }

    /// Publishes, signed and retained, every schedule the broker has not acknowledged yet
    /// (an agent whose site is not known yet waits for its birth).
    pub async fn publish_schedules(&self) {
        let unpublished = match schedules::unpublished(&self.store()) {
            Ok(unpublished) => unpublished,
            Err(error) => {
                warn!(%error, "cannot read the schedules to publish");
                return;
            }
        };
        for (agent, args) in unpublished {
            let version = args.version;
            let args = serde_json::to_value(&args).unwrap_or_default();
            let id = schedules::command_id(version);
            if self.send(&agent, &id, SCHEDULE, args, None).await {
                info!(agent, version, "schedule published");
                if let Err(error) = schedules::mark_published(&self.store(), &agent, version) {
                    warn!(%error, "cannot mark a schedule published");
                }
            }
        }
        self.refresh_schedule_gauge();
    }

    /// Sets `pantau_collector_sound_schedule_version{instance,state}` from the store.
    pub(super) fn refresh_schedule_gauge(&self) {
        let Some(gauge) = &self.schedule_gauge else {
            return;
        };
        let Ok(agents) = schedules::agents(&self.store()) else {
            return;
        };
        gauge.reset();
        for agent in agents {
            let as_gauge = |version: u64| i64::try_from(version).unwrap_or(i64::MAX);
            if agent.published {
                gauge
                    .with_label_values(&[agent.agent.as_str(), "published"])
                    .set(as_gauge(agent.version));
            }
            if let Some(applied) = agent.applied_version {
                gauge
                    .with_label_values(&[agent.agent.as_str(), "applied"])
                    .set(as_gauge(applied));
            }
        }
    }
}
