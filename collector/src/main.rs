//! `pantau-collector`: receives agent reports over MQTT (from its embedded broker or an
//! external one), keeps per-agent state, and serves `/metrics` and the HTTP API.

mod api;
mod broker;
mod config;
mod exposition;
mod ingest;
mod state;

use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use pantau_protocol::Limits;
use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tracing::info;

use crate::config::CollectorConfig;
use crate::exposition::Telemetry;
use crate::ingest::Readiness;
use crate::state::{Liveness, State};

fn main() -> ExitCode {
    pantau_runtime::cli::main(
        "pantau-collector",
        "Pantau collector: agent reports over MQTT in, Prometheus metrics and an HTTP API out",
        CollectorConfig::load,
        |_| "config OK".to_owned(),
        run,
    )
}

async fn run(config: CollectorConfig) -> anyhow::Result<()> {
    config.check_listen_addresses()?;
    let shutdown = pantau_runtime::shutdown::on_signals();
    if config.broker.embedded {
        broker::start(&config.broker)?;
        info!(listen = %config.broker.listen, "embedded MQTT broker started");
    }

    let state = Arc::new(RwLock::new(State::new(Liveness {
        silent_intervals: config.agents.silent_intervals,
        default_interval: config.default_interval(),
        forget_after: Duration::from_secs(config.agents.forget_after_seconds),
    })));
    let telemetry = Arc::new(Telemetry::new(state.clone()).context("registering metrics")?);
    let readiness = Readiness::default();

    let endpoint = config.broker_endpoint()?;
    let client_id = config
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("pantau-collector-{}", std::process::id()));
    let mut options = config.mqtt.options(&endpoint, &client_id);
    // Accept packets well above the payload limit so oversized payloads arrive and are counted
    // instead of breaking the connection.
    let max_packet = config
        .ingest
        .max_payload_bytes
        .saturating_mul(4)
        .max(1024 * 1024);
    options.set_max_packet_size(max_packet, 64 * 1024);
    let (client, eventloop) = AsyncClient::new(options, 16);
    info!(broker = %endpoint, client_id, "collector starting");

    let (queue_tx, queue_rx) = mpsc::channel(config.ingest.queue_capacity);
    let limits = Limits {
        max_payload_bytes: config.ingest.max_payload_bytes,
    };
    let connection = tokio::spawn(ingest::run_connection(
        client,
        eventloop,
        config.mqtt.prefix.clone(),
        queue_tx,
        telemetry.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let decoder = tokio::spawn(ingest::run_decoder(
        queue_rx,
        state.clone(),
        telemetry.clone(),
        config.mqtt.prefix.clone(),
        limits,
    ));
    let sweeper = tokio::spawn(ingest::run_sweeper(state.clone(), shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", config.http.listen))?;
    info!(listen = %config.http.listen, "serving /metrics and /api/v1");
    let app = api::app(api::AppState::new(state, telemetry, readiness));
    let http_shutdown = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .await
        .context("HTTP server failed")?;

    // HTTP has stopped; the connection task stops on the same token and closes the queue,
    // which ends the decoder after it has applied what was already received.
    shutdown.cancel();
    connection.await.context("MQTT task panicked")?;
    decoder.await.context("decoder task panicked")?;
    sweeper.await.context("sweeper task panicked")?;
    info!("collector stopped");
    Ok(())
}
