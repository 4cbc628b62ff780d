//! node_exporter's `entropy` collector: bits of entropy available and the pool size, from
//! /proc/sys/kernel/random.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `entropy` collector.
pub struct Entropy {
    available: PathBuf,
    pool_size: PathBuf,
}

impl Entropy {
    pub fn new(paths: &Paths) -> Self {
        let dir = paths.proc.join("sys/kernel/random");
        Self {
            available: dir.join("entropy_avail"),
            pool_size: dir.join("poolsize"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let available = read_number(&self.available)?;
        let pool_size = read_number(&self.pool_size)?;
        Ok(vec![
            FamilyBuilder::gauge("node_entropy_available_bits", "Bits of available entropy.")
                .single(available),
            FamilyBuilder::gauge("node_entropy_pool_size_bits", "Bits of entropy pool.")
                .single(pool_size),
        ])
    }
}

/// Reads a file holding one number, as /proc/sys files do.
pub fn read_number(path: &std::path::Path) -> Result<f64, CollectError> {
    let text = CollectError::read_proc(path)?;
    text.trim()
        .parse()
        .map_err(|error| CollectError::parse(path, format!("'{}': {error}", text.trim())))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn collect_reads_the_fixture() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: fixture.join("proc"),
            rootfs: fixture.clone(),
            sys: fixture.join("sys"),
        };
        let families = Entropy::new(&paths).collect().unwrap();
        assert_eq!(families[0].samples[0].value, 256.0);
        assert_eq!(families[1].name, "node_entropy_pool_size_bits");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "many\n").unwrap();
        let error = read_number(&dir.path().join("x")).unwrap_err();
        assert!(matches!(error, CollectError::Parse { .. }), "{error}");
    }
}
