//! node_exporter's `vmstat` collector with its default field set
//! (`^(oom_kill|pgpg|pswp|pg.*fault).*`): `node_vmstat_<field>` from /proc/vmstat.
//!
//! node_exporter declares these untyped, and so do we.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `vmstat` collector.
pub struct Vmstat {
    path: PathBuf,
}

impl Vmstat {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("vmstat"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let fields =
            parse_vmstat(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        Ok(fields
            .into_iter()
            .map(|(name, value)| {
                FamilyBuilder::untyped(
                    &format!("node_vmstat_{name}"),
                    &format!("/proc/vmstat information field {name}."),
                )
                .single(value)
            })
            .collect())
    }
}

/// node_exporter's default `--collector.vmstat.fields`, without a regex engine.
pub fn is_default_field(name: &str) -> bool {
    name.starts_with("oom_kill")
        || name.starts_with("pgpg")
        || name.starts_with("pswp")
        || name
            .strip_prefix("pg")
            .is_some_and(|rest| rest.contains("fault"))
}

/// The default fields of /proc/vmstat (`name value` lines) in file order.
pub fn parse_vmstat(text: &str) -> Result<Vec<(&str, f64)>, String> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        if !is_default_field(name) {
            continue;
        }
        let value = value
            .trim()
            .parse()
            .map_err(|error| format!("field {name} '{value}': {error}"))?;
        fields.push((name, value));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_node_exporters_default_fields() {
        let text = "nr_free_pages 1\npgpgin 2\npgpgout 3\npswpin 4\npswpout 5\npgfault 6\n\
                    pgmajfault 7\npgrefill 8\noom_kill 9\nthp_fault_alloc 10\n";
        let names: Vec<_> = parse_vmstat(text).unwrap().iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "pgpgin",
                "pgpgout",
                "pswpin",
                "pswpout",
                "pgfault",
                "pgmajfault",
                "oom_kill"
            ]
        );
        assert!(parse_vmstat("pgfault x\n").is_err());
    }
}
