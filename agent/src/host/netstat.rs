//! node_exporter's `netstat` collector with its default field set: `node_netstat_<Proto>_<Field>`
//! from /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6 (TCP retransmits, listen drops
//! and overflows, UDP errors, ...).
//!
//! node_exporter declares these untyped; the wire format has no untyped kind, so they travel
//! as gauges, which is what Prometheus stores an untyped series as anyway.

use std::path::PathBuf;

use pantau_protocol::Family;
use regex::Regex;

use super::{CollectError, FamilyBuilder, Paths};

/// node_exporter 1.5's `--collector.netstat.fields` default.
const DEFAULT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// The `netstat` collector.
pub struct Netstat {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    fields: Regex,
}

impl Netstat {
    pub fn new(paths: &Paths) -> Self {
        let dir = paths.proc.join("net");
        Self {
            netstat: dir.join("netstat"),
            snmp: dir.join("snmp"),
            snmp6: dir.join("snmp6"),
            #[allow(clippy::unwrap_used)] // a constant, covered by the tests
            fields: Regex::new(DEFAULT_FIELDS).unwrap(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut stats = Vec::new();
        for path in [&self.netstat, &self.snmp] {
            let text = CollectError::read_text(path)?;
            stats.extend(parse_pairs(&text).map_err(|detail| CollectError::parse(path, detail))?);
        }
        // A kernel without IPv6 has no snmp6; node_exporter then reports the rest.
        match CollectError::read_text(&self.snmp6) {
            Ok(text) => stats.extend(
                parse_snmp6(&text).map_err(|detail| CollectError::parse(&self.snmp6, detail))?,
            ),
            Err(CollectError::NoData(_)) => {}
            Err(error) => return Err(error),
        }
        Ok(stats
            .into_iter()
            .filter(|(protocol, name, _)| self.fields.is_match(&format!("{protocol}_{name}")))
            .map(|(protocol, name, value)| {
                FamilyBuilder::gauge(
                    &format!("node_netstat_{protocol}_{name}"),
                    &format!("Statistic {protocol}{name}."),
                )
                .single(value)
            })
            .collect())
    }
}

/// /proc/net/netstat and /proc/net/snmp: per protocol a header line of names and a line of
/// values, both starting with `Proto:`.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut stats = Vec::new();
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| format!("no values after '{header}'"))?;
        let (protocol, names) = header
            .split_once(':')
            .ok_or_else(|| format!("missing ':' in '{header}'"))?;
        let (value_protocol, values) = values
            .split_once(':')
            .ok_or_else(|| format!("missing ':' in '{values}'"))?;
        if protocol != value_protocol {
            return Err(format!(
                "header {protocol} followed by values of {value_protocol}"
            ));
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(format!(
                "{protocol}: {} names but {} values",
                names.len(),
                values.len()
            ));
        }
        for (name, value) in names.into_iter().zip(values) {
            let value: f64 = value
                .parse()
                .map_err(|error| format!("{protocol} {name} '{value}': {error}"))?;
            stats.push((protocol.to_owned(), name.to_owned(), value));
        }
    }
    Ok(stats)
}

/// /proc/net/snmp6: `Ip6InReceives 123` lines; the protocol is the name up to its first '6'.
pub fn parse_snmp6(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut stats = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(six) = key.find('6') else {
            continue;
        };
        let value: f64 = value
            .parse()
            .map_err(|error| format!("{key} '{value}': {error}"))?;
        stats.push((key[..=six].to_owned(), key[six + 1..].to_owned(), value));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_header_and_value_lines() {
        let text = "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 526\n\
                    Udp: InDatagrams\nUdp: 118\n";
        let stats = parse_pairs(text).unwrap();
        assert_eq!(stats[1], ("Tcp".to_owned(), "MaxConn".to_owned(), -1.0));
        assert_eq!(stats[3].2, 118.0);
        assert!(parse_pairs("Tcp: A B\nTcp: 1\n").is_err());
        assert!(parse_pairs("Tcp: A\nUdp: 1\n").is_err());
    }

    #[test]
    fn snmp6_splits_at_the_six() {
        let stats =
            parse_snmp6("Ip6InOctets 39576\nUdpLite6InErrors 0\nIcmp6InMsgs 143\n").unwrap();
        assert_eq!(stats[0].0, "Ip6");
        assert_eq!(
            stats[1],
            ("UdpLite6".to_owned(), "InErrors".to_owned(), 0.0)
        );
    }

    #[test]
    fn collect_keeps_the_default_fields() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: fixture.join("proc"),
            rootfs: fixture.clone(),
            sys: fixture.join("sys"),
        };
        let families = Netstat::new(&paths).collect().unwrap();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"node_netstat_Tcp_RetransSegs"), "{names:?}");
        assert!(
            names.contains(&"node_netstat_TcpExt_ListenDrops"),
            "{names:?}"
        );
        assert!(names.contains(&"node_netstat_Icmp6_InMsgs"), "{names:?}");
        assert!(!names.contains(&"node_netstat_Tcp_MaxConn"), "{names:?}");
        let retrans = families
            .iter()
            .find(|f| f.name == "node_netstat_Tcp_RetransSegs")
            .unwrap();
        assert_eq!(retrans.help, "Statistic TcpRetransSegs.");
    }
}
