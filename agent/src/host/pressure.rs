//! node_exporter's `pressure` collector: pressure stall information (PSI) from /proc/pressure,
//! total stall time in seconds. A kernel without PSI (before 4.20, or `CONFIG_PSI=n`) has no
//! /proc/pressure: that is no data, not a failure.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// The `pressure` collector.
pub struct Pressure {
    dir: PathBuf,
}

/// `some` and `full` totals of one resource, in seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stall {
    pub some: Option<f64>,
    pub full: Option<f64>,
}

impl Pressure {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.proc.join("pressure"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut families = Vec::new();
        for resource in ["cpu", "io", "memory"] {
            let path = self.dir.join(resource);
            let text = match CollectError::read_proc(&path) {
                Ok(text) => text,
                Err(CollectError::NoData(_)) => {
                    return Err(CollectError::NoData(
                        "pressure information is unavailable, you need a Linux kernel >= 4.20 \
                         and/or CONFIG_PSI"
                            .to_owned(),
                    ));
                }
                Err(error) => return Err(error),
            };
            let stall = parse_psi(&text).map_err(|detail| CollectError::parse(&path, detail))?;
            let waiting = stall.some.unwrap_or(0.0);
            match resource {
                "cpu" => families.push(
                    FamilyBuilder::counter(
                        "node_pressure_cpu_waiting_seconds_total",
                        "Total time in seconds that processes have waited for CPU time",
                    )
                    .single(waiting),
                ),
                "io" => {
                    families.push(
                        FamilyBuilder::counter(
                            "node_pressure_io_waiting_seconds_total",
                            "Total time in seconds that processes have waited due to IO congestion",
                        )
                        .single(waiting),
                    );
                    families.push(
                        FamilyBuilder::counter(
                            "node_pressure_io_stalled_seconds_total",
                            "Total time in seconds no process could make progress due to IO congestion",
                        )
                        .single(stall.full.unwrap_or(0.0)),
                    );
                }
                _ => {
                    families.push(
                        FamilyBuilder::counter(
                            "node_pressure_memory_waiting_seconds_total",
                            "Total time in seconds that processes have waited for memory",
                        )
                        .single(waiting),
                    );
                    families.push(
                        FamilyBuilder::counter(
                            "node_pressure_memory_stalled_seconds_total",
                            "Total time in seconds no process could make progress due to memory congestion",
                        )
                        .single(stall.full.unwrap_or(0.0)),
                    );
                }
            }
        }
        Ok(families)
    }
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=973961689` lines (total in
/// microseconds) into seconds.
pub fn parse_psi(text: &str) -> Result<Stall, String> {
    let mut stall = Stall::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let total = fields
            .find_map(|field| field.strip_prefix("total="))
            .ok_or_else(|| format!("no total in '{line}'"))?;
        let micros: u64 = total
            .parse()
            .map_err(|error| format!("total '{total}': {error}"))?;
        let seconds = micros as f64 / 1_000_000.0;
        match kind {
            "some" => stall.some = Some(seconds),
            "full" => stall.full = Some(seconds),
            other => return Err(format!("unknown kind '{other}'")),
        }
    }
    Ok(stall)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_some_and_full_in_seconds() {
        let text = "some avg10=0.00 avg60=0.10 avg300=0.00 total=34795205\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=19141082\n";
        let stall = parse_psi(text).unwrap();
        assert_eq!(stall.some, Some(34.795205));
        assert_eq!(stall.full, Some(19.141082));
        assert!(parse_psi("some avg10=0.00\n").is_err());
    }

    #[test]
    fn collect_reads_the_fixture() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: fixture.join("proc"),
            rootfs: fixture.clone(),
            sys: fixture.join("sys"),
        };
        let families = Pressure::new(&paths).collect().unwrap();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "node_pressure_cpu_waiting_seconds_total");
        assert_eq!(families[2].samples[0].value, 19.141082);
    }

    #[test]
    fn a_kernel_without_psi_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            proc: dir.path().to_owned(),
            rootfs: dir.path().to_owned(),
            sys: dir.path().to_owned(),
        };
        let error = Pressure::new(&paths).collect().unwrap_err();
        assert!(matches!(error, CollectError::NoData(_)), "{error}");
    }
}
