//! Commands as the collector sends them: an envelope signed for its topic with the agent's own
//! key, and that key derived from the master key as an admin derives it
//! (`pantau-collector key derive`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::CommandMessage;

use crate::{pantau_binary, run_with_timeout};

/// The topic prefix the example configs use.
const PREFIX: &str = "pantau";

fn envelope(
    agent: &str,
    site: &str,
    id: &str,
    args: serde_json::Value,
    valid_ms: Option<i64>,
) -> CommandMessage {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    CommandMessage {
        schema: pantau_protocol::SCHEMA_VERSION,
        agent: agent.to_owned(),
        site: site.to_owned(),
        id: id.to_owned(),
        timestamp_ms: now_ms,
        expires_ms: valid_ms.map(|valid| now_ms + valid),
        args,
        hmac_version: None,
        hmac: None,
    }
}

/// The JSON payload of command `name` (`announce`, `stop`, ...) with id `id` for agent `agent`
/// of `site`, with `args`, valid for `valid_ms` from now (none when `None`), signed with `key`
/// for the topic `pantau/v1/<site>/<agent>/cmd/<name>` (unsigned when `None`).
pub fn signed_command(
    agent: &str,
    site: &str,
    name: &str,
    id: &str,
    args: serde_json::Value,
    valid_ms: Option<i64>,
    key: Option<&[u8]>,
) -> Vec<u8> {
    let mut message = envelope(agent, site, id, args, valid_ms);
    if let Some(key) = key {
        message.sign(key, PREFIX, name);
    }
    serde_json::to_vec(&message).expect("a command serializes")
}

/// As [`signed_command`], signed the old way: HMAC-SHA256 over the message alone, without
/// `hmac_version`, as collectors signed before the signature covered the topic.
pub fn old_style_signed_command(
    agent: &str,
    site: &str,
    id: &str,
    args: serde_json::Value,
    valid_ms: Option<i64>,
    key: &[u8],
) -> Vec<u8> {
    use hmac::Mac;
    let mut message = envelope(agent, site, id, args, valid_ms);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(&serde_json::to_vec(&message).expect("a command serializes"));
    let tag = mac.finalize().into_bytes();
    message.hmac = Some(tag.iter().map(|byte| format!("{byte:02x}")).collect());
    serde_json::to_vec(&message).expect("a command serializes")
}

/// Derives agent `agent`'s command key from the master key in `master` with
/// `pantau-collector key derive`, into `<dir>/<agent>.key`; returns that file.
pub fn derive_agent_key_file(dir: &Path, master: &Path, agent: &str) -> PathBuf {
    let output = dir.join(format!("{agent}.key"));
    let done = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .args(["key", "derive", agent, "--key-file"])
            .arg(master)
            .arg("--output")
            .arg(&output),
        b"",
        Duration::from_secs(30),
    );
    assert!(done.status.success(), "key derive: {done:?}");
    output
}
