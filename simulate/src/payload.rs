//! Payloads of the simulated agents: a real agent's metrics message (the template) or a built-in
//! shape, rewritten per message with the simulated agent's id, site, sequence number and time.
//!
//! The template is split once into a fixed tail (everything but the header fields) so that a
//! message costs one small `write!` and one copy: the generator must not eat the CPU of the
//! collector it measures on the same machine.

use std::io::Write;

use pantau_protocol::{Family, MetricKind, SCHEMA_VERSION, Sample};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PayloadError {
    #[error("template is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("template is not a metrics message: {0}")]
    NotMetrics(&'static str),
}

/// A built-in payload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// 30 gauge families of one sample each.
    Small,
    /// A link-probe agent: 8 probes of the blackbox-style families the agent's probe role sends.
    Probe,
    /// A sound agent: the `pantau_sound_*` families of the agent's sound role.
    Sound,
    /// Not a Pantau message: the header plus 30 flat numeric fields, the shape a generic
    /// MQTT-to-Prometheus bridge (mqtt-exporter) reads, for the side-by-side benchmark.
    Flat,
}

/// A metrics message with the header left out.
#[derive(Debug, Clone)]
pub struct Template {
    /// `,"families":[...]}`: what follows the header, closing brace included (for the flat
    /// shape, its fields).
    tail: Vec<u8>,
    /// Sample entries over all families (a histogram sample counts its buckets, sum and count).
    samples: usize,
}

impl Template {
    /// A template from a captured metrics message (`mosquitto_sub -C 1 -t .../metrics`): its
    /// `families` are kept byte for byte, as the agent wrote them, so the collector reads
    /// simulated messages exactly as it reads the real one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PayloadError> {
        #[derive(serde::Deserialize)]
        struct Captured<'a> {
            #[serde(borrow)]
            families: Option<&'a RawValue>,
        }
        let value: Value = serde_json::from_slice(bytes)?;
        let Value::Object(object) = value else {
            return Err(PayloadError::NotMetrics("not a JSON object"));
        };
        let Some(Value::Array(families)) = object.get("families") else {
            return Err(PayloadError::NotMetrics("no `families` array"));
        };
        let samples = families.iter().map(count_samples).sum();
        let captured: Captured = serde_json::from_slice(bytes)?;
        let raw = captured
            .families
            .ok_or(PayloadError::NotMetrics("no `families` array"))?;
        Ok(Self::from_families(raw.get(), samples))
    }

    /// A built-in shape. A Pantau shape is written from `pantau_protocol`'s types, as an agent
    /// writes it.
    pub fn shape(shape: Shape) -> Self {
        let families = match shape {
            Shape::Flat => {
                let fields: Map<String, Value> = (0..30)
                    .map(|i| (format!("field_{i:02}"), json!(i as f64 * 1.5)))
                    .collect();
                let rendered = Value::Object(fields).to_string();
                // `{...}` without its opening brace, after a comma.
                let mut tail = b",".to_vec();
                tail.extend_from_slice(&rendered.as_bytes()[1..]);
                return Self { tail, samples: 30 };
            }
            Shape::Small => (0..30)
                .map(|i| {
                    gauge(
                        &format!("sim_metric_{i:02}"),
                        "A simulated gauge.",
                        vec![sample(&[("slot", &format!("s{i}"))], i as f64 * 1.5)],
                    )
                })
                .collect(),
            Shape::Probe => probe_families(),
            Shape::Sound => sound_families(),
        };
        let samples = families.iter().map(|family| family.samples.len()).sum();
        let rendered = serde_json::to_string(&families).expect("families serialize");
        Self::from_families(&rendered, samples)
    }

    /// `,"families":<families>}`: what follows the header.
    fn from_families(families: &str, samples: usize) -> Self {
        let mut tail = Vec::with_capacity(families.len() + 14);
        tail.extend_from_slice(b",\"families\":");
        tail.extend_from_slice(families.as_bytes());
        tail.push(b'}');
        Self { tail, samples }
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Writes the message of `agent` at `seq` into `out` (cleared first).
    pub fn render(&self, agent: &str, site: &str, seq: u64, timestamp_ms: i64, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.tail.len() + 96 + agent.len() + site.len());
        // Agent ids and sites are from the protocol's small alphabet: no JSON escaping needed.
        write!(
            out,
            r#"{{"schema":{SCHEMA_VERSION},"agent":"{agent}","site":"{site}","seq":{seq},"timestamp_ms":{timestamp_ms}"#
        )
        .expect("writing to a Vec cannot fail");
        out.extend_from_slice(&self.tail);
    }
}

fn count_samples(family: &Value) -> usize {
    let Some(Value::Array(samples)) = family.get("samples") else {
        return 0;
    };
    samples
        .iter()
        .map(|sample| match sample.get("buckets") {
            Some(Value::Array(buckets)) => buckets.len() + 2,
            _ => 1,
        })
        .sum()
}

fn gauge(name: &str, help: &str, samples: Vec<Sample>) -> Family {
    family(name, MetricKind::Gauge, help, samples)
}

fn family(name: &str, kind: MetricKind, help: &str, samples: Vec<Sample>) -> Family {
    Family {
        name: name.to_owned(),
        kind,
        help: help.to_owned(),
        samples,
    }
}

fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        labels: labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        value,
    }
}

fn probe_families() -> Vec<Family> {
    let probes: Vec<(String, String)> = (0..8)
        .map(|i| (format!("probe-{i}"), format!("10.0.{i}.1")))
        .collect();
    let probe_gauge = |name: &str, value: f64| {
        let samples = probes
            .iter()
            .map(|(probe, target)| {
                sample(
                    &[("link", "uplink"), ("probe", probe), ("target", target)],
                    value,
                )
            })
            .collect();
        gauge(name, "A simulated probe result.", samples)
    };
    vec![
        probe_gauge("probe_success", 1.0),
        probe_gauge("probe_duration_seconds", 0.0123),
        probe_gauge("pantau_probe_icmp_rtt_avg_seconds", 0.004),
        probe_gauge("pantau_probe_icmp_rtt_min_seconds", 0.003),
        probe_gauge("pantau_probe_icmp_rtt_max_seconds", 0.006),
        probe_gauge("pantau_probe_icmp_jitter_seconds", 0.0004),
        probe_gauge("pantau_probe_icmp_packet_loss_ratio", 0.0),
        probe_gauge("pantau_probe_icmp_sent_packets", 5.0),
    ]
}

fn sound_families() -> Vec<Family> {
    let help = "A simulated sound agent's state.";
    let one = |name: &str, value: f64| gauge(name, help, vec![sample(&[], value)]);
    vec![
        one("pantau_sound_device_up", 1.0),
        one("pantau_sound_playing", 0.0),
        one("pantau_sound_queue_length", 0.0),
        one("pantau_sound_schedule_version", 3.0),
        one("pantau_sound_last_success_timestamp_seconds", 1.7e9),
        one("pantau_sound_next_scheduled_timestamp_seconds", 1.7e9),
        family(
            "pantau_sound_announcements_total",
            MetricKind::Counter,
            "Simulated announcements.",
            vec![
                sample(&[("result", "played")], 12.0),
                sample(&[("result", "failed")], 0.0),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pantau_protocol::{Limits, Message, decode};

    fn decoded(template: &Template, agent: &str, seq: u64) -> pantau_protocol::MetricsMessage {
        let mut out = Vec::new();
        template.render(agent, "dc", seq, 1_700_000_000_000, &mut out);
        let topic = format!("pantau/v1/dc/{agent}/metrics");
        match decode("pantau", &topic, &out, &Limits::default())
            .expect("a rendered message decodes")
            .message
        {
            Message::Metrics(metrics) => metrics,
            other => panic!("not metrics: {other:?}"),
        }
    }

    #[test]
    fn shapes_decode_with_the_rewritten_header() {
        for (shape, samples) in [(Shape::Small, 30), (Shape::Probe, 64), (Shape::Sound, 8)] {
            let template = Template::shape(shape);
            assert_eq!(template.samples(), samples, "{shape:?}");
            let metrics = decoded(&template, "sim-00042", 7);
            assert_eq!(metrics.agent, "sim-00042");
            assert_eq!(metrics.site, "dc");
            assert_eq!(metrics.seq, 7);
            assert_eq!(metrics.timestamp_ms, 1_700_000_000_000);
            let decoded: usize = metrics.families.iter().map(|f| f.samples.len()).sum();
            assert_eq!(decoded, samples, "{shape:?}");
        }
    }

    /// The collector reads an agent's own serialization fastest (its `known_shape`), so a
    /// simulated message must be byte for byte what an agent would send.
    #[test]
    fn a_rendered_message_is_what_an_agent_writes() {
        for shape in [Shape::Small, Shape::Probe, Shape::Sound] {
            let template = Template::shape(shape);
            let mut out = Vec::new();
            template.render("sim-00042", "dc", 7, 1_700_000_000_000, &mut out);
            let metrics = decoded(&template, "sim-00042", 7);
            let written = serde_json::to_vec(&metrics).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&written)
            );
        }
    }

    #[test]
    fn a_captured_message_keeps_its_families_and_loses_its_header() {
        let captured = br#"{"schema":1,"agent":"real-host","site":"hq","seq":991,
            "timestamp_ms":5,"families":[{"name":"node_load1","type":"gauge","help":"Load.",
            "samples":[{"value":0.5}]},{"name":"node_cpu_seconds_total","type":"counter",
            "samples":[{"labels":{"cpu":"0","mode":"idle"},"value":10},
                       {"labels":{"cpu":"0","mode":"user"},"value":2}]}]}"#;
        let template = Template::from_json(captured).expect("valid template");
        assert_eq!(template.samples(), 3);
        let metrics = decoded(&template, "sim-00001", 1);
        assert_eq!((metrics.agent.as_str(), metrics.seq), ("sim-00001", 1));
        assert_eq!(metrics.families.len(), 2);
        assert_eq!(metrics.families[1].samples[1].labels["mode"], "user");
        let rendered = String::from_utf8(template.tail.clone()).expect("utf-8");
        assert!(!rendered.contains("real-host") && !rendered.contains("991"));
    }

    #[test]
    fn the_flat_shape_is_thirty_numeric_fields_after_the_header() {
        let mut out = Vec::new();
        Template::shape(Shape::Flat).render("sim-00001", "dc", 2, 9, &mut out);
        let value: Value = serde_json::from_slice(&out).expect("JSON");
        let object = value.as_object().expect("object");
        assert_eq!(object.len(), 35);
        assert_eq!(object["seq"], 2);
        assert_eq!(object["field_29"], 43.5);
    }

    #[test]
    fn a_template_without_families_is_refused() {
        assert!(Template::from_json(br#"{"schema":1,"agent":"a"}"#).is_err());
        assert!(Template::from_json(b"[1,2]").is_err());
        assert!(Template::from_json(b"not json").is_err());
    }
}
