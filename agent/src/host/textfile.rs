//! node_exporter's `textfile` collector: metrics from `*.prom` files in a directory, written by
//! cron jobs (backups, certificate checks), plus `node_textfile_mtime_seconds{file}` for every
//! file read and `node_textfile_scrape_error` (1 if any file could not be read or parsed).
//!
//! A file is all or nothing: one bad line, a client-side timestamp, or a family the agent
//! itself owns (a node_exporter name pinned by the collector, or `node_textfile_*`) and the
//! whole file is left out, as node_exporter leaves it out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use pantau_protocol::{Family, MetricKind, Sample, validate_label_name, validate_metric_name};
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use tracing::warn;

use super::{CollectError, FamilyBuilder};

/// `[host.textfile]`: where the `*.prom` files are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextfileConfig {
    /// Directory whose `*.prom` files are exported (node_exporter's
    /// `--collector.textfile.directory`). Writers should write to a temporary name and
    /// rename, so a half-written file is never read.
    pub directory: PathBuf,
}

impl TextfileConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.directory.is_absolute() {
            return Err(ConfigError::invalid(
                "host.textfile.directory",
                self.directory.display(),
                "must be an absolute path",
            ));
        }
        Ok(())
    }
}

/// The `textfile` collector.
pub struct Textfile {
    directory: Option<PathBuf>,
    /// The last error per file, so a broken file is logged once, not every round.
    last_errors: HashMap<PathBuf, String>,
}

impl Textfile {
    pub fn new(directory: Option<PathBuf>) -> Self {
        Self {
            directory,
            last_errors: HashMap::new(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let Some(directory) = self.directory.clone() else {
            return Err(CollectError::NoData("no directory configured".to_owned()));
        };
        let mut merged: BTreeMap<String, Family> = BTreeMap::new();
        let mut mtimes = FamilyBuilder::gauge(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
        );
        let mut failed = false;
        let mut seen = Vec::new();
        match prom_files(&directory) {
            Ok(files) => {
                for path in files {
                    seen.push(path.clone());
                    match read_file(&path, &merged) {
                        Ok((families, mtime)) => {
                            self.last_errors.remove(&path);
                            for family in families {
                                merged
                                    .entry(family.name.clone())
                                    .and_modify(|f| f.samples.extend(family.samples.clone()))
                                    .or_insert(family);
                            }
                            mtimes.sample(&[("file", &path.display().to_string())], mtime);
                        }
                        Err(error) => {
                            failed = true;
                            if self.last_errors.get(&path) != Some(&error) {
                                warn!(file = %path.display(), %error, "textfile left out");
                                self.last_errors.insert(path, error);
                            }
                        }
                    }
                }
            }
            Err(error) => {
                failed = true;
                let key = directory.clone();
                if self.last_errors.get(&key) != Some(&error) {
                    warn!(directory = %directory.display(), %error, "cannot read the textfile directory");
                    self.last_errors.insert(key, error);
                }
            }
        }
        self.last_errors
            .retain(|path, _| *path == directory || seen.contains(path));
        let mut families: Vec<Family> = merged.into_values().collect();
        let mtimes = mtimes.build();
        if !mtimes.samples.is_empty() {
            families.push(mtimes);
        }
        families.push(
            FamilyBuilder::gauge(
                "node_textfile_scrape_error",
                "1 if there was an error opening or reading a file, 0 otherwise",
            )
            .single(if failed { 1.0 } else { 0.0 }),
        );
        Ok(families)
    }
}

/// The directory's `*.prom` files, sorted.
fn prom_files(directory: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(directory).map_err(|error| error.to_string())?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "prom") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and checks one file against the families already taken from earlier files.
fn read_file(path: &Path, merged: &BTreeMap<String, Family>) -> Result<(Vec<Family>, f64), String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    let families = parse_textfile(&text, &format!("Metric read from {}", path.display()))?;
    for family in &families {
        if let Some(earlier) = merged.get(&family.name) {
            if earlier.kind != family.kind {
                return Err(format!(
                    "{} is a {:?} here but a {:?} in an earlier file",
                    family.name, family.kind, earlier.kind
                ));
            }
            for sample in &family.samples {
                if earlier.samples.iter().any(|s| s.labels == sample.labels) {
                    return Err(format!(
                        "{} repeats a series of an earlier file",
                        family.name
                    ));
                }
            }
        }
    }
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
    Ok((families, mtime))
}

/// Whether a file may define `name`: not the agent's own families.
fn is_reserved(name: &str) -> bool {
    pantau_protocol::pinned_kind(name).is_some()
        || name.starts_with("node_textfile_")
        || name.starts_with("pantau_")
}

/// Parses the Prometheus text format (counters, gauges, untyped), refusing what the
/// agent cannot carry or must not accept: histograms and summaries, timestamps, reserved
/// names, invalid names, repeated series.
pub fn parse_textfile(text: &str, default_help: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut declared: BTreeMap<String, (Option<MetricKind>, Option<String>)> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = |detail: String| format!("line {}: {detail}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, char::is_whitespace);
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    declared.entry(name.to_owned()).or_default().1 =
                        Some(unescape_help(help.unwrap_or_default().trim()));
                }
                (Some("TYPE"), Some(name), kind) => {
                    let kind = match kind.unwrap_or_default().trim() {
                        "counter" => MetricKind::Counter,
                        "gauge" => MetricKind::Gauge,
                        "untyped" => MetricKind::Untyped,
                        other => {
                            return Err(at(format!("type '{other}' of {name} is not supported")));
                        }
                    };
                    declared.entry(name.to_owned()).or_default().0 = Some(kind);
                }
                _ => {}
            }
            continue;
        }
        let (name, labels, rest) = parse_sample(line).map_err(at)?;
        let mut value_fields = rest.split_whitespace();
        let value = value_fields
            .next()
            .ok_or_else(|| at("no value".to_owned()))?;
        if value_fields.next().is_some() {
            return Err(at("client-side timestamps are not supported".to_owned()));
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .map_err(|error| at(format!("value '{other}': {error}")))?,
        };
        validate_metric_name(&name).map_err(|error| at(format!("{name}: {error}")))?;
        for label in labels.keys() {
            validate_label_name(label).map_err(|error| at(format!("{label}: {error}")))?;
        }
        if is_reserved(&name) {
            return Err(at(format!(
                "{name} is a built-in family and cannot come from a file"
            )));
        }
        let family = match families.iter_mut().position(|f| f.name == name) {
            Some(index) => &mut families[index],
            None => {
                let (kind, help) = declared.get(&name).cloned().unwrap_or_default();
                families.push(Family {
                    name: name.clone(),
                    kind: kind.unwrap_or(MetricKind::Gauge),
                    help: help.unwrap_or_else(|| default_help.to_owned()),
                    samples: Vec::new(),
                });
                families
                    .last_mut()
                    .ok_or_else(|| at("internal".to_owned()))?
            }
        };
        if family.samples.iter().any(|s| s.labels == labels) {
            return Err(at(format!("{name} repeats a series")));
        }
        if value.is_finite() {
            family.samples.push(Sample { labels, value });
        }
    }
    let names: BTreeSet<&str> = families.iter().map(|f| f.name.as_str()).collect();
    if let Some(orphan) = declared
        .keys()
        .find(|n| !names.contains(n.as_str()) && is_reserved(n))
    {
        return Err(format!(
            "{orphan} is a built-in family and cannot come from a file"
        ));
    }
    Ok(families)
}

/// `name{a="x",b="y"} rest` → name, labels, rest.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| format!("no value in '{line}'"))?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            while chars
                .next_if(|(_, c)| c.is_whitespace() || *c == ',')
                .is_some()
            {}
            match chars.peek() {
                Some((i, '}')) => {
                    rest = &after[i + 1..];
                    break;
                }
                None => return Err("unterminated label set".to_owned()),
                _ => {}
            }
            let mut label = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
                label.push(c);
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("expected '=' after label {label}"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("expected '\"' after {label}="));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".to_owned()),
                }
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label {label} given twice"));
            }
        }
    }
    Ok((name, labels, rest))
}

fn unescape_help(help: &str) -> String {
    help.replace("\\n", "\n").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const BACKUP: &str = "# HELP backup_last_success_timestamp_seconds Last good backup.\n\
# TYPE backup_last_success_timestamp_seconds gauge\n\
backup_last_success_timestamp_seconds{job=\"nightly\",target=\"nas\"} 1.8e9\n\
# TYPE backup_runs_total counter\n\
backup_runs_total 42\n\
cert_days_left{name=\"office \\\"main\\\"\"} 30\n";

    fn by_name<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
        families.iter().find(|f| f.name == name)
    }

    #[test]
    fn parses_types_help_and_labels() {
        let families = parse_textfile(BACKUP, "Metric read from x").unwrap();
        let backup = by_name(&families, "backup_last_success_timestamp_seconds").unwrap();
        assert_eq!(backup.help, "Last good backup.");
        assert_eq!(backup.samples[0].labels["target"], "nas");
        assert_eq!(
            by_name(&families, "backup_runs_total").unwrap().kind,
            MetricKind::Counter
        );
        let cert = by_name(&families, "cert_days_left").unwrap();
        assert_eq!(cert.kind, MetricKind::Gauge);
        assert_eq!(cert.help, "Metric read from x");
        assert_eq!(cert.samples[0].labels["name"], "office \"main\"");
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        for bad in [
            "x 1 1700000000000\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n",
            "x{a=\"1\" 1\n",
            "x{a=1} 1\n",
            "x one\n",
            "x{a=\"1\",a=\"2\"} 1\n",
            "x 1\nx 2\n",
            "0x 1\n",
            "node_load1 5\n",
            "node_memory_MemFree_bytes 1\n",
            "node_textfile_scrape_error 0\n",
        ] {
            assert!(parse_textfile(bad, "h").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_valid_file_is_exported_and_a_malformed_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("backup.prom"), BACKUP).unwrap();
        fs::write(dir.path().join("ignored.txt"), "not read 1\n").unwrap();
        let mut textfile = Textfile::new(Some(dir.path().to_owned()));
        let families = textfile.collect().unwrap();
        assert!(by_name(&families, "backup_runs_total").is_some());
        assert_eq!(
            by_name(&families, "node_textfile_scrape_error")
                .unwrap()
                .samples[0]
                .value,
            0.0
        );
        let mtime = by_name(&families, "node_textfile_mtime_seconds").unwrap();
        assert_eq!(mtime.samples.len(), 1);
        assert!(mtime.samples[0].labels["file"].ends_with("backup.prom"));
        assert!(mtime.samples[0].value > 1.7e9);

        fs::write(
            dir.path().join("certs.prom"),
            "tls_days_left{name=\"a\"} 30\nbroken{\n",
        )
        .unwrap();
        let families = textfile.collect().unwrap();
        assert_eq!(
            by_name(&families, "node_textfile_scrape_error")
                .unwrap()
                .samples[0]
                .value,
            1.0
        );
        assert!(by_name(&families, "tls_days_left").is_none());
        assert!(by_name(&families, "backup_runs_total").is_some());
        assert_eq!(
            by_name(&families, "node_textfile_mtime_seconds")
                .unwrap()
                .samples
                .len(),
            1
        );
    }

    #[test]
    fn a_built_in_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("evil.prom"),
            "# TYPE node_load1 counter\nnode_load1 99\n",
        )
        .unwrap();
        let families = Textfile::new(Some(dir.path().to_owned()))
            .collect()
            .unwrap();
        assert!(by_name(&families, "node_load1").is_none());
        assert_eq!(
            by_name(&families, "node_textfile_scrape_error")
                .unwrap()
                .samples[0]
                .value,
            1.0
        );
    }

    #[test]
    fn files_merge_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.prom"),
            "jobs_total{job=\"a\"} 1\n# TYPE jobs_total counter\n",
        )
        .unwrap();
        fs::write(dir.path().join("b.prom"), "jobs_total{job=\"b\"} 2\n").unwrap();
        fs::write(dir.path().join("c.prom"), "jobs_total{job=\"a\"} 3\n").unwrap();
        let families = Textfile::new(Some(dir.path().to_owned()))
            .collect()
            .unwrap();
        let jobs = by_name(&families, "jobs_total").unwrap();
        assert_eq!(jobs.samples.len(), 2);
        assert_eq!(
            by_name(&families, "node_textfile_scrape_error")
                .unwrap()
                .samples[0]
                .value,
            1.0
        );
    }

    #[test]
    fn a_missing_directory_is_a_scrape_error() {
        let mut textfile = Textfile::new(Some(PathBuf::from("/nonexistent/pantau-textfile")));
        let families = textfile.collect().unwrap();
        assert_eq!(
            by_name(&families, "node_textfile_scrape_error")
                .unwrap()
                .samples[0]
                .value,
            1.0
        );
    }
}
