//! node_exporter's `filefd` collector: allocated and maximum file descriptors from
//! /proc/sys/fs/file-nr.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `filefd` collector.
pub struct Filefd {
    path: PathBuf,
}

impl Filefd {
    pub fn new(paths: &Paths) -> Self {
        Self {
            path: paths.proc.join("sys/fs/file-nr"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let text = CollectError::read_proc(&self.path)?;
        let (allocated, maximum) =
            parse_file_nr(&text).map_err(|detail| CollectError::parse(&self.path, detail))?;
        Ok(vec![
            FamilyBuilder::gauge(
                "node_filefd_allocated",
                "File descriptor statistics: allocated.",
            )
            .single(allocated),
            FamilyBuilder::gauge(
                "node_filefd_maximum",
                "File descriptor statistics: maximum.",
            )
            .single(maximum),
        ])
    }
}

/// file-nr holds three numbers: allocated, allocated but unused (always 0 since 2.6), maximum.
pub fn parse_file_nr(text: &str) -> Result<(f64, f64), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [allocated, _unused, maximum] = fields[..] else {
        return Err(format!("expected 3 fields in '{}'", text.trim()));
    };
    let number = |field: &str| {
        field
            .parse::<f64>()
            .map_err(|error| format!("'{field}': {error}"))
    };
    Ok((number(allocated)?, number(maximum)?))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_allocated_and_maximum() {
        assert_eq!(
            parse_file_nr("1024\t0\t1631329\n").unwrap(),
            (1024.0, 1_631_329.0)
        );
        assert!(parse_file_nr("1024 0\n").is_err());
        assert!(parse_file_nr("a 0 1\n").is_err());
    }

    #[test]
    fn collect_reads_the_fixture() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: fixture.join("proc"),
            rootfs: fixture.clone(),
            sys: fixture.join("sys"),
        };
        let families = Filefd::new(&paths).collect().unwrap();
        assert_eq!(families[1].name, "node_filefd_maximum");
        assert_eq!(families[1].samples[0].value, 1_631_329.0);
    }
}
