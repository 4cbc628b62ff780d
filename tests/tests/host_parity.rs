//! The host role against node_exporter 1.5 on the same machine, through the real agent and
//! collector: every node_* family node_exporter exposes with the same collectors is there under
//! the same name, type and label names, and values that do not move (uname, OS, MTUs, file
//! descriptor maximum, the disk and interface sets, a textfile's metric) are equal. Plus the
//! textfile and processes collectors end to end.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::Duration;

use pantau_tests::{Agent, ChildGuard, Collector, TestDir, free_port, http_get, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The agent's default collectors, all of which node_exporter 1.5 has too.
const COLLECTORS: [&str; 20] = pantau_tests::NODE_EXPORTER_COLLECTORS;

/// Families whose every series must be the same in both (label sets, not values).
const SAME_SERIES: [&str; 9] = [
    "node_uname_info",
    "node_os_info",
    "node_os_version",
    "node_network_info",
    "node_network_up",
    "node_network_mtu_bytes",
    "node_disk_reads_completed_total",
    "node_disk_info",
    "node_time_clocksource_current_info",
];

/// Families whose values must be equal too.
const SAME_VALUES: [&str; 6] = [
    "node_os_version",
    "node_network_mtu_bytes",
    "node_filefd_maximum",
    "node_entropy_pool_size_bits",
    "backup_last_success_timestamp_seconds",
    "node_textfile_scrape_error",
];

const BACKUP: &str = "# HELP backup_last_success_timestamp_seconds Last good backup.\n\
# TYPE backup_last_success_timestamp_seconds gauge\n\
backup_last_success_timestamp_seconds{job=\"nightly\",target=\"nas\"} 1.8e+09\n";

/// One family of an exposition: its type and its series (labels without the collector's
/// `instance` and `site`) with their values.
#[derive(Debug, Default)]
struct Exposed {
    kind: String,
    series: BTreeMap<BTreeMap<String, String>, f64>,
}

impl Exposed {
    fn label_names(&self) -> BTreeSet<&str> {
        self.series
            .keys()
            .flat_map(|labels| labels.keys().map(String::as_str))
            .collect()
    }
}

fn parse_exposition(text: &str) -> BTreeMap<String, Exposed> {
    let mut families: BTreeMap<String, Exposed> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, value) = parse_line(line);
        let labels = labels
            .into_iter()
            .filter(|(k, _)| k != "instance" && k != "site")
            .collect();
        families
            .entry(name)
            .or_default()
            .series
            .insert(labels, value);
    }
    families
}

fn parse_line(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let end = line.find(['{', ' ']).expect("sample line");
    let name = line[..end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next().expect("label set ends");
            match c {
                '}' => {
                    rest = &after[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("label value ends").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next().expect("value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or(f64::NAN),
    };
    (name, labels, value)
}

fn node_exporter(dir: &TestDir, textfile_dir: &str) -> (ChildGuard, String) {
    let port = free_port();
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--collector.disable-defaults".to_owned(),
        "--no-collector.netdev.netlink".to_owned(),
        "--collector.netdev.device-exclude=".to_owned(),
        // Debian's package narrows this; the agent keeps upstream's default.
        "--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)".to_owned(),
        "--collector.textfile".to_owned(),
        format!("--collector.textfile.directory={textfile_dir}"),
    ];
    args.extend(COLLECTORS.iter().map(|c| format!("--collector.{c}")));
    let guard = ChildGuard::spawn(
        "node_exporter",
        Command::new("prometheus-node-exporter").args(&args),
        dir.path(),
    );
    (guard, format!("http://127.0.0.1:{port}/metrics"))
}

fn scrape(url: &str) -> String {
    wait_until("node_exporter to serve /metrics", WAIT, || {
        match http_get(url) {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    })
}

/// The agent's config: the example server config's host section plus a textfile directory
/// and a watched process group.
fn agent_config(dir: &TestDir, textfile_dir: &str, marker: &str) -> String {
    let collectors: Vec<String> = COLLECTORS.iter().map(|c| format!("\"{c}\"")).collect();
    dir.write(
        "agent.toml",
        format!(
            "[agent]\nsite = \"dc\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n[host]\n\
             collectors = [{}]\n\n[host.textfile]\ndirectory = \"{textfile_dir}\"\n\n\
             [[host.processes]]\nname = \"sleepers\"\ncmdline = [\"^sleep {marker}$\"]\n",
            collectors.join(", ")
        ),
    )
    .display()
    .to_string()
}

#[test]
fn host_families_match_node_exporter() {
    let dir = TestDir::new();
    let textfile_dir = dir.join("textfile");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    dir.write("textfile/backup.prom", BACKUP);
    dir.write(
        "textfile/broken.prom",
        "certificate_days_left{name=\"x\" 30\n",
    );
    let textfile_dir = textfile_dir.display().to_string();

    let collector = Collector::embedded(&dir);
    let config = agent_config(&dir, &textfile_dir, "3600.1");
    let agent = Agent::start_config(
        &dir,
        &config,
        "dc-srv-09",
        "dc",
        &collector.broker_url(),
        1,
        &[],
    );
    collector.wait_for_sample(
        r#"node_textfile_scrape_error{instance="dc-srv-09",site="dc"}"#,
        WAIT,
        |_| true,
    );
    let (_exporter, url) = node_exporter(&dir, &textfile_dir);
    let theirs = parse_exposition(&scrape(&url));
    // The collector serves this one agent's series (and its own pantau_*), so dropping the
    // instance and site labels leaves what the agent sent.
    let ours = parse_exposition(&collector.metrics());
    drop(agent);

    let mut problems = Vec::new();
    let mut compared = 0;
    for (name, their) in &theirs {
        if !name.starts_with("node_") || name == "node_exporter_build_info" {
            continue;
        }
        let Some(our) = ours.get(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        compared += 1;
        let their_kind = their.kind.as_str();
        if our.kind != their_kind {
            problems.push(format!(
                "{name}: type {} instead of {}",
                our.kind, their.kind
            ));
        }
        if our.label_names() != their.label_names() {
            problems.push(format!(
                "{name}: labels {:?} instead of {:?}",
                our.label_names(),
                their.label_names()
            ));
        }
    }
    for name in ours.keys() {
        if name.starts_with("node_") && !theirs.contains_key(name) {
            problems.push(format!("{name}: not in node_exporter's output"));
        }
    }
    for name in SAME_SERIES {
        let (Some(our), Some(their)) = (ours.get(name), theirs.get(name)) else {
            continue; // reported above
        };
        let our_series: BTreeSet<_> = our.series.keys().collect();
        let their_series: BTreeSet<_> = their.series.keys().collect();
        if our_series != their_series {
            problems.push(format!(
                "{name}: series {our_series:?} instead of {their_series:?}"
            ));
        }
    }
    for name in SAME_VALUES {
        let (Some(our), Some(their)) = (ours.get(name), theirs.get(name)) else {
            problems.push(format!("{name}: missing on one side"));
            continue;
        };
        if our.series != their.series {
            problems.push(format!(
                "{name}: {:?} instead of {:?}",
                our.series, their.series
            ));
        }
    }
    eprintln!("compared {compared} node_* families with node_exporter's");
    // Six collectors gave about 40 families; the new ones bring well over 100 more here.
    assert!(compared > 120, "only {compared} families compared");
    assert!(
        problems.is_empty(),
        "{} differences from node_exporter:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The malformed file made the error and exported nothing.
    assert_eq!(
        ours["node_textfile_scrape_error"].series.values().next(),
        Some(&1.0)
    );
    assert!(!ours.contains_key("certificate_days_left"));
}

#[test]
fn watched_processes_count_two_then_zero() {
    let dir = TestDir::new();
    let textfile_dir = dir.join("textfile");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let marker = format!("3600.{}", std::process::id());
    let config = agent_config(&dir, &textfile_dir.display().to_string(), &marker);
    let collector = Collector::embedded(&dir);
    let _agent = Agent::start_config(
        &dir,
        &config,
        "dc-srv-10",
        "dc",
        &collector.broker_url(),
        1,
        &[],
    );
    let series =
        r#"namedprocess_namegroup_num_procs{groupname="sleepers",instance="dc-srv-10",site="dc"}"#;
    collector.wait_for_sample(series, WAIT, |v| v == 0.0);

    let spawn = || -> Child { Command::new("sleep").arg(&marker).spawn().expect("sleep") };
    let mut sleepers = [spawn(), spawn()];
    collector.wait_for_sample(series, WAIT, |v| v == 2.0);
    let oldest = r#"namedprocess_namegroup_oldest_start_time_seconds{groupname="sleepers",instance="dc-srv-10",site="dc"}"#;
    assert!(collector.sample(oldest).is_some_and(|v| v > 1.7e9));
    for sleeper in &mut sleepers {
        sleeper.kill().expect("kill sleep");
        sleeper.wait().expect("reap sleep");
    }
    collector.wait_for_sample(series, WAIT, |v| v == 0.0);
}
