//! `pantau-agent`: reports this host to the Pantau collector over MQTT. Roles (host metrics
//! today; link probes, devices and sound later) are switched on by their config sections and
//! plug in through `role.rs`. `pantau-agent init --bundle FILE` sets a host up from an
//! enrolment bundle (`init.rs`) instead of running.

mod command;
mod config;
mod device;
mod host;
mod init;
mod link;
mod message;
mod metric;
mod probe;
mod report;
mod role;
mod sequence;
#[cfg(feature = "sound")]
mod sound;
mod telemetry;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pantau_runtime::supervise::Supervisor;
use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::command::Dispatcher;
use crate::config::Resolved;
use crate::link::{BirthInfo, DiskOutbox, Link, LinkSettings, Outbox};
use crate::message::Header;
use crate::report::{Reporter, ReporterInputs};
use crate::role::{EventSender, ReportTrigger, Role, RoleContext};
use crate::sequence::Sequence;
use crate::telemetry::Telemetry;

/// Commands waiting for the reporter; more at once are dropped and counted.
const COMMAND_QUEUE: usize = 64;
/// Role events waiting to be published.
const EVENT_QUEUE: usize = 256;
/// Async worker threads: the agent's tasks mostly wait (timers, sockets); file reads, audio and
/// speech run on their own threads. Two keep the MQTT keep-alive going while one is busy.
const WORKER_THREADS: usize = 2;

fn main() -> ExitCode {
    // Before any thread starts: the agent's few threads allocate little, and an arena per
    // thread kept about 0.8 MiB resident for nothing (BENCHMARKS.md, issue 13).
    pantau_sys::malloc::limit_arenas(1);
    pantau_runtime::cli::main_with_workers_and_commands(
        "pantau-agent",
        "Pantau agent: reports this host to the Pantau collector over MQTT",
        WORKER_THREADS,
        config::AgentConfig::load,
        |resolved| format!("config OK (agent id '{}')", resolved.id),
        run,
        init::run,
    )
}

async fn run(resolved: Resolved) -> anyhow::Result<()> {
    let Resolved {
        config,
        id,
        endpoints,
        client_id,
    } = resolved;
    let shutdown = pantau_runtime::shutdown::on_signals();
    let telemetry = Arc::new(Telemetry::default());
    let sequence = Sequence::open(&config.agent.state_dir, telemetry.clone());
    let header = Header {
        prefix: config.mqtt.prefix.clone(),
        agent: id.clone(),
        site: config.agent.site.clone(),
    };

    let mut roles = Role::from_config(&config)?;
    let role_names: Vec<String> = roles.iter().map(|r| r.kind().name().to_owned()).collect();
    let claims_commands = roles.iter().any(|role| !role.kind().commands().is_empty());

    // rumqttc refuses to send packets above 10 KiB by default and treats that as a connection
    // error; allow the largest message the reporter lets through, plus topic and header.
    let max_packet = config.agent.max_message_bytes + 4096;
    let brokers = config.mqtt.brokers(&endpoints, &client_id, |options| {
        options.set_clean_session(true);
        options.set_max_packet_size(max_packet, max_packet);
    })?;
    for endpoint in &endpoints {
        endpoint.warn_if_clear_text();
    }
    let broker = brokers.current().to_string();
    let (client, eventloop) = AsyncClient::new(brokers.options(), 64);
    let outbox_dir = config.outbox.dir(&config.agent.state_dir);
    let (outbox, outbox_error) = DiskOutbox::open(
        &outbox_dir,
        config.outbox.max_bytes,
        i64::try_from(config.outbox.max_age_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
    );
    match outbox_error {
        Some(error) => error!(
            %error,
            dir = %outbox_dir.display(),
            "cannot use the outbox directory; messages wait in memory until it can be written \
             (a restart now would lose them)"
        ),
        None if outbox.len() > 0 => info!(
            waiting = outbox.len(),
            dir = %outbox_dir.display(),
            "messages from before the restart are waiting in the outbox"
        ),
        None => {}
    }
    telemetry.outbox(&outbox.stats());
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let link = Link::new(
        client,
        eventloop,
        brokers,
        LinkSettings {
            header: header.clone(),
            birth: BirthInfo {
                interval_seconds: config.agent.interval_seconds,
                roles: role_names.clone(),
                clips: roles.iter().flat_map(Role::clips).collect(),
                next_seq: sequence.next_handle(),
            },
            commands: claims_commands,
            drain_per_second: config.outbox.drain_messages_per_second,
        },
        Box::new(outbox),
        commands_tx,
        telemetry.clone(),
    );
    info!(agent = %id, site = %config.agent.site, broker = %broker, failover = %config.mqtt.failover, roles = ?role_names, "agent starting");

    let mut supervisor = Supervisor::new(shutdown.clone());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let report_now = ReportTrigger::default();
    let context = RoleContext {
        events: EventSender::new(events_tx),
        report_now: report_now.clone(),
    };
    for role in &mut roles {
        role.start(&context, &mut supervisor);
    }
    let (outgoing_tx, outgoing_rx) = mpsc::channel(64);
    let reporter = Reporter {
        header,
        interval: Duration::from_secs(config.agent.interval_seconds),
        max_message_bytes: config.agent.max_message_bytes,
        sequence,
        roles,
        dispatcher: Dispatcher::new(config.mqtt.prefix.clone(), telemetry.clone()),
        telemetry,
        outgoing: outgoing_tx,
    };
    // The reporter stops on the token and closes the channel; the link then flushes,
    // publishes `offline` and disconnects.
    supervisor.spawn("mqtt-link", link.run(outgoing_rx, shutdown.clone()));
    supervisor.spawn(
        "reporter",
        reporter.run(ReporterInputs {
            events: events_rx,
            commands: commands_rx,
            report_now,
            shutdown,
        }),
    );
    drop(context);
    supervisor.run().await?;
    info!("agent stopped");
    Ok(())
}
