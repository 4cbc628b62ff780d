//! node_exporter's `cpu` collector: `node_cpu_seconds_total{cpu,mode}` and
//! `node_cpu_guest_seconds_total{cpu,mode}` from the `cpuN` lines of /proc/stat.
//!
//! Like node_exporter, it keeps the last values per CPU and never lets a counter go down: the
//! kernel's idle and iowait times can step backwards a little on tickless kernels, and a
//! counter that decreases reads as a reset to Prometheus' `rate()`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pantau_protocol::Family;
use tracing::debug;

use super::stat::{CpuTimes, read_proc_stat};
use super::{CollectError, FamilyBuilder, Paths};

/// An idle counter that goes back by at least this many seconds means the CPU was hot-plugged
/// (its counters restarted), not jitter; node_exporter then starts that CPU afresh.
const JUMP_BACK_SECONDS: f64 = 3.0;

/// The `cpu` collector.
pub struct Cpu {
    path: PathBuf,
    /// The values reported last round, per CPU number.
    last: BTreeMap<u32, CpuTimes>,
}

impl Cpu {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("stat"),
            last: BTreeMap::new(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let stat = read_proc_stat(&self.path)?;
        // Rebuilt from this read only, so a CPU that went offline stops being reported.
        self.last = stat
            .cpus
            .iter()
            .map(|(&cpu, &now)| (cpu, monotonic(cpu, self.last.get(&cpu), now)))
            .collect();
        Ok(families(&self.last))
    }
}

/// Each counter of `now`, or the previous value where `now` went backwards.
fn monotonic(cpu: u32, previous: Option<&CpuTimes>, now: CpuTimes) -> CpuTimes {
    let Some(&previous) = previous else {
        return now;
    };
    if previous.idle - now.idle >= JUMP_BACK_SECONDS {
        debug!(
            cpu,
            previous = previous.idle,
            now = now.idle,
            "CPU idle counter jumped backwards, possible hotplug event; resetting its stats"
        );
        return now;
    }
    let keep = |previous: f64, now: f64| if now >= previous { now } else { previous };
    let kept = CpuTimes {
        user: keep(previous.user, now.user),
        nice: keep(previous.nice, now.nice),
        system: keep(previous.system, now.system),
        idle: keep(previous.idle, now.idle),
        iowait: keep(previous.iowait, now.iowait),
        irq: keep(previous.irq, now.irq),
        softirq: keep(previous.softirq, now.softirq),
        steal: keep(previous.steal, now.steal),
        guest: keep(previous.guest, now.guest),
        guest_nice: keep(previous.guest_nice, now.guest_nice),
    };
    if kept != now {
        debug!(
            cpu,
            "CPU counter jumped backwards; keeping the previous value"
        );
    }
    kept
}

fn families(cpus: &BTreeMap<u32, CpuTimes>) -> Vec<Family> {
    let mut seconds = FamilyBuilder::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = FamilyBuilder::counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    for (cpu, times) in cpus {
        let cpu = cpu.to_string();
        for (mode, value) in [
            ("user", times.user),
            ("nice", times.nice),
            ("system", times.system),
            ("idle", times.idle),
            ("iowait", times.iowait),
            ("irq", times.irq),
            ("softirq", times.softirq),
            ("steal", times.steal),
        ] {
            seconds.sample(&[("cpu", &cpu), ("mode", mode)], value);
        }
        // Guest time is also counted in user and nice; node_exporter reports it on its own.
        guest.sample(&[("cpu", &cpu), ("mode", "user")], times.guest);
        guest.sample(&[("cpu", &cpu), ("mode", "nice")], times.guest_nice);
    }
    vec![seconds.build(), guest.build()]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::host::stat::parse_proc_stat;

    fn value(family: &Family, cpu: &str, mode: &str) -> f64 {
        family
            .samples
            .iter()
            .find(|s| s.labels["cpu"] == cpu && s.labels["mode"] == mode)
            .map(|s| s.value)
            .unwrap()
    }

    #[test]
    fn reports_every_mode_per_cpu() {
        let stat = parse_proc_stat("cpu  9 9 9 9\ncpu0 100 5 200 300 4 1 2 3 7 8\n").unwrap();
        let families = families(&stat.cpus);
        assert_eq!(families[0].name, "node_cpu_seconds_total");
        assert_eq!(families[0].samples.len(), 8);
        assert_eq!(value(&families[0], "0", "user"), 1.0);
        assert_eq!(value(&families[0], "0", "idle"), 3.0);
        assert_eq!(value(&families[0], "0", "steal"), 0.03);
        assert_eq!(families[1].name, "node_cpu_guest_seconds_total");
        assert_eq!(value(&families[1], "0", "user"), 0.07);
        assert_eq!(value(&families[1], "0", "nice"), 0.08);
    }

    #[test]
    fn small_steps_backwards_keep_the_previous_value() {
        let before = CpuTimes {
            idle: 100.0,
            iowait: 5.0,
            ..CpuTimes::default()
        };
        let now = CpuTimes {
            idle: 99.5,
            iowait: 6.0,
            ..CpuTimes::default()
        };
        let kept = monotonic(0, Some(&before), now);
        assert_eq!((kept.idle, kept.iowait), (100.0, 6.0));
    }

    #[test]
    fn a_large_idle_jump_backwards_resets_the_cpu() {
        let before = CpuTimes {
            idle: 100.0,
            user: 50.0,
            ..CpuTimes::default()
        };
        let now = CpuTimes {
            idle: 2.0,
            user: 1.0,
            ..CpuTimes::default()
        };
        assert_eq!(monotonic(0, Some(&before), now), now);
    }

    #[test]
    fn collect_reads_the_proc_dir_and_forgets_offline_cpus() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
        let paths = Paths {
            proc: fixture.clone(),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        };
        let mut cpu = Cpu::new(&paths);
        let families = cpu.collect().unwrap();
        assert_eq!(value(&families[0], "1", "user"), 73.19);
        assert_eq!(value(&families[1], "1", "nice"), 0.03);
        assert_eq!(families[0].samples.len(), 16);

        cpu.last.insert(7, CpuTimes::default());
        let families = cpu.collect().unwrap();
        assert_eq!(families[0].samples.len(), 16);
        assert!(!cpu.last.contains_key(&7));
    }
}
