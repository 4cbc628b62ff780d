//! Prometheus remote write 1.0: the `WriteRequest` protobuf (prometheus/prompb `types.proto`
//! and `remote.proto`, the fields a sender needs), written as prost structs so no protoc or
//! build script is needed, and the series of one replayed message in it.
//!
//! Protobuf concatenation merges repeated fields, so the encodings of two `WriteRequest`s
//! laid end to end decode as one holding both series lists: the queue stores one encoded
//! request per message, and a batch is their bytes concatenated, compressed once.

use super::Replayed;
use crate::exposition::{agent_labels, for_each_series};

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The labels the scrape adds to what `/metrics` exposes.
#[derive(Debug, Clone)]
pub struct TargetLabels {
    /// The scrape job's name.
    pub job: String,
    /// The scrape target, when the scrape job does not honor the exposed labels (then the
    /// agent's `instance` becomes `exported_instance`).
    pub instance: Option<String>,
}

/// Every series of `replayed`, each with its one sample at the message's timestamp, labelled
/// exactly as a scrape of `/metrics` plus `target` would label it.
pub fn write_request(replayed: &Replayed, target: &TargetLabels) -> WriteRequest {
    let mut timeseries = Vec::new();
    let base = agent_labels(&replayed.agent, &replayed.site);
    for family in replayed.families.iter() {
        for_each_series(family, base, |series| {
            let mut labels: Vec<Label> = Vec::with_capacity(series.labels.len() + 3);
            labels.push(label("__name__", series.name));
            for (name, value) in series.labels {
                // Without honor_labels the scrape renames what clashes with its target labels.
                match (*name, &target.instance) {
                    ("instance", Some(_)) => labels.push(label("exported_instance", value)),
                    ("job", Some(_)) => labels.push(label("exported_job", value)),
                    _ => labels.push(label(name, value)),
                }
            }
            labels.push(label("job", &target.job));
            if let Some(instance) = &target.instance {
                labels.push(label("instance", instance));
            }
            // A relayed series may carry its own `job`; the scrape with honor_labels keeps
            // that one, and so does this.
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            labels.dedup_by(|later, first| later.name == first.name);
            timeseries.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value: series.value,
                    timestamp: replayed.timestamp_ms,
                }],
            });
        });
    }
    WriteRequest { timeseries }
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// The body of a remote write request: snappy block format (not the framed stream format),
/// as the protocol requires.
pub fn compress(encoded: &[u8]) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(encoded)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use pantau_protocol::{
        AnyFamily, Family, HistogramFamily, HistogramSample, MetricKind, Sample as Point,
    };
    use prost::Message as _;

    use super::*;
    use crate::exposition::{ChunkWriter, Snapshot};

    fn replayed() -> Replayed {
        Replayed {
            agent: "dc-01".to_owned(),
            site: "dc".to_owned(),
            timestamp_ms: 1_700_000_000_123,
            families: Arc::new(
                families()
                    .into_iter()
                    .map(crate::state::StoredFamily::detached)
                    .collect(),
            ),
        }
    }

    /// The families of `replayed`, as decoded.
    fn families() -> Vec<AnyFamily> {
        let mut labels = BTreeMap::new();
        labels.insert("cpu".to_owned(), "0".to_owned());
        let mut histogram = HistogramFamily::new("dns_lookup_seconds", "");
        histogram.samples.push(HistogramSample::from_cumulative(
            BTreeMap::new(),
            &[0.5],
            &[2, 3],
            1.25,
        ));
        vec![
            AnyFamily::Plain(Family {
                name: "node_load1".to_owned(),
                kind: MetricKind::Gauge,
                help: String::new(),
                samples: vec![Point {
                    labels: labels.clone(),
                    value: 0.5,
                }],
            }),
            AnyFamily::Histogram(histogram),
        ]
    }

    fn target() -> TargetLabels {
        TargetLabels {
            job: "pantau".to_owned(),
            instance: None,
        }
    }

    #[test]
    fn encoding_round_trips_through_snappy_and_protobuf() {
        let request = write_request(&replayed(), &target());
        let body = compress(&request.encode_to_vec()).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let decoded = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(decoded, request);
        // One gauge plus two buckets, _sum and _count.
        assert_eq!(decoded.timeseries.len(), 5);
        for series in &decoded.timeseries {
            let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels sorted");
            assert_eq!(series.samples[0].timestamp, 1_700_000_000_123);
        }
    }

    #[test]
    fn concatenated_requests_decode_as_one() {
        let one = write_request(&replayed(), &target()).encode_to_vec();
        let mut both = one.clone();
        both.extend_from_slice(&one);
        let decoded = WriteRequest::decode(both.as_slice()).unwrap();
        assert_eq!(decoded.timeseries.len(), 10);
    }

    /// The labels of every backfilled series are those of the scraped line of the same
    /// series on `/metrics`, plus `job`.
    #[test]
    fn labels_equal_the_scrape() {
        let replayed = replayed();
        let request = write_request(&replayed, &target());
        let mut state = crate::state::State::new(crate::state::Liveness {
            silent_intervals: 3,
            default_interval: std::time::Duration::from_secs(15),
            forget_after: std::time::Duration::from_secs(3600),
        });
        let (mut plain, mut histograms) = (Vec::new(), Vec::new());
        for family in families() {
            match family {
                AnyFamily::Plain(family) => plain.push(family),
                AnyFamily::Histogram(family) => histograms.push(family),
            }
        }
        let now = crate::state::Moment::now();
        let outcome = state.apply(
            pantau_protocol::Decoded {
                topic: pantau_protocol::Topic::new(
                    "dc",
                    "dc-01",
                    pantau_protocol::Channel::Metrics,
                ),
                message: pantau_protocol::Message::Metrics(pantau_protocol::MetricsMessage {
                    schema: 1,
                    agent: "dc-01".to_owned(),
                    site: "dc".to_owned(),
                    seq: 1,
                    timestamp_ms: now
                        .wall
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64,
                    families: plain,
                    histograms,
                }),
            },
            false,
            now,
        );
        assert_eq!(outcome, crate::state::Outcome::Accepted);
        let snapshot = Snapshot::take(&state, tokio::time::Instant::now());
        let mut text = Vec::new();
        let mut out = ChunkWriter::new(|chunk: Vec<u8>| {
            text.extend_from_slice(&chunk);
            true
        });
        snapshot.write(&mut out);
        out.flush();
        drop(out);
        let text = String::from_utf8(text).unwrap();
        let scraped: Vec<String> = text
            .lines()
            .filter(|line| line.starts_with("node_load1") || line.starts_with("dns_lookup_seconds"))
            .map(|line| line.rsplit_once(' ').unwrap().0.to_owned())
            .collect();
        let mut sent: Vec<String> = request
            .timeseries
            .iter()
            .map(|series| {
                let name = &series.labels[0].value;
                let labels: Vec<String> = series.labels[1..]
                    .iter()
                    .filter(|l| l.name != "job")
                    .map(|l| format!("{}=\"{}\"", l.name, l.value))
                    .collect();
                format!("{name}{{{}}}", labels.join(","))
            })
            .collect();
        let mut scraped_sorted = scraped.clone();
        scraped_sorted.sort();
        sent.sort();
        assert_eq!(sent, scraped_sorted);
        assert!(request.timeseries.iter().all(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "job" && l.value == "pantau")
        }));
    }

    #[test]
    fn a_configured_instance_renames_the_agents() {
        let target = TargetLabels {
            job: "pantau".to_owned(),
            instance: Some("collector:9810".to_owned()),
        };
        let request = write_request(&replayed(), &target);
        let labels: Vec<(&str, &str)> = request.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "node_load1"),
                ("cpu", "0"),
                ("exported_instance", "dc-01"),
                ("instance", "collector:9810"),
                ("job", "pantau"),
                ("site", "dc"),
            ]
        );
    }
}
