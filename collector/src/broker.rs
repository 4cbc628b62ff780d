//! The embedded MQTT broker (rumqttd), for trying Pantau on one machine: it listens on
//! loopback only (config validation refuses anything else), because rumqttd has no topic
//! rules per login, sees neither the remote address nor anything after CONNECT in its login
//! check, and keeps its subscription logs in memory. Agents on other machines use Mosquitto
//! with the shipped ACL (README, "The LAN broker: Mosquitto"). The collector talks to it over
//! loopback like any other client, so the embedded and external setups share one code path.
//!
//! Logins: with `broker.password_file` (several local users on one host), every client must
//! log in as a user of that file and may only use the client id that belongs to the user (see
//! `users.rs`). The collector's own client logs in with a secret made at start that never
//! leaves the process. Without a file any local process may connect.
//!
//! rumqttd logs every failed connection itself; `pantau_runtime::logging` turns those into a
//! rate-limited WARN line, and `register_connection_errors` counts them.
//!
//! rumqttd's `start()` blocks and builds its own runtimes, so it runs on a plain OS thread, as
//! the essential task `mqtt-broker`: if it returns, the collector stops too. It has no shutdown
//! call: the thread ends with the process, after the collector has stopped.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use pantau_runtime::logging::BrokerConnectionLimit;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use pantau_runtime::supervise::Supervisor;
use prometheus::{IntCounterVec, Opts, Registry};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tracing::{debug, warn};

use crate::config::BrokerConfig;
use crate::users::{Refusal, Users, UsersError};

/// The user name of the collector's own client on the embedded broker; a password file may
/// not list it.
pub const INTERNAL_USER: &str = "pantau-collector-internal";

/// Why the embedded broker is not running.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker thread: {0}")]
    Spawn(std::io::Error),
    #[error("broker.password_file: {0}")]
    Users(#[from] UsersError),
    #[error("broker.password_file lists the reserved user '{INTERNAL_USER}'")]
    ReservedUser,
    #[error("cannot make the collector's broker secret from /dev/urandom: {0}")]
    Secret(std::io::Error),
    /// rumqttd's error, as text: its error type is not exported.
    #[error("embedded broker failed: {0}")]
    Failed(String),
    /// rumqttd returns once every listener thread has ended; it logs their errors itself.
    #[error("embedded broker stopped: its listener ended (rumqttd logged why above)")]
    ListenerEnded,
}

/// The collector's own login on the embedded broker.
#[derive(Clone)]
pub struct InternalLogin {
    pub username: String,
    pub password: String,
    pub client_id: String,
}

impl InternalLogin {
    /// A fresh 256-bit secret for `client_id`.
    pub fn generate(client_id: &str) -> Result<Self, BrokerError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .map_err(BrokerError::Secret)?;
        let password = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self {
            username: INTERNAL_USER.to_owned(),
            password,
            client_id: client_id.to_owned(),
        })
    }
}

/// Decides every login on the embedded broker.
struct Gate {
    users: Users,
    internal: InternalLogin,
    refused: IntCounterVec,
    log: LogLimiter,
}

impl Gate {
    fn admit(&self, client_id: &str, username: &str, password: &str) -> bool {
        if username == INTERNAL_USER {
            let ok = client_id == self.internal.client_id
                && bool::from(password.as_bytes().ct_eq(self.internal.password.as_bytes()));
            if !ok {
                self.refuse(client_id, username, Refusal::BadPassword);
            }
            return ok;
        }
        match self.users.check(client_id, username, password) {
            Ok(()) => {
                debug!(client_id = ?client_id, username = ?username, "broker login accepted");
                true
            }
            Err(refusal) => {
                self.refuse(client_id, username, refusal);
                false
            }
        }
    }

    fn refuse(&self, client_id: &str, username: &str, refusal: Refusal) {
        self.refused.with_label_values(&[refusal.as_str()]).inc();
        if let Verdict::Log { suppressed } = self.log.check(refusal.as_str()) {
            // Both names come from the network: `?` quotes and escapes them.
            warn!(
                client_id = ?client_id,
                username = ?username,
                reason = refusal.as_str(),
                suppressed,
                "embedded broker refused a login"
            );
        }
    }
}

/// Registers `pantau_collector_broker_connection_errors_total{reason}` and has the log layer
/// count into it: connections to the embedded broker that failed (never sent CONNECT, sent
/// something else, were refused, or broke off), whose log lines are rate-limited.
pub fn register_connection_errors(registry: &Registry) -> prometheus::Result<()> {
    let errors = IntCounterVec::new(
        Opts::new(
            "pantau_collector_broker_connection_errors_total",
            "Connections to the embedded broker that failed, by reason: connect_timeout (no \
             CONNECT within 10 s), bad_connect (not a CONNECT, or broken), login_refused, link, \
             disconnected. Logged at most once per reason and minute.",
        ),
        &["reason"],
    )?;
    for reason in BrokerConnectionLimit::REASONS {
        errors.with_label_values(&[reason]);
    }
    registry.register(Box::new(errors.clone()))?;
    pantau_runtime::logging::count_broker_connection_errors(move |reason| {
        errors.with_label_values(&[reason]).inc();
    });
    Ok(())
}

/// Bytes of one segment of rumqttd's in-memory logs (at least one packet).
const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
/// Segments of every log other than the collector's: other subscribers (a `mosquitto_sub`
/// for debugging) and agents' command topics.
const OTHER_SEGMENTS: usize = 4;

/// Starts the broker on its own thread, watched by `supervisor`. `refused` counts refused
/// logins by reason; `collector_filter` is the collector's subscription, whose log gets
/// `broker.max_buffer_bytes`.
///
/// The caller has already checked that `listen` can be bound (`check_listen_addresses`), as
/// rumqttd only logs a bind failure from inside its thread. Readiness is not probed here: the
/// collector's own MQTT client connects with backoff, and `/readyz` turns ready once it is
/// subscribed. (A bare TCP probe would make rumqttd log an error about an aborted connect.)
pub fn spawn(
    supervisor: &mut Supervisor,
    config: &BrokerConfig,
    internal: &InternalLogin,
    refused: IntCounterVec,
    collector_filter: &str,
) -> Result<(), BrokerError> {
    let gate = match &config.password_file {
        Some(path) => {
            let users = Users::load(path)?;
            if users.contains(INTERNAL_USER) {
                return Err(BrokerError::ReservedUser);
            }
            Some(Arc::new(Gate {
                users,
                internal: internal.clone(),
                refused,
                log: LogLimiter::new(Duration::from_secs(10)),
            }))
        }
        None => None,
    };
    let mut broker = Broker::new(rumqttd_config(config, gate, collector_filter));
    supervisor
        .spawn_thread("mqtt-broker", move || {
            broker
                .start()
                .map_err(|error| BrokerError::Failed(error.to_string()))
                .and(Err::<(), _>(BrokerError::ListenerEnded))
        })
        .map_err(BrokerError::Spawn)
}

fn rumqttd_config(
    config: &BrokerConfig,
    gate: Option<Arc<Gate>>,
    collector_filter: &str,
) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: config.max_packet_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some(gate) = gate {
        // rumqttd closes the socket without a CONNACK when this says no.
        connections.set_auth_handler(move |client_id, username, password| {
            std::future::ready(gate.admit(&client_id, &username, &password))
        });
    }
    let server = ServerSettings {
        name: "mqtt".to_owned(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    // rumqttd keeps each subscription filter's messages in an in-memory commit log of
    // segments, and acknowledges a publish (PUBACK) as soon as it is appended. It never waits
    // for a slow subscriber: when the log is full it drops its oldest segment, and a reader
    // still behind it skips ahead ("jumping to head"), losing what it had not read. Agents
    // publish faster than the collector decodes, so the collector's log must hold the whole
    // of what it may fall behind by; other logs stay small. A segment must hold at least one
    // packet.
    let segment = config.max_packet_bytes.max(SEGMENT_BYTES);
    let collector_log = SegmentConfig {
        max_segment_size: segment,
        max_segment_count: (config.max_buffer_bytes / segment).max(1),
    };
    let router = RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: segment,
        max_segment_count: OTHER_SEGMENTS,
        custom_segment: Some(HashMap::from([(
            collector_filter.to_owned(),
            collector_log,
        )])),
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("mqtt".to_owned(), server)])),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        // `mosquitto_passwd -c -b FILE alice secret`.
        let users = "alice:$7$101$PjPuXrfV8Q/LPIzb$FhAD8UF53GIMvAirZfB27McK9txcAP8GDPAYrDTwI0K\
                     vgdl/mUDzl/qZq3rwzS5yCzx1Zb3UvVltfh9nuZ6l5g==";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, users).unwrap();
        Gate {
            users: Users::load(&path).unwrap(),
            internal: InternalLogin::generate("pantau-collector-1").unwrap(),
            refused: IntCounterVec::new(Opts::new("r", "r"), &["reason"]).unwrap(),
            log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    #[test]
    fn the_collectors_log_holds_max_buffer_bytes() {
        let config = BrokerConfig {
            max_buffer_bytes: 256 * 1024 * 1024,
            ..BrokerConfig::default()
        };
        let router = rumqttd_config(&config, None, "pantau/#").router;
        let custom = router.custom_segment.unwrap();
        let log = &custom["pantau/#"];
        assert_eq!(
            log.max_segment_size * log.max_segment_count,
            256 * 1024 * 1024
        );
        assert_eq!(
            router.max_segment_size * router.max_segment_count,
            16 * 1024 * 1024
        );
        // Packets bigger than a segment make bigger segments, and still at least one.
        let big = BrokerConfig {
            max_packet_bytes: 8 * 1024 * 1024,
            max_buffer_bytes: 4 * 1024 * 1024,
            ..BrokerConfig::default()
        };
        let custom = rumqttd_config(&big, None, "p/#")
            .router
            .custom_segment
            .unwrap();
        assert_eq!(custom["p/#"].max_segment_count, 1);
    }

    #[test]
    fn users_log_in_with_their_own_client_id_only() {
        let gate = gate();
        assert!(gate.admit("pantau-agent-alice", "alice", "secret"));
        assert!(!gate.admit("pantau-agent-bob", "alice", "secret"));
        assert!(!gate.admit("pantau-agent-alice", "alice", "wrong"));
        let refused = |reason: &str| gate.refused.with_label_values(&[reason]).get();
        assert_eq!(refused("client_id_not_allowed"), 1);
        assert_eq!(refused("bad_password"), 1);
    }

    #[test]
    fn the_internal_login_works_only_for_the_collector() {
        let gate = gate();
        let internal = gate.internal.clone();
        assert_eq!(internal.password.len(), 64);
        assert!(gate.admit(&internal.client_id, INTERNAL_USER, &internal.password));
        assert!(!gate.admit("pantau-agent-x", INTERNAL_USER, &internal.password));
        assert!(!gate.admit(&internal.client_id, INTERNAL_USER, "guess"));
        let other = InternalLogin::generate("pantau-collector-1").unwrap();
        assert_ne!(
            other.password, internal.password,
            "a fresh secret per start"
        );
    }
}
