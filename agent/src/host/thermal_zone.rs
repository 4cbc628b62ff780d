//! node_exporter's `thermal_zone` collector: zone temperatures and cooling device states from
//! /sys/class/thermal. A machine without any (most VMs) has no data; that is not an error.

use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths, list_dir, read_attribute};

/// The `thermal_zone` collector.
pub struct ThermalZone {
    dir: PathBuf,
}

impl ThermalZone {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.sys.join("class/thermal"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut temp =
            FamilyBuilder::gauge("node_thermal_zone_temp", "Zone temperature in Celsius");
        for (name, dir) in list_dir(&self.dir, "thermal_zone")? {
            let zone = &name["thermal_zone".len()..];
            // A zone whose sensor cannot be read (EIO, EAGAIN while it wakes up) is skipped
            // alone, as node_exporter's procfs skips it.
            let (Some(kind), Some(millis)) = (
                read_attribute(&dir.join("type")),
                read_attribute(&dir.join("temp")).and_then(|t| t.parse::<f64>().ok()),
            ) else {
                continue;
            };
            temp.sample(&[("type", &kind), ("zone", zone)], millis / 1000.0);
        }
        let mut current = FamilyBuilder::gauge(
            "node_cooling_device_cur_state",
            "Current throttle state of the cooling device",
        );
        let mut maximum = FamilyBuilder::gauge(
            "node_cooling_device_max_state",
            "Maximum throttle state of the cooling device",
        );
        for (name, dir) in list_dir(&self.dir, "cooling_device")? {
            let number = &name["cooling_device".len()..];
            let kind = read_attribute(&dir.join("type")).unwrap_or_default();
            let labels = [("name", number), ("type", kind.as_str())];
            let state =
                |file: &str| read_attribute(&dir.join(file)).and_then(|v| v.parse::<f64>().ok());
            if let (Some(cur), Some(max)) = (state("cur_state"), state("max_state")) {
                current.sample(&labels, cur);
                maximum.sample(&labels, max);
            }
        }
        Ok([temp.build(), current.build(), maximum.build()]
            .into_iter()
            .filter(|family| !family.samples.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn paths(sys: PathBuf) -> Paths {
        Paths {
            proc: sys.clone(),
            rootfs: sys.clone(),
            sys,
        }
    }

    #[test]
    fn reads_zones_and_cooling_devices() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sys");
        let families = ThermalZone::new(&paths(testdata)).collect().unwrap();
        assert_eq!(families[0].name, "node_thermal_zone_temp");
        let zone = &families[0].samples[0];
        assert_eq!(zone.labels["type"], "x86_pkg_temp");
        assert_eq!(zone.labels["zone"], "0");
        assert_eq!(zone.value, 47.0);
        assert_eq!(families[2].samples[0].value, 10.0);
        assert_eq!(families[1].samples[0].labels["type"], "Processor");
    }

    #[test]
    fn no_thermal_class_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let error = ThermalZone::new(&paths(dir.path().to_owned()))
            .collect()
            .unwrap_err();
        assert!(matches!(error, CollectError::NoData(_)), "{error}");
    }
}
