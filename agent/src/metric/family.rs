//! A small builder for metric families, so collectors read like the list of series they emit.

use std::collections::BTreeMap;

use pantau_protocol::{Family, MetricKind, Sample};

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
}
