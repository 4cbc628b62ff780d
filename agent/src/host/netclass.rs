//! node_exporter's `netclass` collector: per-interface properties from /sys/class/net
//! (`node_network_up`, `_info`, `_mtu_bytes`, `_carrier`, `_speed_bytes`, ...), every one
//! node_exporter 1.5 reports, under its names.
//!
//! sysfs refuses some attributes depending on the device's state (EINVAL for the carrier of
//! a downed link, the speed of a virtual one); such a series is left out, as node_exporter
//! leaves it out.
//!
//! Cost: every attribute is a file, about 22 opens per interface. The state that moves
//! (operstate, carrier and its counters, dormant, flags, MTU, speed, duplex) is read every
//! round; the identity of an interface (address, broadcast, alias, index, link, type, queue
//! length, assignment types, group) is read when the interface appears and then once every
//! [`IDENTITY_REFRESH`], which is where this collector deviates from node_exporter: a changed
//! MAC address or alias shows up to a minute late.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, OpenFiles, Paths, list_dir, read_attribute};

/// Files kept open for the attributes read every round (8 per interface).
const MAX_OPEN: usize = 256;

/// The numeric properties, in node_exporter's order: metric suffix, sysfs file, counter.
const PROPERTIES: [(&str, &str, bool); 17] = [
    ("address_assign_type", "addr_assign_type", false),
    ("carrier", "carrier", false),
    ("carrier_changes_total", "carrier_changes", true),
    ("carrier_up_changes_total", "carrier_up_count", true),
    ("carrier_down_changes_total", "carrier_down_count", true),
    ("device_id", "dev_id", false),
    ("dormant", "dormant", false),
    ("flags", "flags", false),
    ("iface_id", "ifindex", false),
    ("iface_link", "iflink", false),
    ("iface_link_mode", "link_mode", false),
    ("mtu_bytes", "mtu", false),
    ("name_assign_type", "name_assign_type", false),
    ("net_dev_group", "netdev_group", false),
    ("speed_bytes", "speed", false),
    ("transmit_queue_length", "tx_queue_len", false),
    ("protocol_type", "type", false),
];

/// How long an interface's identity attributes are reused before being read again.
pub const IDENTITY_REFRESH: Duration = Duration::from_secs(60);

/// Indexes into [`PROPERTIES`] of the attributes read every round.
const MOVING: [usize; 8] = [1, 2, 3, 4, 6, 7, 11, 14];

/// The `netclass` collector.
pub struct Netclass {
    dir: PathBuf,
    /// Interfaces seen, with when their identity was last read.
    known: HashMap<String, (Instant, Interface)>,
    files: OpenFiles,
}

/// What one interface directory says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub address: String,
    pub broadcast: String,
    pub duplex: String,
    pub ifalias: String,
    pub operstate: String,
    /// One per [`PROPERTIES`] entry, `None` where sysfs had no value.
    pub values: Vec<Option<f64>>,
}

impl Netclass {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.sys.join("class/net"),
            known: HashMap::new(),
            files: OpenFiles::new(MAX_OPEN),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let now = Instant::now();
        let mut interfaces = Vec::new();
        for (name, path) in list_dir(&self.dir, "")? {
            let interface = match self.known.get_mut(&name) {
                Some((read_at, interface)) if now.duration_since(*read_at) < IDENTITY_REFRESH => {
                    refresh_moving(interface, &path, &mut self.files);
                    interface.clone()
                }
                // Not a directory: /sys/class/net/bonding_masters and the like.
                _ if !path.is_dir() => continue,
                _ => {
                    let interface = read_interface(name.clone(), &path);
                    self.known.insert(name, (now, interface.clone()));
                    interface
                }
            };
            interfaces.push(interface);
        }
        self.known
            .retain(|name, _| interfaces.iter().any(|i| i.name == *name));
        let known = &self.known;
        self.files.retain(|path| {
            path.parent()
                .and_then(Path::file_name)
                .is_some_and(|name| known.contains_key(name.to_string_lossy().as_ref()))
        });
        Ok(families(&interfaces))
    }
}

/// Reads again what moves while an interface exists.
fn refresh_moving(interface: &mut Interface, dir: &Path, files: &mut OpenFiles) {
    for index in MOVING {
        interface.values[index] = files
            .read(&dir.join(PROPERTIES[index].1))
            .and_then(|v| parse_number(&v));
    }
    interface.operstate = files.read(&dir.join("operstate")).unwrap_or_default();
    interface.duplex = files.read(&dir.join("duplex")).unwrap_or_default();
}

/// Reads one /sys/class/net/<iface> directory.
pub fn read_interface(name: String, dir: &Path) -> Interface {
    let text = |file: &str| read_attribute(&dir.join(file)).unwrap_or_default();
    let values = PROPERTIES
        .iter()
        .map(|(_, file, _)| read_attribute(&dir.join(file)).and_then(|v| parse_number(&v)))
        .collect();
    Interface {
        address: text("address"),
        broadcast: text("broadcast"),
        duplex: text("duplex"),
        ifalias: text("ifalias"),
        operstate: text("operstate"),
        name,
        values,
    }
}

/// sysfs numbers are decimal, or hexadecimal with `0x` (`flags`, `dev_id`).
pub fn parse_number(text: &str) -> Option<f64> {
    match text.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => text.parse::<i64>().ok().map(|v| v as f64),
    }
}

pub fn families(interfaces: &[Interface]) -> Vec<Family> {
    let mut up = FamilyBuilder::gauge(
        "node_network_up",
        "Value is 1 if operstate is 'up', 0 otherwise.",
    );
    let mut info = FamilyBuilder::gauge(
        "node_network_info",
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
    );
    let mut builders: Vec<FamilyBuilder> = PROPERTIES
        .iter()
        .map(|(name, _, counter)| {
            let (name, help) = (
                format!("node_network_{name}"),
                format!("Network device property: {name}"),
            );
            if *counter {
                FamilyBuilder::counter(&name, &help)
            } else {
                FamilyBuilder::gauge(&name, &help)
            }
        })
        .collect();
    for interface in interfaces {
        let device = [("device", interface.name.as_str())];
        up.sample(
            &device,
            if interface.operstate == "up" {
                1.0
            } else {
                0.0
            },
        );
        info.sample(
            &[
                ("address", &interface.address),
                ("broadcast", &interface.broadcast),
                ("device", &interface.name),
                ("duplex", &interface.duplex),
                ("ifalias", &interface.ifalias),
                ("operstate", &interface.operstate),
            ],
            1.0,
        );
        for ((builder, (name, _, _)), value) in
            builders.iter_mut().zip(&PROPERTIES).zip(&interface.values)
        {
            if let Some(value) = value {
                // sysfs gives the speed in Mbit/s; node_exporter reports bytes per second.
                let value = if *name == "speed_bytes" {
                    value * 1000.0 * 1000.0 / 8.0
                } else {
                    *value
                };
                builder.sample(&device, value);
            }
        }
    }
    let mut families = vec![up.build(), info.build()];
    families.extend(
        builders
            .into_iter()
            .map(FamilyBuilder::build)
            .filter(|family| !family.samples.is_empty()),
    );
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<Family> {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: testdata.join("proc"),
            rootfs: testdata.clone(),
            sys: testdata.join("sys"),
        };
        Netclass::new(&paths).collect().unwrap()
    }

    fn value(families: &[Family], name: &str, device: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name == name)?
            .samples
            .iter()
            .find(|s| s.labels["device"] == device)
            .map(|s| s.value)
    }

    #[test]
    fn reads_every_property_node_exporter_reports() {
        let families = fixture();
        assert_eq!(value(&families, "node_network_up", "eth0"), Some(1.0));
        assert_eq!(value(&families, "node_network_up", "lo"), Some(0.0));
        assert_eq!(
            value(&families, "node_network_mtu_bytes", "eth0"),
            Some(1500.0)
        );
        assert_eq!(value(&families, "node_network_flags", "eth0"), Some(4099.0));
        assert_eq!(
            value(&families, "node_network_speed_bytes", "eth0"),
            Some(125_000_000.0)
        );
        assert_eq!(
            value(&families, "node_network_carrier_changes_total", "eth0"),
            Some(2.0)
        );
        let info = &families[1];
        let eth0 = info
            .samples
            .iter()
            .find(|s| s.labels["device"] == "eth0")
            .unwrap();
        assert_eq!(eth0.labels["address"], "52:54:00:12:34:56");
        assert_eq!(eth0.labels["duplex"], "full");
        assert_eq!(eth0.labels["operstate"], "up");
    }

    #[test]
    fn unreadable_attributes_are_left_out() {
        let families = fixture();
        // lo has no speed and no carrier file in the fixture.
        assert_eq!(value(&families, "node_network_speed_bytes", "lo"), None);
        assert_eq!(value(&families, "node_network_carrier", "lo"), None);
        assert_eq!(value(&families, "node_network_iface_id", "lo"), Some(1.0));
    }

    #[test]
    fn moving_state_is_read_every_round_and_identity_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let eth0 = dir.path().join("class/net/eth0");
        std::fs::create_dir_all(&eth0).unwrap();
        let write = |file: &str, value: &str| std::fs::write(eth0.join(file), value).unwrap();
        write("operstate", "up\n");
        write("mtu", "1500\n");
        write("address", "52:54:00:00:00:01\n");
        let paths = Paths {
            proc: dir.path().to_owned(),
            rootfs: dir.path().to_owned(),
            sys: dir.path().to_owned(),
        };
        let mut netclass = Netclass::new(&paths);
        netclass.collect().unwrap();
        write("operstate", "down\n");
        write("mtu", "9000\n");
        write("address", "52:54:00:00:00:02\n");
        let families = netclass.collect().unwrap();
        assert_eq!(value(&families, "node_network_up", "eth0"), Some(0.0));
        assert_eq!(
            value(&families, "node_network_mtu_bytes", "eth0"),
            Some(9000.0)
        );
        assert_eq!(
            families[1].samples[0].labels["address"],
            "52:54:00:00:00:01"
        );
        assert_eq!(families[1].samples[0].labels["operstate"], "down");

        netclass.known.get_mut("eth0").unwrap().0 -= IDENTITY_REFRESH;
        let families = netclass.collect().unwrap();
        assert_eq!(
            families[1].samples[0].labels["address"],
            "52:54:00:00:00:02"
        );

        std::fs::remove_dir_all(&eth0).unwrap();
        let families = netclass.collect().unwrap();
        assert!(families[0].samples.is_empty());
        assert!(netclass.known.is_empty());
    }

    #[test]
    fn numbers_may_be_hexadecimal() {
        assert_eq!(parse_number("0x1003"), Some(4099.0));
        assert_eq!(parse_number("-1"), Some(-1.0));
        assert_eq!(parse_number("fast"), None);
    }
}
