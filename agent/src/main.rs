//! `pantau-agent`: reports this host to the Pantau collector over MQTT. Roles (host metrics
//! today; link probes, devices and sound later) are switched on by their config sections.

mod config;
mod host;
mod publish;
mod report;
mod sequence;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tracing::info;

use crate::config::{AgentConfig, Resolved};
use crate::host::Host;
use crate::publish::{DeliveryStats, Identity, Publisher};
use crate::report::Reporter;
use crate::sequence::Sequence;

/// Messages kept in memory while the broker is unreachable: 8 hours of 15 s reports, about
/// 36 MB at the 18 KB a server's host metrics take.
const OUTBOX_CAPACITY: usize = 2000;

fn main() -> ExitCode {
    pantau_runtime::cli::main(
        "pantau-agent",
        "Pantau agent: reports this host to the Pantau collector over MQTT",
        AgentConfig::load,
        |resolved| format!("config OK (agent id '{}')", resolved.id),
        run,
    )
}

async fn run(resolved: Resolved) -> anyhow::Result<()> {
    let Resolved {
        config,
        id,
        endpoint,
        client_id,
    } = resolved;
    let sequence = Sequence::open(&config.agent.state_dir).context("agent.state_dir")?;
    let shutdown = pantau_runtime::shutdown::on_signals();

    let identity = Identity {
        prefix: config.mqtt.prefix.clone(),
        agent: id.clone(),
        site: config.agent.site.clone(),
        interval_seconds: config.agent.interval_seconds,
        next_seq: sequence.next_handle(),
    };
    let mut options = config.mqtt.options(&endpoint, &client_id);
    options.set_clean_session(true);
    // rumqttc refuses to send packets above 10 KiB by default and treats that as a connection
    // error; allow the largest message the reporter lets through, plus topic and header.
    let max_packet = config.agent.max_message_bytes + 4096;
    options.set_max_packet_size(max_packet, max_packet);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let stats = Arc::new(DeliveryStats::default());
    let publisher = Publisher::new(client, eventloop, identity, OUTBOX_CAPACITY, stats.clone());

    let roles: Vec<&str> = config.host.iter().map(|_| "host").collect();
    info!(agent = %id, site = %config.agent.site, broker = %endpoint, ?roles, "agent starting");
    let (outgoing_tx, outgoing_rx) = mpsc::channel(64);
    let reporter = Reporter {
        prefix: config.mqtt.prefix.clone(),
        agent: id,
        site: config.agent.site.clone(),
        interval: Duration::from_secs(config.agent.interval_seconds),
        max_message_bytes: config.agent.max_message_bytes,
        sequence,
        host: config.host.as_ref().map(Host::new),
        stats,
        outgoing: outgoing_tx,
    };

    let publishing = tokio::spawn(publisher.run(outgoing_rx, shutdown.clone()));
    let reporting = tokio::spawn(reporter.run(shutdown.clone()));
    // The reporter stops on the token and closes the channel; the publisher then flushes,
    // publishes `offline` and disconnects.
    reporting.await.context("reporting task panicked")?;
    publishing.await.context("publishing task panicked")?;
    info!("agent stopped");
    Ok(())
}
