//! Commands as the collector sends them: an envelope signed with the shared key.

use std::time::{SystemTime, UNIX_EPOCH};

use pantau_protocol::CommandMessage;

/// The JSON payload of command `id` for agent `agent` of `site`, with `args`, valid for
/// `valid_ms` from now (none when `None`), signed with `key` (unsigned when `None`).
pub fn signed_command(
    agent: &str,
    site: &str,
    id: &str,
    args: serde_json::Value,
    valid_ms: Option<i64>,
    key: Option<&[u8]>,
) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let mut message = CommandMessage {
        schema: pantau_protocol::SCHEMA_VERSION,
        agent: agent.to_owned(),
        site: site.to_owned(),
        id: id.to_owned(),
        timestamp_ms: now_ms,
        expires_ms: valid_ms.map(|valid| now_ms + valid),
        args,
        hmac: None,
    };
    if let Some(key) = key {
        message.sign(key);
    }
    serde_json::to_vec(&message).expect("a command serializes")
}
