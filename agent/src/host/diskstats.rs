//! node_exporter's `diskstats` collector: per-disk I/O counters from /proc/diskstats under
//! `node_disk_*`, with node_exporter's default device exclusion (partitions, loop, ram and
//! floppy devices), and `node_disk_info` with the udev properties node_exporter reads.
//!
//! Discard counters exist since kernel 4.18 and flush counters since 5.5; like node_exporter,
//! a line without them reports the rest.

use std::path::{Path, PathBuf};

use pantau_protocol::Family;
use regex_lite::Regex;

use super::{CollectError, FamilyBuilder, Paths};

/// node_exporter 1.5's `--collector.diskstats.device-exclude` default.
const DEFAULT_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// node_exporter's `--path.udev.data` default.
const UDEV_DATA: &str = "/run/udev/data";
/// The kernel counts sectors of 512 bytes in /proc/diskstats, whatever the device's own size.
const SECTOR_BYTES: f64 = 512.0;
const MS: f64 = 0.001;

/// Counters after the device name, by position: name, help, kind, scale. The first 11
/// exist on every kernel node_exporter supports, the next 4 from 4.18, the last 2 from 5.5.
const FIELDS: [(&str, &str, bool, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        true,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        true,
        SECTOR_BYTES,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        true,
        MS,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        true,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        true,
        SECTOR_BYTES,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        true,
        MS,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        false,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        true,
        MS,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        true,
        MS,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        true,
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        true,
        MS,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        true,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        true,
        MS,
    ),
];

/// One line of /proc/diskstats.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskLine {
    pub major: String,
    pub minor: String,
    pub device: String,
    /// 11, 15 or 17 counters, depending on the kernel.
    pub counters: Vec<f64>,
}

/// The `diskstats` collector.
pub struct Diskstats {
    path: PathBuf,
    udev: PathBuf,
    exclude: Regex,
}

impl Diskstats {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("diskstats"),
            udev: PathBuf::from(UDEV_DATA),
            #[allow(clippy::unwrap_used)] // a constant, covered by the tests
            exclude: Regex::new(DEFAULT_EXCLUDE).unwrap(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let disks =
            parse_diskstats(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        let mut builders: Vec<FamilyBuilder> = FIELDS
            .iter()
            .map(|(name, help, counter, _)| {
                if *counter {
                    FamilyBuilder::counter(name, help)
                } else {
                    FamilyBuilder::gauge(name, help)
                }
            })
            .collect();
        let mut info = FamilyBuilder::gauge("node_disk_info", "Info of /sys/block/<block_device>.");
        for disk in disks.iter().filter(|d| !self.exclude.is_match(&d.device)) {
            let labels = [("device", disk.device.as_str())];
            for ((builder, field), value) in builders.iter_mut().zip(&FIELDS).zip(&disk.counters) {
                builder.sample(&labels, value * field.3);
            }
            let udev = udev_properties(&self.udev, &disk.major, &disk.minor);
            info.sample(
                &[
                    ("device", &disk.device),
                    ("major", &disk.major),
                    ("minor", &disk.minor),
                    ("model", &udev.model),
                    ("path", &udev.path),
                    ("revision", &udev.revision),
                    ("serial", &udev.serial),
                    ("wwn", &udev.wwn),
                ],
                1.0,
            );
        }
        let mut families: Vec<Family> = builders
            .into_iter()
            .map(FamilyBuilder::build)
            .filter(|family| !family.samples.is_empty())
            .collect();
        families.push(info.build());
        Ok(families)
    }
}

/// Parses /proc/diskstats: major, minor, name, then at least 11 counters.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskLine>, String> {
    let mut disks = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 14 {
            return Err(format!("expected at least 14 fields in '{}'", line.trim()));
        }
        let counters = fields[3..fields.len().min(3 + FIELDS.len())]
            .iter()
            .map(|field| {
                field
                    .parse::<f64>()
                    .map_err(|error| format!("counter '{field}' of {}: {error}", fields[2]))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        disks.push(DiskLine {
            major: fields[0].to_owned(),
            minor: fields[1].to_owned(),
            device: fields[2].to_owned(),
            counters,
        });
    }
    Ok(disks)
}

/// The udev properties node_exporter puts on `node_disk_info`; empty when udev has no data
/// (containers, VMs without udev), as node_exporter leaves them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UdevProperties {
    pub model: String,
    pub path: String,
    pub revision: String,
    pub serial: String,
    pub wwn: String,
}

fn udev_properties(dir: &Path, major: &str, minor: &str) -> UdevProperties {
    let text = std::fs::read_to_string(dir.join(format!("b{major}:{minor}"))).unwrap_or_default();
    parse_udev(&text)
}

/// Reads the `E:KEY=value` lines of a udev database entry.
pub fn parse_udev(text: &str) -> UdevProperties {
    let mut properties = UdevProperties::default();
    for line in text.lines() {
        let Some((key, value)) = line.strip_prefix("E:").and_then(|l| l.split_once('=')) else {
            continue;
        };
        let slot = match key {
            "ID_MODEL" => &mut properties.model,
            "ID_PATH" => &mut properties.path,
            "ID_REVISION" => &mut properties.revision,
            "ID_SERIAL_SHORT" => &mut properties.serial,
            "ID_WWN" => &mut properties.wwn,
            _ => continue,
        };
        *slot = value.to_owned();
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Diskstats {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: testdata.join("proc"),
            rootfs: testdata.clone(),
            sys: testdata.join("sys"),
        };
        let mut diskstats = Diskstats::new(&paths);
        diskstats.udev = testdata.join("udev");
        diskstats
    }

    fn devices(family: &Family) -> Vec<&str> {
        family
            .samples
            .iter()
            .map(|s| s.labels["device"].as_str())
            .collect()
    }

    #[test]
    fn default_exclusion_drops_partitions_loop_and_ram() {
        let families = fixture().collect().unwrap();
        let reads = &families[0];
        assert_eq!(reads.name, "node_disk_reads_completed_total");
        assert_eq!(devices(reads), ["vda", "sda", "zram0", "nvme0n1"]);
    }

    #[test]
    fn units_are_bytes_and_seconds() {
        let families = fixture().collect().unwrap();
        let by_name = |name: &str| families.iter().find(|f| f.name == name).unwrap();
        let read_bytes = by_name("node_disk_read_bytes_total");
        assert_eq!(read_bytes.samples[0].value, 44_726_682.0 * 512.0);
        let weighted = by_name("node_disk_io_time_weighted_seconds_total");
        assert_eq!(weighted.samples[1].value, 82_621.804);
        assert_eq!(
            by_name("node_disk_io_now").kind,
            pantau_protocol::MetricKind::Gauge
        );
    }

    #[test]
    fn old_kernels_lack_discards_and_flushes() {
        let families = fixture().collect().unwrap();
        let discards = families
            .iter()
            .find(|f| f.name == "node_disk_discards_completed_total")
            .unwrap();
        assert_eq!(devices(discards), ["vda", "zram0", "nvme0n1"]);
        let flushes = families
            .iter()
            .find(|f| f.name == "node_disk_flush_requests_total")
            .unwrap();
        assert_eq!(devices(flushes), ["vda", "zram0", "nvme0n1"]);
        assert_eq!(flushes.samples[2].value, 10.0);
    }

    #[test]
    fn info_carries_udev_properties() {
        let families = fixture().collect().unwrap();
        let info = families.last().unwrap();
        assert_eq!(info.name, "node_disk_info");
        let sda = info
            .samples
            .iter()
            .find(|s| s.labels["device"] == "sda")
            .unwrap();
        assert_eq!(sda.labels["model"], "QEMU_HARDDISK");
        assert_eq!(sda.labels["serial"], "QM00001");
        assert_eq!(sda.labels["major"], "8");
        let vda = info
            .samples
            .iter()
            .find(|s| s.labels["device"] == "vda")
            .unwrap();
        assert_eq!(vda.labels["model"], "");
    }

    #[test]
    fn rejects_short_or_malformed_lines() {
        assert!(parse_diskstats("8 0 sda 1 2 3\n").is_err());
        assert!(parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 x\n").is_err());
    }
}
