//! `pantau-simulate`: a load generator for the collector. N simulated agents publish valid
//! Pantau v1 messages to a loopback broker at a set total rate for a bounded time, then the
//! per-agent counts are printed as JSON so loss can be checked exactly against the collector's
//! `messages_total` and `missed_messages_total` (`GET /api/v1/agents`).
//!
//! Kept out of the agent binary on purpose: the agent's own memory is measured elsewhere.

mod latency;
mod pace;
mod payload;
mod run;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use payload::{Shape, Template};

/// Hard caps: this tool is for benchmarks on one machine, not for flooding anything.
const MAX_AGENTS: usize = 10_000;
const MAX_RATE: f64 = 100_000.0;
const MAX_DURATION_SECONDS: u64 = 900;
const MAX_LATENCY_SAMPLES: usize = 10_000;

#[derive(Parser)]
#[command(
    version,
    about = "Simulated Pantau agents for benchmarks (loopback brokers only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish metrics from N agents at R messages/s in total for D seconds.
    Run {
        /// Broker URL, `mqtt://127.0.0.1:1883`; only loopback addresses are accepted.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "pantau")]
        prefix: String,
        #[arg(long, default_value = "sim")]
        site: String,
        /// Simulated agents (sim-00001, sim-00002, ...), at most 10,000.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Metrics messages per second over all agents, at most 100,000.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of publishing, at most 900.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// A captured metrics message of a real agent to send (header rewritten per message).
        #[arg(long, conflicts_with = "shape")]
        template: Option<PathBuf>,
        /// A built-in payload instead of a template.
        #[arg(long, value_enum, default_value = "small")]
        shape: Shape,
        /// `per-agent` (one MQTT connection each) or a number K of shared connections.
        #[arg(long, default_value = "per-agent")]
        connections: String,
        /// The interval the births announce; the collector marks an agent down after 3.
        #[arg(long, default_value_t = 3600)]
        interval_seconds: u64,
    },
    /// Publish -> visible latency through the collector's API, one message at a time.
    Latency {
        #[arg(long)]
        url: String,
        /// The collector's HTTP address, `127.0.0.1:9810`.
        #[arg(long)]
        http: SocketAddr,
        /// A viewer (or operator) token of the collector's `api.token_file`: the API needs a
        /// login. Taken from PANTAU_API_TOKEN when not given, so it stays off the process list.
        #[arg(long, env = "PANTAU_API_TOKEN", hide_env_values = true)]
        api_token: String,
        #[arg(long, default_value = "pantau")]
        prefix: String,
        #[arg(long, default_value = "sim")]
        site: String,
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
}

/// Host and port of a loopback `mqtt://` URL.
fn loopback(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("url {url:?}: only mqtt:// is supported"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("url {url:?}: no port"))?;
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("url {url:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_loopback =
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !is_loopback {
        bail!("url {url:?}: only loopback brokers (127.0.0.0/8, ::1, localhost) are allowed");
    }
    Ok((host.to_owned(), port))
}

fn connections(value: &str, agents: usize) -> anyhow::Result<Option<usize>> {
    if value == "per-agent" {
        return Ok(None);
    }
    let count: usize = value
        .parse()
        .with_context(|| format!("connections {value:?}: `per-agent` or a number"))?;
    if count == 0 || count > agents {
        bail!("connections {count}: between 1 and the number of agents ({agents})");
    }
    Ok(Some(count))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            url,
            prefix,
            site,
            agents,
            rate,
            duration,
            template,
            shape,
            connections: how,
            interval_seconds,
        } => {
            let (host, port) = loopback(&url)?;
            if agents == 0 || agents > MAX_AGENTS {
                bail!("agents {agents}: between 1 and {MAX_AGENTS}");
            }
            if !(rate > 0.0 && rate <= MAX_RATE) {
                bail!("rate {rate}: above 0 and at most {MAX_RATE}");
            }
            if duration == 0 || duration > MAX_DURATION_SECONDS {
                bail!("duration {duration}: between 1 and {MAX_DURATION_SECONDS} seconds");
            }
            pantau_protocol::validate_id(&site).map_err(|why| anyhow::anyhow!("site: {why}"))?;
            let template = match template {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("template {}", path.display()))?;
                    Template::from_json(&bytes)
                        .with_context(|| format!("template {}", path.display()))?
                }
                None => Template::shape(shape),
            };
            let plan = run::Plan {
                host,
                port,
                prefix,
                site,
                agents,
                rate,
                duration: Duration::from_secs(duration),
                connections: connections(&how, agents)?,
                interval_seconds,
                max_packet_bytes: 16 * 1024 * 1024,
            };
            let report = run::run(plan, Arc::new(template)).await;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Latency {
            url,
            http,
            api_token,
            prefix,
            site,
            count,
        } => {
            let (host, port) = loopback(&url)?;
            if !http.ip().is_loopback() {
                bail!("http {http}: only loopback addresses are allowed");
            }
            if count == 0 || count > MAX_LATENCY_SAMPLES {
                bail!("count {count}: between 1 and {MAX_LATENCY_SAMPLES}");
            }
            let report =
                latency::measure(host, port, http, &api_token, &prefix, &site, count).await;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            loopback("mqtt://127.0.0.1:1883").expect("loopback"),
            ("127.0.0.1".to_owned(), 1883)
        );
        assert!(loopback("mqtt://[::1]:1883").is_ok());
        assert!(loopback("mqtt://localhost:1883").is_ok());
        assert!(loopback("mqtt://10.0.0.1:1883").is_err());
        assert!(loopback("mqtt://broker.example:1883").is_err());
        assert!(loopback("mqtts://127.0.0.1:8883").is_err());
        assert!(loopback("mqtt://127.0.0.1").is_err());
    }

    #[test]
    fn connections_are_per_agent_or_a_bounded_count() {
        assert_eq!(connections("per-agent", 10).expect("valid"), None);
        assert_eq!(connections("4", 10).expect("valid"), Some(4));
        assert!(connections("0", 10).is_err());
        assert!(connections("11", 10).is_err());
        assert!(connections("many", 10).is_err());
    }
}
