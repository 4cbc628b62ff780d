//! DNS query over UDP to a configured server, as blackbox_exporter's `dns` prober: query time,
//! response code and record counts. A response code other than NOERROR (NXDOMAIN for a
//! missing name, SERVFAIL) is a failure that reports its rcode.
//!
//! hickory-proto builds and parses the messages; the exchange is one datagram each way, so
//! no resolver (with its caching and retries, which would hide what the server does) sits
//! between the probe and the server.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use pantau_runtime::config::ConfigError;
use tokio::net::UdpSocket;

use super::config::ProbeConfig;
use super::{Detail, Outcome};
use crate::metric::FamilySet;

/// A validated DNS probe.
#[derive(Debug, Clone)]
pub struct DnsSpec {
    pub name: Name,
    pub server: SocketAddr,
    pub record_type: RecordType,
}

impl DnsSpec {
    pub fn parse(
        config: &ProbeConfig,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Self, ConfigError> {
        let name = Name::from_str(config.target.trim())
            .ok()
            .filter(|_| !config.target.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(field("target"), &config.target, "is not a DNS name")
            })?;
        let server_text = config.server.as_deref().ok_or_else(|| {
            ConfigError::invalid(field("server"), "", "is required for kind 'dns'")
        })?;
        let server = parse_server(server_text).ok_or_else(|| {
            ConfigError::invalid(
                field("server"),
                server_text,
                "must be an IP address or ip:port",
            )
        })?;
        let record_type = match config.query_type.as_deref().unwrap_or("A") {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            other => {
                return Err(ConfigError::invalid(
                    field("query_type"),
                    other,
                    "must be A or AAAA",
                ));
            }
        };
        Ok(Self {
            name,
            server,
            record_type,
        })
    }
}

fn parse_server(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>().ok()
}

/// What the last query saw.
#[derive(Debug, Clone, Default)]
pub struct DnsResult {
    pub rcode: Option<u16>,
    pub answers: Option<usize>,
    pub authorities: Option<usize>,
    pub additionals: Option<usize>,
    pub query_time: Option<Duration>,
}

pub async fn run(spec: &DnsSpec, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut result = DnsResult::default();
    let failure = match tokio::time::timeout(timeout, query(spec, &mut result)).await {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some(format!("no answer from {} within {timeout:?}", spec.server)),
    };
    Outcome {
        success: failure.is_none(),
        duration: started.elapsed(),
        failure,
        resolve: result.query_time,
        detail: Detail::Dns(result),
    }
}

async fn query(spec: &DnsSpec, result: &mut DnsResult) -> Result<(), String> {
    let bind: SocketAddr = match spec.server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().map_err(|_| "bind address")?,
        SocketAddr::V6(_) => "[::]:0".parse().map_err(|_| "bind address")?,
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|error| format!("UDP socket: {error}"))?;
    socket
        .connect(spec.server)
        .await
        .map_err(|error| format!("{}: {error}", spec.server))?;
    let id = fastrand::u16(..);
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(spec.name.clone(), spec.record_type));
    let request = message.to_bytes().map_err(|error| error.to_string())?;
    let sent = Instant::now();
    socket
        .send(&request)
        .await
        .map_err(|error| format!("{}: {error}", spec.server))?;
    let mut buffer = vec![0u8; 4096];
    // Datagrams with another id (late answers to an earlier query) are not ours.
    let response = loop {
        let read = socket
            .recv(&mut buffer)
            .await
            .map_err(|error| format!("{}: {error}", spec.server))?;
        match Message::from_bytes(&buffer[..read]) {
            Ok(response) if response.id() == id => break response,
            _ => continue,
        }
    };
    result.query_time = Some(sent.elapsed());
    let rcode = response.response_code();
    result.rcode = Some(u16::from(rcode));
    result.answers = Some(response.answers().len());
    result.authorities = Some(response.name_servers().len());
    result.additionals = Some(response.additionals().len());
    if rcode != ResponseCode::NoError {
        return Err(format!(
            "{} answered {} (rcode {})",
            spec.server,
            rcode_name(u16::from(rcode)),
            u16::from(rcode)
        ));
    }
    Ok(())
}

/// The response code as DNS tools print it.
fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "an error",
    }
}

impl DnsResult {
    pub fn write(&self, labels: &[(&str, &str)], set: &mut FamilySet) {
        set.gauge(
            "probe_dns_query_succeeded",
            "blackbox_exporter: Displays whether or not the query was executed successfully",
        )
        .sample(labels, if self.rcode.is_some() { 1.0 } else { 0.0 });
        if let Some(rcode) = self.rcode {
            set.gauge(
                "pantau_probe_dns_rcode",
                "The response code of the last answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).",
            )
            .sample(labels, f64::from(rcode));
        }
        if let Some(query_time) = self.query_time {
            let mut with_phase: Vec<(&str, &str)> = labels.to_vec();
            with_phase.push(("phase", "request"));
            set.gauge(
                "probe_dns_duration_seconds",
                "blackbox_exporter: Duration of DNS request by phase",
            )
            .sample(&with_phase, query_time.as_secs_f64());
        }
        for (name, help, count) in [
            (
                "probe_dns_answer_rrs",
                "blackbox_exporter: Returns number of entries in the answer resource record list",
                self.answers,
            ),
            (
                "probe_dns_authority_rrs",
                "blackbox_exporter: Returns number of entries in the authority resource record list",
                self.authorities,
            ),
            (
                "probe_dns_additional_rrs",
                "blackbox_exporter: Returns number of entries in the additional resource record list",
                self.additionals,
            ),
        ] {
            if let Some(count) = count {
                set.gauge(name, help).sample(labels, count as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_server("dns.lan"), None);
    }
}
