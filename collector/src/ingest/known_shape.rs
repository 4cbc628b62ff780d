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

/// A metrics message read against its agent's stored shapes.
#[derive(Debug)]
pub struct KnownShape {
    pub seq: u64,
    pub timestamp_ms: i64,
    /// The stored shapes with this message's values.
    pub families: Vec<StoredFamily>,
}

/// Reads `payload`, received on metrics topic `topic`, against `stored`, the families kept
/// for its agent; `None` when it does not have exactly their shapes or is not plainly valid.
pub fn read(topic: &Topic, payload: &[u8], stored: &[StoredFamily]) -> Option<KnownShape> {
    if stored.is_empty()
        || stored
            .iter()
            .any(|family| family.kind() == MetricKind::Histogram)
    {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let known = MessageSeed { topic, stored }
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
        let (mut seq, mut timestamp_ms, mut families) = (None, None, None);
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
                "families" if families.is_none() => {
                    families = Some(map.next_value_seed(FamiliesSeed {
                        stored: self.stored,
                    })?);
                }
                _ => return Err(differs()),
            }
        }
        match (schema, agent, site, seq, timestamp_ms, families) {
            (true, true, true, Some(seq), Some(timestamp_ms), Some(families)) => Ok(KnownShape {
                seq,
                timestamp_ms,
                families,
            }),
            _ => Err(differs()),
        }
    }
}

struct FamiliesSeed<'s> {
    stored: &'s [StoredFamily],
}

impl<'de> DeserializeSeed<'de> for FamiliesSeed<'_> {
    type Value = Vec<StoredFamily>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FamiliesSeed<'_> {
    type Value = Vec<StoredFamily>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the stored families")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut families = Vec::with_capacity(self.stored.len());
        for stored in self.stored {
            let values = seq
                .next_element_seed(FamilySeed { stored })?
                .ok_or_else(differs)?;
            families.push(stored.with_values(values));
        }
        // One family more than stored.
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(differs());
        }
        Ok(families)
    }
}

struct FamilySeed<'s> {
    stored: &'s StoredFamily,
}

impl<'de> DeserializeSeed<'de> for FamilySeed<'_> {
    type Value = Box<[f64]>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FamilySeed<'_> {
    type Value = Box<[f64]>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a stored family")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let stored = self.stored;
        let (mut name, mut kind, mut help, mut values) = (false, false, false, None);
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
                "samples" if values.is_none() => {
                    values = Some(map.next_value_seed(SamplesSeed { stored })?);
                }
                _ => return Err(differs()),
            }
        }
        // An absent help is an empty one.
        match (name, kind, help || stored.help().is_empty(), values) {
            (true, true, true, Some(values)) => Ok(values),
            _ => Err(differs()),
        }
    }
}

struct SamplesSeed<'s> {
    stored: &'s StoredFamily,
}

impl<'de> DeserializeSeed<'de> for SamplesSeed<'_> {
    type Value = Box<[f64]>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SamplesSeed<'_> {
    type Value = Box<[f64]>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the stored samples")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(self.stored.series());
        for (sample, _) in self.stored.samples() {
            let value = seq
                .next_element_seed(SampleSeed {
                    labels: &sample.labels,
                })?
                .ok_or_else(differs)?;
            values.push(value);
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(differs());
        }
        Ok(values.into_boxed_slice())
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
        state
            .stored_families("srv-01")
            .map(|families| families.to_vec())
    }

    fn topic() -> Topic {
        Topic::parse("pantau", TOPIC).unwrap()
    }

    #[test]
    fn a_message_of_the_stored_shape_reads_as_the_full_decode_stores_it() {
        let stored = decoded(&message(1, FAMILIES)).unwrap();
        let next = message(2, &FAMILIES.replace("0.5", "0.75").replace("10", "11"));
        let known = read(&topic(), next.as_bytes(), &stored).expect("the stored shape");
        assert_eq!((known.seq, known.timestamp_ms), (2, 1_800_000_000_000));
        assert_eq!(Some(known.families.clone()), decoded(&next));
        assert_eq!(known.families[0].first_value(), Some(0.75));
        assert!(known.families[1].shares_shape_with(&stored[1]));
        // Escaped text that reads as the stored text is the same shape.
        let escaped = message(3, &FAMILIES.replace("Load.", r"Lo\u0061d."));
        assert!(read(&topic(), escaped.as_bytes(), &stored).is_some());
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
                read(&topic(), payload.as_bytes(), &stored).is_none(),
                "read against the stored shape: {payload}"
            );
        }
        assert!(read(&topic(), b"\xff\xfe", &stored).is_none());
        assert!(read(&topic(), message(2, FAMILIES).as_bytes(), &[]).is_none());
    }

    #[test]
    fn histograms_take_the_full_decode() {
        let histogram = r#"{"name":"dns_lookup_seconds","type":"histogram","samples":[{"buckets":[[0.1,1],["+Inf",2]],"count":2,"sum":0.3}]}"#;
        let stored = decoded(&message(1, histogram)).unwrap();
        assert!(read(&topic(), message(2, histogram).as_bytes(), &stored).is_none());
    }
}
