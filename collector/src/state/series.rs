//! How an agent's latest families are stored: compactly, because the collector holds every
//! series of every agent of a province.
//!
//! Decoded, a sample owns its label names and values (a `BTreeMap` of `String`s per sample):
//! kept that way, one stored series cost 1,400–1,800 bytes of RSS. Stored, a family is split
//! into its *shape* (name, type, help, each sample's labels, a histogram's bucket bounds) and
//! its *values* (8 bytes per series). A shape is shared: by each message of an agent whose
//! families did not change (the steady state, found by comparing with the family stored
//! before, without hashing or allocating), and by every agent that reports the same shape
//! (found through the `Interner`). Shapes that differ (one disk more) still share their
//! strings, which are interned too.
//!
//! The interner only ever holds what stored families use plus what was replaced since it was
//! last pruned: it prunes itself whenever it has grown to twice its size after the last
//! pruning, so a sender that changes its labels on every message cannot make it grow without
//! bound.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use pantau_protocol::{AnyFamily, Family, HistogramFamily, MetricKind};

/// A family's name and type: what the type claims (`Claims`) look at, in both the decoded and
/// the stored form.
pub trait Named {
    fn name(&self) -> &str;
    fn kind(&self) -> MetricKind;
}

impl Named for AnyFamily {
    fn name(&self) -> &str {
        AnyFamily::name(self)
    }

    fn kind(&self) -> MetricKind {
        AnyFamily::kind(self)
    }
}

/// A family on its way into the state: decoded, or already in the stored form.
pub trait IntoStored: Named {
    fn into_stored(self, interner: &mut Interner, previous: Option<&StoredFamily>) -> StoredFamily;
}

impl IntoStored for AnyFamily {
    fn into_stored(self, interner: &mut Interner, previous: Option<&StoredFamily>) -> StoredFamily {
        interner.store(self, previous)
    }
}

impl IntoStored for StoredFamily {
    fn into_stored(self, _: &mut Interner, _: Option<&StoredFamily>) -> StoredFamily {
        self
    }
}

/// A label name and value.
pub type Label = (Arc<str>, Arc<str>);

/// Everything about a family except its values.
#[derive(Debug, PartialEq)]
pub struct Shape {
    name: Arc<str>,
    kind: MetricKind,
    help: Arc<str>,
    samples: Box<[SampleShape]>,
}

/// One sample's labels (sorted by name, as the decoded `BTreeMap` has them) and, for a
/// histogram, its bucket bounds.
#[derive(Debug, PartialEq)]
pub struct SampleShape {
    pub labels: Box<[Label]>,
    /// Each bucket's upper bound and its text in the exposition (`+Inf` for the last);
    /// empty for a counter or gauge.
    pub buckets: Box<[(f64, Arc<str>)]>,
}

/// One stored family: its shared shape and its own values. A counter's or gauge's values are
/// one per sample; a histogram sample's are its bucket counts, then its sum, then its count.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFamily {
    shape: Arc<Shape>,
    values: Box<[f64]>,
}

impl Named for StoredFamily {
    fn name(&self) -> &str {
        StoredFamily::name(self)
    }

    fn kind(&self) -> MetricKind {
        StoredFamily::kind(self)
    }
}

impl StoredFamily {
    pub fn name(&self) -> &str {
        &self.shape.name
    }

    pub fn kind(&self) -> MetricKind {
        self.shape.kind
    }

    pub fn help(&self) -> &str {
        &self.shape.help
    }

    /// Series in the exposition: one per value.
    pub fn series(&self) -> usize {
        self.values.len()
    }

    /// The samples, each with its values (see `StoredFamily`).
    pub fn samples(&self) -> impl Iterator<Item = (&SampleShape, &[f64])> {
        let mut rest: &[f64] = &self.values;
        self.shape.samples.iter().map(move |sample| {
            let width = sample.width(self.shape.kind);
            let (own, after) = rest.split_at(width.min(rest.len()));
            rest = after;
            (sample, own)
        })
    }

    /// Every family of `families` with its shape and its part of `values`, which holds the
    /// values of all of them in the stored order (`ingest::known_shape`).
    pub fn all_with_values(families: &[StoredFamily], values: &[f64]) -> Vec<StoredFamily> {
        let mut copy = families.to_vec();
        Self::overwrite_values(&mut copy, values);
        copy
    }

    /// Overwrites the values of `families` in place with `values`, laid out as for
    /// `all_with_values`: the steady state of ingest allocates nothing.
    pub fn overwrite_values(families: &mut [StoredFamily], values: &[f64]) {
        debug_assert_eq!(
            values.len(),
            families.iter().map(StoredFamily::series).sum::<usize>()
        );
        let mut rest = values;
        for family in families {
            let (own, after) = rest.split_at(family.values.len().min(rest.len()));
            family.values[..own.len()].copy_from_slice(own);
            rest = after;
        }
    }

    /// The first sample's value of a counter or gauge.
    pub fn first_value(&self) -> Option<f64> {
        match self.shape.kind {
            MetricKind::Histogram => None,
            _ => self.values.first().copied(),
        }
    }

    /// The stored form of `family` on its own, sharing nothing with what the state keeps.
    #[cfg(test)]
    pub fn detached(family: AnyFamily) -> Self {
        Interner::default().store(family, None)
    }

    /// Whether two stored families share one shape (not merely equal ones).
    #[cfg(test)]
    pub fn shares_shape_with(&self, other: &StoredFamily) -> bool {
        Arc::ptr_eq(&self.shape, &other.shape)
    }
}

impl SampleShape {
    /// How many values a sample of this shape has.
    fn width(&self, kind: MetricKind) -> usize {
        match kind {
            MetricKind::Histogram => self.buckets.len() + 2,
            _ => 1,
        }
    }
}

/// The strings and shapes stored families share.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    shapes: HashSet<Shared>,
    /// Entries after the last pruning; the next comes at twice as many (or `PRUNE_FLOOR`).
    strings_kept: usize,
    shapes_kept: usize,
}

/// Below this many entries the interner does not prune: not worth a pass.
const PRUNE_FLOOR: usize = 4096;

/// A shape in the interner, compared and hashed by content.
#[derive(Debug)]
struct Shared(Arc<Shape>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Shared {}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let shape = &self.0;
        shape.name.hash(state);
        shape.kind.hash(state);
        shape.help.hash(state);
        for sample in &shape.samples {
            sample.labels.hash(state);
            for (bound, _) in &sample.buckets {
                bound.to_bits().hash(state);
            }
        }
    }
}

impl Interner {
    /// `family` in its stored form. `previous` is the agent's family stored before at the same
    /// place: when `family` has its shape, the shape is taken over as it is.
    pub fn store(&mut self, family: AnyFamily, previous: Option<&StoredFamily>) -> StoredFamily {
        if let Some(previous) = previous
            && same_shape(&family, &previous.shape)
        {
            return StoredFamily {
                shape: previous.shape.clone(),
                values: values(&family),
            };
        }
        let values = values(&family);
        let shape = self.shape(family);
        StoredFamily { shape, values }
    }

    /// Every family of a message, each compared with the family at the same place in
    /// `previous` (an agent's families usually come in the same order every time).
    pub fn store_all(
        &mut self,
        families: Vec<impl IntoStored>,
        previous: &[StoredFamily],
    ) -> Vec<StoredFamily> {
        let stored = families
            .into_iter()
            .enumerate()
            .map(|(index, family)| family.into_stored(self, previous.get(index)))
            .collect();
        self.prune_if_grown();
        stored
    }

    /// Interned strings and shapes, for the collector's own metrics.
    pub fn sizes(&self) -> (usize, usize) {
        (self.strings.len(), self.shapes.len())
    }

    fn shape(&mut self, family: AnyFamily) -> Arc<Shape> {
        let shape = match family {
            AnyFamily::Plain(Family {
                name,
                kind,
                help,
                samples,
            }) => Shape {
                name: self.string(&name),
                kind,
                help: self.string(&help),
                samples: samples
                    .iter()
                    .map(|sample| SampleShape {
                        labels: self.labels(&sample.labels),
                        buckets: Box::default(),
                    })
                    .collect(),
            },
            AnyFamily::Histogram(HistogramFamily {
                name,
                help,
                samples,
                ..
            }) => Shape {
                name: self.string(&name),
                kind: MetricKind::Histogram,
                help: self.string(&help),
                samples: samples
                    .iter()
                    .map(|sample| SampleShape {
                        labels: self.labels(&sample.labels),
                        buckets: sample
                            .buckets
                            .iter()
                            .map(|bucket| (bucket.le, self.string(&bound_text(bucket.le))))
                            .collect(),
                    })
                    .collect(),
            },
        };
        let shared = Shared(Arc::new(shape));
        if let Some(known) = self.shapes.get(&shared) {
            return known.0.clone();
        }
        let shape = shared.0.clone();
        self.shapes.insert(shared);
        shape
    }

    fn labels(&mut self, labels: &BTreeMap<String, String>) -> Box<[Label]> {
        labels
            .iter()
            .map(|(name, value)| (self.string(name), self.string(value)))
            .collect()
    }

    fn string(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.strings.get(text) {
            return known.clone();
        }
        let interned: Arc<str> = Arc::from(text);
        self.strings.insert(interned.clone());
        interned
    }

    /// Drops what no stored family uses any more, once the interner has doubled since the
    /// last time.
    fn prune_if_grown(&mut self) {
        if self.shapes.len() > (2 * self.shapes_kept).max(PRUNE_FLOOR)
            || self.strings.len() > (2 * self.strings_kept).max(PRUNE_FLOOR)
        {
            self.prune();
        }
    }

    /// Drops every shape and string held by the interner alone.
    pub fn prune(&mut self) {
        // Shapes first: their strings are only free once they are gone.
        self.shapes.retain(|shape| Arc::strong_count(&shape.0) > 1);
        self.strings.retain(|text| Arc::strong_count(text) > 1);
        self.shapes_kept = self.shapes.len();
        self.strings_kept = self.strings.len();
    }
}

/// A bucket bound as the exposition writes it in `le`.
fn bound_text(le: f64) -> String {
    match le {
        f64::INFINITY => "+Inf".to_owned(),
        le => le.to_string(),
    }
}

/// Whether `family` has exactly `shape`: same name, type, help, labels and bucket bounds.
fn same_shape(family: &AnyFamily, shape: &Shape) -> bool {
    fn same_labels(labels: &BTreeMap<String, String>, stored: &[Label]) -> bool {
        labels.len() == stored.len()
            && labels
                .iter()
                .zip(stored)
                .all(|((name, value), (stored_name, stored_value))| {
                    **name == **stored_name && **value == **stored_value
                })
    }
    if family.kind() != shape.kind || family.name() != &*shape.name || family.help() != &*shape.help
    {
        return false;
    }
    match family {
        AnyFamily::Plain(family) => {
            family.samples.len() == shape.samples.len()
                && family
                    .samples
                    .iter()
                    .zip(&shape.samples)
                    .all(|(sample, stored)| same_labels(&sample.labels, &stored.labels))
        }
        AnyFamily::Histogram(family) => {
            family.samples.len() == shape.samples.len()
                && family
                    .samples
                    .iter()
                    .zip(&shape.samples)
                    .all(|(sample, stored)| {
                        same_labels(&sample.labels, &stored.labels)
                            && sample.buckets.len() == stored.buckets.len()
                            && sample
                                .buckets
                                .iter()
                                .zip(&stored.buckets)
                                .all(|(bucket, (bound, _))| bucket.le.to_bits() == bound.to_bits())
                    })
        }
    }
}

/// `family`'s values in the stored order.
fn values(family: &AnyFamily) -> Box<[f64]> {
    match family {
        AnyFamily::Plain(family) => family.samples.iter().map(|sample| sample.value).collect(),
        AnyFamily::Histogram(family) => family
            .samples
            .iter()
            .flat_map(|sample| {
                sample
                    .buckets
                    .iter()
                    .map(|bucket| bucket.count as f64)
                    .chain([sample.sum, sample.count as f64])
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use pantau_protocol::{Bucket, HistogramSample, Sample};

    use super::*;

    fn gauge(name: &str, samples: &[(&[(&str, &str)], f64)]) -> AnyFamily {
        AnyFamily::Plain(Family {
            name: name.to_owned(),
            kind: MetricKind::Gauge,
            help: "Help.".to_owned(),
            samples: samples
                .iter()
                .map(|(labels, value)| Sample {
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    value: *value,
                })
                .collect(),
        })
    }

    fn histogram(bounds: &[f64]) -> AnyFamily {
        let mut family = HistogramFamily::new("probe_seconds", "Probe time.");
        family.samples.push(HistogramSample {
            labels: [("target".to_owned(), "gw".to_owned())].into(),
            buckets: bounds
                .iter()
                .enumerate()
                .map(|(index, &le)| Bucket {
                    le,
                    count: index as u64 + 1,
                })
                .collect(),
            count: bounds.len() as u64,
            sum: 0.25,
        });
        AnyFamily::Histogram(family)
    }

    #[test]
    fn the_next_message_of_the_same_shape_takes_the_shape_over() {
        let mut interner = Interner::default();
        let first = interner.store(gauge("node_load1", &[(&[("a", "1")], 0.5)]), None);
        let next = interner.store(gauge("node_load1", &[(&[("a", "1")], 0.7)]), Some(&first));
        assert!(next.shares_shape_with(&first));
        assert_eq!(next.first_value(), Some(0.7));
    }

    #[test]
    fn agents_with_the_same_shape_share_it_and_a_different_one_gets_its_own() {
        let mut interner = Interner::default();
        let one = interner.store(gauge("up_disks", &[(&[("device", "sda")], 1.0)]), None);
        let two = interner.store(gauge("up_disks", &[(&[("device", "sda")], 2.0)]), None);
        let other = interner.store(gauge("up_disks", &[(&[("device", "sdb")], 1.0)]), None);
        assert!(one.shares_shape_with(&two));
        assert!(!one.shares_shape_with(&other));
        // A changed label is a new shape, even compared with the previous family.
        let changed = interner.store(
            gauge("up_disks", &[(&[("device", "sdc")], 1.0)]),
            Some(&one),
        );
        assert!(!changed.shares_shape_with(&one));
        // "up_disks", "Help.", "device", "sda", "sdb", "sdc".
        assert_eq!(interner.sizes(), (6, 3));
    }

    #[test]
    fn a_changed_help_or_type_is_a_new_shape() {
        let mut interner = Interner::default();
        let first = interner.store(gauge("x", &[(&[], 1.0)]), None);
        let mut family = gauge("x", &[(&[], 1.0)]);
        if let AnyFamily::Plain(plain) = &mut family {
            plain.kind = MetricKind::Counter;
        }
        let counter = interner.store(family, Some(&first));
        assert!(!counter.shares_shape_with(&first));
        assert_eq!(counter.kind(), MetricKind::Counter);
    }

    #[test]
    fn histogram_values_are_buckets_then_sum_then_count() {
        let mut interner = Interner::default();
        let stored = interner.store(histogram(&[0.1, f64::INFINITY]), None);
        assert_eq!(stored.series(), 4);
        let (sample, values) = stored.samples().next().unwrap();
        assert_eq!(values, &[1.0, 2.0, 0.25, 2.0]);
        let texts: Vec<&str> = sample.buckets.iter().map(|(_, text)| &**text).collect();
        assert_eq!(texts, ["0.1", "+Inf"]);
        assert_eq!(stored.first_value(), None);
        let again = interner.store(histogram(&[0.1, f64::INFINITY]), Some(&stored));
        assert!(again.shares_shape_with(&stored));
        let other_bounds = interner.store(histogram(&[0.2, f64::INFINITY]), Some(&stored));
        assert!(!other_bounds.shares_shape_with(&stored));
    }

    #[test]
    fn pruning_drops_what_no_family_uses() {
        let mut interner = Interner::default();
        let kept = interner.store(gauge("kept", &[(&[("k", "v")], 1.0)]), None);
        drop(interner.store(gauge("gone", &[(&[("k", "w")], 1.0)]), None));
        interner.prune();
        // "kept", "Help.", "k", "v".
        assert_eq!(interner.sizes(), (4, 1));
        let again = interner.store(gauge("kept", &[(&[("k", "v")], 2.0)]), None);
        assert!(again.shares_shape_with(&kept));
    }

    /// A sender that changes a label value on every message leaves the interner at most
    /// about twice what is in use.
    #[test]
    fn changing_labels_on_every_message_does_not_grow_the_interner_without_bound() {
        let mut interner = Interner::default();
        let mut current = Vec::new();
        for round in 0..50_000 {
            let label = round.to_string();
            current =
                interner.store_all(vec![gauge("churn", &[(&[("id", &label)], 1.0)])], &current);
        }
        let (strings, shapes) = interner.sizes();
        assert!(shapes <= 2 * PRUNE_FLOOR + 1, "{shapes} shapes");
        assert!(strings <= 2 * PRUNE_FLOOR + 3, "{strings} strings");
        assert_eq!(current.len(), 1);
    }
}
