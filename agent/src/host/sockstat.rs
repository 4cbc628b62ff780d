//! node_exporter's `sockstat` collector: sockets in use per protocol from /proc/net/sockstat
//! and /proc/net/sockstat6, `node_sockstat_TCP_inuse` and so on, with `_mem_bytes` for the
//! protocols whose memory the kernel counts in pages.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `sockstat` collector.
pub struct Sockstat {
    v4: PathBuf,
    v6: PathBuf,
    page_size: f64,
}

impl Sockstat {
    pub fn new(paths: &Paths) -> Self {
        Self {
            v4: paths.proc.join("net/sockstat"),
            v6: paths.proc.join("net/sockstat6"),
            page_size: rustix::param::page_size() as f64,
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.v4)?;
        let mut stats =
            parse_sockstat(&text).map_err(|detail| CollectError::parse(&self.v4, detail))?;
        // No IPv6 in this kernel: node_exporter reports IPv4 alone.
        match CollectError::read_proc(&self.v6) {
            Ok(text) => stats.extend(
                parse_sockstat(&text).map_err(|detail| CollectError::parse(&self.v6, detail))?,
            ),
            Err(CollectError::NoData(_)) => {}
            Err(error) => return Err(error),
        }
        Ok(families(&stats, self.page_size))
    }
}

/// One `PROTO: field value field value` line of sockstat.
pub type ProtocolStats = (String, Vec<(String, f64)>);

/// Every line of a sockstat file, protocol by protocol.
pub fn parse_sockstat(text: &str) -> Result<Vec<ProtocolStats>, String> {
    let mut stats = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let (protocol, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("missing ':' in '{line}'"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let chunks = fields.chunks_exact(2);
        if !chunks.remainder().is_empty() {
            return Err(format!("odd number of fields in '{line}'"));
        }
        let mut pairs = Vec::new();
        for pair in chunks {
            let value: f64 = pair[1]
                .parse()
                .map_err(|error| format!("{protocol} {} '{}': {error}", pair[0], pair[1]))?;
            pairs.push((pair[0].to_owned(), value));
        }
        stats.push((protocol.to_owned(), pairs));
    }
    Ok(stats)
}

/// node_exporter's families: `sockets: used` is `node_sockstat_sockets_used`; every other
/// field is `node_sockstat_<PROTO>_<field>`, and `mem` (pages) also as `_mem_bytes`.
pub fn families(stats: &[ProtocolStats], page_size: f64) -> Vec<Family> {
    let mut families = Vec::new();
    for (protocol, fields) in stats {
        for (field, value) in fields {
            if protocol == "sockets" && field == "used" {
                families.push(
                    FamilyBuilder::gauge(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                    )
                    .single(*value),
                );
                continue;
            }
            families.push(
                FamilyBuilder::gauge(
                    &format!("node_sockstat_{protocol}_{field}"),
                    &format!("Number of {protocol} sockets in state {field}."),
                )
                .single(*value),
            );
            if field == "mem" {
                families.push(
                    FamilyBuilder::gauge(
                        &format!("node_sockstat_{protocol}_mem_bytes"),
                        &format!("Number of {protocol} sockets in state mem_bytes."),
                    )
                    .single(value * page_size),
                );
            }
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 76\n\
TCP: inuse 42 orphan 0 tw 258 alloc 44 mem 492\n\
UDP: inuse 0 mem 0\n\
UDPLITE: inuse 0\n\
RAW: inuse 0\n\
FRAG: inuse 0 memory 0\n";

    #[test]
    fn names_follow_node_exporter() {
        let stats = parse_sockstat(SOCKSTAT).unwrap();
        let families = families(&stats, 4096.0);
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names[0], "node_sockstat_sockets_used");
        assert!(names.contains(&"node_sockstat_TCP_inuse"));
        assert!(names.contains(&"node_sockstat_FRAG_memory"));
        let mem = families
            .iter()
            .find(|f| f.name == "node_sockstat_TCP_mem_bytes")
            .unwrap();
        assert_eq!(mem.samples[0].value, 492.0 * 4096.0);
        assert_eq!(mem.help, "Number of TCP sockets in state mem_bytes.");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_sockstat("TCP inuse 1\n").is_err());
        assert!(parse_sockstat("TCP: inuse\n").is_err());
        assert!(parse_sockstat("TCP: inuse x\n").is_err());
    }
}
