//! The embedded MQTT broker (rumqttd), so that one machine running the collector needs nothing
//! else. The collector talks to it over loopback like any other client, so the embedded and the
//! external (Mosquitto, EMQX) setups share one code path.
//!
//! rumqttd's `start()` blocks and builds its own runtimes, so it runs on a plain OS thread, as
//! the essential task `mqtt-broker`: if it returns, the collector stops too. It has no shutdown
//! call: the thread ends with the process, after the collector has stopped.

use std::collections::HashMap;

use pantau_runtime::supervise::Supervisor;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use thiserror::Error;

use crate::config::BrokerConfig;

/// Why the embedded broker is not running.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker thread: {0}")]
    Spawn(std::io::Error),
    /// rumqttd's error, as text: its error type is not exported.
    #[error("embedded broker failed: {0}")]
    Failed(String),
    /// rumqttd returns once every listener thread has ended; it logs their errors itself.
    #[error("embedded broker stopped: its listener ended (rumqttd logged why above)")]
    ListenerEnded,
}

/// Starts the broker on its own thread, watched by `supervisor`.
///
/// The caller has already checked that `listen` can be bound (`check_listen_addresses`), as
/// rumqttd only logs a bind failure from inside its thread. Readiness is not probed here: the
/// collector's own MQTT client connects with backoff, and `/readyz` turns ready once it is
/// subscribed. (A bare TCP probe would make rumqttd log an error about an aborted connect.)
pub fn spawn(supervisor: &mut Supervisor, config: &BrokerConfig) -> Result<(), BrokerError> {
    let mut broker = Broker::new(rumqttd_config(config));
    supervisor
        .spawn_thread("mqtt-broker", move || {
            broker
                .start()
                .map_err(|error| BrokerError::Failed(error.to_string()))
                .and(Err::<(), _>(BrokerError::ListenerEnded))
        })
        .map_err(BrokerError::Spawn)
}

fn rumqttd_config(config: &BrokerConfig) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: config.max_packet_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "mqtt".to_owned(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        // rumqttd keeps each filter's messages in a commit log of segments; a segment must hold
        // at least one packet, and four of them bound the memory a slow subscriber can pin.
        max_segment_size: config.max_packet_bytes.max(4 * 1024 * 1024),
        max_segment_count: 4,
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("mqtt".to_owned(), server)])),
        ..Config::default()
    }
}
