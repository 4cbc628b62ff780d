//! Room sensors that speak MQTT themselves (Tasmota, Zigbee2MQTT, ESPHome, a bare number),
//! read straight from the broker by the collector through `[[sensors]]` rules and exposed as
//! `pantau_sensor_<metric>{room,device}`, with `pantau_sensor_up` going to 0 when a device falls
//! silent past its rule's timeout. Malformed readings are refused and counted like agents'
//! messages; the number of devices is bounded.

mod config;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use serde_json::Value;
use tracing::warn;

pub use config::{Format, SensorRule, validate};

use pantau_runtime::ratelimit::{LogLimiter, Verdict};

/// Most devices kept; readings of more are refused (`too_many_devices`).
pub const MAX_DEVICES: usize = 1000;
/// Largest payload read; a sensor's reading is a few hundred bytes.
pub const MAX_PAYLOAD: usize = 65_536;
/// Readings beyond this magnitude are refused as `out_of_range`.
const MAX_MAGNITUDE: f64 = 1e9;

/// Why a sensor's message was refused.
pub const REASONS: [&str; 7] = [
    "oversized",
    "invalid_json",
    "not_a_number",
    "no_fields",
    "out_of_range",
    "invalid_device",
    "too_many_devices",
];

/// The rules, the latest readings and the series they make.
pub struct Sensors {
    rules: Vec<SensorRule>,
    devices: Mutex<HashMap<(usize, String), Device>>,
    readings: BTreeMap<String, GaugeVec>,
    up: GaugeVec,
    rejected: IntCounterVec,
    reject_log: LogLimiter,
}

struct Device {
    last_seen: Instant,
    /// Metric names this device has set, to remove its series when it goes down.
    metrics: Vec<String>,
}

impl Sensors {
    /// Registers one gauge family per configured metric. `rules` were validated at load.
    pub fn new(rules: &[SensorRule], registry: &Registry) -> Result<Self, prometheus::Error> {
        let mut readings = BTreeMap::new();
        for rule in rules {
            for field in &rule.fields {
                let name = format!("pantau_sensor_{}", field.metric);
                if readings.contains_key(&name) {
                    continue;
                }
                let gauge = GaugeVec::new(
                    Opts::new(&name, format!("Room sensor reading `{}`.", field.metric)),
                    &["room", "device"],
                )?;
                registry.register(Box::new(gauge.clone()))?;
                readings.insert(name, gauge);
            }
        }
        let up = GaugeVec::new(
            Opts::new(
                "pantau_sensor_up",
                "1 while the room sensor reports within its rule's timeout, else 0.",
            ),
            &["room", "device"],
        )?;
        registry.register(Box::new(up.clone()))?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "pantau_sensor_rejected_messages_total",
                "Room sensor messages refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(rejected.clone()))?;
        for reason in REASONS {
            rejected.with_label_values(&[reason]);
        }
        Ok(Self {
            rules: rules.to_vec(),
            devices: Mutex::new(HashMap::new()),
            readings,
            up,
            rejected,
            reject_log: LogLimiter::new(Duration::from_secs(60)),
        })
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        self.rules.iter().map(|rule| rule.topic.clone()).collect()
    }

    /// Reads one message if a rule's topic matches; false when none does.
    pub fn ingest(&self, topic: &str, payload: &[u8], now: Instant) -> bool {
        let Some((index, captures)) = self
            .rules
            .iter()
            .enumerate()
            .find_map(|(index, rule)| matches(&rule.topic, topic).map(|c| (index, c)))
        else {
            return false;
        };
        if let Err(reason) = self.read(index, &captures, payload, now) {
            self.rejected.with_label_values(&[reason]).inc();
            if let Verdict::Log { suppressed } = self.reject_log.check(reason) {
                warn!(topic = ?topic, reason, suppressed, "rejected room sensor message");
            }
        }
        true
    }

    fn read(
        &self,
        index: usize,
        captures: &[&str],
        payload: &[u8],
        now: Instant,
    ) -> Result<(), &'static str> {
        let rule = &self.rules[index];
        let device = captures[0];
        if device.is_empty() || device.len() > 64 || device.chars().any(char::is_control) {
            return Err("invalid_device");
        }
        if payload.len() > MAX_PAYLOAD {
            return Err("oversized");
        }
        let values = values(rule, captures, payload)?;
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let key = (index, device.to_owned());
        if !devices.contains_key(&key) && devices.len() >= MAX_DEVICES {
            return Err("too_many_devices");
        }
        let entry = devices.entry(key).or_insert_with(|| Device {
            last_seen: now,
            metrics: Vec::new(),
        });
        entry.last_seen = now;
        for (metric, value) in values {
            let name = format!("pantau_sensor_{metric}");
            if let Some(gauge) = self.readings.get(&name) {
                gauge.with_label_values(&[&rule.room, device]).set(value);
                if !entry.metrics.contains(&name) {
                    entry.metrics.push(name);
                }
            }
        }
        self.up.with_label_values(&[&rule.room, device]).set(1.0);
        Ok(())
    }

    /// Marks devices silent past their rule's timeout down and drops their readings.
    pub fn sweep(&self, now: Instant) {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices.retain(|(index, device), state| {
            let rule = &self.rules[*index];
            if now.duration_since(state.last_seen) < Duration::from_secs(rule.timeout_seconds) {
                return true;
            }
            for name in &state.metrics {
                if let Some(gauge) = self.readings.get(name) {
                    let _ = gauge.remove_label_values(&[&rule.room, device]);
                }
            }
            self.up.with_label_values(&[&rule.room, device]).set(0.0);
            false
        });
    }
}

/// The levels `topic` gives the filter's `+` levels, if it matches.
fn matches<'a>(filter: &str, topic: &'a str) -> Option<Vec<&'a str>> {
    let mut captures = Vec::new();
    let mut levels = topic.split('/');
    for want in filter.split('/') {
        let level = levels.next()?;
        match want {
            "+" => captures.push(level),
            exact if exact == level => {}
            _ => return None,
        }
    }
    levels.next().is_none().then_some(captures)
}

/// The rule's metrics and their scaled values in this payload.
fn values(
    rule: &SensorRule,
    captures: &[&str],
    payload: &[u8],
) -> Result<Vec<(String, f64)>, &'static str> {
    let mut found = Vec::new();
    match rule.format {
        Format::Tasmota | Format::Zigbee2mqtt => {
            let json: Value = serde_json::from_slice(payload).map_err(|_| "invalid_json")?;
            for field in &rule.fields {
                let mut node = &json;
                let mut present = true;
                for part in field.path.split('.') {
                    match node.get(part) {
                        Some(next) => node = next,
                        None => {
                            present = false;
                            break;
                        }
                    }
                }
                if present && let Some(value) = node.as_f64() {
                    found.push((field, value));
                }
            }
        }
        Format::Esphome | Format::Number => {
            let text = std::str::from_utf8(payload).map_err(|_| "not_a_number")?;
            let value: f64 = text.trim().parse().map_err(|_| "not_a_number")?;
            let path = match rule.format {
                Format::Esphome => captures.get(1).copied().unwrap_or(""),
                _ => "value",
            };
            if let Some(field) = rule.fields.iter().find(|f| f.path == path) {
                found.push((field, value));
            }
        }
    }
    if found.is_empty() {
        return Err("no_fields");
    }
    found
        .into_iter()
        .map(|(field, value)| {
            let scaled = value * field.scale;
            if scaled.is_finite() && scaled.abs() <= MAX_MAGNITUDE {
                Ok((field.metric.clone(), scaled))
            } else {
                Err("out_of_range")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::config::FieldRule;
    use super::*;

    fn rule(topic: &str, format: Format, fields: &[(&str, &str, f64)]) -> SensorRule {
        SensorRule {
            topic: topic.to_owned(),
            format,
            room: "server-room".to_owned(),
            fields: fields
                .iter()
                .map(|(path, metric, scale)| FieldRule {
                    path: (*path).to_owned(),
                    metric: (*metric).to_owned(),
                    scale: *scale,
                })
                .collect(),
            timeout_seconds: 60,
        }
    }

    #[test]
    fn topics_match_with_their_wildcards() {
        assert_eq!(
            matches("tele/+/SENSOR", "tele/th-1/SENSOR"),
            Some(vec!["th-1"])
        );
        assert_eq!(matches("tele/+/SENSOR", "tele/th-1/STATE"), None);
        assert_eq!(matches("tele/+/SENSOR", "tele/th-1/SENSOR/x"), None);
        assert_eq!(
            matches("+/sensor/+/state", "esp-1/sensor/suhu/state"),
            Some(vec!["esp-1", "suhu"])
        );
    }

    #[test]
    fn each_format_gives_its_fields() {
        let tasmota = rule(
            "tele/+/SENSOR",
            Format::Tasmota,
            &[
                ("AM2301.Temperature", "temperature_celsius", 1.0),
                ("AM2301.Humidity", "humidity_ratio", 0.01),
            ],
        );
        let got = values(
            &tasmota,
            &["th"],
            br#"{"Time":"x","AM2301":{"Temperature":24.5,"Humidity":60}}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("temperature_celsius".to_owned(), 24.5),
                ("humidity_ratio".to_owned(), 0.6)
            ]
        );
        let z2m = rule(
            "zigbee2mqtt/+",
            Format::Zigbee2mqtt,
            &[("temperature", "temperature_celsius", 1.0)],
        );
        assert_eq!(
            values(&z2m, &["z"], br#"{"temperature":21,"linkquality":90}"#)
                .unwrap()
                .len(),
            1
        );
        let esp = rule(
            "+/sensor/+/state",
            Format::Esphome,
            &[("suhu", "temperature_celsius", 1.0)],
        );
        assert_eq!(values(&esp, &["e", "suhu"], b"22.25").unwrap()[0].1, 22.25);
        assert_eq!(values(&esp, &["e", "other"], b"22.25"), Err("no_fields"));
        let number = rule("rooms/+/co2", Format::Number, &[("value", "co2_ppm", 1.0)]);
        assert_eq!(values(&number, &["r"], b" 612\n").unwrap()[0].1, 612.0);
    }

    #[test]
    fn bad_payloads_have_reasons() {
        let z2m = rule(
            "zigbee2mqtt/+",
            Format::Zigbee2mqtt,
            &[("temperature", "temperature_celsius", 1.0)],
        );
        assert_eq!(values(&z2m, &["z"], b"{not json"), Err("invalid_json"));
        assert_eq!(
            values(&z2m, &["z"], br#"{"temperature":"hot"}"#),
            Err("no_fields")
        );
        assert_eq!(
            values(&z2m, &["z"], br#"{"temperature":1e300}"#),
            Err("out_of_range")
        );
        let number = rule("rooms/+/co2", Format::Number, &[("value", "co2_ppm", 1.0)]);
        assert_eq!(values(&number, &["r"], b"NaN"), Err("out_of_range"));
        assert_eq!(values(&number, &["r"], b"abc"), Err("not_a_number"));
    }

    #[test]
    fn a_silent_device_goes_down_and_the_store_is_bounded() {
        let registry = Registry::new();
        let rules = vec![rule(
            "zigbee2mqtt/+",
            Format::Zigbee2mqtt,
            &[("temperature", "temperature_celsius", 1.0)],
        )];
        let sensors = Sensors::new(&rules, &registry).unwrap();
        let start = Instant::now();
        assert!(sensors.ingest("zigbee2mqtt/ruang-rapat", br#"{"temperature":26}"#, start));
        assert!(!sensors.ingest("other/topic", b"1", start));
        let up = || {
            sensors
                .up
                .with_label_values(&["server-room", "ruang-rapat"])
                .get()
        };
        assert_eq!(up(), 1.0);
        sensors.sweep(start + Duration::from_secs(61));
        assert_eq!(up(), 0.0);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            !text.contains("pantau_sensor_temperature_celsius{"),
            "{text}"
        );
        for n in 0..MAX_DEVICES {
            sensors.ingest(&format!("zigbee2mqtt/d{n}"), br#"{"temperature":1}"#, start);
        }
        sensors.ingest("zigbee2mqtt/one-more", br#"{"temperature":1}"#, start);
        assert_eq!(
            sensors
                .rejected
                .with_label_values(&["too_many_devices"])
                .get(),
            1
        );
    }
}
