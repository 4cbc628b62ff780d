//! node_exporter's `meminfo` collector: every /proc/meminfo field as `node_memory_<Field>`,
//! with `_bytes` and the value in bytes for the fields the kernel gives in kB.
//!
//! The set of fields differs between kernels and is not listed here: whatever the kernel
//! prints is reported, under the name node_exporter derives from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pantau_protocol::{Family, validate_metric_name};
use tracing::debug;

use super::{CollectError, FamilyBuilder, Paths};

/// The `meminfo` collector.
pub struct Meminfo {
    path: PathBuf,
}

impl Meminfo {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("meminfo"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let fields =
            parse_meminfo(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        Ok(families(&fields))
    }
}

/// Maps each field to its node_exporter key and value: `Active(anon):  1524 kB` becomes
/// `Active_anon_bytes` = 1560576, `HugePages_Total:  0` stays `HugePages_Total` = 0.
pub fn parse_meminfo(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        // Some kernels (CentOS 6) print empty lines; node_exporter skips them too.
        let Some((&name, rest)) = parts.split_first() else {
            continue;
        };
        let Some(value) = rest.first() else {
            return Err(format!("invalid line in meminfo: '{line}'"));
        };
        let value: f64 = value
            .parse()
            .map_err(|error| format!("invalid value in meminfo line '{line}': {error}"))?;
        let key = sanitize(name.strip_suffix(':').unwrap_or(name));
        // The kernel's only unit is kB, whatever the line says; node_exporter presumes it too.
        let (key, value) = match rest.len() {
            1 => (key, value),
            2 => (format!("{key}_bytes"), value * 1024.0),
            _ => return Err(format!("invalid line in meminfo: '{line}'")),
        };
        fields.insert(key, value);
    }
    Ok(fields)
}

/// node_exporter's rewrite of `\((.*)\)` to `_$1`: `Active(anon)` becomes `Active_anon`. The
/// match runs from the first `(` to the last `)`, as the greedy pattern does.
fn sanitize(name: &str) -> String {
    let open = name.find('(');
    let close = name.rfind(')');
    match (open, close) {
        (Some(open), Some(close)) if open < close => format!(
            "{}_{}{}",
            &name[..open],
            &name[open + 1..close],
            &name[close + 1..]
        ),
        _ => name.to_owned(),
    }
}

fn families(fields: &BTreeMap<String, f64>) -> Vec<Family> {
    let mut families = Vec::with_capacity(fields.len());
    for (key, &value) in fields {
        let name = format!("node_memory_{key}");
        // A field with characters Prometheus refuses would make the collector reject the
        // whole message; node_exporter would fail the scrape. Dropping the one field is kinder.
        if validate_metric_name(&name).is_err() {
            debug!(field = %key, "skipping meminfo field that is not a valid metric name");
            continue;
        }
        let help = format!("Memory information field {key}.");
        // No Linux field ends in `_total` today; node_exporter's rule is kept for when one does.
        let builder = if key.ends_with("_total") {
            FamilyBuilder::counter(&name, &help)
        } else {
            FamilyBuilder::gauge(&name, &help)
        };
        families.push(builder.single(value));
    }
    families
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use pantau_protocol::MetricKind;

    use super::*;

    const MEMINFO: &str = "\
MemTotal:       24684084 kB
Active(anon):       1524 kB
Inactive(file):    49688 kB

HugePages_Total:       2
Hugepagesize:       2048 kB
";

    #[test]
    fn names_and_scales_fields_like_node_exporter() {
        let fields = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(fields["MemTotal_bytes"], 24_684_084.0 * 1024.0);
        assert_eq!(fields["Active_anon_bytes"], 1524.0 * 1024.0);
        assert_eq!(fields["Inactive_file_bytes"], 49688.0 * 1024.0);
        assert_eq!(fields["HugePages_Total"], 2.0);
        assert_eq!(fields["Hugepagesize_bytes"], 2_097_152.0);
        assert_eq!(fields.len(), 5);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_meminfo("MemTotal:\n").is_err());
        assert!(parse_meminfo("MemTotal: many kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 kB extra\n").is_err());
    }

    #[test]
    fn sanitizes_parentheses_greedily() {
        assert_eq!(sanitize("Active(anon)"), "Active_anon");
        assert_eq!(sanitize("MemTotal"), "MemTotal");
        assert_eq!(sanitize("A(b)(c)"), "A_b)(c");
    }

    #[test]
    fn families_carry_node_exporter_help_and_type() {
        let families = families(&parse_meminfo(MEMINFO).unwrap());
        let active = families
            .iter()
            .find(|f| f.name == "node_memory_Active_anon_bytes")
            .unwrap();
        assert_eq!(active.help, "Memory information field Active_anon_bytes.");
        assert_eq!(active.kind, MetricKind::Gauge);
        assert!(
            families
                .iter()
                .any(|f| f.name == "node_memory_HugePages_Total")
        );
    }

    #[test]
    fn invalid_names_are_skipped() {
        let fields = parse_meminfo("Odd-Field: 1 kB\nMemFree: 2 kB\n").unwrap();
        let families = families(&fields);
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].name, "node_memory_MemFree_bytes");
    }

    #[test]
    fn collect_reads_the_proc_dir() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
        let paths = Paths {
            proc: fixture.clone(),
            rootfs: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
        };
        let families = Meminfo::new(&paths).collect().unwrap();
        assert_eq!(families.len(), 54);
        let total = families
            .iter()
            .find(|f| f.name == "node_memory_MemTotal_bytes")
            .unwrap();
        assert_eq!(total.samples[0].value, 24_684_084.0 * 1024.0);
    }
}
