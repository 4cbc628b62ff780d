//! UPSes through Network UPS Tools, under the names of the most used NUT exporter
//! (DRuggeri/nut_exporter): `network_ups_tools_<variable>` with `.` as `_` and an `ups` label,
//! `network_ups_tools_ups_status{flag}` 1/0 for every known status flag, and
//! `network_ups_tools_device_info` with the `device.*` strings as labels. A change of
//! `ups.status` (on battery, low battery, back on line) is an event at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::Duration;

use pantau_protocol::{Event, Family, Severity, validate_metric_name};
use pantau_runtime::config::ConfigError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::UpsConfig;
use super::nut::{self, NutError, Target};
use crate::metric::FamilyBuilder;
use crate::role::RoleContext;

/// The status flags always exported, 0 when absent: nut_exporter's default `--nut.statuses`.
pub const KNOWN_FLAGS: [&str; 15] = [
    "OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER", "TRIM",
    "BOOST", "FSD", "SD",
];
/// Flags beyond the known ones a UPS may add (driver-specific); more are ignored.
const MAX_EXTRA_FLAGS: usize = 8;

/// One UPS: its config and its latest poll.
#[derive(Debug, Clone)]
pub struct Slot {
    target: Target,
    interval: Duration,
    /// The variables of the last successful poll; empty while the UPS cannot be read.
    variables: BTreeMap<String, String>,
    up: bool,
    /// Failed polls by reason, since the agent started.
    errors: BTreeMap<&'static str, u64>,
}

impl Slot {
    pub fn new(config: &UpsConfig, default_interval: u64) -> Result<Self, ConfigError> {
        let login = match (&config.username, config.password()?) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            _ => None,
        };
        Ok(Self {
            target: Target {
                address: config.socket_address(),
                ups: config.name.clone(),
                login,
                timeout: Duration::from_secs(config.timeout_seconds),
            },
            interval: Duration::from_secs(config.interval_seconds.unwrap_or(default_interval)),
            variables: BTreeMap::new(),
            up: false,
            errors: BTreeMap::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.target.ups
    }
}

/// Polls the UPS every interval until shutdown, keeping the latest reading in `slot` and
/// emitting an event when its status or reachability changes.
pub async fn poll_forever(
    slot: Arc<Mutex<Slot>>,
    context: RoleContext,
    shutdown: CancellationToken,
) {
    let (target, interval) = {
        let slot = lock(&slot);
        (slot.target.clone(), slot.interval)
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_flags: Option<BTreeSet<String>> = None;
    let mut last_error: Option<&'static str> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = nut::list_variables(&target).await;
        let mut events = Vec::new();
        match &result {
            Ok(variables) => {
                let flags = status_flags(variables);
                if let Some(previous) = &last_flags {
                    events.extend(status_events(&target.ups, previous, &flags));
                }
                if last_error.take().is_some() {
                    info!(ups = %target.ups, "UPS readable again");
                    events.push(event(
                        "device_recovered",
                        Severity::Info,
                        format!("UPS {} can be read again", target.ups),
                        &target.ups,
                    ));
                }
                last_flags = Some(flags);
            }
            Err(error) => {
                if last_error != Some(error.reason()) {
                    warn!(ups = %target.ups, %error, "cannot read the UPS");
                    events.push(event(
                        "device_unreachable",
                        Severity::Warning,
                        format!("UPS {}: {error}", target.ups),
                        &target.ups,
                    ));
                }
                last_error = Some(error.reason());
            }
        }
        store(&slot, result);
        if !events.is_empty() {
            for event in events {
                context.events.emit(event);
            }
            context.report_now.request();
        }
    }
}

fn store(slot: &Mutex<Slot>, result: Result<BTreeMap<String, String>, NutError>) {
    let mut slot = lock(slot);
    match result {
        Ok(variables) => {
            slot.variables = variables;
            slot.up = true;
        }
        Err(error) => {
            slot.variables.clear();
            slot.up = false;
            *slot.errors.entry(error.reason()).or_default() += 1;
        }
    }
}

fn status_flags(variables: &BTreeMap<String, String>) -> BTreeSet<String> {
    variables
        .get("ups.status")
        .map(|status| status.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Events for what changed between two `ups.status` readings.
fn status_events(ups: &str, before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<Event> {
    let appeared = |flag: &str| after.contains(flag) && !before.contains(flag);
    let mut events = Vec::new();
    if appeared("OB") {
        events.push(event(
            "ups_on_battery",
            Severity::Warning,
            format!("UPS {ups} is on battery"),
            ups,
        ));
    }
    if appeared("LB") {
        events.push(event(
            "ups_low_battery",
            Severity::Critical,
            format!("UPS {ups} has a low battery: shutdown is near"),
            ups,
        ));
    }
    if appeared("OL") && before.contains("OB") {
        events.push(event(
            "ups_on_line",
            Severity::Info,
            format!("UPS {ups} is back on line power"),
            ups,
        ));
    }
    if appeared("RB") {
        events.push(event(
            "ups_replace_battery",
            Severity::Warning,
            format!("UPS {ups} asks for its battery to be replaced"),
            ups,
        ));
    }
    events
}

fn event(kind: &str, severity: Severity, message: String, ups: &str) -> Event {
    Event {
        kind: kind.to_owned(),
        severity,
        message,
        labels: [("ups".to_owned(), ups.to_owned())].into(),
    }
}

/// `battery.charge` → `network_ups_tools_battery_charge`; None when the name cannot be a
/// metric name even after replacing the characters NUT allows and Prometheus does not.
fn metric_name(variable: &str) -> Option<String> {
    let name: String = format!("network_ups_tools_{variable}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    validate_metric_name(&name).ok().map(|()| name)
}

/// A numeric value as nut_exporter reads it; booleans-as-words too.
fn number(value: &str) -> Option<f64> {
    if let Ok(number) = value.trim().parse::<f64>() {
        return number.is_finite().then_some(number);
    }
    match value.trim().to_ascii_lowercase().as_str() {
        "enable" | "enabled" | "on" | "true" | "active" | "activated" => Some(1.0),
        "disable" | "disabled" | "off" | "false" | "inactive" | "deactivated" => Some(0.0),
        _ => None,
    }
}

/// The series of every UPS slot, one family per name; up and error samples go into the
/// families shared with the other device kinds.
pub fn families(slots: &[Slot], up: &mut FamilyBuilder, errors: &mut FamilyBuilder) -> Vec<Family> {
    let mut by_name: BTreeMap<String, FamilyBuilder> = BTreeMap::new();
    for slot in slots {
        let ups = slot.name();
        up.sample(
            &[("kind", "ups"), ("device", ups)],
            f64::from(u8::from(slot.up)),
        );
        for (reason, count) in &slot.errors {
            errors.sample(
                &[("kind", "ups"), ("device", ups), ("reason", reason)],
                *count as f64,
            );
        }
        if !slot.up {
            continue;
        }
        let mut info: Vec<(&str, &str)> = vec![("ups", ups)];
        for (variable, value) in &slot.variables {
            if let Some(field) = variable.strip_prefix("device.")
                && ["model", "mfr", "serial", "type"].contains(&field)
            {
                info.push((field, value));
                continue;
            }
            if variable == "ups.status" {
                continue;
            }
            let (Some(name), Some(value)) = (metric_name(variable), number(value)) else {
                continue;
            };
            by_name
                .entry(name.clone())
                .or_insert_with(|| {
                    FamilyBuilder::gauge(&name, &format!("Value of the NUT variable {variable}."))
                })
                .sample(&[("ups", ups)], value);
        }
        let flags = status_flags(&slot.variables);
        let status = by_name
            .entry("network_ups_tools_ups_status".to_owned())
            .or_insert_with(|| {
                FamilyBuilder::gauge(
                    "network_ups_tools_ups_status",
                    "UPS status flags (ups.status): 1 when the flag is set.",
                )
            });
        for flag in KNOWN_FLAGS {
            status.sample(
                &[("ups", ups), ("flag", flag)],
                f64::from(u8::from(flags.contains(flag))),
            );
        }
        for flag in flags
            .iter()
            .filter(|flag| !KNOWN_FLAGS.contains(&flag.as_str()))
            .filter(|flag| flag.len() <= 16 && flag.chars().all(|c| c.is_ascii_alphanumeric()))
            .take(MAX_EXTRA_FLAGS)
        {
            status.sample(&[("ups", ups), ("flag", flag)], 1.0);
        }
        by_name
            .entry("network_ups_tools_device_info".to_owned())
            .or_insert_with(|| {
                FamilyBuilder::gauge(
                    "network_ups_tools_device_info",
                    "UPS device information from the device.* variables.",
                )
            })
            .sample(&info, 1.0);
    }
    by_name.into_values().map(FamilyBuilder::build).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(variables: &[(&str, &str)], up: bool) -> Slot {
        Slot {
            target: Target {
                address: "127.0.0.1:3493".to_owned(),
                ups: "dc-ups".to_owned(),
                login: None,
                timeout: Duration::from_secs(1),
            },
            interval: Duration::from_secs(1),
            variables: variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            up,
            errors: BTreeMap::new(),
        }
    }

    fn families(slots: &[Slot]) -> Vec<Family> {
        let mut up = FamilyBuilder::gauge("pantau_device_up", "");
        let mut errors = FamilyBuilder::counter("pantau_device_poll_errors_total", "");
        let mut families = super::families(slots, &mut up, &mut errors);
        families.push(up.build());
        families.push(errors.build());
        families
    }

    fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = families.iter().find(|f| f.name == name)?;
        family
            .samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn variables_flags_and_info_follow_nut_exporter() {
        let families = families(&[slot(
            &[
                ("battery.charge", "87"),
                ("battery.runtime", "1800"),
                ("ups.load", "23.5"),
                ("ups.status", "OB DISCHRG"),
                ("ups.beeper.status", "enabled"),
                ("device.model", "Smart-UPS 1500"),
                ("device.mfr", "APC"),
                ("ups.firmware", "UPS 09.3 / ID=18"),
            ],
            true,
        )]);
        let ups = [("ups", "dc-ups")];
        assert_eq!(
            value(&families, "network_ups_tools_battery_charge", &ups),
            Some(87.0)
        );
        assert_eq!(
            value(&families, "network_ups_tools_ups_load", &ups),
            Some(23.5)
        );
        assert_eq!(
            value(&families, "network_ups_tools_ups_beeper_status", &ups),
            Some(1.0)
        );
        assert_eq!(
            value(&families, "network_ups_tools_ups_firmware", &ups),
            None
        );
        assert_eq!(
            value(&families, "network_ups_tools_ups_status", &[("flag", "OB")]),
            Some(1.0)
        );
        assert_eq!(
            value(&families, "network_ups_tools_ups_status", &[("flag", "OL")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &families,
                "network_ups_tools_device_info",
                &[("model", "Smart-UPS 1500"), ("mfr", "APC")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &families,
                "pantau_device_up",
                &[("kind", "ups"), ("device", "dc-ups")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn an_unreadable_ups_shows_down_and_no_stale_values() {
        let mut down = slot(&[], false);
        down.errors.insert("timeout", 3);
        let families = families(&[down]);
        assert_eq!(
            value(&families, "pantau_device_up", &[("device", "dc-ups")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &families,
                "pantau_device_poll_errors_total",
                &[("reason", "timeout")]
            ),
            Some(3.0)
        );
        assert!(
            families
                .iter()
                .all(|f| !f.name.starts_with("network_ups_tools_"))
        );
    }

    #[test]
    fn status_changes_become_events() {
        let set = |s: &str| {
            s.split_whitespace()
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
        };
        let kinds = |before: &str, after: &str| -> Vec<String> {
            status_events("dc-ups", &set(before), &set(after))
                .into_iter()
                .map(|e| e.kind)
                .collect()
        };
        assert_eq!(kinds("OL CHRG", "OB DISCHRG"), ["ups_on_battery"]);
        assert_eq!(kinds("OB DISCHRG", "OB LB"), ["ups_low_battery"]);
        assert_eq!(kinds("OB LB", "OL CHRG"), ["ups_on_line"]);
        assert!(kinds("OL", "OL CHRG").is_empty());
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(
            metric_name("battery.charge").as_deref(),
            Some("network_ups_tools_battery_charge")
        );
        assert_eq!(
            metric_name("driver.parameter.pollinterval").as_deref(),
            Some("network_ups_tools_driver_parameter_pollinterval")
        );
        assert_eq!(
            metric_name("weird-name.x").as_deref(),
            Some("network_ups_tools_weird_name_x")
        );
        assert_eq!(number("nan"), None);
        assert_eq!(number(" 12 "), Some(12.0));
    }
}
