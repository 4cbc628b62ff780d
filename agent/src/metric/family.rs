//! A small builder for metric families, so collectors read like the list of series they emit.

use std::collections::BTreeMap;

use pantau_protocol::{Family, HistogramFamily, HistogramSample, MetricKind, Sample};

/// Accumulates the samples of one metric family.
#[derive(Debug)]
pub struct FamilyBuilder {
    family: Family,
}

impl FamilyBuilder {
    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricKind::Gauge)
    }

    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricKind::Counter)
    }

    /// A family without a declared type, as node_exporter exposes vmstat and netstat fields.
    pub fn untyped(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricKind::Untyped)
    }

    /// A histogram family; see [`HistogramBuilder`].
    pub fn histogram(name: &str, help: &str) -> HistogramBuilder {
        HistogramBuilder {
            family: HistogramFamily::new(name, help),
        }
    }

    fn new(name: &str, help: &str, kind: MetricKind) -> Self {
        Self {
            family: Family {
                name: name.to_owned(),
                kind,
                help: help.to_owned(),
                samples: Vec::new(),
            },
        }
    }

    /// Adds one series. Non-finite values are dropped here: the wire format refuses them, and
    /// one bad reading must not cost the whole message.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if value.is_finite() {
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            self.family.samples.push(Sample { labels, value });
        }
        self
    }

    pub fn build(self) -> Family {
        self.family
    }

    /// Builds a family with one unlabelled sample.
    pub fn single(self, value: f64) -> Family {
        let mut builder = self;
        builder.sample(&[], value);
        builder.build()
    }
}

/// Accumulates the samples of one histogram family.
#[derive(Debug)]
pub struct HistogramBuilder {
    family: HistogramFamily,
}

impl HistogramBuilder {
    /// Adds one series from finite increasing `bounds` and per-bucket (not cumulative)
    /// `counts`, one per bound plus the overflow above the last. A non-finite sum drops the
    /// series, as `FamilyBuilder::sample` drops non-finite values.
    pub fn sample(&mut self, labels: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) {
        if !sum.is_finite() || counts.len() != bounds.len() + 1 {
            return;
        }
        let cumulative: Vec<u64> = counts
            .iter()
            .scan(0u64, |total, count| {
                *total += count;
                Some(*total)
            })
            .collect();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        self.family.samples.push(HistogramSample::from_cumulative(
            labels,
            bounds,
            &cumulative,
            sum,
        ));
    }

    pub fn build(self) -> HistogramFamily {
        self.family
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_non_finite_values() {
        let mut builder = FamilyBuilder::gauge("x", "help");
        builder
            .sample(&[("a", "1")], f64::NAN)
            .sample(&[("a", "2")], 2.0);
        let family = builder.build();
        assert_eq!(family.samples.len(), 1);
        assert_eq!(family.samples[0].labels["a"], "2");
    }

    #[test]
    fn histograms_are_cumulative_and_valid() {
        let mut builder = FamilyBuilder::histogram("rtt_seconds", "help");
        builder.sample(&[("probe", "gw")], &[0.001, 0.01], &[1, 2, 1], 0.02);
        builder.sample(&[("probe", "bad")], &[0.001], &[1, 2, 1], 0.02);
        let family = builder.build();
        assert_eq!(family.samples.len(), 1);
        let sample = &family.samples[0];
        let counts: Vec<u64> = sample.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 3, 4]);
        assert_eq!(sample.count, 4);
        sample.validate().unwrap();
    }
}
