//! The agent's own serialization of a message of the stored shape, matched byte by byte.
//!
//! A Pantau agent writes a metrics message with serde_json from `pantau_protocol`'s types, so
//! a message whose families have the stored shapes is always the same bytes but for its
//! numbers: `{"schema":1,"agent":"…","site":"…","seq":N,"timestamp_ms":T,"families":[…]}`,
//! each family `{"name":"…","type":"…","help":"…","samples":[…]}` (no `help` when it is
//! empty) and each sample `{"labels":{"…":"…"},"value":V}` (no `labels` when there are none),
//! strings escaped as serde_json escapes them, and no white space. Walking the stored shapes
//! and comparing those bytes in place costs a fraction of parsing JSON; where the payload
//! differs in any way this answers `None`, and the serde reader of `known_shape` takes it.
//!
//! What this accepts is valid JSON with exactly the stored shapes, and its numbers are read
//! by serde_json as the serde reader reads them, so it cannot judge a message differently.

use pantau_protocol::{MAX_INTEGER, SCHEMA_VERSION, Topic};

use super::{KnownShape, Number, Reader};
use crate::state::StoredFamily;

/// Reads `payload` if it is the agent's serialization of a message with the `stored` shapes,
/// pushing its values onto `values`.
pub(super) fn read(
    topic: &Topic,
    payload: &[u8],
    stored: &[StoredFamily],
    values: &mut Vec<f64>,
) -> Option<KnownShape> {
    let mut at = Cursor(payload);
    at.literal(b"{\"schema\":")?;
    if at.integer()? != u64::from(SCHEMA_VERSION) {
        return None;
    }
    at.literal(b",\"agent\":")?;
    at.string(&topic.agent)?;
    at.literal(b",\"site\":")?;
    at.string(&topic.site)?;
    at.literal(b",\"seq\":")?;
    let seq = at.integer()?;
    at.literal(b",\"timestamp_ms\":")?;
    let timestamp_ms = i64::try_from(at.integer()?).ok()?;
    at.literal(b",\"families\":[")?;
    for (index, family) in stored.iter().enumerate() {
        if index > 0 {
            at.literal(b",")?;
        }
        at.literal(b"{\"name\":")?;
        at.string(family.name())?;
        at.literal(b",\"type\":\"")?;
        at.literal(family.kind().as_str().as_bytes())?;
        at.literal(b"\"")?;
        if !family.help().is_empty() {
            at.literal(b",\"help\":")?;
            at.string(family.help())?;
        }
        at.literal(b",\"samples\":[")?;
        for (position, (sample, _)) in family.samples().enumerate() {
            if position > 0 {
                at.literal(b",")?;
            }
            at.literal(b"{")?;
            if !sample.labels.is_empty() {
                at.literal(b"\"labels\":{")?;
                for (count, (name, value)) in sample.labels.iter().enumerate() {
                    if count > 0 {
                        at.literal(b",")?;
                    }
                    at.string(name)?;
                    at.literal(b":")?;
                    at.string(value)?;
                }
                at.literal(b"},")?;
            }
            at.literal(b"\"value\":")?;
            values.push(at.number()?);
            at.literal(b"}")?;
        }
        at.literal(b"]}")?;
    }
    at.literal(b"]}")?;
    at.0.is_empty().then_some(KnownShape {
        seq,
        timestamp_ms,
        reader: Reader::Bytes,
    })
}

/// What is left of the payload.
struct Cursor<'p>(&'p [u8]);

impl Cursor<'_> {
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(expected)?;
        Some(())
    }

    /// `text` as a JSON string, escaped as serde_json escapes it.
    fn string(&mut self, text: &str) -> Option<()> {
        self.literal(b"\"")?;
        let bytes = text.as_bytes();
        if bytes.iter().any(|&byte| escape(byte).is_some()) {
            for &byte in bytes {
                match escape(byte) {
                    Some(Escape::Short(letter)) => self.literal(&[b'\\', letter])?,
                    Some(Escape::Unicode) => {
                        const HEX: &[u8; 16] = b"0123456789abcdef";
                        let high = HEX[usize::from(byte >> 4)];
                        let low = HEX[usize::from(byte & 0xf)];
                        self.literal(&[b'\\', b'u', b'0', b'0', high, low])?;
                    }
                    None => self.literal(&[byte])?,
                }
            }
        } else {
            self.literal(bytes)?;
        }
        self.literal(b"\"")
    }

    /// A JSON integer as the agent writes `seq` and `timestamp_ms`: digits without a sign or
    /// a leading zero, at most `MAX_INTEGER`.
    fn integer(&mut self) -> Option<u64> {
        let digits = self
            .0
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        // MAX_INTEGER has 16 digits; `0` alone is the only number that starts with one.
        if digits == 0 || digits > 16 || (digits > 1 && self.0[0] == b'0') {
            return None;
        }
        let (number, rest) = self.0.split_at(digits);
        let value = number
            .iter()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        self.0 = rest;
        (value <= MAX_INTEGER).then_some(value)
    }

    /// A sample's value: a JSON number (RFC 8259 grammar), read by serde_json as the serde
    /// reader reads it; a number out of the range of f64 is not finite and refused.
    fn number(&mut self) -> Option<f64> {
        let length = number_length(self.0)?;
        let (token, rest) = self.0.split_at(length);
        self.0 = rest;
        serde_json::from_slice::<Number>(token)
            .ok()
            .map(|Number(value)| value)
    }
}

/// The length of the JSON number at the start of `bytes`, if one is there:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_length(bytes: &[u8]) -> Option<usize> {
    let digits_from = |at: usize| {
        bytes[at.min(bytes.len())..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    };
    let mut at = usize::from(bytes.first() == Some(&b'-'));
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at += digits_from(at),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let fraction = digits_from(at + 1);
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent = digits_from(at);
        if exponent == 0 {
            return None;
        }
        at += exponent;
    }
    Some(at)
}

/// How serde_json writes a byte of a string that it escapes.
enum Escape {
    /// `\` and this letter.
    Short(u8),
    /// `\u00` and two lowercase hex digits.
    Unicode,
}

fn escape(byte: u8) -> Option<Escape> {
    Some(match byte {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        0x08 => Escape::Short(b'b'),
        0x0c => Escape::Short(b'f'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_lengths_follow_the_json_grammar() {
        for (text, length) in [
            ("0}", Some(1)),
            ("12.5}", Some(4)),
            ("-0.25e-3,", Some(8)),
            ("1E+9}", Some(4)),
            ("1700000000.0}", Some(12)),
            ("01}", Some(1)),
            ("-}", None),
            ("1.}", None),
            (".5}", None),
            ("1e}", None),
            ("+1}", None),
            ("null}", None),
            ("\"NaN\"}", None),
        ] {
            assert_eq!(number_length(text.as_bytes()), length, "{text}");
        }
    }

    #[test]
    fn strings_are_matched_as_serde_json_escapes_them() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "tab\tline\ncr\r",
            "\u{1}\u{1f}",
            "é ü",
        ] {
            let json = serde_json::to_string(text).unwrap();
            let mut at = Cursor(json.as_bytes());
            assert_eq!(at.string(text), Some(()), "{json}");
            assert!(at.0.is_empty());
            let mut other = Cursor(json.as_bytes());
            assert_eq!(other.string(&format!("{text}x")), None);
        }
        // Another escape of the same text is left to the serde reader.
        assert_eq!(Cursor(br#""\u0061""#).string("a"), None);
    }

    #[test]
    fn integers_are_plain_digits_up_to_max_integer() {
        for (text, value) in [
            ("0,", Some(0)),
            ("42,", Some(42)),
            ("9007199254740991,", Some(MAX_INTEGER)),
            ("9007199254740992,", None),
            ("12345678901234567,", None),
            ("042,", None),
            ("-1,", None),
            ("1.0,", Some(1)),
            (",", None),
        ] {
            assert_eq!(Cursor(text.as_bytes()).integer(), value, "{text}");
        }
    }
}
