//! Histogram families: a family of `"type":"histogram"` whose samples carry cumulative
//! `buckets` (`[[le, count], ..., ["+Inf", count]]`), `count` and `sum`, so the collector can
//! expose them as Prometheus `_bucket{le}`, `_count` and `_sum` series without arithmetic.
//!
//! They travel in the same `families` array as counters and gauges; [`AnyFamily`] is one
//! element of it and [`MetricsPayload`] the message with both. A collector built before
//! histograms existed refuses the whole message (`invalid_schema`: unknown `type`), so an
//! agent sending them needs a collector that reads them (see protocol/README.md).

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::message::{Family, MetricKind, MetricsMessage, deserialize_value};

/// One element of a metrics message's `families`: a counter or gauge family, or a histogram.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyFamily {
    Plain(Family),
    Histogram(HistogramFamily),
}

impl AnyFamily {
    pub fn name(&self) -> &str {
        match self {
            AnyFamily::Plain(family) => &family.name,
            AnyFamily::Histogram(family) => &family.name,
        }
    }

    pub fn kind(&self) -> MetricKind {
        match self {
            AnyFamily::Plain(family) => family.kind,
            AnyFamily::Histogram(_) => MetricKind::Histogram,
        }
    }

    pub fn help(&self) -> &str {
        match self {
            AnyFamily::Plain(family) => &family.help,
            AnyFamily::Histogram(family) => &family.help,
        }
    }

    /// Series in the exposition: one per sample, a histogram sample's buckets plus `_count`
    /// and `_sum`.
    pub fn series(&self) -> usize {
        match self {
            AnyFamily::Plain(family) => family.samples.len(),
            AnyFamily::Histogram(family) => family
                .samples
                .iter()
                .map(|sample| sample.buckets.len() + 2)
                .sum(),
        }
    }
}

impl From<Family> for AnyFamily {
    fn from(family: Family) -> Self {
        AnyFamily::Plain(family)
    }
}

impl From<HistogramFamily> for AnyFamily {
    fn from(family: HistogramFamily) -> Self {
        AnyFamily::Histogram(family)
    }
}

impl Serialize for AnyFamily {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AnyFamily::Plain(family) => family.serialize(serializer),
            AnyFamily::Histogram(family) => family.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for AnyFamily {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AnyFamilyVisitor)
    }
}

/// Reads a family in one pass. Agents write `type` before `samples`, so the samples are parsed
/// straight into the type's own shape. This used to keep each family's raw JSON and parse it
/// again, the largest cost of ingest after allocation in the profile (BENCHMARKS.md, issue
/// 16); only a family whose `samples` come before its `type` is still read that way.
struct AnyFamilyVisitor;

/// `samples` as read: parsed when the type was known, kept as raw JSON when not yet.
enum Samples {
    Plain(Vec<crate::message::Sample>),
    Histogram(Vec<HistogramSample>),
    Raw(Box<serde_json::value::RawValue>),
}

impl<'de> serde::de::Visitor<'de> for AnyFamilyVisitor {
    type Value = AnyFamily;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a metric family object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyFamily, A::Error> {
        let (mut name, mut kind, mut help, mut samples) = (None, None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "name" if name.is_some() => return Err(A::Error::duplicate_field("name")),
                "name" => name = Some(map.next_value::<String>()?),
                "type" if kind.is_some() => return Err(A::Error::duplicate_field("type")),
                "type" => kind = Some(map.next_value::<MetricKind>()?),
                "help" if help.is_some() => return Err(A::Error::duplicate_field("help")),
                "help" => help = Some(map.next_value::<String>()?),
                "samples" if samples.is_some() => {
                    return Err(A::Error::duplicate_field("samples"));
                }
                "samples" => {
                    samples = Some(match kind {
                        Some(MetricKind::Histogram) => Samples::Histogram(map.next_value()?),
                        Some(_) => Samples::Plain(map.next_value()?),
                        None => Samples::Raw(map.next_value()?),
                    });
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| A::Error::missing_field("name"))?;
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        let help = help.unwrap_or_default();
        let samples = samples.ok_or_else(|| A::Error::missing_field("samples"))?;
        let samples = match (samples, kind) {
            (Samples::Raw(raw), MetricKind::Histogram) => {
                Samples::Histogram(parse_raw(&raw).map_err(A::Error::custom)?)
            }
            (Samples::Raw(raw), _) => Samples::Plain(parse_raw(&raw).map_err(A::Error::custom)?),
            (parsed, _) => parsed,
        };
        Ok(match samples {
            Samples::Histogram(samples) => AnyFamily::Histogram(HistogramFamily {
                name,
                kind: (),
                help,
                samples,
            }),
            Samples::Plain(samples) => AnyFamily::Plain(Family {
                name,
                kind,
                help,
                samples,
            }),
            Samples::Raw(_) => unreachable!("parsed above"),
        })
    }
}

/// Parses raw JSON kept aside; an error's message loses serde_json's position within the
/// kept text (the outer parse adds its own).
fn parse_raw<T: serde::de::DeserializeOwned>(
    raw: &serde_json::value::RawValue,
) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|error| without_position(&error))
}

fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// All histogram samples of one metric name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramFamily {
    pub name: String,
    /// Always `"histogram"` on the wire.
    #[serde(rename = "type", with = "histogram_type")]
    pub kind: (),
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    pub samples: Vec<HistogramSample>,
}

impl HistogramFamily {
    pub fn new(name: &str, help: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: (),
            help: help.to_owned(),
            samples: Vec::new(),
        }
    }
}

mod histogram_type {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(_: &(), serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("histogram")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "histogram" => Ok(()),
            other => Err(serde::de::Error::custom(format!(
                "expected type \"histogram\", got {other:?}"
            ))),
        }
    }
}

/// One histogram series: cumulative bucket counts, the number of observations and their sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSample {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `[upper bound, cumulative count]`, bounds increasing, the last one `"+Inf"`.
    pub buckets: Vec<Bucket>,
    /// Observations in total; equals the `+Inf` bucket's count.
    pub count: u64,
    /// Sum of the observations.
    #[serde(deserialize_with = "deserialize_value")]
    pub sum: f64,
}

/// One cumulative bucket: observations at or below `le`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: u64,
}

impl Serialize for Bucket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(2)?;
        if self.le == f64::INFINITY {
            tuple.serialize_element("+Inf")?;
        } else {
            tuple.serialize_element(&self.le)?;
        }
        tuple.serialize_element(&self.count)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Pair(#[serde(deserialize_with = "deserialize_value")] f64, u64);
        let Pair(le, count) = Pair::deserialize(deserializer)?;
        Ok(Bucket { le, count })
    }
}

impl HistogramSample {
    /// A sample from `bounds` (finite, increasing; `+Inf` is added) and one cumulative count
    /// per bound plus the `+Inf` count.
    pub fn from_cumulative(
        labels: BTreeMap<String, String>,
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
    ) -> Self {
        let buckets: Vec<Bucket> = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(cumulative.iter().copied())
            .map(|(le, count)| Bucket { le, count })
            .collect();
        let count = buckets.last().map_or(0, |bucket| bucket.count);
        Self {
            labels,
            buckets,
            count,
            sum,
        }
    }

    /// Checks the invariants Prometheus relies on.
    pub fn validate(&self) -> Result<(), HistogramError> {
        let Some(last) = self.buckets.last() else {
            return Err(HistogramError::NoBuckets);
        };
        if last.le != f64::INFINITY {
            return Err(HistogramError::LastNotInfinite);
        }
        for (index, pair) in self.buckets.windows(2).enumerate() {
            let index = index + 1;
            if pair[1].le.is_nan() || pair[1].le <= pair[0].le {
                return Err(HistogramError::BoundsNotIncreasing { index });
            }
            if pair[1].count < pair[0].count {
                return Err(HistogramError::CountsDecreasing { index });
            }
        }
        if self.buckets[0].le.is_nan() || self.buckets[0].le == f64::NEG_INFINITY {
            return Err(HistogramError::BoundsNotIncreasing { index: 0 });
        }
        if last.count != self.count {
            return Err(HistogramError::CountMismatch {
                count: self.count,
                infinite_bucket: last.count,
            });
        }
        Ok(())
    }
}

/// Why a histogram sample is refused (reason `invalid_histogram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HistogramError {
    #[error("has no buckets")]
    NoBuckets,
    #[error("the last bucket must be \"+Inf\"")]
    LastNotInfinite,
    #[error("bucket {index}: bounds must increase")]
    BoundsNotIncreasing { index: usize },
    #[error("bucket {index}: cumulative counts must not decrease")]
    CountsDecreasing { index: usize },
    #[error("count {count} differs from the +Inf bucket's {infinite_bucket}")]
    CountMismatch { count: u64, infinite_bucket: u64 },
}

/// A metrics message with histograms: what an agent writes, and what `decode` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsPayload {
    pub schema: u32,
    pub agent: String,
    pub site: String,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub families: Vec<AnyFamily>,
}

impl MetricsPayload {
    /// As a [`MetricsMessage`]: counters and gauges in `families`, histograms in `histograms`.
    pub fn split(self) -> MetricsMessage {
        let mut plain = Vec::with_capacity(self.families.len());
        let mut histograms = Vec::new();
        for family in self.families {
            match family {
                AnyFamily::Plain(family) => plain.push(family),
                AnyFamily::Histogram(family) => histograms.push(family),
            }
        }
        MetricsMessage {
            schema: self.schema,
            agent: self.agent,
            site: self.site,
            seq: self.seq,
            timestamp_ms: self.timestamp_ms,
            families: plain,
            histograms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HistogramSample {
        HistogramSample::from_cumulative(BTreeMap::new(), &[0.001, 0.01], &[1, 3, 4], 0.0123)
    }

    #[test]
    fn wire_form() {
        let mut family = HistogramFamily::new("rtt_seconds", "RTT.");
        family.samples.push(sample());
        let json = serde_json::to_string(&AnyFamily::from(family.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"name":"rtt_seconds","type":"histogram","help":"RTT.","samples":[{"buckets":[[0.001,1],[0.01,3],["+Inf",4]],"count":4,"sum":0.0123}]}"#
        );
        let back: AnyFamily = serde_json::from_str(&json).unwrap();
        assert_eq!(back, AnyFamily::Histogram(family));
    }

    #[test]
    fn invariants() {
        assert_eq!(sample().validate(), Ok(()));
        let mut bad = sample();
        bad.buckets.clear();
        assert_eq!(bad.validate(), Err(HistogramError::NoBuckets));
        let mut bad = sample();
        bad.buckets.pop();
        assert_eq!(bad.validate(), Err(HistogramError::LastNotInfinite));
        let mut bad = sample();
        bad.buckets[1].le = 0.001;
        assert_eq!(
            bad.validate(),
            Err(HistogramError::BoundsNotIncreasing { index: 1 })
        );
        let mut bad = sample();
        bad.buckets[1].count = 0;
        assert_eq!(
            bad.validate(),
            Err(HistogramError::CountsDecreasing { index: 1 })
        );
        let mut bad = sample();
        bad.count = 5;
        assert_eq!(
            bad.validate(),
            Err(HistogramError::CountMismatch {
                count: 5,
                infinite_bucket: 4
            })
        );
    }

    fn parse(json: &str) -> Result<AnyFamily, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    /// A family reads the same whether its `type` comes before its `samples` (one pass, as
    /// agents write it) or after (the samples kept and read again).
    #[test]
    fn samples_before_the_type_read_the_same() {
        let histogram = r#"{"samples":[{"buckets":[[0.001,1],["+Inf",4]],"count":4,"sum":1}],"name":"x","type":"histogram"}"#;
        let AnyFamily::Histogram(family) = parse(histogram).unwrap() else {
            panic!("a histogram")
        };
        assert_eq!(family.samples[0].buckets.len(), 2);
        let gauge = r#"{"samples":[{"labels":{"a":"b"},"value":2}],"name":"y","type":"gauge","extra":[1,{"z":2}]}"#;
        let AnyFamily::Plain(family) = parse(gauge).unwrap() else {
            panic!("a gauge")
        };
        assert_eq!(
            (family.kind, family.samples[0].value),
            (MetricKind::Gauge, 2.0)
        );
        // The kept samples' errors name the problem, without a position inside them.
        let error = parse(r#"{"samples":[{}],"name":"y","type":"gauge"}"#).unwrap_err();
        assert!(
            error.starts_with("missing field `value` at line 1 column"),
            "{error}"
        );
    }

    #[test]
    fn missing_repeated_and_misplaced_fields_are_named() {
        let error = parse(r#"{"name":"y","samples":[]}"#).unwrap_err();
        assert!(error.starts_with("missing field `type`"), "{error}");
        let error = parse(r#"{"type":"gauge","samples":[]}"#).unwrap_err();
        assert!(error.starts_with("missing field `name`"), "{error}");
        let error = parse(r#"{"name":"y","type":"gauge"}"#).unwrap_err();
        assert!(error.starts_with("missing field `samples`"), "{error}");
        let error = parse(r#"{"name":"y","name":"z","type":"gauge","samples":[]}"#).unwrap_err();
        assert!(error.starts_with("duplicate field `name`"), "{error}");
        let error = parse(r#"{"name":"y","type":"gauge","samples":[{"value":1,"buckets":[]}]}"#);
        assert!(
            error.is_ok(),
            "unknown fields of a sample are ignored: {error:?}"
        );
        let error =
            parse(r#"{"name":"y","type":"histogram","samples":[{"value":1}]}"#).unwrap_err();
        assert!(error.starts_with("missing field `buckets`"), "{error}");
        let error = parse(r#"{"name":"y","type":"summary","samples":[]}"#).unwrap_err();
        assert!(error.starts_with("unknown variant `summary`"), "{error}");
        let error = parse(r#"["y","gauge","",[]]"#).unwrap_err();
        assert!(error.starts_with("invalid type: sequence"), "{error}");
    }
}
