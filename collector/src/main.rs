//! `pantau-collector`: receives agent reports over MQTT (from its embedded broker or an
//! external one), keeps per-agent state, and serves `/metrics` and the HTTP API.
//!
//! Wiring only. Every long-running part is an essential task of one `Supervisor`: the embedded
//! broker's thread, the MQTT connection, the decoder, the sweeper and the HTTP server. If one
//! ends or panics before shutdown, `/readyz` turns 503 naming it at once, the others stop, and
//! `run` returns the failure, so the process exits non-zero and systemd restarts it.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod announce;
mod api;
mod backfill;
mod broker;
mod broker_tls;
mod commands;
mod config;
mod console;
mod exposition;
mod ingest;
mod mqtt;
#[cfg(test)]
mod properties;
mod readiness;
mod sensors;
mod state;
mod tls;
mod users;

use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::CollectorConfig;
use crate::exposition::Telemetry;
use crate::ingest::Decoder;
use crate::mqtt::Connection;
use crate::readiness::Readiness;
use crate::state::{Liveness, SharedState, State};

/// Unix milliseconds now: tests' messages must carry current timestamps, or their samples
/// are history and not shown.
#[cfg(test)]
pub fn test_support_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The largest packet read from an external broker (see `run`).
const EXTERNAL_READ_LIMIT_BYTES: usize = 32 * 1024 * 1024;

/// `pantau-collector-<host name>`: fixed across restarts, so an external broker keeps the
/// collector's session (and what arrives while it restarts); one per host.
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    match host.is_empty() {
        true => "pantau-collector".to_owned(),
        false => format!("pantau-collector-{host}"),
    }
}

fn main() -> ExitCode {
    pantau_runtime::cli::main_with_commands(
        "pantau-collector",
        "Pantau collector: agent reports over MQTT in, Prometheus metrics and an HTTP API out",
        CollectorConfig::load,
        |_| "config OK".to_owned(),
        run,
        commands::run,
    )
}

async fn run(config: CollectorConfig) -> anyhow::Result<()> {
    config.check_listen_addresses()?;
    let shutdown = pantau_runtime::shutdown::on_signals();
    let readiness = Readiness::default();
    let mut supervisor = readiness.supervisor(shutdown.clone());
    let state: SharedState = Arc::new(RwLock::new(
        State::new(Liveness {
            silent_intervals: config.agents.silent_intervals,
            default_interval: config.default_interval(),
            forget_after: Duration::from_secs(config.agents.forget_after_seconds),
        })
        .with_max_events(config.agents.max_events)
        .with_max_agents(config.limits.max_agents)
        .with_live_window(config.remote_write.live_window()),
    ));
    let telemetry = Arc::new(Telemetry::new(state.clone()).context("registering metrics")?);
    // Before the first message: a gap that opened while the collector was down is counted.
    let accounting = ingest::Accounting::new(
        &config.storage.dir,
        state.clone(),
        telemetry.sequence_file_errors.clone(),
    );
    accounting.restore().await;
    let backfill_metrics =
        backfill::BackfillMetrics::register(telemetry.registry()).context("registering metrics")?;
    let backfill = backfill::Backfill::start(
        &config.remote_write,
        &config.storage.dir.join("backfill"),
        backfill_metrics,
        &mut supervisor,
    )
    .context("remote_write")?;

    let endpoints = config.broker_endpoints()?;
    let client_id = config
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(default_client_id);
    let internal = match config.broker.embedded {
        true => Some(broker::InternalLogin::generate(&client_id)?),
        false => None,
    };
    if !config.broker.embedded {
        for endpoint in &endpoints {
            endpoint.warn_if_clear_text();
        }
    }
    // With the embedded broker, one packet limit for the broker and this client (checked
    // against the payload limit at start), so a packet the broker lets through never breaks
    // the collector's connection. An external broker has its own limit (README: set it to the
    // same value); until it does, read generously, so that an oversized message, retained
    // ones included, is rejected, counted and cleared instead of breaking the connection on
    // every reconnect.
    let read_limit = match config.broker.embedded {
        true => config.broker.max_packet_bytes,
        false => config
            .broker
            .max_packet_bytes
            .max(EXTERNAL_READ_LIMIT_BYTES),
    };
    let brokers = config.mqtt.brokers(&endpoints, &client_id, |options| {
        if let Some(internal) = &internal {
            options.set_credentials(internal.username.clone(), internal.password.clone());
        }
        options.set_max_packet_size(read_limit, 64 * 1024);
        // A persistent session with an external broker keeps the subscription and queues
        // what arrives while the collector is away (a restart, a broker restart with
        // persistence, a failover within a cluster that shares sessions): nothing published
        // meanwhile is lost. The embedded broker's sessions end with the collector anyway.
        options.set_clean_session(config.broker.embedded);
    })?;
    if let Some(internal) = &internal {
        // The embedded broker is the one endpoint.
        let endpoint = brokers.current().clone();
        broker::spawn(
            &mut supervisor,
            &config.broker,
            internal,
            telemetry.broker_refused_logins.clone(),
            &pantau_protocol::Topic::subscription_filter(&config.mqtt.prefix),
        )?;
        let logins = match &config.broker.password_file {
            Some(path) => format!("users of {}", path.display()),
            None => "anyone (no broker.password_file)".to_owned(),
        };
        info!(listen = %config.broker.listen, logins, "embedded MQTT broker started");
        if let (Some(tls_listen), Some(server)) = (
            config.broker.tls_listen,
            broker_tls::server_config(&config.broker).map_err(anyhow::Error::msg)?,
        ) {
            let listener = tokio::net::TcpListener::bind(tls_listen)
                .await
                .with_context(|| format!("broker.tls_listen: '{tls_listen}' cannot be bound"))?;
            let backend = std::net::SocketAddr::new(
                endpoint.host.parse().context("embedded broker address")?,
                endpoint.port,
            );
            broker_tls::spawn(
                &mut supervisor,
                listener,
                server,
                backend,
                config.broker.max_connections,
                telemetry.broker_tls_handshake_failures.clone(),
            );
            let client_certificates = config.broker.tls_client_ca_file.is_some();
            info!(%tls_listen, client_certificates, "embedded MQTT broker accepts TLS");
        }
    }
    let sites = mqtt::SiteFilter::new(&config.mqtt.prefix, config.mqtt.sites.clone());
    info!(
        broker = %brokers.current(),
        brokers = brokers.endpoints().count(),
        failover = %config.mqtt.failover,
        filters = ?sites.filters(),
        client_id,
        "collector starting"
    );

    let (queue_tx, queue_rx) = ingest::queue(config.ingest.queue_capacity);
    let (connection, mqtt) = Connection::new(
        brokers,
        sites,
        queue_tx,
        telemetry.clone(),
        readiness.clone(),
    )
    .context("registering the MQTT connection's metrics")?;
    let mut decoder = Decoder::new(
        config.mqtt.prefix.clone(),
        config.decode_limits(),
        state.clone(),
        telemetry.clone(),
        mqtt.clone(),
    )
    .with_backfill(backfill);
    let connection = if config.sensors.is_empty() {
        connection
    } else {
        let sensors = Arc::new(
            sensors::Sensors::new(&config.sensors, telemetry.registry())
                .context("registering the room sensors' metrics")?,
        );
        supervisor.spawn(
            "sensor-sweeper",
            sweep_sensors(sensors.clone(), supervisor.shutdown()),
        );
        decoder = decoder.with_sensors(sensors.clone());
        connection.also_subscribe(sensors.filters())
    };
    let tokens = match &config.api.token_file {
        Some(path) => api::Tokens::load(path)
            .map_err(|why| anyhow::anyhow!("api.token_file: '{}' {why}", path.display()))?,
        None => api::Tokens::default(),
    };
    let accounts = match &config.api.users_file {
        Some(path) => api::accounts::Accounts::load(path, false)
            .map_err(|why| anyhow::anyhow!("api.users_file: '{}' {why}", path.display()))?,
        None => api::accounts::Accounts::default(),
    };
    if !accounts
        .accounts
        .iter()
        .any(|account| account.role == api::accounts::Role::Admin)
    {
        let file = config.api.users_file.as_ref().map_or_else(
            || "/etc/pantau/api-users".to_owned(),
            |p| p.display().to_string(),
        );
        warn!(
            users_file = %file,
            "no user has the admin role, so nobody can edit schedules in the web console; \
             create one with: printf '%s\\n' \"$PASSWORD\" | pantau-collector user add NAME \
             --role admin --file {file} (and set api.users_file), then restart the collector"
        );
    }
    let mut app_state = api::AppState::new(state.clone(), telemetry.clone(), readiness)
        .with_tokens(tokens)
        .with_accounts(accounts)
        .with_users_file(config.api.users_file.clone());
    if let Some(key_file) = &config.announcements.key_file {
        let key = pantau_protocol::read_key(key_file).map_err(|why| {
            anyhow::anyhow!("announcements.key_file: '{}' {why}", key_file.display())
        })?;
        let store = announce::Store::open(&config.storage.dir)?;
        info!(dir = %config.storage.dir.display(), "announcements on");
        let settings = announce::Settings {
            prefix: config.mqtt.prefix.clone(),
            key,
            max_unexpired_per_agent: config.announcements.max_unexpired_per_agent,
            zones: config.announcements.zones.clone(),
            default_expires: Duration::from_secs(config.announcements.default_expires_in_seconds),
            resend_interval: Duration::from_secs(config.announcements.resend_interval_seconds),
            schedules: config.announcements.schedules.clone(),
            alert_rules: config.announcements.alert_rules.clone(),
            retention: Duration::from_secs(config.storage.retention_days.saturating_mul(86_400)),
        };
        let announcer = Arc::new(
            announce::Announcer::new(store, settings, mqtt)
                .with_schedule_gauge(telemetry.schedule_version.clone())
                .with_metrics(
                    announce::AnnounceMetrics::register(telemetry.registry())
                        .context("registering metrics")?,
                ),
        );
        let (tap, observations) = announce::Tap::channel();
        decoder = decoder.with_tap(tap);
        app_state = app_state.with_announcer(announcer.clone());
        supervisor.spawn("announcer", announcer.run(observations, shutdown.clone()));
    }

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", config.http.listen))?;
    let tls = config.tls().map_err(anyhow::Error::msg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %config.http.listen, scheme, "serving /metrics, /api/v1 and /console/");
    let app_state =
        app_state.with_console(console::Console::new(config.console.clone(), tls.is_some()));
    let app = api::app(app_state).into_make_service_with_connect_info::<std::net::SocketAddr>();

    // At shutdown the connection stops on the token and closes the queue, which ends the
    // decoder after it has applied what was already received: an end after cancellation is
    // not a failure.
    supervisor.spawn("mqtt", connection.run(shutdown.clone()));
    supervisor.spawn("decoder", decoder.run(queue_rx));
    supervisor.spawn("sweeper", ingest::run_sweeper(state, shutdown.clone()));
    supervisor.spawn("accounting", accounting.clone().run(shutdown.clone()));
    let http_shutdown = shutdown.clone();
    match tls {
        None => supervisor.spawn("http", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await
        }),
        Some(tls) => {
            let listener = listener.into_std().context("http.listen")?;
            let handle = axum_server::Handle::new();
            let stop = handle.clone();
            tokio::spawn(async move {
                http_shutdown.cancelled().await;
                stop.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            supervisor.spawn("http", async move {
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(handle)
                    .serve(app)
                    .await
            });
        }
    }
    let outcome = supervisor.run().await;
    // Every task has ended, the decoder after applying what was received: this save is whole.
    accounting.save().await;
    outcome?;
    info!("collector stopped");
    Ok(())
}

/// Marks room sensors down once they are silent past their rule's timeout.
async fn sweep_sensors(
    sensors: Arc<sensors::Sensors>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => sensors.sweep(std::time::Instant::now()),
        }
    }
}
