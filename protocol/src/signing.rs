//! Command signatures and command keys: what makes a command valid for one agent, on one
//! topic. The collector holds a master key; each agent gets a key derived from it for its id
//! ([`derive_agent_key`]), so a key stolen from one sound PC signs for that speaker only. The
//! HMAC covers the topic's prefix and the command name besides the message (which names agent
//! and site), so a signed `announce` is not valid on any other topic.
//!
//! `protocol/README.md` ("Signatures") specifies the exact bytes; an implementation in another
//! language must produce them from that text alone.

use std::path::Path;

use hmac::Mac;
use thiserror::Error;

use crate::CommandMessage;

/// The signature version this crate signs and accepts (`hmac_version` in the command).
pub const HMAC_VERSION: u32 = 2;
/// The shortest command key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// First line of the signed bytes: what they are, so they are never valid as anything else.
const SIGNING_DOMAIN: &str = "pantau command hmac v2";
/// HKDF salt of a derived agent key (public, fixed: it separates this use of the master key).
const DERIVATION_SALT: &[u8] = b"pantau agent command key v1";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("the command is not signed (no `hmac`)")]
    Unsigned,
    #[error("the command's `hmac` does not match: wrong key, another topic, or altered")]
    Mismatch,
    /// Signed the old way (over the message alone), or with a version this crate does not
    /// know; refused like a wrong signature.
    #[error(
        "the command is signed as hmac_version {0:?}; only hmac_version {HMAC_VERSION} (which covers the topic) is accepted"
    )]
    Version(Option<u32>),
}

impl CommandMessage {
    /// The bytes the HMAC covers for a command published on `<prefix>/v1/<site>/<agent>/cmd/<name>`:
    /// `pantau command hmac v2\n<prefix>\n<name>\n` followed by the message without `hmac` as
    /// this crate serializes it (fields in declaration order, `args` keys sorted, absent
    /// optional fields left out). `name` never holds a newline (`validate_command_name`) and
    /// compact JSON holds none either, so the split is unambiguous.
    pub fn signing_bytes(&self, prefix: &str, name: &str) -> Vec<u8> {
        let unsigned = CommandMessage {
            hmac: None,
            ..self.clone()
        };
        let mut bytes = format!("{SIGNING_DOMAIN}\n{prefix}\n{name}\n").into_bytes();
        // A struct of strings, integers and a JSON value always serializes.
        bytes.extend(serde_json::to_vec(&unsigned).unwrap_or_default());
        bytes
    }

    /// Signs the message with `key` for command `name` under topic prefix `prefix`.
    pub fn sign(&mut self, key: &[u8], prefix: &str, name: &str) {
        self.hmac_version = Some(HMAC_VERSION);
        let tag = mac(key, &self.signing_bytes(prefix, name));
        self.hmac = Some(hex(&tag));
    }

    /// Checks the signature with `key` for command `name` under `prefix`, in constant time.
    pub fn verify(&self, key: &[u8], prefix: &str, name: &str) -> Result<(), SignatureError> {
        let hex = self.hmac.as_deref().ok_or(SignatureError::Unsigned)?;
        if self.hmac_version != Some(HMAC_VERSION) {
            return Err(SignatureError::Version(self.hmac_version));
        }
        let tag = decode_hex(hex).ok_or(SignatureError::Mismatch)?;
        let mut verifier = HmacSha256::new_from_slice(key).map_err(|_| SignatureError::Mismatch)?;
        verifier.update(&self.signing_bytes(prefix, name));
        verifier
            .verify_slice(&tag)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The command key of agent `agent`, derived from the collector's master key: HKDF-SHA256
/// (RFC 5869) with the master key as input key material, salt `pantau agent command key v1`
/// and the agent id as info, 32 bytes, written as 64 lowercase hex characters. Those 64
/// characters are the key, as the agent reads them from its `sound.key_file`.
pub fn derive_agent_key(master: &[u8], agent: &str) -> String {
    let derivation = hkdf::Hkdf::<sha2::Sha256>::new(Some(DERIVATION_SALT), master);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    derivation
        .expand(agent.as_bytes(), &mut key)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
    hex(&key)
}

/// Reads a command key file: its bytes with surrounding whitespace trimmed, at least
/// [`MIN_KEY_BYTES`]. The error says why, for the caller to prefix with its config key.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot be read: {error}"))?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "holds {} bytes; a key needs at least {MIN_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(key)
}

fn mac(key: &[u8], bytes: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(bytes);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, decode_command};

    const TOPIC: &str = "pantau/v1/office/sound-01/cmd/announce";
    const NOW: i64 = 1_800_000_000_000;

    fn message() -> CommandMessage {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "agent": "sound-01", "site": "office", "id": "c-1",
            "timestamp_ms": NOW - 10, "expires_ms": NOW + 60_000, "args": {"text": "Tes"}
        }))
        .unwrap()
    }

    #[test]
    fn a_signature_holds_for_its_key_prefix_and_name_only() {
        let mut message = message();
        assert_eq!(
            message.verify(b"k", "pantau", "announce"),
            Err(SignatureError::Unsigned)
        );
        message.sign(b"shared key", "pantau", "announce");
        assert_eq!(message.hmac_version, Some(HMAC_VERSION));
        assert_eq!(message.verify(b"shared key", "pantau", "announce"), Ok(()));
        assert_eq!(
            message.verify(b"other key", "pantau", "announce"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            message.verify(b"shared key", "pantau", "stop"),
            Err(SignatureError::Mismatch),
            "another command name"
        );
        assert_eq!(
            message.verify(b"shared key", "other", "announce"),
            Err(SignatureError::Mismatch),
            "another prefix"
        );
        // The signature survives the wire: serialized, received, decoded, checked against
        // the topic it came on.
        let payload = serde_json::to_vec(&message).unwrap();
        let received = decode_command("pantau", TOPIC, &payload, &Limits::default(), NOW).unwrap();
        assert_eq!(received.verify(b"shared key"), Ok(()));
        let elsewhere = decode_command(
            "pantau",
            "pantau/v1/office/sound-01/cmd/schedule",
            &payload,
            &Limits::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            elsewhere.verify(b"shared key"),
            Err(SignatureError::Mismatch)
        );
        // Any change breaks it.
        let mut altered = message.clone();
        altered.args["text"] = serde_json::json!("Lain");
        assert_eq!(
            altered.verify(b"shared key", "pantau", "announce"),
            Err(SignatureError::Mismatch)
        );
        let mut garbage = message;
        garbage.hmac = Some("zz".repeat(32));
        assert_eq!(
            garbage.verify(b"shared key", "pantau", "announce"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_signed_bytes_are_as_documented() {
        let bytes = message().signing_bytes("pantau", "announce");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "pantau command hmac v2\npantau\nannounce\n{\"schema\":1,\"agent\":\"sound-01\",\
             \"site\":\"office\",\"id\":\"c-1\",\"timestamp_ms\":1799999999990,\
             \"expires_ms\":1800000060000,\"args\":{\"text\":\"Tes\"}}"
        );
        // The example in protocol/README.md, byte for byte.
        let mut signed = message();
        signed.sign(b"k", "pantau", "announce");
        let bytes = String::from_utf8(signed.signing_bytes("pantau", "announce")).unwrap();
        let readme = include_str!("../README.md");
        let example = "pantau command hmac v2\npantau\nannounce\n{\"schema\":1,\"agent\":\"sound-01\",\
             \"site\":\"office\",\"id\":\"c-1\",\"timestamp_ms\":1799999999990,\
             \"expires_ms\":1800000060000,\"args\":{\"text\":\"Tes\"},\"hmac_version\":2}";
        assert_eq!(bytes, example);
        assert!(
            readme.contains(&example.replace('\n', "\n  ")),
            "protocol/README.md shows these bytes"
        );
    }

    #[test]
    fn an_old_style_signature_is_refused() {
        // The old signature: HMAC over the message alone, no `hmac_version`.
        let mut old = message();
        let unsigned = serde_json::to_vec(&old).unwrap();
        old.hmac = Some(hex(&mac(b"shared key", &unsigned)));
        assert_eq!(
            old.verify(b"shared key", "pantau", "announce"),
            Err(SignatureError::Version(None))
        );
        // Claiming version 2 does not help: the bytes differ.
        old.hmac_version = Some(HMAC_VERSION);
        assert_eq!(
            old.verify(b"shared key", "pantau", "announce"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn derived_keys_differ_per_agent_and_per_master() {
        let a = derive_agent_key(b"master key of the office 0001", "sound-01");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            a,
            derive_agent_key(b"master key of the office 0001", "sound-01")
        );
        assert_ne!(
            a,
            derive_agent_key(b"master key of the office 0001", "sound-02")
        );
        assert_ne!(
            a,
            derive_agent_key(b"master key of the office 0002", "sound-01")
        );
        // RFC 5869 by hand: PRK = HMAC(salt, master), OKM = HMAC(PRK, info || 0x01).
        let prk = mac(DERIVATION_SALT, b"master key of the office 0001");
        let mut info = b"sound-01".to_vec();
        info.push(1);
        assert_eq!(a, hex(&mac(&prk, &info)));
    }

    #[test]
    fn key_files_are_trimmed_and_need_sixteen_bytes() {
        let dir = std::env::temp_dir().join(format!("pantau-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_key(&good).unwrap(), b"0123456789abcdef");
        let short = dir.join("short");
        std::fs::write(&short, "short\n").unwrap();
        assert_eq!(
            read_key(&short).unwrap_err(),
            "holds 5 bytes; a key needs at least 16"
        );
        assert!(
            read_key(&dir.join("missing"))
                .unwrap_err()
                .starts_with("cannot be read:")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
