//! Signatures cover where a command may be used and who may use it: a sound agent whose key
//! was derived from the collector's master key with `pantau-collector key derive` plays what
//! the collector signs for it, and refuses with `bad_signature` (counted) a correctly signed
//! command published on another topic (another command name, another prefix), a command
//! signed with another agent's derived key or with the master key itself, and a command
//! signed the old way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{CommandMessage, derive_agent_key};
use pantau_tests::{
    Agent, AudioCapture, Collector, Mosquitto, TestDir, http_post, old_style_signed_command,
    signed_command, wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const MASTER: &[u8] = b"kominfo-master-key-for-tests-0001";
const TOKEN: &str = "operator-token-0123456789abcdef";
const SPEAKER: &str = "sig-sound";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn events(collector: &Collector) -> Vec<Value> {
    let (_, body) = collector.api(&format!("/api/v1/agents/{SPEAKER}/events"));
    body["events"].as_array().cloned().unwrap_or_default()
}

fn rejection(collector: &Collector, command_id: &str) -> Value {
    wait_until(&format!("the rejection of {command_id}"), WAIT, || {
        events(collector)
            .into_iter()
            .find(|e| e["kind"] == "command_rejected" && e["labels"]["command_id"] == command_id)
    })
}

#[test]
fn a_command_is_valid_only_on_its_topic_and_for_its_agent() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let master = dir.write("master.key", MASTER);
    let tokens = dir.write("api-tokens", format!("{TOKEN}\n"));
    let master_path = master.display().to_string();
    let tokens = tokens.display().to_string();
    let storage = dir.join("storage").display().to_string();
    let collector = Collector::with_env(
        &dir,
        &broker,
        &[
            ("PANTAU_ANNOUNCEMENTS__KEY_FILE", master_path.as_str()),
            ("PANTAU_ANNOUNCEMENTS__RESEND_INTERVAL_SECONDS", "1"),
            ("PANTAU_API__TOKEN_FILE", tokens.as_str()),
            ("PANTAU_STORAGE__DIR", storage.as_str()),
        ],
    );
    let capture = AudioCapture::new(&dir);
    let agent = Agent::start_sound(&dir, SPEAKER, "office", &broker.url(), &capture, &master);
    let own_key =
        std::fs::read_to_string(dir.join(format!("{SPEAKER}.key"))).expect("the derived key file");
    assert_eq!(
        own_key.trim(),
        derive_agent_key(MASTER, SPEAKER),
        "the subcommand derives what the protocol crate derives"
    );

    // Positive control: what the collector signs with the agent's derived key plays.
    let url = collector.url();
    let created = wait_until("the agent known to the collector", WAIT, || {
        let (status, text) = http_post(
            &format!("{url}/api/v1/announcements"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {TOKEN}")),
            ],
            json!({"tone": {"seconds": 0.3}, "chime": false, "targets": [SPEAKER]})
                .to_string()
                .as_bytes(),
        )
        .ok()?;
        (status == 201).then(|| serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
    });
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    collector.wait_for_api(&format!("/api/v1/announcements/{id}"), 200, WAIT, |row| {
        row["targets"][0]["status"] == "finished"
    });

    let key = derive_agent_key(MASTER, SPEAKER);
    let tone = json!({"tone": {"seconds": 0.3}, "chime": false});
    let topic = |name: &str| format!("pantau/v1/office/{SPEAKER}/cmd/{name}");
    // A correctly signed announce, published as a stop: the arguments would even parse as a
    // stop of everything, but the signature names `announce`.
    let announce_as_stop = signed_command(
        SPEAKER,
        "office",
        "announce",
        "wrong-name-1",
        json!({"up_to": "emergency"}),
        Some(60_000),
        Some(key.as_bytes()),
    );
    broker.mosquitto_pub(&topic("stop"), &announce_as_stop, false);
    // Signed for another topic prefix (another deployment's), published under this one.
    let mut elsewhere = CommandMessage {
        schema: pantau_protocol::SCHEMA_VERSION,
        agent: SPEAKER.to_owned(),
        site: "office".to_owned(),
        id: "wrong-prefix-1".to_owned(),
        timestamp_ms: now_ms(),
        expires_ms: Some(now_ms() + 60_000),
        args: tone.clone(),
        hmac_version: None,
        hmac: None,
    };
    elsewhere.sign(key.as_bytes(), "kantor-lain", "announce");
    broker.mosquitto_pub(
        &topic("announce"),
        &serde_json::to_vec(&elsewhere).expect("serializes"),
        false,
    );
    // Signed with another speaker's key, and with the master key itself.
    let other = derive_agent_key(MASTER, "lobby-sound");
    for (id, signing_key) in [("other-agent-1", other.as_bytes()), ("master-1", MASTER)] {
        let payload = signed_command(
            SPEAKER,
            "office",
            "announce",
            id,
            tone.clone(),
            Some(60_000),
            Some(signing_key),
        );
        broker.mosquitto_pub(&topic("announce"), &payload, false);
    }
    // Signed the old way, with the right key.
    let old = old_style_signed_command(
        SPEAKER,
        "office",
        "old-style-1",
        tone.clone(),
        Some(60_000),
        key.as_bytes(),
    );
    broker.mosquitto_pub(&topic("announce"), &old, false);

    for id in [
        "wrong-name-1",
        "wrong-prefix-1",
        "other-agent-1",
        "master-1",
        "old-style-1",
    ] {
        let refused = rejection(&collector, id);
        assert_eq!(refused["labels"]["reason"], "bad_signature", "{refused}");
    }
    let old_reason = rejection(&collector, "old-style-1");
    assert!(
        old_reason["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hmac_version"),
        "{old_reason}"
    );
    collector.wait_for_sample(
        &format!(
            r#"pantau_agent_rejected_commands_total{{instance="{SPEAKER}",reason="bad_signature",site="office"}}"#
        ),
        WAIT,
        |v| v == 5.0,
    );
    // None of them played: the only announcement the agent took is the collector's.
    let started: Vec<Value> = events(&collector)
        .into_iter()
        .filter(|e| e["kind"] == "announcement_started")
        .collect();
    assert_eq!(started.len(), 1, "{started:?}\n{}", agent.logs());
    assert_eq!(started[0]["labels"]["announcement"], format!("{id}-0"));
}
