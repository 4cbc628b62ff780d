//! node_exporter's `stat` collector: boot time, context switches, forks, interrupts and process
//! counts from /proc/stat.
//!
//! This file also holds the one /proc/stat parser; the `cpu` collector reads the same file and
//! uses it too, so both agree on what a line means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// Ticks per second of the /proc/stat CPU columns. The kernel always reports them in USER_HZ,
/// which is 100 on every architecture's userspace ABI; node_exporter (through procfs) assumes
/// the same rather than asking sysconf(_SC_CLK_TCK).
const USER_HZ: f64 = 100.0;

/// Seconds one CPU spent in each mode since boot, in /proc/stat's column order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    /// Already included in `user`; the kernel reports it separately as well.
    pub guest: f64,
    /// Already included in `nice`.
    pub guest_nice: f64,
}

/// The parts of /proc/stat that node_exporter's `cpu` and `stat` collectors report. A line
/// missing from the file (none is on any kernel we know of) leaves its field `None`.
#[derive(Debug, Default, PartialEq)]
pub struct ProcStat {
    /// Per-CPU times by CPU number; the summed `cpu` line is not kept, as node_exporter does
    /// not report it.
    pub cpus: BTreeMap<u32, CpuTimes>,
    pub boot_time: Option<u64>,
    pub interrupts: Option<u64>,
    pub context_switches: Option<u64>,
    pub forks: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

/// Parses /proc/stat. Unknown lines are skipped; a known line with a malformed number is an
/// error, as in procfs, because a silently wrong counter is worse than a failed collector.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, String> {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(first)) = (fields.next(), fields.next()) else {
            continue;
        };
        let number = || {
            first
                .parse::<u64>()
                .map_err(|error| format!("{key} value '{first}': {error}"))
        };
        match key {
            "btime" => stat.boot_time = Some(number()?),
            // The first number is the total; the per-IRQ counts that follow are not reported.
            "intr" => stat.interrupts = Some(number()?),
            "ctxt" => stat.context_switches = Some(number()?),
            "processes" => stat.forks = Some(number()?),
            "procs_running" => stat.procs_running = Some(number()?),
            "procs_blocked" => stat.procs_blocked = Some(number()?),
            "cpu" => {}
            _ => {
                if let Some(id) = key.strip_prefix("cpu") {
                    let id = id
                        .parse::<u32>()
                        .map_err(|_| format!("'{key}' is not a CPU name"))?;
                    let times = parse_cpu_times(key, line)?;
                    stat.cpus.insert(id, times);
                }
            }
        }
    }
    Ok(stat)
}

/// Parses the columns of a `cpuN` line. Old kernels print fewer than ten (guest_nice arrived in
/// 2.6.33); like procfs, missing trailing columns read as zero and extra ones are ignored.
fn parse_cpu_times(key: &str, line: &str) -> Result<CpuTimes, String> {
    let mut columns = [0.0_f64; 10];
    for (slot, field) in columns.iter_mut().zip(line.split_whitespace().skip(1)) {
        let ticks: f64 = field
            .parse()
            .map_err(|error| format!("{key} value '{field}': {error}"))?;
        *slot = ticks / USER_HZ;
    }
    let [
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    ] = columns;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// Reads and parses `<proc>/stat`; shared by the `cpu` and `stat` collectors.
pub fn read_proc_stat(path: &Path) -> Result<ProcStat, CollectError> {
    let text = CollectError::read_proc(path)?;
    parse_proc_stat(&text).map_err(|detail| CollectError::parse(path, detail))
}

/// The `stat` collector.
pub struct Stat {
    path: PathBuf,
}

impl Stat {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("stat"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        Ok(families(&read_proc_stat(&self.path)?))
    }
}

fn families(stat: &ProcStat) -> Vec<Family> {
    let series = [
        (
            FamilyBuilder::counter("node_intr_total", "Total number of interrupts serviced."),
            stat.interrupts,
        ),
        (
            FamilyBuilder::counter(
                "node_context_switches_total",
                "Total number of context switches.",
            ),
            stat.context_switches,
        ),
        (
            FamilyBuilder::counter("node_forks_total", "Total number of forks."),
            stat.forks,
        ),
        (
            FamilyBuilder::gauge("node_boot_time_seconds", "Node boot time, in unixtime."),
            stat.boot_time,
        ),
        (
            FamilyBuilder::gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
            ),
            stat.procs_running,
        ),
        (
            FamilyBuilder::gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
            ),
            stat.procs_blocked,
        ),
    ];
    series
        .into_iter()
        .filter_map(|(builder, value)| value.map(|value| builder.single(value as f64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  13256 0 5124 150166 2172 0 82 33 0 0
cpu0 5936 0 2010 77035 415 0 12 15 0 0
cpu1 7319 0 3113 73130 1757 0 69 18 7 3
intr 247274 0 0 13 0 171
ctxt 413326
btime 1795816563
processes 9741
procs_running 2
procs_blocked 1
softirq 168358 0 21040 4 15460 52514 0 758 38895 0 39687
";

    #[test]
    fn parses_counters_and_cpus() {
        let stat = parse_proc_stat(STAT).unwrap();
        assert_eq!(stat.boot_time, Some(1_795_816_563));
        assert_eq!(stat.interrupts, Some(247_274));
        assert_eq!(stat.context_switches, Some(413_326));
        assert_eq!(stat.forks, Some(9741));
        assert_eq!(stat.procs_running, Some(2));
        assert_eq!(stat.procs_blocked, Some(1));
        assert_eq!(stat.cpus.len(), 2);
        let cpu1 = stat.cpus[&1];
        assert_eq!(cpu1.user, 73.19);
        assert_eq!(cpu1.system, 31.13);
        assert_eq!(cpu1.idle, 731.30);
        assert_eq!(cpu1.iowait, 17.57);
        assert_eq!(cpu1.softirq, 0.69);
        assert_eq!(cpu1.steal, 0.18);
        assert_eq!(cpu1.guest, 0.07);
        assert_eq!(cpu1.guest_nice, 0.03);
    }

    #[test]
    fn short_cpu_lines_read_missing_columns_as_zero() {
        let stat = parse_proc_stat("cpu3 100 200 300 400\n").unwrap();
        let cpu = stat.cpus[&3];
        assert_eq!((cpu.user, cpu.idle, cpu.steal), (1.0, 4.0, 0.0));
        assert_eq!(stat.boot_time, None);
    }

    #[test]
    fn malformed_numbers_are_errors() {
        let error = parse_proc_stat("ctxt lots\n").unwrap_err();
        assert!(error.starts_with("ctxt value 'lots'"), "{error}");
        assert!(parse_proc_stat("cpu0 1 x 3\n").is_err());
        assert!(parse_proc_stat("cpuX 1 2 3\n").is_err());
    }

    #[test]
    fn emits_node_exporter_families() {
        let families = families(&parse_proc_stat(STAT).unwrap());
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_intr_total",
                "node_context_switches_total",
                "node_forks_total",
                "node_boot_time_seconds",
                "node_procs_running",
                "node_procs_blocked",
            ]
        );
        assert_eq!(families[3].samples[0].value, 1_795_816_563.0);
    }

    #[test]
    fn collect_reads_the_proc_dir() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
        let mut paths = Paths {
            proc: fixture.clone(),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        };
        let families = Stat::new(&paths).collect().unwrap();
        assert_eq!(families.len(), 6);
        assert_eq!(families[2].samples[0].value, 9741.0);

        paths.proc = paths.proc.join("missing");
        let error = Stat::new(&paths).collect().unwrap_err();
        assert!(matches!(error, CollectError::NoData(_)), "{error}");
    }
}
