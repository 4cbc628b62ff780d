//! TCP connect, as blackbox_exporter's `tcp` prober: resolve, connect, and optionally read
//! until the peer's banner matches `expect_regex` (blackbox's `query_response` expect).

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::config::ProbeConfig;
use super::icmp::is_host_name;
use super::{Detail, Outcome};
use crate::metric::{FamilySet, Pattern};

/// Most bytes read while waiting for the expected banner.
const MAX_BANNER_BYTES: usize = 64 * 1024;

/// A validated TCP probe.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    pub host: String,
    pub port: u16,
    pub expect: Option<Pattern>,
}

impl TcpSpec {
    pub fn parse(config: &ProbeConfig) -> Result<Self, String> {
        let (host, port) = split_host_port(&config.target).ok_or("must be host:port")?;
        Ok(Self {
            host,
            port,
            expect: config.expect_regex.clone().filter(Pattern::is_set),
        })
    }
}

/// `host:port` or `[v6]:port`, with a host that is an address or a host name.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|port| *port > 0)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok()?.to_string(),
        None if host.parse::<std::net::Ipv4Addr>().is_ok() || is_host_name(host) => host.to_owned(),
        None => return None,
    };
    Some((host, port))
}

/// What the last connect saw.
#[derive(Debug, Clone, Default)]
pub struct TcpResult {
    pub connect: Option<Duration>,
    /// Whether the banner matched, when `expect_regex` is set.
    pub expect_matched: Option<bool>,
}

pub async fn run(spec: &TcpSpec, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let failed =
        |why: String, result: TcpResult| Outcome::failed(why, started, Detail::Tcp(result));
    let resolved = tokio::time::timeout_at(deadline, super::resolve(&spec.host, spec.port)).await;
    let (address, resolve) = match resolved {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return failed(why, TcpResult::default()),
        Err(_) => return failed("timed out resolving".to_owned(), TcpResult::default()),
    };
    let connect_started = Instant::now();
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return failed(
                format!("connect to {address}: {error}"),
                TcpResult::default(),
            );
        }
        Err(_) => {
            return failed(
                format!("connect to {address}: timed out"),
                TcpResult::default(),
            );
        }
    };
    let mut result = TcpResult {
        connect: Some(connect_started.elapsed()),
        expect_matched: None,
    };
    if let Some(expect) = &spec.expect {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        let matched = loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break false,
                Ok(Ok(read)) => {
                    seen.extend_from_slice(&buffer[..read]);
                    if expect.is_match(&String::from_utf8_lossy(&seen)) {
                        break true;
                    }
                    if seen.len() > MAX_BANNER_BYTES {
                        break false;
                    }
                }
            }
        };
        result.expect_matched = Some(matched);
        if !matched {
            return failed(
                format!("{address} did not send what expect_regex wants"),
                result,
            );
        }
    }
    Outcome {
        success: true,
        duration: started.elapsed(),
        failure: None,
        resolve: Some(resolve),
        detail: Detail::Tcp(result),
    }
}

impl TcpResult {
    pub fn write(&self, labels: &[(&str, &str)], set: &mut FamilySet) {
        if let Some(connect) = self.connect {
            set.gauge(
                "pantau_probe_tcp_connect_duration_seconds",
                "Time to establish the TCP connection.",
            )
            .sample(labels, connect.as_secs_f64());
        }
        if let Some(matched) = self.expect_matched {
            set.gauge(
                "probe_failed_due_to_regex",
                "blackbox_exporter: Indicates if probe failed due to regex",
            )
            .sample(labels, if matched { 0.0 } else { 1.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("10.0.0.1:443"),
            Some(("10.0.0.1".to_owned(), 443))
        );
        assert_eq!(split_host_port("[::1]:53"), Some(("::1".to_owned(), 53)));
        assert_eq!(
            split_host_port("gw.lan:22"),
            Some(("gw.lan".to_owned(), 22))
        );
        assert_eq!(split_host_port("10.0.0.1"), None);
        assert_eq!(split_host_port("10.0.0.1:0"), None);
        assert_eq!(split_host_port("::1:53"), None);
    }
}
