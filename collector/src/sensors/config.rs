//! `[[sensors]]`: how readings of room sensors that speak MQTT themselves (Tasmota, Zigbee2MQTT,
//! ESPHome, or a bare number) become series.

use pantau_runtime::config::ConfigError;
use serde::Deserialize;

/// The payload formats the collector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tasmota's `tele/<device>/SENSOR` JSON: fields by path, e.g. `AM2301.Temperature`.
    Tasmota,
    /// Zigbee2MQTT's `zigbee2mqtt/<device>` JSON: top-level fields, e.g. `temperature`.
    Zigbee2mqtt,
    /// ESPHome's per-state topics `<node>/sensor/<name>/state` with a bare number; the field
    /// is the topic's `<name>`.
    Esphome,
    /// A bare number; the rule's one field has path `value`.
    Number,
}

/// One mapping rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorRule {
    /// MQTT topic filter; the level of its first `+` is the device's name.
    pub topic: String,
    pub format: Format,
    /// The `room` label of every series this rule makes.
    pub room: String,
    /// Which fields become which metrics.
    pub fields: Vec<FieldRule>,
    /// A device silent this long is down (`pantau_sensor_up 0`) and its readings are dropped.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// One field of a payload and the metric it becomes: `pantau_sensor_<metric>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// `AM2301.Temperature` (Tasmota), `temperature` (Zigbee2MQTT), the sensor's name
    /// (ESPHome), `value` (a bare number).
    pub path: String,
    /// `temperature_celsius`, `humidity_ratio`, ...
    pub metric: String,
    /// The reading is multiplied by this (0.01 turns a percentage into a ratio).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_timeout_seconds() -> u64 {
    300
}

fn default_scale() -> f64 {
    1.0
}

/// Most rules, fields per rule and devices kept in all.
pub const MAX_RULES: usize = 64;
pub const MAX_FIELDS: usize = 32;

pub fn validate(rules: &[SensorRule], prefix: &str) -> Result<(), ConfigError> {
    if rules.len() > MAX_RULES {
        return Err(ConfigError::invalid(
            "sensors",
            format!("{} rules", rules.len()),
            format!("at most {MAX_RULES}"),
        ));
    }
    for (index, rule) in rules.iter().enumerate() {
        let field = |key: &str| format!("sensors[{index}].{key}");
        let levels: Vec<&str> = rule.topic.split('/').collect();
        let wildcard_ok =
            levels.iter().all(|l| !l.contains(['+', '#']) || *l == "+") && levels.contains(&"+");
        if rule.topic.is_empty() || !wildcard_ok {
            return Err(ConfigError::invalid(
                field("topic"),
                &rule.topic,
                "must be an MQTT filter with a `+` level for the device (no `#`)",
            ));
        }
        if rule.topic == prefix || rule.topic.starts_with(&format!("{prefix}/")) {
            return Err(ConfigError::invalid(
                field("topic"),
                &rule.topic,
                format!("lies under the agents' prefix '{prefix}'"),
            ));
        }
        if rule.format == Format::Esphome && levels.iter().filter(|l| **l == "+").count() < 2 {
            return Err(ConfigError::invalid(
                field("topic"),
                &rule.topic,
                "an esphome rule needs `+` for the node and for the sensor (`+/sensor/+/state`)",
            ));
        }
        if rule.room.is_empty() || rule.room.len() > 64 {
            return Err(ConfigError::invalid(
                field("room"),
                &rule.room,
                "must be 1 to 64 characters",
            ));
        }
        if rule.fields.is_empty() || rule.fields.len() > MAX_FIELDS {
            return Err(ConfigError::invalid(
                field("fields"),
                rule.fields.len(),
                format!("must list 1 to {MAX_FIELDS} fields"),
            ));
        }
        if !(1..=86_400).contains(&rule.timeout_seconds) {
            return Err(ConfigError::invalid(
                field("timeout_seconds"),
                rule.timeout_seconds,
                "must be 1 to 86400",
            ));
        }
        for (n, f) in rule.fields.iter().enumerate() {
            let name = format!("pantau_sensor_{}", f.metric);
            if pantau_protocol::validate_metric_name(&name).is_err()
                || f.metric.is_empty()
                || f.metric == "up"
            {
                return Err(ConfigError::invalid(
                    format!("sensors[{index}].fields[{n}].metric"),
                    &f.metric,
                    "must make a valid metric name after `pantau_sensor_` (and not `up`)",
                ));
            }
            if !f.scale.is_finite() || f.scale == 0.0 {
                return Err(ConfigError::invalid(
                    format!("sensors[{index}].fields[{n}].scale"),
                    f.scale,
                    "must be a finite number other than 0",
                ));
            }
        }
    }
    Ok(())
}
