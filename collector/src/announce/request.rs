//! `AnnouncementRequest`: the body of `POST /api/v1/announcements`, checked against what the
//! collector knows (zones from the config, agents and their clips from their births) before
//! anything is sent. Every refusal names the field and the value.

use std::collections::BTreeSet;

use pantau_protocol::sound::{AnnounceArgs, Priority, Tone};
use serde::Deserialize;

use super::{AnnounceError, Store, Zone};

/// Longest `expires_in_seconds`: the agent keeps ids for a day, so a later expiry could replay.
pub const MAX_EXPIRES_IN_SECONDS: u64 = 86_400;

/// `POST /api/v1/announcements`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementRequest {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub clip: Option<String>,
    /// A sine test tone (`{"frequency_hz": 1000, "seconds": 2}`), to check a speaker.
    #[serde(default)]
    pub tone: Option<Tone>,
    /// Agent ids.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Zone names from `[[announcements.zones]]`.
    #[serde(default)]
    pub zones: Vec<String>,
    /// `operator` unless given; `scheduled` is for schedules.
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub chime: Option<bool>,
    #[serde(default)]
    pub volume: Option<f64>,
    /// After this many seconds the announcement is not sent nor played any more.
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

impl AnnouncementRequest {
    /// The command arguments and the target agents (sorted, each once).
    pub fn resolve(
        &self,
        zones: &[Zone],
        store: &Store,
    ) -> Result<(AnnounceArgs, Vec<String>), AnnounceError> {
        let invalid = |why: String| AnnounceError::Invalid(why);
        let args = AnnounceArgs {
            text: self.text.clone(),
            clip: self.clip.clone(),
            tone: self.tone,
            priority: self.priority.unwrap_or(Priority::Operator),
            chime: self.chime,
            repeat: self.repeat,
            volume: self.volume,
            voice: None,
            on_preempt: Default::default(),
        };
        if self.text.is_none() && self.clip.is_none() && self.tone.is_none() {
            return Err(invalid("give one of `text`, `clip` or `tone`".to_owned()));
        }
        args.validate().map_err(invalid)?;
        if let Some(seconds) = self.expires_in_seconds
            && !(1..=MAX_EXPIRES_IN_SECONDS).contains(&seconds)
        {
            return Err(invalid(format!(
                "`expires_in_seconds`: {seconds} must be 1 to {MAX_EXPIRES_IN_SECONDS}"
            )));
        }
        let mut agents = BTreeSet::new();
        for target in &self.targets {
            agents.insert(target.clone());
        }
        for name in &self.zones {
            let zone = zones
                .iter()
                .find(|zone| &zone.name == name)
                .ok_or_else(|| invalid(format!("`zones`: unknown zone '{name}'")))?;
            agents.extend(zone.agents.iter().cloned());
        }
        if agents.is_empty() {
            return Err(invalid(
                "give at least one of `targets` or `zones`".to_owned(),
            ));
        }
        for agent in &agents {
            let Some((_, clips)) = store.agent(agent)? else {
                return Err(invalid(format!(
                    "`targets`: unknown agent '{agent}' (no birth message seen from it)"
                )));
            };
            if let Some(clip) = &self.clip
                && !clips.contains(clip)
            {
                return Err(invalid(format!(
                    "`clip`: agent '{agent}' has no clip '{clip}'"
                )));
            }
        }
        Ok((args, agents.into_iter().collect()))
    }
}
