//! node_exporter's `loadavg` collector: `node_load1`, `node_load5` and `node_load15` from
//! /proc/loadavg.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `loadavg` collector.
pub struct Loadavg {
    path: PathBuf,
}

impl Loadavg {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("loadavg"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let [load1, load5, load15] =
            parse_loadavg(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        Ok(vec![
            FamilyBuilder::gauge("node_load1", "1m load average.").single(load1),
            FamilyBuilder::gauge("node_load5", "5m load average.").single(load5),
            FamilyBuilder::gauge("node_load15", "15m load average.").single(load15),
        ])
    }
}

/// The 1, 5 and 15 minute load averages: the first three fields of /proc/loadavg (the rest
/// are run-queue and last-PID figures node_exporter does not report).
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let mut loads = [0.0; 3];
    let mut fields = text.split_whitespace();
    for load in &mut loads {
        let field = fields
            .next()
            .ok_or_else(|| format!("expected 3 load averages in '{}'", text.trim()))?;
        *load = field
            .parse()
            .map_err(|error| format!("could not parse load '{field}': {error}"))?;
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_the_first_three_fields() {
        assert_eq!(
            parse_loadavg("0.02 0.03 0.05 1/184 6765\n").unwrap(),
            [0.02, 0.03, 0.05]
        );
    }

    #[test]
    fn rejects_short_or_malformed_content() {
        assert!(parse_loadavg("0.02 0.03\n").is_err());
        let error = parse_loadavg("0.02 high 0.05 1/1 1").unwrap_err();
        assert!(error.starts_with("could not parse load 'high'"), "{error}");
    }

    #[test]
    fn collect_reads_the_proc_dir() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
        let paths = Paths {
            proc: fixture.clone(),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        };
        let families = Loadavg::new(&paths).collect().unwrap();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["node_load1", "node_load5", "node_load15"]);
        assert_eq!(families[2].samples[0].value, 0.59);
    }
}
