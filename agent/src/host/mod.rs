//! Host metrics under node_exporter's exact names, types and labels, read from /proc, /sys and
//! statvfs(2), so node_exporter dashboards and alert rules work unchanged.
//!
//! One file per node_exporter collector; adding one means a new file, a `CollectorKind` variant
//! and a `Collector` variant, and the compiler points at the matches that must learn it. Like
//! node_exporter's `execute()`, every collector runs on every round, one failing never hides the
//! others, and each reports `node_scrape_collector_success` and `..._duration_seconds`.

mod cpu;
mod diskstats;
mod entropy;
mod filefd;
mod filesystem;
mod hwmon;
mod loadavg;
mod meminfo;
mod netclass;
mod netdev;
mod netstat;
mod os;
mod pressure;
mod processes;
mod role;
mod sockstat;
mod stat;
mod textfile;
mod thermal_zone;
mod time;
mod timex;
mod uname;
mod vmstat;

use std::path::{Path, PathBuf};
use std::time::Instant;

use pantau_protocol::{Event, Family, Severity};
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use thiserror::Error;
use tracing::{debug, info, warn};

pub use role::HostRole;

pub use crate::metric::{FamilyBuilder, Pattern};

/// `[host]`: publish this machine's metrics. The section's presence switches the role on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Collectors to run, by node_exporter's names. Default: all of them.
    #[serde(default = "CollectorKind::all")]
    pub collectors: Vec<CollectorKind>,
    /// procfs mount point (node_exporter's `--path.procfs`).
    #[serde(default = "default_proc_path")]
    pub proc_path: PathBuf,
    /// Where the host's root file system is visible (node_exporter's `--path.rootfs`); set it
    /// when the agent runs in a container with the host's `/` mounted elsewhere.
    #[serde(default = "default_rootfs_path")]
    pub rootfs_path: PathBuf,
    /// sysfs mount point (node_exporter's `--path.sysfs`).
    #[serde(default = "default_sys_path")]
    pub sys_path: PathBuf,
    #[serde(default)]
    pub filesystem: filesystem::FilesystemConfig,
    #[serde(default)]
    pub netdev: netdev::NetdevConfig,
    /// `[host.textfile]`: export `*.prom` files from a directory (node_exporter's textfile
    /// collector). Switched on by its presence.
    #[serde(default)]
    pub textfile: Option<textfile::TextfileConfig>,
    /// `[[host.processes]]`: process groups to watch, exported as process-exporter does.
    /// Switched on by the first entry.
    #[serde(default)]
    pub processes: Vec<processes::ProcessGroupConfig>,
}

/// A node_exporter collector, named as node_exporter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorKind {
    /// `node_cpu_seconds_total` per CPU and mode.
    Cpu,
    /// Boot time, context switches, forks, interrupts and process counts from /proc/stat.
    Stat,
    /// Every /proc/meminfo field as `node_memory_<Field>_bytes`.
    Meminfo,
    /// Size, free and available space and inodes per mounted file system.
    Filesystem,
    /// Per-interface byte, packet, error and drop counters from /proc/net/dev.
    Netdev,
    /// 1, 5 and 15 minute load averages.
    Loadavg,
    /// Per-disk I/O counters from /proc/diskstats, and `node_disk_info`.
    Diskstats,
    /// Per-interface properties from /sys/class/net (`node_network_up`, `_mtu_bytes`, ...).
    Netclass,
    /// `node_uname_info`.
    Uname,
    /// `node_os_info` and `node_os_version` from os-release.
    Os,
    /// System time, time zone offset and clock sources.
    Time,
    /// Allocated and maximum file descriptors.
    Filefd,
    /// Available entropy and pool size.
    Entropy,
    /// node_exporter's default fields of /proc/vmstat.
    Vmstat,
    /// node_exporter's default fields of /proc/net/{netstat,snmp,snmp6}.
    Netstat,
    /// Sockets in use per protocol from /proc/net/sockstat{,6}.
    Sockstat,
    /// Pressure stall information (PSI), where the kernel has it.
    Pressure,
    /// Hardware monitor sensors from /sys/class/hwmon, where there are any.
    Hwmon,
    /// Thermal zones and cooling devices from /sys/class/thermal, where there are any.
    #[serde(rename = "thermal_zone")]
    ThermalZone,
    /// Clock synchronisation state from adjtimex(2).
    Timex,
    /// Metrics from `*.prom` files; on when `[host.textfile]` is configured.
    Textfile,
    /// Watched process groups; on when `[[host.processes]]` is configured.
    Processes,
}

impl CollectorKind {
    fn all() -> Vec<CollectorKind> {
        vec![
            CollectorKind::Cpu,
            CollectorKind::Stat,
            CollectorKind::Meminfo,
            CollectorKind::Filesystem,
            CollectorKind::Netdev,
            CollectorKind::Loadavg,
            CollectorKind::Diskstats,
            CollectorKind::Netclass,
            CollectorKind::Uname,
            CollectorKind::Os,
            CollectorKind::Time,
            CollectorKind::Filefd,
            CollectorKind::Entropy,
            CollectorKind::Vmstat,
            CollectorKind::Netstat,
            CollectorKind::Sockstat,
            CollectorKind::Pressure,
            CollectorKind::Hwmon,
            CollectorKind::ThermalZone,
            CollectorKind::Timex,
        ]
    }

    /// The `collector` label value, as node_exporter spells it.
    pub fn name(self) -> &'static str {
        match self {
            CollectorKind::Cpu => "cpu",
            CollectorKind::Stat => "stat",
            CollectorKind::Meminfo => "meminfo",
            CollectorKind::Filesystem => "filesystem",
            CollectorKind::Netdev => "netdev",
            CollectorKind::Loadavg => "loadavg",
            CollectorKind::Diskstats => "diskstats",
            CollectorKind::Netclass => "netclass",
            CollectorKind::Uname => "uname",
            CollectorKind::Os => "os",
            CollectorKind::Time => "time",
            CollectorKind::Filefd => "filefd",
            CollectorKind::Entropy => "entropy",
            CollectorKind::Vmstat => "vmstat",
            CollectorKind::Netstat => "netstat",
            CollectorKind::Sockstat => "sockstat",
            CollectorKind::Pressure => "pressure",
            CollectorKind::Hwmon => "hwmon",
            CollectorKind::ThermalZone => "thermal_zone",
            CollectorKind::Timex => "timex",
            CollectorKind::Textfile => "textfile",
            CollectorKind::Processes => "processes",
        }
    }
}

fn default_proc_path() -> PathBuf {
    PathBuf::from("/proc")
}

fn default_rootfs_path() -> PathBuf {
    PathBuf::from("/")
}

fn default_sys_path() -> PathBuf {
    PathBuf::from("/sys")
}

impl HostConfig {
    /// Checks values that serde cannot; `Host::new` relies on this having passed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.collectors.is_empty() {
            return Err(ConfigError::invalid(
                "host.collectors",
                "[]",
                "must name at least one collector (remove [host] to switch the role off)",
            ));
        }
        for (field, path) in [
            ("host.proc_path", &self.proc_path),
            ("host.rootfs_path", &self.rootfs_path),
            ("host.sys_path", &self.sys_path),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::invalid(
                    field,
                    path.display(),
                    "must be an absolute path",
                ));
            }
        }
        self.filesystem.validate()?;
        self.netdev.validate()?;
        if let Some(textfile) = &self.textfile {
            textfile.validate()?;
        } else if self.collectors.contains(&CollectorKind::Textfile) {
            return Err(ConfigError::invalid(
                "host.collectors",
                "textfile",
                "needs a [host.textfile] section with its directory",
            ));
        }
        if self.processes.is_empty() && self.collectors.contains(&CollectorKind::Processes) {
            return Err(ConfigError::invalid(
                "host.collectors",
                "processes",
                "needs at least one [[host.processes]] entry",
            ));
        }
        processes::validate(&self.processes)?;
        Ok(())
    }

    /// The collectors to run: the configured list, plus textfile and processes when their
    /// sections are present, each once.
    fn enabled(&self) -> Vec<CollectorKind> {
        let mut kinds = self.collectors.clone();
        if self.textfile.is_some() {
            kinds.push(CollectorKind::Textfile);
        }
        if !self.processes.is_empty() {
            kinds.push(CollectorKind::Processes);
        }
        let mut seen = Vec::new();
        kinds.retain(|kind| {
            let first = !seen.contains(kind);
            seen.push(*kind);
            first
        });
        kinds
    }
}

/// Where the collectors read from.
#[derive(Debug, Clone)]
pub struct Paths {
    pub proc: PathBuf,
    pub rootfs: PathBuf,
    pub sys: PathBuf,
}

/// Reads one sysfs or procfs attribute, trimmed. `None` when it cannot be read: sysfs answers
/// EINVAL for attributes a device lacks in its current state (the carrier of a downed link),
/// and node_exporter then leaves the series out.
pub fn read_attribute(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// procfs files kept open by [`CollectError::read_proc`]: about 20 per round, with room for
/// another proc path in tests.
const PROC_MAX_OPEN: usize = 64;

/// sysfs and procfs files kept open and read again with pread(2) at offset 0, which makes the
/// kernel generate their contents anew. A round then costs one read per file instead of open,
/// read and close, and the path lookup of an open is the expensive part in sysfs. At most
/// `max_open` files are kept (the rest are opened per read), so a host with hundreds of
/// interfaces cannot exhaust the agent's file descriptors.
pub struct OpenFiles {
    files: std::collections::HashMap<PathBuf, std::fs::File>,
    max_open: usize,
    buffer: Vec<u8>,
}

impl OpenFiles {
    pub fn new(max_open: usize) -> Self {
        Self {
            files: std::collections::HashMap::new(),
            max_open,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// The file's contents, trimmed; `None` when it cannot be opened or read, as
    /// [`read_attribute`].
    pub fn read(&mut self, path: &Path) -> Option<String> {
        self.read_result(path).ok()
    }

    /// As `read`, with the error.
    pub fn read_result(&mut self, path: &Path) -> std::io::Result<String> {
        if !self.files.contains_key(path) {
            let file = std::fs::File::open(path)?;
            if self.files.len() >= self.max_open {
                return read_at_zero(&file, &mut self.buffer);
            }
            self.files.insert(path.to_owned(), file);
        }
        let Some(file) = self.files.get(path) else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        match read_at_zero(file, &mut self.buffer) {
            Ok(text) => Ok(text),
            Err(error) => {
                // A removed device's files answer ENODEV; an attribute refused in the device's
                // current state (EINVAL) may be readable next round, so its file stays open.
                const ENODEV: i32 = 19;
                if error.kind() == std::io::ErrorKind::NotFound
                    || error.raw_os_error() == Some(ENODEV)
                {
                    self.files.remove(path);
                }
                Err(error)
            }
        }
    }

    /// Closes the files `keep` says no to (those of vanished devices).
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.files.retain(|path, _| keep(path));
    }

    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.files.len()
    }
}

fn read_at_zero(file: &std::fs::File, buffer: &mut Vec<u8>) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    buffer.clear();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = file.read_at(&mut chunk, buffer.len() as u64)?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok(String::from_utf8_lossy(buffer).trim().to_owned())
}

/// The entries of a directory whose names start with `prefix`, sorted by name; a missing
/// directory is `NoData`.
pub fn list_dir(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, CollectError> {
    let entries = std::fs::read_dir(dir).map_err(|error| CollectError::io(dir, error))?;
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.starts_with(prefix).then(|| (name, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Why one collector produced nothing this round.
#[derive(Debug, Error)]
pub enum CollectError {
    /// The data source does not exist here (no such file on this kernel, in this container);
    /// logged at debug level only, as node_exporter does.
    #[error("no data: {0}")]
    NoData(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

impl CollectError {
    /// Maps a read error of `path`: a missing file is `NoData`, anything else is `Io`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            CollectError::NoData(format!("{} does not exist", path.display()))
        } else {
            CollectError::Io { path, source }
        }
    }

    /// Reads a text file of procfs, mapping failure as `io` does.
    pub fn read_text(path: &std::path::Path) -> Result<String, Self> {
        std::fs::read_to_string(path).map_err(|error| CollectError::io(path, error))
    }

    /// Reads a procfs file through one process-wide set of open files (see [`OpenFiles`]):
    /// procfs files are never replaced, so a kept descriptor always reads the live contents.
    /// Not for ordinary files, which are replaced by rename.
    pub fn read_proc(path: &std::path::Path) -> Result<String, Self> {
        static PROC_FILES: std::sync::Mutex<Option<OpenFiles>> = std::sync::Mutex::new(None);
        let mut files = PROC_FILES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        files
            .get_or_insert_with(|| OpenFiles::new(PROC_MAX_OPEN))
            .read_result(path)
            .map_err(|error| CollectError::io(path, error))
    }

    pub fn parse(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// One collector with whatever state it keeps between rounds.
enum Collector {
    Cpu(cpu::Cpu),
    Stat(stat::Stat),
    Meminfo(meminfo::Meminfo),
    Filesystem(filesystem::Filesystem),
    Netdev(netdev::Netdev),
    Loadavg(loadavg::Loadavg),
    Diskstats(diskstats::Diskstats),
    Netclass(netclass::Netclass),
    Uname(uname::Uname),
    Os(os::Os),
    Time(time::Time),
    Filefd(filefd::Filefd),
    Entropy(entropy::Entropy),
    Vmstat(vmstat::Vmstat),
    Netstat(netstat::Netstat),
    Sockstat(sockstat::Sockstat),
    Pressure(pressure::Pressure),
    Hwmon(hwmon::Hwmon),
    ThermalZone(thermal_zone::ThermalZone),
    Timex(timex::Timex),
    Textfile(textfile::Textfile),
    Processes(Box<processes::Processes>),
}

impl Collector {
    fn new(kind: CollectorKind, config: &HostConfig, paths: &Paths) -> Self {
        match kind {
            CollectorKind::Cpu => Collector::Cpu(cpu::Cpu::new(paths)),
            CollectorKind::Stat => Collector::Stat(stat::Stat::new(paths)),
            CollectorKind::Meminfo => Collector::Meminfo(meminfo::Meminfo::new(paths)),
            CollectorKind::Filesystem => {
                Collector::Filesystem(filesystem::Filesystem::new(&config.filesystem, paths))
            }
            CollectorKind::Netdev => Collector::Netdev(netdev::Netdev::new(&config.netdev, paths)),
            CollectorKind::Loadavg => Collector::Loadavg(loadavg::Loadavg::new(paths)),
            CollectorKind::Diskstats => Collector::Diskstats(diskstats::Diskstats::new(paths)),
            CollectorKind::Netclass => Collector::Netclass(netclass::Netclass::new(paths)),
            CollectorKind::Uname => Collector::Uname(uname::Uname),
            CollectorKind::Os => Collector::Os(os::Os::new(paths)),
            CollectorKind::Time => Collector::Time(time::Time::new(paths)),
            CollectorKind::Filefd => Collector::Filefd(filefd::Filefd::new(paths)),
            CollectorKind::Entropy => Collector::Entropy(entropy::Entropy::new(paths)),
            CollectorKind::Vmstat => Collector::Vmstat(vmstat::Vmstat::new(paths)),
            CollectorKind::Netstat => Collector::Netstat(netstat::Netstat::new(paths)),
            CollectorKind::Sockstat => Collector::Sockstat(sockstat::Sockstat::new(paths)),
            CollectorKind::Pressure => Collector::Pressure(pressure::Pressure::new(paths)),
            CollectorKind::Hwmon => Collector::Hwmon(hwmon::Hwmon::new(paths)),
            CollectorKind::ThermalZone => {
                Collector::ThermalZone(thermal_zone::ThermalZone::new(paths))
            }
            CollectorKind::Timex => Collector::Timex(timex::Timex),
            CollectorKind::Textfile => Collector::Textfile(textfile::Textfile::new(
                config.textfile.as_ref().map(|t| t.directory.clone()),
            )),
            CollectorKind::Processes => Collector::Processes(Box::new(processes::Processes::new(
                &config.processes,
                paths,
            ))),
        }
    }

    fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        match self {
            Collector::Cpu(c) => c.collect(),
            Collector::Stat(c) => c.collect(),
            Collector::Meminfo(c) => c.collect(),
            Collector::Filesystem(c) => c.collect(),
            Collector::Netdev(c) => c.collect(),
            Collector::Loadavg(c) => c.collect(),
            Collector::Diskstats(c) => c.collect(),
            Collector::Netclass(c) => c.collect(),
            Collector::Uname(c) => c.collect(),
            Collector::Os(c) => c.collect(),
            Collector::Time(c) => c.collect(),
            Collector::Filefd(c) => c.collect(),
            Collector::Entropy(c) => c.collect(),
            Collector::Vmstat(c) => c.collect(),
            Collector::Netstat(c) => c.collect(),
            Collector::Sockstat(c) => c.collect(),
            Collector::Pressure(c) => c.collect(),
            Collector::Hwmon(c) => c.collect(),
            Collector::ThermalZone(c) => c.collect(),
            Collector::Timex(c) => c.collect(),
            Collector::Textfile(c) => c.collect(),
            Collector::Processes(c) => c.collect(),
        }
    }
}

/// The host role: every enabled collector, kept between rounds.
///
/// `collect` blocks on file reads and statvfs(2); call it from `spawn_blocking`.
pub struct Host {
    collectors: Vec<(CollectorKind, Collector)>,
    /// The last error text per collector, so a persistent failure is logged once, not per round.
    last_errors: Vec<Option<String>>,
    /// Failures and recoveries since the last `take_events`, published at once by the role.
    events: Vec<Event>,
}

impl Host {
    /// Builds the collectors; `config` must have passed `validate`.
    pub fn new(config: &HostConfig) -> Self {
        let paths = Paths {
            proc: config.proc_path.clone(),
            rootfs: config.rootfs_path.clone(),
            sys: config.sys_path.clone(),
        };
        let collectors: Vec<_> = config
            .enabled()
            .into_iter()
            .map(|kind| (kind, Collector::new(kind, config, &paths)))
            .collect();
        let last_errors = vec![None; collectors.len()];
        Self {
            collectors,
            last_errors,
            events: Vec::new(),
        }
    }

    /// Collector failures and recoveries seen since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Runs every collector once and returns their families plus node_exporter's
    /// `node_scrape_collector_success` and `node_scrape_collector_duration_seconds`.
    pub fn collect(&mut self) -> Vec<Family> {
        let mut families = Vec::new();
        let mut success = FamilyBuilder::gauge(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
        );
        let mut duration = FamilyBuilder::gauge(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
        );
        for ((kind, collector), last_error) in
            self.collectors.iter_mut().zip(self.last_errors.iter_mut())
        {
            let started = Instant::now();
            let result = collector.collect();
            let elapsed = started.elapsed().as_secs_f64();
            let ok = match result {
                Ok(mut collected) => {
                    families.append(&mut collected);
                    if last_error.take().is_some() {
                        info!(collector = kind.name(), "collector recovered");
                        self.events.push(collector_event(
                            *kind,
                            Severity::Info,
                            "collector_recovered",
                            "collector works again".to_owned(),
                        ));
                    }
                    true
                }
                Err(CollectError::NoData(why)) => {
                    debug!(collector = kind.name(), reason = %why, "collector has no data");
                    false
                }
                Err(error) => {
                    let text = error.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!(collector = kind.name(), %error, "collector failed");
                        self.events.push(collector_event(
                            *kind,
                            Severity::Warning,
                            "collector_failed",
                            text.clone(),
                        ));
                    }
                    *last_error = Some(text);
                    false
                }
            };
            success.sample(&[("collector", kind.name())], if ok { 1.0 } else { 0.0 });
            duration.sample(&[("collector", kind.name())], elapsed);
        }
        families.push(success.build());
        families.push(duration.build());
        families
    }
}

fn collector_event(kind: CollectorKind, severity: Severity, event: &str, message: String) -> Event {
    Event {
        kind: event.to_owned(),
        severity,
        message: format!("{}: {message}", kind.name()),
        labels: [("collector".to_owned(), kind.name().to_owned())].into(),
    }
}

#[cfg(test)]
mod open_files_tests {
    use super::*;

    #[test]
    fn rereads_changed_contents_and_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "2\n").unwrap();
        let mut files = OpenFiles::new(1);
        assert_eq!(files.read(&a).as_deref(), Some("1"));
        assert_eq!(files.read(&b).as_deref(), Some("2"));
        assert_eq!(files.open_count(), 1);
        // Rewritten in place, as the kernel regenerates an attribute.
        std::fs::write(&a, "10\n").unwrap();
        assert_eq!(files.read(&a).as_deref(), Some("10"));
        assert_eq!(files.read(&dir.path().join("missing")), None);
        files.retain(|path| path != a);
        assert_eq!(files.open_count(), 0);
    }

    #[test]
    fn sysfs_and_procfs_regenerate_on_pread() {
        let mut files = OpenFiles::new(4);
        let uptime = Path::new("/proc/uptime");
        let first = files.read(uptime).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = files.read(uptime).unwrap();
        assert_ne!(first, second);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use pantau_protocol::{DEFAULT_PREFIX, Limits, MetricsMessage, decode};

    use super::*;

    fn host(proc: &Path, rootfs: &Path) -> Host {
        let sys = if proc == Path::new("/proc") {
            PathBuf::from("/sys")
        } else {
            rootfs.join("sys")
        };
        let config: HostConfig = serde_json::from_value(serde_json::json!({
            "proc_path": proc,
            "rootfs_path": rootfs,
            "sys_path": sys,
        }))
        .unwrap();
        config.validate().unwrap();
        Host::new(&config)
    }

    /// Checks that every collector succeeded (but those for hardware `absent` may lack) and
    /// that the round passes the collector's own validation (names, unique series, finite
    /// values).
    fn assert_round_is_valid(families: Vec<Family>, absent: &[&str]) {
        let success = families
            .iter()
            .find(|f| f.name == "node_scrape_collector_success")
            .unwrap();
        let by_collector: BTreeMap<_, _> = success
            .samples
            .iter()
            .map(|s| (s.labels["collector"].as_str(), s.value))
            .collect();
        assert_eq!(by_collector.len(), CollectorKind::all().len());
        assert!(
            by_collector
                .iter()
                .all(|(name, &v)| v == 1.0 || absent.contains(name)),
            "{by_collector:?}"
        );

        let message = MetricsMessage {
            schema: 1,
            agent: "srv-01".to_owned(),
            site: "dc".to_owned(),
            seq: 1,
            timestamp_ms: 1_800_000_000_000,
            families,
            histograms: Vec::new(),
        };
        let payload = serde_json::to_vec(&message).unwrap();
        let topic = format!("{DEFAULT_PREFIX}/v1/dc/srv-01/metrics");
        let limits = Limits::default();
        decode(DEFAULT_PREFIX, &topic, &payload, &limits).unwrap();
    }

    /// The collector pins node_exporter's names to their types (`pinned_kind`); a family the
    /// host role sends with another type, or one the table does not know, would be dropped.
    fn assert_types_are_pinned(families: &[Family]) {
        for family in families {
            assert_eq!(
                pantau_protocol::pinned_kind(&family.name),
                Some(family.kind),
                "{}",
                family.name
            );
        }
    }

    #[test]
    fn every_family_agrees_with_the_collectors_pinned_types() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        assert_types_are_pinned(&host(&testdata.join("proc"), &testdata).collect());
        assert_types_are_pinned(&host(Path::new("/proc"), Path::new("/")).collect());
    }

    #[test]
    fn every_collector_succeeds_on_the_fixture() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        assert_round_is_valid(host(&testdata.join("proc"), &testdata).collect(), &[]);
    }

    #[test]
    fn every_collector_succeeds_on_this_host() {
        // Most VMs have no hwmon or thermal zones, and older kernels no PSI.
        assert_round_is_valid(
            host(Path::new("/proc"), Path::new("/")).collect(),
            &["hwmon", "thermal_zone", "pressure"],
        );
    }
}
