//! ICMP echo, smokeping style: a burst of `count` echo requests per interval, spread over the
//! part of the interval the timeout leaves free, giving loss, RTT min/avg/max, jitter and the
//! RTT distribution (smokeping_prober's `smokeping_requests_total` and
//! `smokeping_response_duration_seconds` histogram with its default buckets), plus blackbox's
//! single-probe view (`probe_icmp_duration_seconds{phase="rtt"}`).
//!
//! Sockets come from surge-ping: unprivileged ICMP (`SOCK_DGRAM`, allowed by
//! `net.ipv4.ping_group_range`, which also governs ICMPv6) first, raw sockets (CAP_NET_RAW)
//! otherwise. One socket per address family serves every probe; sequence numbers come from
//! one counter per socket, because an unprivileged socket's replies are matched by address
//! and sequence only, and two probes of one target must not take each other's replies.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence};
use thiserror::Error;

use super::config::ProbeConfig;
use super::{Detail, Outcome};
use crate::metric::FamilySet;

/// smokeping_prober's default buckets: `prometheus.ExponentialBuckets(0.00005, 2, 20)`,
/// 50 µs to about 26 s.
pub fn buckets() -> Vec<f64> {
    (0..20).map(|i| 0.00005 * f64::from(1u32 << i)).collect()
}

/// Echo requests per run when `count` is not set.
const DEFAULT_COUNT: u32 = 5;
/// Payload of each request (smokeping_prober's default size is 56 bytes of data).
const PAYLOAD: [u8; 56] = [0; 56];
/// Longest spacing between the requests of a burst: 200 requests take 4 s.
const MAX_SPACING: Duration = Duration::from_millis(20);

/// A validated ICMP probe: whom to ask and how often per run.
#[derive(Debug, Clone)]
pub struct IcmpSpec {
    pub host: String,
    /// Set when the target is an address, so the socket family is known at start.
    pub address: Option<IpAddr>,
    pub count: u32,
}

impl IcmpSpec {
    pub fn parse(config: &ProbeConfig) -> Result<Self, String> {
        let host = config.target.trim();
        let address = host.parse::<IpAddr>().ok();
        if address.is_none() && !is_host_name(host) {
            return Err("must be an IP address or a host name".to_owned());
        }
        Ok(Self {
            host: host.to_owned(),
            address,
            count: config.count.unwrap_or(DEFAULT_COUNT),
        })
    }
}

/// RFC 1123 host name syntax: letters, digits, `-` and `.`, no empty label.
pub fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Neither kind of ICMP socket can be opened.
#[derive(Debug, Error)]
#[error(
    "ICMP probes cannot open a socket ({family}): unprivileged ICMP is not allowed for this \
     group ({dgram}) and raw sockets need CAP_NET_RAW ({raw}). Either allow unprivileged ICMP \
     with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` (or a range holding the \
     agent's group), or give the agent CAP_NET_RAW (the shipped systemd unit does: \
     AmbientCapabilities=CAP_NET_RAW)"
)]
pub struct SocketError {
    family: &'static str,
    dgram: std::io::Error,
    raw: std::io::Error,
}

/// One surge-ping client per address family in use, with its sequence counter.
pub struct Sockets {
    v4: Option<Family>,
    v6: Option<Family>,
    unprivileged: bool,
}

/// surge-ping's `Client` marks itself destroyed when any clone of it is dropped, so it is
/// shared behind an `Arc` and never cloned.
#[derive(Clone)]
struct Family {
    client: Arc<Client>,
    sequence: Arc<AtomicU16>,
}

impl Sockets {
    /// Opens the sockets the probes need (both families when a target is a host name; a
    /// family needed only by host names may fail quietly, say on a box without IPv6).
    pub fn open(specs: &[&IcmpSpec]) -> Result<Self, SocketError> {
        let needs = |v4: bool| {
            specs.iter().any(|spec| match spec.address {
                Some(IpAddr::V4(_)) => v4,
                Some(IpAddr::V6(_)) => !v4,
                None => false,
            })
        };
        let by_name = specs.iter().any(|spec| spec.address.is_none());
        let mut unprivileged = true;
        let mut open = |kind: ICMP, required: bool| -> Result<Option<Family>, SocketError> {
            if !required && !by_name {
                return Ok(None);
            }
            match open_family(kind) {
                Ok((client, dgram)) => {
                    unprivileged &= dgram;
                    Ok(Some(Family {
                        client: Arc::new(client),
                        sequence: Arc::new(AtomicU16::new(fastrand::u16(..))),
                    }))
                }
                Err(error) if required => Err(error),
                Err(_) => Ok(None),
            }
        };
        let v4 = open(ICMP::V4, needs(true))?;
        let v6 = open(ICMP::V6, needs(false))?;
        Ok(Self {
            v4,
            v6,
            unprivileged,
        })
    }

    /// `unprivileged` (SOCK_DGRAM) or `raw`, for the start-up log.
    pub fn mode(&self) -> &'static str {
        if self.unprivileged {
            "unprivileged"
        } else {
            "raw"
        }
    }
}

/// Opens a surge-ping client of `kind`, unprivileged if the kernel allows it, raw otherwise.
/// Returns whether it is unprivileged.
fn open_family(kind: ICMP) -> Result<(Client, bool), SocketError> {
    let (domain, protocol, family) = match kind {
        ICMP::V4 => (Domain::IPV4, Protocol::ICMPV4, "IPv4"),
        ICMP::V6 => (Domain::IPV6, Protocol::ICMPV6, "IPv6"),
    };
    // Try each type here first: surge-ping falls back by itself but then reports only the
    // second error, and the message must name both ways out.
    let dgram = Socket::new(domain, Type::DGRAM, Some(protocol)).map(drop);
    let hint = if dgram.is_ok() {
        Type::DGRAM
    } else {
        Type::RAW
    };
    let config = Config::builder().kind(kind).sock_type_hint(hint).build();
    match Client::new(&config) {
        Ok(client) => {
            let unprivileged = client.get_socket().get_type() == Type::DGRAM;
            Ok((client, unprivileged))
        }
        Err(raw) => Err(SocketError {
            family,
            dgram: dgram
                .err()
                .unwrap_or_else(|| std::io::Error::other("opened")),
            raw,
        }),
    }
}

/// A probe's ICMP state: its socket and what it has counted since the agent started.
pub struct IcmpProber {
    spec: IcmpSpec,
    v4: Option<Family>,
    v6: Option<Family>,
    identifier: u16,
    spacing_budget: Duration,
    totals: Totals,
}

/// Cumulative counts: smokeping_prober's counter and histogram.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub requests: u64,
    /// Replies per bucket (not cumulative), one more than `buckets()` for +Inf.
    pub buckets: Vec<u64>,
    pub sum: f64,
}

/// One burst: what the last run saw, and the totals after it.
#[derive(Debug, Clone, Default)]
pub struct IcmpResult {
    pub sent: u32,
    pub received: u32,
    /// RTTs of the replies, in the order of the requests.
    pub rtts: Vec<Duration>,
    pub totals: Totals,
    /// The address probed, the `ip` label of smokeping's series.
    pub ip: Option<IpAddr>,
}

impl IcmpProber {
    pub fn new(spec: IcmpSpec, sockets: &Sockets, interval: Duration) -> Self {
        Self {
            spec,
            v4: sockets.v4.clone(),
            v6: sockets.v6.clone(),
            identifier: fastrand::u16(..),
            spacing_budget: interval,
            totals: Totals {
                requests: 0,
                buckets: vec![0; buckets().len() + 1],
                sum: 0.0,
            },
        }
    }

    pub async fn run(&mut self, timeout: Duration) -> Outcome {
        let started = Instant::now();
        let (address, resolve) = match super::resolve(&self.spec.host, 0).await {
            Ok(found) => found,
            Err(why) => return self.failed(why, started),
        };
        let ip = address.ip();
        let family = match ip {
            IpAddr::V4(_) => self.v4.clone(),
            IpAddr::V6(_) => self.v6.clone(),
        };
        let Some(family) = family else {
            return self.failed(format!("no ICMP socket for {ip}"), started);
        };
        let count = self.spec.count;
        // Spread the burst over what the timeout leaves of the interval.
        let spacing = (self.spacing_budget.saturating_sub(timeout) / count).min(MAX_SPACING);
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..count {
            let sequence = family.sequence.fetch_add(1, Ordering::Relaxed);
            let client = family.client.clone();
            let identifier = self.identifier;
            tasks.spawn(async move {
                tokio::time::sleep(spacing * index).await;
                let mut pinger = client.pinger(ip, PingIdentifier(identifier)).await;
                pinger.timeout(timeout);
                let reply = pinger.ping(PingSequence(sequence), &PAYLOAD).await;
                (index, reply)
            });
        }
        let mut rtts: Vec<(u32, Duration)> = Vec::with_capacity(count as usize);
        let mut last_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, Ok((packet, rtt)))) => {
                    if is_echo_reply(&packet) {
                        rtts.push((index, rtt));
                    } else {
                        last_error = Some(describe(&packet));
                    }
                }
                Ok((_, Err(surge_ping::SurgeError::Timeout { .. }))) => {}
                Ok((_, Err(error))) => last_error = Some(error.to_string()),
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        rtts.sort_unstable_by_key(|(index, _)| *index);
        let rtts: Vec<Duration> = rtts.into_iter().map(|(_, rtt)| rtt).collect();
        self.totals.requests += u64::from(count);
        let bounds = buckets();
        for rtt in &rtts {
            let seconds = rtt.as_secs_f64();
            let bucket = bounds
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(bounds.len());
            self.totals.buckets[bucket] += 1;
            self.totals.sum += seconds;
        }
        let received = rtts.len() as u32;
        let failure = match received {
            0 => Some(last_error.unwrap_or_else(|| format!("no reply to {count} echo requests"))),
            _ => None,
        };
        Outcome {
            success: received > 0,
            duration: started.elapsed(),
            failure,
            resolve: Some(resolve),
            detail: Detail::Icmp(IcmpResult {
                sent: count,
                received,
                rtts,
                totals: self.totals.clone(),
                ip: Some(ip),
            }),
        }
    }

    fn failed(&self, why: String, started: Instant) -> Outcome {
        Outcome::failed(
            why,
            started,
            Detail::Icmp(IcmpResult {
                totals: self.totals.clone(),
                ..IcmpResult::default()
            }),
        )
    }
}

/// Destination unreachable, time exceeded and the like are failures, not replies: surge-ping
/// hands them over like echo replies.
fn is_echo_reply(packet: &IcmpPacket) -> bool {
    match packet {
        IcmpPacket::V4(packet) => packet.get_icmp_type().0 == 0,
        IcmpPacket::V6(packet) => packet.get_icmpv6_type().0 == 129,
    }
}

fn describe(packet: &IcmpPacket) -> String {
    let (kind, code) = match packet {
        IcmpPacket::V4(packet) => {
            let text = match packet.get_icmp_type().0 {
                3 => "destination unreachable",
                11 => "time exceeded",
                _ => "unexpected ICMP reply",
            };
            (text, packet.get_icmp_code().0)
        }
        IcmpPacket::V6(packet) => {
            let text = match packet.get_icmpv6_type().0 {
                1 => "destination unreachable",
                3 => "time exceeded",
                _ => "unexpected ICMPv6 reply",
            };
            (text, packet.get_icmpv6_code().0)
        }
    };
    format!("{kind} (code {code})")
}

impl IcmpResult {
    /// Mean absolute difference of consecutive RTTs (RFC 3550's jitter without smoothing).
    pub fn jitter(&self) -> Option<f64> {
        if self.rtts.len() < 2 {
            return None;
        }
        let total: f64 = self
            .rtts
            .windows(2)
            .map(|pair| (pair[1].as_secs_f64() - pair[0].as_secs_f64()).abs())
            .sum();
        Some(total / (self.rtts.len() - 1) as f64)
    }

    pub fn write(&self, labels: &[(&str, &str)], set: &mut FamilySet) {
        if self.totals.buckets.is_empty() {
            return;
        }
        let ip = self.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let mut with_ip: Vec<(&str, &str)> = labels.to_vec();
        with_ip.push(("ip", &ip));
        set.counter(
            "smokeping_requests_total",
            "smokeping_prober: Number of ping requests sent",
        )
        .sample(&with_ip, self.totals.requests as f64);
        set.histogram(
            "smokeping_response_duration_seconds",
            "smokeping_prober: A histogram of latencies for ping responses.",
        )
        .sample(&with_ip, &buckets(), &self.totals.buckets, self.totals.sum);
        if self.sent > 0 {
            set.gauge(
                "pantau_probe_icmp_packet_loss_ratio",
                "Share of the last burst's echo requests without an echo reply (0 to 1).",
            )
            .sample(
                labels,
                f64::from(self.sent - self.received) / f64::from(self.sent),
            );
            set.gauge(
                "pantau_probe_icmp_sent_packets",
                "Echo requests in the last burst.",
            )
            .sample(labels, f64::from(self.sent));
        }
        let seconds: Vec<f64> = self.rtts.iter().map(Duration::as_secs_f64).collect();
        if seconds.is_empty() {
            return;
        }
        let min = seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = seconds.iter().copied().fold(0.0, f64::max);
        let avg = seconds.iter().sum::<f64>() / seconds.len() as f64;
        let mut rtt_labels: Vec<(&str, &str)> = labels.to_vec();
        rtt_labels.push(("phase", "rtt"));
        set.gauge(
            "probe_icmp_duration_seconds",
            "blackbox_exporter: Duration of icmp request by phase (rtt: the last burst's mean).",
        )
        .sample(&rtt_labels, avg);
        set.gauge(
            "pantau_probe_icmp_rtt_min_seconds",
            "Shortest round trip of the last burst.",
        )
        .sample(labels, min);
        set.gauge(
            "pantau_probe_icmp_rtt_avg_seconds",
            "Mean round trip of the last burst.",
        )
        .sample(labels, avg);
        set.gauge(
            "pantau_probe_icmp_rtt_max_seconds",
            "Longest round trip of the last burst.",
        )
        .sample(labels, max);
        if let Some(jitter) = self.jitter() {
            set.gauge(
                "pantau_probe_icmp_jitter_seconds",
                "Mean difference between consecutive round trips of the last burst.",
            )
            .sample(labels, jitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smokeping_buckets() {
        let bounds = buckets();
        assert_eq!(bounds.len(), 20);
        assert_eq!(bounds[0], 0.00005);
        assert!((bounds[19] - 26.2144).abs() < 1e-9);
    }

    #[test]
    fn jitter_is_the_mean_difference() {
        let result = IcmpResult {
            rtts: [10, 14, 12].map(Duration::from_millis).to_vec(),
            ..IcmpResult::default()
        };
        assert!((result.jitter().unwrap() - 0.003).abs() < 1e-12);
    }

    #[test]
    fn host_names() {
        assert!(is_host_name("gw.gor-satria.lan"));
        assert!(!is_host_name("bad name"));
        assert!(!is_host_name("-x.lan"));
        assert!(!is_host_name(""));
    }
}
