//! The steady state of ingest: a metrics message whose families have exactly the shapes
//! stored for its agent (the same names, types, help texts and label sets, in the same order)
//! is read for its values alone, against those shapes, allocating nothing per label.
//!
//! Everything `pantau_protocol::decode` checks about a family's shape (name grammar, reserved
//! and repeated names, label names and counts, lengths, series per message) was checked when
//! the stored shape was accepted, under the same limits; what remains per message is checked
//! here: the schema version, the agent and site against the topic, the ranges of `seq` and
//! `timestamp_ms`. Values are JSON numbers, which are finite. Anything else, from a field in
//! another order or an unknown field to a `null` value, a histogram or one label more, makes
//! `read` answer `None`, and the message takes the full decode, which accepts it or names
//! what is wrong with it exactly as before. So this path can only be faster, never judge a
//! message differently.

use std::borrow::Cow;
use std::fmt;

use pantau_protocol::{MAX_INTEGER, MetricKind, SCHEMA_VERSION, Topic};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::state::{Label, StoredFamily};

mod canonical;

/// The header of a metrics message read against its agent's stored shapes; its values are
/// where `read` put them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownShape {
    pub seq: u64,
    pub timestamp_ms: i64,
    /// Which reader read it.
    pub reader: Reader,
}

/// The two readers of a message of the stored shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The agent's own serialization, matched byte by byte (`canonical`).
    Bytes,
    /// Any other spelling, read with serde.
    Serde,
}

/// Reads `payload`, received on metrics topic `topic`, against `stored`, the families kept
/// for its agent, putting the values of all families into `values` in the stored order;
/// `None` when it does not have exactly their shapes or is not plainly valid.
///
/// The agent's own serialization is matched byte by byte first (`canonical`); anything
/// else of the same shape (another order of keys, white space, escapes) is read with serde.
pub fn read(
    topic: &Topic,
    payload: &[u8],
    stored: &[StoredFamily],
    values: &mut Vec<f64>,
) -> Option<KnownShape> {
    if stored.is_empty()
        || stored
            .iter()
            .any(|family| family.kind() == MetricKind::Histogram)
    {
        return None;
    }
    values.clear();
    if let Some(known) = canonical::read(topic, payload, stored, values) {
        return Some(known);
    }
    values.clear();
    let text = std::str::from_utf8(payload).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let known = MessageSeed {
        topic,
        stored,
        values,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    deserializer.end().ok()?;
    Some(known)
}

/// Any refusal: the reason does not matter, the full decode finds and names it.
fn differs<E: serde::de::Error>() -> E {
    E::custom("not the stored shape")
}

/// A string, borrowed from the payload unless it had escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A JSON number as f64; nothing else (`null` and the strings for NaN and infinities take the
/// full decode, which refuses them by name).
struct Number(f64);

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a number")
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Number, E> {
                match value.is_finite() {
                    true => Ok(Number(value)),
                    false => Err(differs()),
                }
            }
            fn visit_i64<E>(self, value: i64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

/// Marks a field seen; a second time is a refusal (the full decode reports it).
fn first_time<E: serde::de::Error>(seen: &mut bool) -> Result<(), E> {
    match std::mem::replace(seen, true) {
        true => Err(differs()),
        false => Ok(()),
    }
}

struct MessageSeed<'s> {
    topic: &'s Topic,
    stored: &'s [StoredFamily],
    values: &'s mut Vec<f64>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = KnownShape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<KnownShape, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = KnownShape;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a metrics message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KnownShape, A::Error> {
        let (mut schema, mut agent, mut site) = (false, false, false);
        let (mut seq, mut timestamp_ms, mut families) = (None, None, false);
        while let Some(Text(key)) = map.next_key()? {
            match &*key {
                "schema" => {
                    first_time(&mut schema)?;
                    if map.next_value::<u64>()? != u64::from(SCHEMA_VERSION) {
                        return Err(differs());
                    }
                }
                "agent" => {
                    first_time(&mut agent)?;
                    if map.next_value::<Text>()?.0 != self.topic.agent {
                        return Err(differs());
                    }
                }
                "site" => {
                    first_time(&mut site)?;
                    if map.next_value::<Text>()?.0 != self.topic.site {
                        return Err(differs());
                    }
                }
                "seq" if seq.is_none() => {
                    let value = map.next_value::<u64>()?;
                    seq = (value <= MAX_INTEGER).then_some(value);
                    seq.ok_or_else(differs)?;
                }
                "timestamp_ms" if timestamp_ms.is_none() => {
                    let value = map.next_value::<i64>()?;
                    let in_range = u64::try_from(value).is_ok_and(|value| value <= MAX_INTEGER);
                    timestamp_ms = in_range.then_some(value);
                    timestamp_ms.ok_or_else(differs)?;
                }
                "families" if !families => {
                    map.next_value_seed(FamiliesSeed {
                        stored: self.stored,
                        values: &mut *self.values,
                    })?;
                    families = true;
                }
                _ => return Err(differs()),
            }
        }
        match (schema, agent, site, seq, timestamp_ms, families) {
            (true, true, true, Some(seq), Some(timestamp_ms), true) => Ok(KnownShape {
                seq,
                timestamp_ms,
                reader: Reader::Serde,
            }),
            _ => Err(differs()),
        }
    }
}

struct FamiliesSeed<'s> {
    stored: &'s [StoredFamily],
    values: &'s mut Vec<f64>,
}

impl<'de> DeserializeSeed<'de> for FamiliesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FamiliesSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the stored families")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        for stored in self.stored {
            seq.next_element_seed(FamilySeed {
                stored,
                values: &mut *self.values,
            })?
            .ok_or_else(differs)?;
        }
        // One family more than stored.
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(differs());
        }
        Ok(())
    }
}

struct FamilySeed<'s> {
    stored: &'s StoredFamily,
    values: &'s mut Vec<f64>,
}

impl<'de> DeserializeSeed<'de> for FamilySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FamilySeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a stored family")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let stored = self.stored;
        let (mut name, mut kind, mut help, mut samples) = (false, false, false, false);
        while let Some(Text(key)) = map.next_key()? {
            match &*key {
                "name" => {
                    first_time(&mut name)?;
                    if map.next_value::<Text>()?.0 != stored.name() {
                        return Err(differs());
                    }
                }
                "type" => {
                    first_time(&mut kind)?;
                    if map.next_value::<MetricKind>()? != stored.kind() {
                        return Err(differs());
                    }
                }
                "help" => {
                    first_time(&mut help)?;
                    if map.next_value::<Text>()?.0 != stored.help() {
                        return Err(differs());
                    }
                }
                "samples" if !samples => {
                    map.next_value_seed(SamplesSeed {
                        stored,
                        values: &mut *self.values,
                    })?;
                    samples = true;
                }
                _ => return Err(differs()),
            }
        }
        // An absent help is an empty one.
        match (name, kind, help || stored.help().is_empty(), samples) {
            (true, true, true, true) => Ok(()),
            _ => Err(differs()),
        }
    }
}

struct SamplesSeed<'s> {
    stored: &'s StoredFamily,
    values: &'s mut Vec<f64>,
}

impl<'de> DeserializeSeed<'de> for SamplesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SamplesSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the stored samples")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        for (sample, _) in self.stored.samples() {
            let value = seq
                .next_element_seed(SampleSeed {
                    labels: &sample.labels,
                })?
                .ok_or_else(differs)?;
            self.values.push(value);
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(differs());
        }
        Ok(())
    }
}

struct SampleSeed<'s> {
    labels: &'s [Label],
}

impl<'de> DeserializeSeed<'de> for SampleSeed<'_> {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SampleSeed<'_> {
    type Value = f64;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a stored sample")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<f64, A::Error> {
        let (mut labels, mut value) = (false, None);
        while let Some(Text(key)) = map.next_key()? {
            match &*key {
                "labels" => {
                    first_time(&mut labels)?;
                    map.next_value_seed(LabelsSeed {
                        labels: self.labels,
                    })?;
                }
                "value" if value.is_none() => value = Some(map.next_value::<Number>()?.0),
                _ => return Err(differs()),
            }
        }
        // Absent labels are no labels.
        match (labels || self.labels.is_empty(), value) {
            (true, Some(value)) => Ok(value),
            _ => Err(differs()),
        }
    }
}

/// A sample's labels, which must be the stored ones in the stored (sorted) order, each once.
struct LabelsSeed<'s> {
    labels: &'s [Label],
}

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the stored labels")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut expected = self.labels.iter();
        while let Some(Text(name)) = map.next_key()? {
            let Text(value) = map.next_value()?;
            match expected.next() {
                Some((stored_name, stored_value))
                    if *name == **stored_name && *value == **stored_value => {}
                _ => return Err(differs()),
            }
        }
        match expected.next() {
            None => Ok(()),
            Some(_) => Err(differs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pantau_protocol::{Limits, decode};

    use super::*;
    use crate::state::{Liveness, Moment, Outcome, State};

    const TOPIC: &str = "pantau/v1/dc/srv-01/metrics";

    fn state() -> State {
        State::new(Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(15),
            forget_after: Duration::from_secs(3600),
        })
    }

    fn message(seq: u64, families: &str) -> String {
        format!(
            r#"{{"schema":1,"agent":"srv-01","site":"dc","seq":{seq},"timestamp_ms":1800000000000,"families":[{families}]}}"#
        )
    }

    const FAMILIES: &str = r#"{"name":"node_load1","type":"gauge","help":"Load.","samples":[{"value":0.5}]},{"name":"node_cpu_seconds_total","type":"counter","samples":[{"labels":{"cpu":"0","mode":"idle"},"value":10},{"labels":{"cpu":"0","mode":"user"},"value":2.5}]}"#;

    /// The families the full decode stores for `payload` in a fresh state.
    fn decoded(payload: &str) -> Option<Vec<StoredFamily>> {
        let decoded = decode("pantau", TOPIC, payload.as_bytes(), &Limits::default()).ok()?;
        let mut state = state();
        let outcome = state.apply(decoded, false, Moment::now());
        assert_eq!(outcome, Outcome::Accepted, "{payload}");
        state.families_of("srv-01").map(<[_]>::to_vec)
    }

    fn topic() -> Topic {
        Topic::parse("pantau", TOPIC).unwrap()
    }

    /// `read` with its values made into families, as the state would store them.
    fn read_families(
        payload: &str,
        stored: &[StoredFamily],
    ) -> Option<(KnownShape, Vec<StoredFamily>)> {
        let mut values = vec![99.0];
        let known = read(&topic(), payload.as_bytes(), stored, &mut values)?;
        Some((known, StoredFamily::all_with_values(stored, &values)))
    }

    /// Whether the byte matcher (not the serde reader) reads `payload`.
    fn canonical(payload: &str, stored: &[StoredFamily]) -> bool {
        canonical::read(&topic(), payload.as_bytes(), stored, &mut Vec::new()).is_some()
    }

    #[test]
    fn a_message_of_the_stored_shape_reads_as_the_full_decode_stores_it() {
        let stored = decoded(&message(1, FAMILIES)).unwrap();
        let next = message(2, &FAMILIES.replace("0.5", "0.75").replace("10", "11"));
        assert!(canonical(&next, &stored), "the agent's own serialization");
        let (known, families) = read_families(&next, &stored).expect("the stored shape");
        assert_eq!(
            known,
            KnownShape {
                seq: 2,
                timestamp_ms: 1_800_000_000_000,
                reader: Reader::Bytes,
            }
        );
        assert_eq!(Some(families.clone()), decoded(&next));
        assert_eq!(families[0].first_value(), Some(0.75));
        assert!(families[1].shares_shape_with(&stored[1]));
        // The same message in another spelling is read by serde, to the same result: escaped
        // text that reads as the stored text, keys in another order, white space.
        for other in [
            next.replace("Load.", r"Lo\u0061d."),
            next.replace(
                r#""name":"node_load1","type":"gauge""#,
                r#""type":"gauge","name":"node_load1""#,
            ),
            next.replace(r#","families""#, r#", "families""#),
        ] {
            assert!(!canonical(&other, &stored), "{other}");
            let (known, same) = read_families(&other, &stored).expect("the stored shape");
            let read = (known.seq, known.reader, &same);
            assert_eq!(read, (2, Reader::Serde, &families), "{other}");
        }
    }

    /// What an agent writes, numbers of every kind included, is read by the byte matcher to
    /// exactly the values the full decode stores.
    #[test]
    fn the_agents_serialization_reads_bit_for_bit_as_the_full_decode() {
        use pantau_protocol::{Family, MetricsMessage, Sample};
        let values = [
            0.0,
            -0.0,
            0.1 + 0.2,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            9007199254740993.0,
            1.7e9,
            -123456.789,
            5e-324,
            1e21,
            12.0,
        ];
        let message = |seq: u64, shift: f64| MetricsMessage {
            schema: 1,
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
            seq,
            timestamp_ms: 1_800_000_000_000,
            families: vec![
                Family {
                    name: "node_load1".to_owned(),
                    kind: MetricKind::Gauge,
                    help: "Load \"1\"\n\tavg\u{1}.".to_owned(),
                    samples: values
                        .iter()
                        .enumerate()
                        .map(|(index, value)| Sample {
                            labels: [("i".to_owned(), format!("{index} é\\"))].into(),
                            value: value * shift,
                        })
                        .collect(),
                },
                Family {
                    name: "up".to_owned(),
                    kind: MetricKind::Untyped,
                    help: String::new(),
                    samples: vec![Sample {
                        labels: Default::default(),
                        value: shift,
                    }],
                },
            ],
            histograms: Vec::new(),
        };
        let first = serde_json::to_string(&message(1, 1.0)).unwrap();
        let stored = decoded(&first).unwrap();
        for (seq, shift) in [(2, 1.0), (3, -1.0), (4, 0.5)] {
            let next = serde_json::to_string(&message(seq, shift)).unwrap();
            assert!(canonical(&next, &stored), "{next}");
            let (_, families) = read_families(&next, &stored).unwrap();
            let bits = |families: &[StoredFamily]| -> Vec<Vec<u64>> {
                families
                    .iter()
                    .map(|family| family.samples().map(|(_, v)| v[0].to_bits()).collect())
                    .collect()
            };
            assert_eq!(bits(&families), bits(&decoded(&next).unwrap()), "{next}");
        }
    }

    /// Every way a message can differ from the stored shape, or be invalid, is left to the
    /// full decode.
    #[test]
    fn anything_else_takes_the_full_decode() {
        let stored = decoded(&message(1, FAMILIES)).unwrap();
        let cases = [
            message(
                2,
                &FAMILIES.replace(r#""mode":"user""#, r#""mode":"system""#),
            ),
            message(
                2,
                &FAMILIES.replace(r#""cpu":"0","mode":"idle""#, r#""mode":"idle","cpu":"0""#),
            ),
            message(
                2,
                &FAMILIES.replace(
                    r#"{"cpu":"0","mode":"idle"}"#,
                    r#"{"cpu":"0","mode":"idle","x":"y"}"#,
                ),
            ),
            message(
                2,
                &FAMILIES.replace(r#"{"cpu":"0","mode":"idle"}"#, r#"{"cpu":"0"}"#),
            ),
            message(
                2,
                &FAMILIES.replace(
                    r#""cpu":"0","mode":"idle""#,
                    r#""cpu":"0","cpu":"0","mode":"idle""#,
                ),
            ),
            message(2, &FAMILIES.replace("Load.", "Load average.")),
            message(2, &FAMILIES.replace(r#","help":"Load.""#, "")),
            message(
                2,
                &FAMILIES.replace(r#""type":"gauge""#, r#""type":"counter""#),
            ),
            message(2, &FAMILIES.replace("0.5", "null")),
            message(2, &FAMILIES.replace("0.5", r#""NaN""#)),
            message(2, &FAMILIES.replace("0.5", "1e999")),
            message(
                2,
                &FAMILIES.replace(r#"{"value":0.5}"#, r#"{"value":0.5,"extra":1}"#),
            ),
            message(
                2,
                &FAMILIES.replace(r#"{"value":0.5}"#, r#"{"value":0.5,"value":0.6}"#),
            ),
            message(
                2,
                &FAMILIES.replace(r#"{"value":0.5}"#, r#"{"value":0.5},{"value":0.6}"#),
            ),
            message(
                2,
                &FAMILIES.replace(r#""type":"gauge","#, r#""type":"gauge","unit":"x","#),
            ),
            message(2, FAMILIES.split_once("},{\"name\":\"node_cpu").unwrap().0),
            message(
                2,
                &format!(
                    r#"{FAMILIES},{{"name":"more","type":"gauge","samples":[{{"value":1}}]}}"#
                ),
            ),
            message(
                2,
                &format!("{},{}", FAMILIES.split_once("},{").unwrap().1, "{}"),
            ),
            message(2, FAMILIES).replace(r#""agent":"srv-01""#, r#""agent":"srv-02""#),
            message(2, FAMILIES).replace(r#""site":"dc""#, r#""site":"gor""#),
            message(2, FAMILIES).replace(r#""schema":1"#, r#""schema":2"#),
            message(9_007_199_254_740_992, FAMILIES),
            message(2, FAMILIES).replace("1800000000000", "-1"),
            message(2, FAMILIES).replace(r#""seq":2,"#, r#""seq":2,"seq":3,"#),
            message(2, FAMILIES).replace(r#""seq":2,"#, ""),
            message(2, FAMILIES).replace(r#""seq":2,"#, r#""seq":2,"note":"x","#),
            format!("{} x", message(2, FAMILIES)),
            message(2, FAMILIES).replace("}]}", "}]"),
        ];
        for payload in cases {
            assert!(
                read_families(&payload, &stored).is_none(),
                "read against the stored shape: {payload}"
            );
        }
        let mut values = Vec::new();
        assert!(read(&topic(), b"\xff\xfe", &stored, &mut values).is_none());
        assert!(read(&topic(), message(2, FAMILIES).as_bytes(), &[], &mut values).is_none());
    }

    #[test]
    fn histograms_take_the_full_decode() {
        let histogram = r#"{"name":"dns_lookup_seconds","type":"histogram","samples":[{"buckets":[[0.1,1],["+Inf",2]],"count":2,"sum":0.3}]}"#;
        let stored = decoded(&message(1, histogram)).unwrap();
        assert!(read_families(&message(2, histogram), &stored).is_none());
    }
}
