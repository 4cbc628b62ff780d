//! node_exporter's `netdev` collector, as it reads /proc/net/dev
//! (`--no-collector.netdev.netlink`): the sixteen per-interface counters under node_exporter's
//! names, `node_network_receive_bytes_total{device="eth0"}` and so on.

use std::path::PathBuf;

use pantau_protocol::Family;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use tracing::debug;

use super::{CollectError, FamilyBuilder, Paths, Pattern};

/// `[host.netdev]`: which network interfaces to report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetdevConfig {
    /// Regular expression: report only interfaces whose name matches (node_exporter's
    /// `--collector.netdev.device-include`). It matches anywhere in the name unless anchored,
    /// e.g. `^(eth|en)`. At most one of `device_include` and `device_exclude` may be set; an
    /// empty string counts as not set. Default: not set.
    #[serde(default)]
    pub device_include: Pattern,
    /// Regular expression: skip interfaces whose name matches, e.g. `^(lo|veth.*)$`
    /// (node_exporter's `--collector.netdev.device-exclude`). Default: not set, every interface
    /// is reported.
    #[serde(default)]
    pub device_exclude: Pattern,
}

const INCLUDE_FIELD: &str = "host.netdev.device_include";
const EXCLUDE_FIELD: &str = "host.netdev.device_exclude";

impl NetdevConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.device_include.is_set() && self.device_exclude.is_set() {
            return Err(ConfigError::invalid(
                INCLUDE_FIELD,
                self.device_include.as_str(),
                format!("cannot be combined with {EXCLUDE_FIELD}; set at most one of them"),
            ));
        }
        Ok(())
    }
}

/// The /proc/net/dev columns, receive then transmit, by the names node_exporter reports.
const STATISTICS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// Which interfaces to report.
enum Filter {
    All,
    Include(Pattern),
    Exclude(Pattern),
}

impl Filter {
    fn reports(&self, device: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Include(regex) => regex.is_match(device),
            Filter::Exclude(regex) => !regex.is_match(device),
        }
    }
}

/// The `netdev` collector.
pub struct Netdev {
    path: PathBuf,
    filter: Filter,
}

impl Netdev {
    /// `config` must have passed `validate`.
    pub fn new(config: &NetdevConfig, paths: &Paths) -> Self {
        let filter = if config.device_include.is_set() {
            Filter::Include(config.device_include.clone())
        } else if config.device_exclude.is_set() {
            Filter::Exclude(config.device_exclude.clone())
        } else {
            Filter::All
        };
        Self {
            path: paths.proc.join("net/dev"),
            filter,
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let devices =
            parse_net_dev(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        let mut builders: Vec<FamilyBuilder> = STATISTICS
            .iter()
            .map(|statistic| {
                FamilyBuilder::counter(
                    &format!("node_network_{statistic}_total"),
                    &format!("Network device statistic {statistic}."),
                )
            })
            .collect();
        for (device, counters) in &devices {
            if !self.filter.reports(device) {
                debug!(device = %device, "ignoring network device");
                continue;
            }
            for (builder, &value) in builders.iter_mut().zip(counters) {
                builder.sample(&[("device", device)], value as f64);
            }
        }
        Ok(builders.into_iter().map(FamilyBuilder::build).collect())
    }
}

/// Parses /proc/net/dev into each interface's name and its sixteen counters in
/// [`STATISTICS`] order. The two header lines are skipped.
pub fn parse_net_dev(text: &str) -> Result<Vec<(String, [u64; 16])>, String> {
    let mut devices = Vec::new();
    for line in text.lines().skip(2).filter(|line| !line.trim().is_empty()) {
        // Interface names cannot contain ':' (dev_valid_name), so the first one ends the name;
        // large counters may follow it without a space.
        let (name, values) = line
            .split_once(':')
            .ok_or_else(|| format!("missing ':' in line '{line}'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("empty interface name in line '{line}'"));
        }
        let mut counters = [0_u64; 16];
        let mut fields = values.split_whitespace();
        for counter in &mut counters {
            let field = fields
                .next()
                .ok_or_else(|| format!("expected 16 counters in line '{line}'"))?;
            *counter = field
                .parse()
                .map_err(|error| format!("counter '{field}' of {name}: {error}"))?;
        }
        devices.push((name.to_owned(), counters));
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   62912      62    0    0    0     0          0         0    62912      62    0    0    0     0       0          0
  eth0:318493670   15334    1    2    3     4          5         6   857081    8406    7    8    9    10      11         12
";

    fn fixture_paths() -> Paths {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
        Paths {
            proc: fixture.clone(),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        }
    }

    fn config(include: Option<&str>, exclude: Option<&str>) -> NetdevConfig {
        NetdevConfig {
            device_include: Pattern::new(include.unwrap_or_default()).unwrap(),
            device_exclude: Pattern::new(exclude.unwrap_or_default()).unwrap(),
        }
    }

    fn devices(families: &[Family]) -> Vec<&str> {
        families[0]
            .samples
            .iter()
            .map(|s| s.labels["device"].as_str())
            .collect()
    }

    #[test]
    fn parses_every_column_in_order() {
        let devices = parse_net_dev(NET_DEV).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].0, "lo");
        assert_eq!(devices[1].0, "eth0");
        assert_eq!(devices[1].1[0], 318_493_670);
        assert_eq!(
            devices[1].1[1..],
            [15334, 1, 2, 3, 4, 5, 6, 857_081, 8406, 7, 8, 9, 10, 11, 12]
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let header = "a\nb\n";
        assert!(parse_net_dev(&format!("{header}eth0 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{header}eth0: 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{header} : {}\n", "0 ".repeat(16))).is_err());
        let bad = format!("{header}eth0: x {}\n", "0 ".repeat(15));
        assert!(parse_net_dev(&bad).is_err());
    }

    #[test]
    fn collect_names_families_like_node_exporter() {
        let families = Netdev::new(&config(None, None), &fixture_paths())
            .collect()
            .unwrap();
        assert_eq!(families.len(), 16);
        assert_eq!(families[2].name, "node_network_receive_errs_total");
        assert_eq!(families[2].help, "Network device statistic receive_errs.");
        assert_eq!(families[13].name, "node_network_transmit_colls_total");
        assert_eq!(devices(&families), ["lo", "eth0", "docker0"]);
        let eth0 = &families[14].samples[1];
        assert_eq!((eth0.labels["device"].as_str(), eth0.value), ("eth0", 11.0));
    }

    #[test]
    fn include_and_exclude_filter_devices() {
        let paths = fixture_paths();
        let families = Netdev::new(&config(Some("^eth"), None), &paths)
            .collect()
            .unwrap();
        assert_eq!(devices(&families), ["eth0"]);
        let families = Netdev::new(&config(None, Some("^lo$")), &paths)
            .collect()
            .unwrap();
        assert_eq!(devices(&families), ["eth0", "docker0"]);
        let families = Netdev::new(&config(Some(""), Some("")), &paths)
            .collect()
            .unwrap();
        assert_eq!(devices(&families).len(), 3);
    }

    #[test]
    fn validate_names_the_field_and_value() {
        assert!(config(None, None).validate().is_ok());
        assert!(config(Some(""), Some("^lo$")).validate().is_ok());
        let error = config(Some("^eth"), Some("^lo$")).validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "host.netdev.device_include: '^eth' cannot be combined with \
             host.netdev.device_exclude; set at most one of them"
        );
    }

    #[test]
    fn config_refuses_unknown_keys() {
        let error = serde_json::from_str::<NetdevConfig>(r#"{"device_ignore": "lo"}"#);
        assert!(error.is_err());
    }
}
