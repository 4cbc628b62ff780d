//! node_exporter's `netstat` collector with its default field set: `node_netstat_<Proto>_<Field>`
//! from /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6 (TCP retransmits, listen drops
//! and overflows, UDP errors, ...).
//!
//! node_exporter declares these untyped, and so do we.

use std::collections::HashMap;
use std::path::PathBuf;

use pantau_protocol::Family;
use regex_lite::Regex;

use super::{CollectError, FamilyBuilder, Paths};

/// node_exporter 1.5's `--collector.netstat.fields` default.
const DEFAULT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// The `netstat` collector.
pub struct Netstat {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    fields: Regex,
    /// Per header line of netstat/snmp, each column's family name and help, or `None` when
    /// node_exporter leaves it out.
    columns: HashMap<String, Vec<Option<(String, String)>>>,
    /// The same for snmp6's `Proto_Field` keys.
    chosen: HashMap<String, Option<(String, String)>>,
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
            columns: HashMap::new(),
            chosen: HashMap::new(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut families = Vec::new();
        for path in [self.netstat.clone(), self.snmp.clone()] {
            let text = CollectError::read_proc(&path)?;
            self.pairs(&text, &mut families)
                .map_err(|detail| CollectError::parse(&path, detail))?;
        }
        // A kernel without IPv6 has no snmp6; node_exporter then reports the rest.
        match CollectError::read_proc(&self.snmp6) {
            Ok(text) => {
                for (protocol, name, value) in
                    parse_snmp6(&text).map_err(|detail| CollectError::parse(&self.snmp6, detail))?
                {
                    let key = format!("{protocol}_{name}");
                    if let Some((name, help)) = self.chosen.entry(key).or_insert_with_key(|key| {
                        self.fields
                            .is_match(key)
                            .then(|| family_text(&protocol, &name))
                    }) {
                        families.push(FamilyBuilder::untyped(name, help).single(value));
                    }
                }
            }
            Err(CollectError::NoData(_)) => {}
            Err(error) => return Err(error),
        }
        Ok(families)
    }

    /// The families of one header/values file. Which columns node_exporter keeps is decided
    /// once per distinct header line (they do not change while the kernel runs), so a round
    /// parses only the values it reports instead of matching a regex on ~300 names.
    fn pairs(&mut self, text: &str, families: &mut Vec<Family>) -> Result<(), String> {
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        while let Some(header) = lines.next() {
            let values = lines
                .next()
                .ok_or_else(|| format!("no values after '{header}'"))?;
            if !self.columns.contains_key(header) {
                let (protocol, names) = header
                    .split_once(':')
                    .ok_or_else(|| format!("missing ':' in '{header}'"))?;
                let columns = names
                    .split_whitespace()
                    .map(|name| {
                        self.fields
                            .is_match(&format!("{protocol}_{name}"))
                            .then(|| family_text(protocol, name))
                    })
                    .collect();
                self.columns.insert(header.to_owned(), columns);
            }
            let columns = &self.columns[header];
            let (_, values) = values
                .split_once(':')
                .ok_or_else(|| format!("missing ':' in '{values}'"))?;
            let mut count = 0;
            for (column, value) in columns.iter().zip(values.split_whitespace()) {
                count += 1;
                if let Some((name, help)) = column {
                    let value: f64 = value
                        .parse()
                        .map_err(|error| format!("{name} '{value}': {error}"))?;
                    families.push(FamilyBuilder::untyped(name, help).single(value));
                }
            }
            if count != columns.len() || values.split_whitespace().count() != count {
                return Err(format!("'{header}' and its values differ in length"));
            }
        }
        Ok(())
    }
}

/// node_exporter's name and help of one statistic.
fn family_text(protocol: &str, name: &str) -> (String, String) {
    (
        format!("node_netstat_{protocol}_{name}"),
        format!("Statistic {protocol}{name}."),
    )
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

    fn collector() -> Netstat {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        Netstat::new(&Paths {
            proc: fixture.join("proc"),
            rootfs: fixture.clone(),
            sys: fixture.join("sys"),
        })
    }

    #[test]
    fn parses_header_and_value_lines() {
        let text = "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 526\n\
                    Udp: InDatagrams\nUdp: 118\n";
        let mut netstat = collector();
        let mut families = Vec::new();
        netstat.pairs(text, &mut families).unwrap();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_netstat_Tcp_RetransSegs",
                "node_netstat_Udp_InDatagrams"
            ]
        );
        assert_eq!(families[0].samples[0].value, 526.0);
        // The second round reuses the columns chosen in the first.
        families.clear();
        netstat.pairs(text, &mut families).unwrap();
        assert_eq!(families.len(), 2);
        for bad in [
            "Tcp: A B\nTcp: 1\n",
            "Tcp: A\nTcp: 1 2\n",
            "Tcp: RetransSegs\nTcp: x\n",
            "Tcp: A\n",
        ] {
            assert!(netstat.pairs(bad, &mut Vec::new()).is_err(), "{bad}");
        }
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
        let families = collector().collect().unwrap();
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
