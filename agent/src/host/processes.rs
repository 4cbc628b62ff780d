//! Watched process groups, exported as process-exporter exports them:
//! `namedprocess_namegroup_num_procs`, `_cpu_seconds_total{mode}`, `_memory_bytes{memtype}`
//! and `_oldest_start_time_seconds`, each labelled `groupname`. "The database on dc-srv-01
//! is running" is then one alert rule on `num_procs == 0`.
//!
//! sysinfo lists the processes (one long-lived `System`, refreshing only names, command lines
//! and memory); user and system CPU time come from /proc/<pid>/stat for the matched processes
//! only, because sysinfo gives their sum and process-exporter reports them apart.

use std::collections::HashSet;
use std::path::PathBuf;

use pantau_protocol::Family;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::{CollectError, FamilyBuilder, Paths, Pattern};

/// `[[host.processes]]`: one group of processes to watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessGroupConfig {
    /// The group's name, the `groupname` label, e.g. `postgres`.
    pub name: String,
    /// Process names (the kernel's `comm`, as `ps -o comm` prints it, at most 15 characters)
    /// that belong to the group, compared exactly.
    #[serde(default)]
    pub comm: Vec<String>,
    /// Regular expressions matched against the command line (arguments joined by spaces);
    /// a process matching any of them belongs to the group, e.g. `java .*-jar /opt/erp\.jar`.
    #[serde(default)]
    pub cmdline: Vec<Pattern>,
}

/// Checks the groups: named, each name once, each with something to match.
pub fn validate(groups: &[ProcessGroupConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (index, group) in groups.iter().enumerate() {
        let field = format!("host.processes[{index}].name");
        if group.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                field,
                &group.name,
                "must not be empty",
            ));
        }
        if !names.insert(group.name.as_str()) {
            return Err(ConfigError::invalid(
                field,
                &group.name,
                "names another group too",
            ));
        }
        if group.comm.is_empty() && !group.cmdline.iter().any(Pattern::is_set) {
            return Err(ConfigError::invalid(
                format!("host.processes[{index}]"),
                &group.name,
                "needs at least one `comm` name or `cmdline` pattern",
            ));
        }
    }
    Ok(())
}

/// What one group adds up to in a round.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupTotals {
    pub count: u64,
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub oldest_start: Option<u64>,
}

/// The `processes` collector.
pub struct Processes {
    groups: Vec<ProcessGroupConfig>,
    /// `Err` when sysinfo cannot work here (no procfs); every round then reports why.
    system: Result<System, String>,
    proc: PathBuf,
    ticks_per_second: f64,
}

impl Processes {
    pub fn new(groups: &[ProcessGroupConfig], paths: &Paths) -> Self {
        Self {
            groups: groups.to_vec(),
            system: System::new().map_err(|error| error.to_string()),
            proc: paths.proc.clone(),
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let system = self
            .system
            .as_mut()
            .map_err(|why| CollectError::NoData(format!("cannot list processes: {why}")))?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_memory()
                .with_cmd(UpdateKind::OnlyIfNotSet),
        );
        let mut totals = vec![GroupTotals::default(); self.groups.len()];
        let mut cmdline = String::new();
        for process in system.processes().values() {
            if process.thread_kind().is_some() {
                continue;
            }
            let comm = process.name().to_string_lossy();
            cmdline.clear();
            for (i, arg) in process.cmd().iter().enumerate() {
                if i > 0 {
                    cmdline.push(' ');
                }
                cmdline.push_str(&arg.to_string_lossy());
            }
            // process-exporter puts a process in the first group that matches it.
            let Some(index) = self.groups.iter().position(|group| {
                group.comm.iter().any(|c| *c == comm)
                    || (!cmdline.is_empty() && group.cmdline.iter().any(|p| p.is_match(&cmdline)))
            }) else {
                continue;
            };
            let Some((user, system_ticks)) = cpu_ticks(&self.proc, process.pid().as_u32()) else {
                continue; // exited since the listing
            };
            let group = &mut totals[index];
            group.count += 1;
            group.user_seconds += user / self.ticks_per_second;
            group.system_seconds += system_ticks / self.ticks_per_second;
            group.resident_bytes += process.memory();
            group.virtual_bytes += process.virtual_memory();
            let start = process.start_time();
            group.oldest_start = Some(group.oldest_start.map_or(start, |o| o.min(start)));
        }
        let names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        Ok(families(&names, &totals))
    }
}

fn cpu_ticks(proc: &std::path::Path, pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    parse_stat_cpu(&text)
}

/// utime and stime (fields 14 and 15) of /proc/<pid>/stat, in clock ticks. The command name
/// in parentheses may hold spaces and parentheses, so counting starts after the last ')'.
pub fn parse_stat_cpu(text: &str) -> Option<(f64, f64)> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// process-exporter's families; every configured group appears, with 0 processes when none
/// runs, so an alert on `num_procs == 0` sees it.
pub fn families(names: &[&str], totals: &[GroupTotals]) -> Vec<Family> {
    let mut count = FamilyBuilder::gauge(
        "namedprocess_namegroup_num_procs",
        "number of processes in this group",
    );
    let mut cpu = FamilyBuilder::counter(
        "namedprocess_namegroup_cpu_seconds_total",
        "Cpu user usage in seconds",
    );
    let mut memory = FamilyBuilder::gauge(
        "namedprocess_namegroup_memory_bytes",
        "number of bytes of memory in use",
    );
    let mut oldest = FamilyBuilder::gauge(
        "namedprocess_namegroup_oldest_start_time_seconds",
        "start time in seconds since 1970/01/01 of oldest process in group",
    );
    for (name, group) in names.iter().zip(totals) {
        let label = ("groupname", *name);
        count.sample(&[label], group.count as f64);
        cpu.sample(&[label, ("mode", "user")], group.user_seconds);
        cpu.sample(&[label, ("mode", "system")], group.system_seconds);
        memory.sample(
            &[label, ("memtype", "resident")],
            group.resident_bytes as f64,
        );
        memory.sample(&[label, ("memtype", "virtual")], group.virtual_bytes as f64);
        oldest.sample(&[label], group.oldest_start.unwrap_or(0) as f64);
    }
    vec![count.build(), cpu.build(), memory.build(), oldest.build()]
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    fn group(name: &str, comm: &[&str], cmdline: &[&str]) -> ProcessGroupConfig {
        ProcessGroupConfig {
            name: name.to_owned(),
            comm: comm.iter().map(|c| (*c).to_owned()).collect(),
            cmdline: cmdline.iter().map(|p| Pattern::new(p).unwrap()).collect(),
        }
    }

    fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
        families
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .samples
            .iter()
            .find(|s| labels.iter().all(|(k, v)| s.labels[*k] == *v))
            .unwrap()
            .value
    }

    #[test]
    fn parses_cpu_ticks_after_the_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 \
                    12345 1000 100 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some((250.0, 30.0)));
        assert_eq!(parse_stat_cpu("1 (x) S 1"), None);
    }

    #[test]
    fn counts_sleep_processes_two_then_zero() {
        let paths = Paths {
            proc: PathBuf::from("/proc"),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        };
        let groups = [
            group(
                "sleepers",
                &[],
                &[&format!("^sleep 3600\\.{}", std::process::id())],
            ),
            group("nothing", &["no-such-process"], &[]),
        ];
        let mut processes = Processes::new(&groups, &paths);
        let spawn = || -> Child {
            Command::new("sleep")
                .arg(format!("3600.{}", std::process::id()))
                .spawn()
                .unwrap()
        };
        let mut children = [spawn(), spawn()];
        let families = processes.collect().unwrap();
        let sleepers = [("groupname", "sleepers")];
        assert_eq!(
            value(&families, "namedprocess_namegroup_num_procs", &sleepers),
            2.0
        );
        assert!(
            value(
                &families,
                "namedprocess_namegroup_memory_bytes",
                &[("groupname", "sleepers"), ("memtype", "resident")]
            ) > 0.0
        );
        assert!(
            value(
                &families,
                "namedprocess_namegroup_oldest_start_time_seconds",
                &sleepers
            ) > 1.7e9
        );
        assert_eq!(
            value(
                &families,
                "namedprocess_namegroup_num_procs",
                &[("groupname", "nothing")]
            ),
            0.0
        );
        for child in &mut children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let families = processes.collect().unwrap();
        assert_eq!(
            value(&families, "namedprocess_namegroup_num_procs", &sleepers),
            0.0
        );
    }

    #[test]
    fn validate_names_the_group() {
        assert!(validate(&[group("db", &["postgres"], &[])]).is_ok());
        let error = validate(&[
            group("db", &["postgres"], &[]),
            group("db", &["mysqld"], &[]),
        ])
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "host.processes[1].name: 'db' names another group too"
        );
        let error = validate(&[group("web", &[], &[])]).unwrap_err();
        assert!(
            error.to_string().starts_with("host.processes[0]: 'web'"),
            "{error}"
        );
    }
}
