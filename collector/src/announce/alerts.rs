//! Alertmanager's webhook (payload version 4) turned into announcements by
//! `[[announcements.alert_rules]]`: a rule matches an alert by `alertname` and labels, renders
//! its message template (`{{ $labels.link }}`, `{{ $annotations.summary }}`) and announces it
//! to its targets; a resolved alert is announced only if the rule has a `resolved_message`.
//! The same alert and rule are announced at most once per `repeat_interval_seconds` (per
//! status), so Alertmanager's repeats do not make the speakers nag; when each was last
//! announced is kept in the store, so a collector restart does not forget it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use pantau_protocol::sound::Priority;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{AnnouncementRequest, Announcer, unix_ms};

/// `[[announcements.alert_rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Shown in the audit log and the webhook's answer.
    pub name: String,
    /// The alert's `alertname`.
    pub alertname: String,
    /// Further labels the alert must have, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Spoken when the alert fires: `Perhatian: jaringan {{ $labels.link }} terputus`.
    pub message: String,
    /// Spoken when it is resolved; nothing is said without it.
    #[serde(default)]
    pub resolved_message: Option<String>,
    /// `alert` unless given.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub chime: Option<bool>,
    /// The same alert is announced again at most this often.
    #[serde(default = "default_repeat_interval_seconds")]
    pub repeat_interval_seconds: u64,
    /// Expiry of the announcements it makes (default `announcements.default_expires_in_seconds`).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

fn default_priority() -> Priority {
    Priority::Alert
}

fn default_repeat_interval_seconds() -> u64 {
    3600
}

/// Alertmanager's webhook payload, version 4 (only what is used; the rest is ignored).
#[derive(Debug, Deserialize)]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub fingerprint: String,
}

/// What became of each matching alert.
#[derive(Debug, Default, Serialize)]
pub struct WebhookOutcome {
    /// Ids of the announcements made.
    pub announced: Vec<String>,
    /// `{rule, alertname, status, reason}` of those not announced.
    pub skipped: Vec<BTreeMap<&'static str, String>>,
}

/// Renders `template` with the alert's labels and annotations; an expression other than
/// `$labels.NAME` or `$annotations.NAME` is an error, a missing name renders empty.
pub fn render(
    template: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("'{{{{' without '}}}}' in {template:?}"))?;
        let expression = after[..end].trim();
        let value = if let Some(name) = expression.strip_prefix("$labels.") {
            labels.get(name)
        } else if let Some(name) = expression.strip_prefix("$annotations.") {
            annotations.get(name)
        } else {
            return Err(format!(
                "'{{{{ {expression} }}}}': only $labels.NAME and $annotations.NAME are known"
            ));
        };
        out.push_str(value.map_or("", String::as_str));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl AlertRule {
    /// Checks the templates (rendered with no labels) and the rest of the shape.
    pub fn validate(&self) -> Result<(), String> {
        let empty = BTreeMap::new();
        render(&self.message, &empty, &empty).map_err(|why| format!("message: {why}"))?;
        if let Some(resolved) = &self.resolved_message {
            render(resolved, &empty, &empty).map_err(|why| format!("resolved_message: {why}"))?;
        }
        if self.targets.is_empty() && self.zones.is_empty() {
            return Err("give at least one of `targets` or `zones`".to_owned());
        }
        if self.repeat_interval_seconds == 0 {
            return Err("repeat_interval_seconds must be at least 1".to_owned());
        }
        Ok(())
    }

    fn matches(&self, alert: &Alert) -> bool {
        alert.labels.get("alertname") == Some(&self.alertname)
            && self
                .labels
                .iter()
                .all(|(name, value)| alert.labels.get(name) == Some(value))
    }
}

impl Announcer {
    /// Announces what the rules make of a webhook; `who` is the caller (a token or a user).
    pub async fn alertmanager(
        &self,
        who: &str,
        webhook: Webhook,
        now: SystemTime,
    ) -> WebhookOutcome {
        let now_ms = unix_ms(now);
        let mut outcome = WebhookOutcome::default();
        for alert in &webhook.alerts {
            let alertname = alert.labels.get("alertname").cloned().unwrap_or_default();
            let key = if alert.fingerprint.is_empty() {
                format!("{:?}", alert.labels)
            } else {
                alert.fingerprint.clone()
            };
            for rule in self
                .settings
                .alert_rules
                .iter()
                .filter(|r| r.matches(alert))
            {
                let skip = |reason: &str| {
                    BTreeMap::from([
                        ("rule", rule.name.clone()),
                        ("alertname", alertname.clone()),
                        ("status", alert.status.clone()),
                        ("reason", reason.to_owned()),
                    ])
                };
                let template = match alert.status.as_str() {
                    "resolved" => rule.resolved_message.as_ref(),
                    _ => Some(&rule.message),
                };
                let Some(template) = template else {
                    outcome.skipped.push(skip("no resolved_message"));
                    continue;
                };
                let interval_ms = i64::try_from(rule.repeat_interval_seconds.saturating_mul(1000))
                    .unwrap_or(i64::MAX);
                let limited = self.store().alert_rate_limited(
                    &rule.name,
                    &key,
                    &alert.status,
                    now_ms,
                    interval_ms,
                );
                match limited {
                    Ok(true) => {
                        outcome.skipped.push(skip("rate_limited"));
                        continue;
                    }
                    Ok(false) => {}
                    // Better said twice than not at all: an unreadable limit announces.
                    Err(error) => {
                        warn!(%error, rule = %rule.name, "cannot read the alert rate limit")
                    }
                }
                let text = match render(template, &alert.labels, &alert.annotations) {
                    Ok(text) => text,
                    Err(why) => {
                        outcome.skipped.push(skip(&why));
                        continue;
                    }
                };
                let request = AnnouncementRequest {
                    text: Some(text),
                    clip: None,
                    tone: None,
                    targets: rule.targets.clone(),
                    zones: rule.zones.clone(),
                    priority: Some(rule.priority),
                    repeat: rule.repeat,
                    chime: rule.chime,
                    volume: None,
                    expires_in_seconds: rule.expires_in_seconds,
                };
                match self.create(who, request, now).await {
                    Ok(row) => {
                        let reason = format!(
                            "rule '{}': alert {alertname} {} (fingerprint {key})",
                            rule.name, alert.status
                        );
                        if let Err(error) =
                            self.store().audit(now_ms, who, "alert", &row.id, &reason)
                        {
                            warn!(%error, "cannot write the audit log");
                        }
                        info!(rule = %rule.name, alertname = ?alertname, announcement = %row.id, "alert announced");
                        outcome.announced.push(row.id);
                    }
                    Err(error) => {
                        warn!(rule = %rule.name, %error, "alert not announced");
                        outcome.skipped.push(skip(&error.to_string()));
                    }
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_labels_and_annotations() {
        let labels = BTreeMap::from([("link".to_owned(), "gor-dc".to_owned())]);
        let annotations = BTreeMap::from([("summary".to_owned(), "putus".to_owned())]);
        assert_eq!(
            render("Perhatian: jaringan {{ $labels.link }} terputus ({{$annotations.summary}}){{ $labels.none }}", &labels, &annotations).unwrap(),
            "Perhatian: jaringan gor-dc terputus (putus)"
        );
        assert_eq!(
            render("{{ .Labels.link }}", &labels, &annotations).unwrap_err(),
            "'{{ .Labels.link }}': only $labels.NAME and $annotations.NAME are known"
        );
        assert_eq!(
            render("a {{ $labels.link", &labels, &annotations).unwrap_err(),
            "'{{' without '}}' in \"a {{ $labels.link\""
        );
    }
}
