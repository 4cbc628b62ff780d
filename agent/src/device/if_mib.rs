//! IF-MIB rows as snmp_exporter's `if_mib` module (0.21, Debian's prometheus-snmp-exporter)
//! names them: `ifHCInOctets`, `ifHCOutOctets`, `ifInErrors`, `ifOutErrors` (counters),
//! `ifAdminStatus`, `ifOperStatus`, `ifHighSpeed` (gauges), each with `ifIndex` and the `ifAlias`, `ifDescr` and
//! `ifName` lookups as labels, and `sysUpTime` (gauge, hundredths of a second). Pantau adds
//! `device`, the `[[snmp]]` table's name, where snmp_exporter relies on the scrape's `instance`.
//!
//! Pure: walked columns in, rows and series out, so the assembly is tested on literal values.

use std::collections::{BTreeMap, BTreeSet};

use async_snmp::Value;
use pantau_protocol::Family;

use crate::metric::FamilyBuilder;

/// Most interfaces reported per device: eight series each, and one agent's message holds at
/// most 2,000 series.
pub const MAX_INTERFACES: usize = 200;
/// Label values longer than this are cut (the protocol refuses values past 256 bytes).
const MAX_LABEL_BYTES: usize = 255;

/// `sysUpTime.0` (SNMPv2-MIB).
pub const SYS_UPTIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];

/// One walked IF-MIB column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Descr,
    AdminStatus,
    OperStatus,
    InErrors,
    OutErrors,
    Name,
    HcInOctets,
    HcOutOctets,
    HighSpeed,
    Alias,
}

/// How snmp_exporter exposes a metric column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A DisplayString looked up as a label.
    Label,
}

impl Column {
    pub const ALL: [Column; 10] = [
        Column::Descr,
        Column::AdminStatus,
        Column::OperStatus,
        Column::InErrors,
        Column::OutErrors,
        Column::Name,
        Column::HcInOctets,
        Column::HcOutOctets,
        Column::HighSpeed,
        Column::Alias,
    ];

    /// The column's OID, without the ifIndex.
    pub fn oid(self) -> Vec<u32> {
        let (table, column): (&[u32], u32) = match self {
            Column::Descr => (&IF_ENTRY, 2),
            Column::AdminStatus => (&IF_ENTRY, 7),
            Column::OperStatus => (&IF_ENTRY, 8),
            Column::InErrors => (&IF_ENTRY, 14),
            Column::OutErrors => (&IF_ENTRY, 20),
            Column::Name => (&IF_X_ENTRY, 1),
            Column::HcInOctets => (&IF_X_ENTRY, 6),
            Column::HcOutOctets => (&IF_X_ENTRY, 10),
            Column::HighSpeed => (&IF_X_ENTRY, 15),
            Column::Alias => (&IF_X_ENTRY, 18),
        };
        let mut oid = table.to_vec();
        oid.push(column);
        oid
    }

    /// snmp_exporter's name: the MIB object's.
    pub fn name(self) -> &'static str {
        match self {
            Column::Descr => "ifDescr",
            Column::AdminStatus => "ifAdminStatus",
            Column::OperStatus => "ifOperStatus",
            Column::InErrors => "ifInErrors",
            Column::OutErrors => "ifOutErrors",
            Column::Name => "ifName",
            Column::HcInOctets => "ifHCInOctets",
            Column::HcOutOctets => "ifHCOutOctets",
            Column::HighSpeed => "ifHighSpeed",
            Column::Alias => "ifAlias",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Column::InErrors | Column::OutErrors | Column::HcInOctets | Column::HcOutOctets => {
                Kind::Counter
            }
            Column::AdminStatus | Column::OperStatus | Column::HighSpeed => Kind::Gauge,
            Column::Descr | Column::Name | Column::Alias => Kind::Label,
        }
    }

    fn help(self) -> &'static str {
        match self {
            Column::AdminStatus => {
                "The desired state of the interface (1 up, 2 down, 3 testing) - \
                 1.3.6.1.2.1.2.2.1.7"
            }
            Column::OperStatus => {
                "The current operational state of the interface (1 up, 2 down, 3 testing, \
                 4 unknown, 5 dormant, 6 notPresent, 7 lowerLayerDown) - 1.3.6.1.2.1.2.2.1.8"
            }
            Column::InErrors => "Inbound packets that contained errors - 1.3.6.1.2.1.2.2.1.14",
            Column::OutErrors => {
                "Outbound packets that could not be transmitted because of errors - \
                 1.3.6.1.2.1.2.2.1.20"
            }
            Column::HcInOctets => {
                "The total number of octets received on the interface - 1.3.6.1.2.1.31.1.1.1.6"
            }
            Column::HcOutOctets => {
                "The total number of octets transmitted out of the interface - \
                 1.3.6.1.2.1.31.1.1.1.10"
            }
            Column::HighSpeed => {
                "The interface's current bandwidth in units of 1,000,000 bits per second - \
                 1.3.6.1.2.1.31.1.1.1.15"
            }
            Column::Descr | Column::Name | Column::Alias => "",
        }
    }
}

const IF_ENTRY: [u32; 9] = [1, 3, 6, 1, 2, 1, 2, 2, 1];
const IF_X_ENTRY: [u32; 10] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1];

/// One interface: its labels and the numbers read for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub labels: BTreeMap<Column, String>,
    pub values: BTreeMap<Column, f64>,
}

impl Row {
    pub fn label(&self, column: Column) -> &str {
        self.labels.get(&column).map_or("", String::as_str)
    }

    /// The interface's name for people: ifName, else ifDescr, else the index.
    pub fn display_name(&self, index: u32) -> String {
        [Column::Name, Column::Descr]
            .iter()
            .map(|c| self.label(*c))
            .find(|s| !s.is_empty())
            .map_or_else(|| format!("ifIndex {index}"), str::to_owned)
    }
}

/// What one poll read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub rows: BTreeMap<u32, Row>,
    /// Problems with the data itself, as `(reason, detail)`: `decode` for a value of the wrong
    /// type or an index that is not one arc, `partial_walk` for rows missing from a column
    /// that has other rows.
    pub problems: Vec<(&'static str, String)>,
}

/// Builds the rows from walked columns (`column -> [(oid, value)]`), keeping the interfaces
/// whose ifName or ifDescr is in `watch` (all when `watch` is empty).
pub fn assemble(columns: &BTreeMap<Column, Vec<(Vec<u32>, Value)>>, watch: &[String]) -> Table {
    let mut table = Table::default();
    let mut present: BTreeMap<Column, BTreeSet<u32>> = BTreeMap::new();
    for (column, varbinds) in columns {
        let prefix = column.oid();
        for (oid, value) in varbinds {
            let index = match oid.strip_prefix(prefix.as_slice()) {
                Some([index]) => *index,
                _ => {
                    table.problems.push((
                        "decode",
                        format!("{}: unexpected OID {}", column.name(), dotted(oid)),
                    ));
                    continue;
                }
            };
            // The device did send this cell; a value of the wrong type is `decode`, not a gap.
            present.entry(*column).or_default().insert(index);
            let row = table.rows.entry(index).or_default();
            let stored = match column.kind() {
                Kind::Label => value.as_bytes().map(|bytes| {
                    row.labels.insert(*column, label_text(bytes));
                }),
                Kind::Counter | Kind::Gauge => value.as_f64().map(|number| {
                    row.values.insert(*column, number);
                }),
            };
            if stored.is_none() {
                table.problems.push((
                    "decode",
                    format!(
                        "{}.{index}: a {} value, not the MIB's type",
                        column.name(),
                        value.kind().as_str()
                    ),
                ));
            }
        }
    }
    // A column the device has for some interfaces but not others lost rows on the way (a
    // device without ifXTable at all is no error: its series are simply absent).
    let all: BTreeSet<u32> = table.rows.keys().copied().collect();
    for (column, indexes) in &present {
        let missing: Vec<String> = all.difference(indexes).map(u32::to_string).collect();
        if !missing.is_empty() {
            table.problems.push((
                "partial_walk",
                format!(
                    "{} has no value for ifIndex {}",
                    column.name(),
                    missing.join(", ")
                ),
            ));
        }
    }
    if !watch.is_empty() {
        table.rows.retain(|_, row| {
            [Column::Name, Column::Descr]
                .iter()
                .any(|c| watch.iter().any(|w| w == row.label(*c)))
        });
    }
    if table.rows.len() > MAX_INTERFACES {
        table.problems.push((
            "too_many_interfaces",
            format!(
                "{} interfaces, only the first {MAX_INTERFACES} by ifIndex are reported; \
                 list the ones to watch in `interfaces`",
                table.rows.len()
            ),
        ));
        while table.rows.len() > MAX_INTERFACES {
            table.rows.pop_last();
        }
    }
    table
}

fn label_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_LABEL_BYTES {
        let mut cut = MAX_LABEL_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

pub fn dotted(oid: &[u32]) -> String {
    oid.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// The IF-MIB families of every device that answered: `(device, sysUpTime, rows)`.
pub fn families(devices: &[(&str, Option<f64>, &Table)]) -> Vec<Family> {
    let mut uptime = FamilyBuilder::gauge(
        "sysUpTime",
        "The time (in hundredths of a second) since the network management portion of the \
         system was last re-initialized. - 1.3.6.1.2.1.1.3",
    );
    let mut by_column: BTreeMap<Column, FamilyBuilder> = BTreeMap::new();
    for (device, sys_uptime, table) in devices {
        if let Some(value) = sys_uptime {
            uptime.sample(&[("device", device)], *value);
        }
        for (index, row) in &table.rows {
            let index = index.to_string();
            let labels = [
                ("device", *device),
                ("ifAlias", row.label(Column::Alias)),
                ("ifDescr", row.label(Column::Descr)),
                ("ifIndex", index.as_str()),
                ("ifName", row.label(Column::Name)),
            ];
            for (column, value) in &row.values {
                by_column
                    .entry(*column)
                    .or_insert_with(|| match column.kind() {
                        Kind::Counter => FamilyBuilder::counter(column.name(), column.help()),
                        _ => FamilyBuilder::gauge(column.name(), column.help()),
                    })
                    .sample(&labels, *value);
            }
        }
    }
    let mut families: Vec<Family> = by_column.into_values().map(FamilyBuilder::build).collect();
    let uptime = uptime.build();
    if !uptime.samples.is_empty() {
        families.push(uptime);
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(column: Column, values: &[(u32, Value)]) -> (Column, Vec<(Vec<u32>, Value)>) {
        let rows = values
            .iter()
            .map(|(index, value)| {
                let mut oid = column.oid();
                oid.push(*index);
                (oid, value.clone())
            })
            .collect();
        (column, rows)
    }

    fn text(s: &str) -> Value {
        Value::from(s)
    }

    fn two_interfaces() -> BTreeMap<Column, Vec<(Vec<u32>, Value)>> {
        [
            column(Column::Descr, &[(1, text("lo")), (2, text("eth0"))]),
            column(Column::Name, &[(1, text("lo")), (2, text("eth0"))]),
            column(Column::Alias, &[(1, text("")), (2, text("uplink GOR"))]),
            column(
                Column::OperStatus,
                &[(1, Value::Integer(1)), (2, Value::Integer(2))],
            ),
            column(
                Column::HcInOctets,
                &[(1, Value::Counter64(1 << 40)), (2, Value::Counter64(7))],
            ),
            column(
                Column::HighSpeed,
                &[(1, Value::Gauge32(10)), (2, Value::Gauge32(1000))],
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn rows_get_snmp_exporter_names_and_lookups() {
        let table = assemble(&two_interfaces(), &[]);
        assert!(table.problems.is_empty(), "{:?}", table.problems);
        let families = families(&[("sw1", Some(4242.0), &table)]);
        let find = |name: &str| families.iter().find(|f| f.name == name).expect(name);
        let octets = find("ifHCInOctets");
        assert_eq!(octets.kind, pantau_protocol::MetricKind::Counter);
        let eth0 = octets
            .samples
            .iter()
            .find(|s| s.labels["ifIndex"] == "2")
            .expect("eth0");
        assert_eq!(eth0.value, 7.0);
        let labels: Vec<&str> = eth0.labels.keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            ["device", "ifAlias", "ifDescr", "ifIndex", "ifName"]
        );
        assert_eq!(eth0.labels["ifAlias"], "uplink GOR");
        assert_eq!(eth0.labels["device"], "sw1");
        let lo = octets
            .samples
            .iter()
            .find(|s| s.labels["ifName"] == "lo")
            .expect("lo");
        assert_eq!(lo.value, (1u64 << 40) as f64);
        assert_eq!(
            find("ifOperStatus").kind,
            pantau_protocol::MetricKind::Gauge
        );
        assert_eq!(find("sysUpTime").samples[0].value, 4242.0);
        assert!(
            families
                .iter()
                .all(|f| f.name != "ifName" && f.name != "ifDescr")
        );
    }

    #[test]
    fn watch_keeps_interfaces_by_name_or_descr() {
        let table = assemble(&two_interfaces(), &["eth0".to_owned()]);
        assert_eq!(table.rows.keys().copied().collect::<Vec<_>>(), [2]);
        let table = assemble(&two_interfaces(), &["nothing".to_owned()]);
        assert!(table.rows.is_empty());
    }

    #[test]
    fn missing_rows_and_wrong_types_are_reported() {
        let mut columns = two_interfaces();
        columns.extend([column(Column::HcOutOctets, &[(1, Value::Counter64(5))])]);
        columns.extend([column(
            Column::InErrors,
            &[(1, text("many")), (2, Value::Counter32(0))],
        )]);
        let table = assemble(&columns, &[]);
        let reasons: Vec<&str> = table.problems.iter().map(|(r, _)| *r).collect();
        assert!(reasons.contains(&"partial_walk"), "{:?}", table.problems);
        assert!(reasons.contains(&"decode"), "{:?}", table.problems);
        assert!(
            table
                .problems
                .iter()
                .any(|(_, d)| d.contains("ifHCOutOctets has no value for ifIndex 2")),
            "{:?}",
            table.problems
        );
        // The good values of a row with a bad one are kept.
        assert_eq!(table.rows[&2].values[&Column::InErrors], 0.0);
    }

    #[test]
    fn a_device_without_if_x_table_is_not_partial() {
        let columns: BTreeMap<_, _> = [
            column(Column::Descr, &[(1, text("lo"))]),
            column(Column::OperStatus, &[(1, Value::Integer(1))]),
        ]
        .into_iter()
        .collect();
        let table = assemble(&columns, &[]);
        assert!(table.problems.is_empty(), "{:?}", table.problems);
        assert_eq!(table.rows[&1].display_name(1), "lo");
    }

    #[test]
    fn label_values_are_cut_at_a_char_boundary() {
        let long = "é".repeat(200);
        let cut = label_text(long.as_bytes());
        assert!(cut.len() <= MAX_LABEL_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
