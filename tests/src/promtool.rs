//! `promtool` checks: metric exposition lint, rule files, rule unit tests.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::run_with_timeout;

/// promtool runs offline and takes well under a second; this only bounds a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `promtool check metrics` on `text` (a `/metrics` exposition). `Err` holds promtool's output
/// when it finds a problem: it exits 3 for lint problems, printed on stderr one per line as
/// `x counter metrics should have "_total" suffix`, and 1 for text it cannot parse
/// (`error while linting: text format parsing error in line 1: ...`).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    promtool(&["check", "metrics"], text.as_bytes())
}

/// `promtool check metrics` on `text`, returning its lint findings one per line (empty when
/// clean). `Err` when promtool could not parse the text at all (exit 1) or failed otherwise.
pub fn promtool_metric_lints(text: &str) -> Result<Vec<String>, String> {
    let output = run_with_timeout(
        Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
        TIMEOUT,
    );
    match output.status.code() {
        Some(0) => Ok(Vec::new()),
        Some(3) => Ok(String::from_utf8_lossy(&output.stderr)
            .lines()
            .map(str::to_owned)
            .filter(|line| !line.is_empty())
            .collect()),
        _ => Err(format!(
            "promtool check metrics exited with {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        )),
    }
}

/// `promtool check rules PATH`: the rule file parses and its expressions are valid.
pub fn promtool_check_rules(path: &Path) -> Result<(), String> {
    promtool(
        &[OsStr::new("check"), OsStr::new("rules"), path.as_os_str()],
        b"",
    )
}

/// `promtool test rules PATH`: runs a rule unit-test file (`rule_files`, `tests` with
/// `input_series` and `alert_rule_test` / `promql_expr_test`).
pub fn promtool_test_rules(path: &Path) -> Result<(), String> {
    promtool(
        &[OsStr::new("test"), OsStr::new("rules"), path.as_os_str()],
        b"",
    )
}

fn promtool<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Result<(), String> {
    let output = run_with_timeout(Command::new("promtool").args(args), stdin, TIMEOUT);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "promtool {} exited with {}\n{}{}",
        args.iter()
            .map(|arg| arg.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}

/// The shipped dashboards/prometheus/prometheus.yml as `promtool check config` can check it on
/// a machine without an installed collector: copied with its rules into `dir`, the files it
/// reads from /etc/pantau (which promtool requires to exist) pointed at stand-ins in `dir`.
/// Returns the copy's path.
pub fn shipped_prometheus_config(dir: &Path) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/prometheus");
    let mut text = std::fs::read_to_string(shipped.join("prometheus.yml"))
        .expect("read the shipped prometheus.yml");
    for (from, file, contents) in [
        (
            "/etc/pantau/metrics-tokens",
            "metrics-tokens",
            "stand-in-token\n",
        ),
        ("/etc/pantau/tls/ca.pem", "ca.pem", ""),
    ] {
        assert!(text.contains(from), "prometheus.yml no longer reads {from}");
        let stand_in = dir.join(file);
        std::fs::write(&stand_in, contents).expect("write a stand-in");
        text = text.replace(from, &stand_in.display().to_string());
    }
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("create rules/");
    for entry in std::fs::read_dir(shipped.join("rules")).expect("read rules/") {
        let path = entry.expect("a rules/ entry").path();
        std::fs::copy(&path, rules.join(path.file_name().expect("a file name")))
            .expect("copy a rules file");
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, text).expect("write prometheus.yml");
    config
}
