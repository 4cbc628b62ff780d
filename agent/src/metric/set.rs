//! Families gathered by name from many sources (one probe after another), so each name
//! appears once per message however many probes write to it.

use std::collections::BTreeMap;

use pantau_protocol::AnyFamily;

use super::{FamilyBuilder, HistogramBuilder};

/// Builders by metric name, emitted in name order.
#[derive(Debug, Default)]
pub struct FamilySet {
    plain: BTreeMap<&'static str, FamilyBuilder>,
    histograms: BTreeMap<&'static str, HistogramBuilder>,
}

impl FamilySet {
    pub fn gauge(&mut self, name: &'static str, help: &str) -> &mut FamilyBuilder {
        self.plain
            .entry(name)
            .or_insert_with(|| FamilyBuilder::gauge(name, help))
    }

    pub fn counter(&mut self, name: &'static str, help: &str) -> &mut FamilyBuilder {
        self.plain
            .entry(name)
            .or_insert_with(|| FamilyBuilder::counter(name, help))
    }

    pub fn histogram(&mut self, name: &'static str, help: &str) -> &mut HistogramBuilder {
        self.histograms
            .entry(name)
            .or_insert_with(|| FamilyBuilder::histogram(name, help))
    }

    pub fn build(self) -> Vec<AnyFamily> {
        let plain = self
            .plain
            .into_values()
            .map(|builder| AnyFamily::Plain(builder.build()));
        let histograms = self
            .histograms
            .into_values()
            .map(|builder| AnyFamily::Histogram(builder.build()));
        plain.chain(histograms).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_per_name() {
        let mut set = FamilySet::default();
        set.gauge("probe_success", "h")
            .sample(&[("probe", "a")], 1.0);
        set.gauge("probe_success", "h")
            .sample(&[("probe", "b")], 0.0);
        set.histogram("rtt_seconds", "h")
            .sample(&[("probe", "a")], &[0.1], &[1, 0], 0.05);
        let families = set.build();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].name(), "probe_success");
        let AnyFamily::Plain(success) = &families[0] else {
            panic!("not plain");
        };
        assert_eq!(success.samples.len(), 2);
    }
}
