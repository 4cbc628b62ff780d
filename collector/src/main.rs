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
mod broker_logins;
mod cert_renew;
mod commands;
mod config;
mod console;
mod enrol;
mod exposition;
mod ingest;
mod init;
mod login_limits_cli;
mod mqtt;
mod pki;
#[cfg(test)]
mod properties;
mod readiness;
mod sensors;
mod serve;
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
    let open_file_limit = serve::nofile::raise_to_hard_limit();
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
        broker::register_connection_errors(telemetry.registry())
            .context("registering the embedded broker's metrics")?;
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
    let credentials =
        api::Credentials::load(config.credential_files()).map_err(anyhow::Error::msg)?;
    if !credentials
        .accounts
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
             --role admin --file {file} (and set api.users_file), then send SIGHUP to the collector"
        );
    }
    let login = api::Login::new(
        config.api.thresholds(),
        config.api.password_threads(),
        Duration::from_secs(config.api.password_check_wait_seconds),
    )
    .context("starting the password-checking threads")?;
    let mut app_state = api::AppState::new(state.clone(), telemetry.clone(), readiness)
        .with_credentials(credentials)
        .with_login(login);
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
            sites: config.announcements.sites.clone(),
        };
        let metrics = announce::AnnounceMetrics::register(telemetry.registry())?;
        let announcer = Arc::new(
            announce::Announcer::new(store, settings, mqtt)
                .with_schedule_gauge(telemetry.schedule_version.clone())
                .with_metrics(metrics),
        );
        let (tap, observations) = announce::Tap::channel();
        decoder = decoder.with_tap(tap);
        app_state = app_state.with_announcer(announcer.clone());
        supervisor.spawn("announcer", announcer.run(observations, shutdown.clone()));
    }

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", config.http.listen))?;
    let certificate = match config.tls().map_err(anyhow::Error::msg)? {
        Some(certificate) => {
            let expiry = tls::register_expiry(telemetry.registry())
                .context("registering the certificate expiry metric")?
                .with_label_values(&["http"]);
            expiry.set(certificate.not_after());
            Some((certificate, expiry))
        }
        None => None,
    };
    let tls = certificate
        .as_ref()
        .map(|(certificate, _)| tls::server_config_with(certificate.clone()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    supervisor.spawn(
        "credentials",
        reload_on_sighup(app_state.credentials.clone(), certificate, shutdown.clone()),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %config.http.listen, scheme, "serving /metrics, /api/v1 and /console/");
    let app_state =
        app_state.with_console(console::Console::new(config.console.clone(), tls.is_some()));
    let http = serve::Server {
        app: api::app(app_state),
        tls,
        limits: http_limits(&config, open_file_limit),
        metrics: serve::HttpMetrics::register(telemetry.registry())
            .context("registering the HTTP server's metrics")?,
    };

    // At shutdown the connection stops on the token and closes the queue, which ends the
    // decoder after it has applied what was already received: an end after cancellation is
    // not a failure.
    supervisor.spawn("mqtt", connection.run(shutdown.clone()));
    supervisor.spawn("decoder", decoder.run(queue_rx));
    supervisor.spawn("sweeper", ingest::run_sweeper(state, shutdown.clone()));
    supervisor.spawn("accounting", accounting.clone().run(shutdown.clone()));
    supervisor.spawn("http", http.run(listener, shutdown.clone()));
    let outcome = supervisor.run().await;
    // Every task has ended, the decoder after applying what was received: this save is whole.
    accounting.save().await;
    outcome?;
    info!("collector stopped");
    Ok(())
}

/// Reads the token and user files, and the HTTPS certificate, again on SIGHUP, so a token can
/// be added or revoked and a renewed certificate served without a restart; a file that fails
/// to read keeps the old credentials or certificate.
async fn reload_on_sighup(
    credentials: Arc<api::Credentials>,
    certificate: Option<(Arc<tls::HttpCertificate>, prometheus::IntGauge)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = hangups.recv() => {
                match credentials.reload() {
                    Ok(reloaded) => info!(
                        tokens = reloaded.tokens,
                        users = reloaded.users,
                        metrics_tokens = ?reloaded.metrics_tokens,
                        "SIGHUP: credentials reloaded"
                    ),
                    Err(why) => warn!(reason = %why, "SIGHUP: credentials not reloaded; the old ones stay"),
                }
                if let Some((certificate, expiry)) = &certificate {
                    match certificate.reload() {
                        Ok(not_after) => {
                            expiry.set(not_after);
                            info!(not_after, "SIGHUP: HTTPS certificate reloaded");
                        }
                        Err(why) => warn!(
                            reason = %why,
                            "SIGHUP: HTTPS certificate not reloaded; the old one is served"
                        ),
                    }
                }
            }
        }
    }
}

/// `[http]`'s limits, the connection cap kept below the open-file limit next to the embedded
/// broker's connections.
fn http_limits(config: &CollectorConfig, open_file_limit: Option<u64>) -> serve::Limits {
    let http = &config.http;
    let broker = if config.broker.embedded {
        config.broker.max_connections as u64
    } else {
        0
    };
    let max_connections =
        serve::nofile::connection_cap(http.max_connections, open_file_limit, broker);
    serve::Limits {
        deadlines: serve::Deadlines {
            header_read: Duration::from_secs(http.header_read_timeout_seconds),
            idle: Duration::from_secs(http.idle_timeout_seconds),
        },
        max_connections,
        max_connections_per_address: http.max_connections_per_address.min(max_connections),
    }
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
