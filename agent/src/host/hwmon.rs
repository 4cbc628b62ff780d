//! node_exporter's `hwmon` collector: sensors from /sys/class/hwmon (temperatures, voltages,
//! fans, currents, power) as `node_hwmon_<type>[_<element>]_<unit>{chip,sensor}`, with the
//! chip named by its device path as node_exporter names it (`platform_coretemp_0`), so the
//! name survives module load order. A machine without hwmon (most VMs) has no data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths, list_dir, read_attribute};

/// The `hwmon` collector.
pub struct Hwmon {
    dir: PathBuf,
}

impl Hwmon {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.sys.join("class/hwmon"),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut families: BTreeMap<String, FamilyBuilder> = BTreeMap::new();
        let mut chip_names = FamilyBuilder::gauge(
            "node_hwmon_chip_names",
            "Annotation metric for human-readable chip names",
        );
        let mut sensor_labels =
            FamilyBuilder::gauge("node_hwmon_sensor_label", "Label for given chip and sensor");
        for (_, dir) in list_dir(&self.dir, "hwmon")? {
            let chip = chip_name(&dir);
            if let Some(name) = read_attribute(&dir.join("name")) {
                chip_names.sample(&[("chip", &chip), ("chip_name", &name)], 1.0);
            }
            for (file, path) in list_dir(&dir, "").unwrap_or_default() {
                let Some((kind, sensor, element)) = split_sensor_file(&file) else {
                    continue;
                };
                let Some(value) = read_attribute(&path) else {
                    continue;
                };
                let labels = [("chip", chip.as_str()), ("sensor", sensor)];
                if element == "label" {
                    sensor_labels.sample(
                        &[("chip", &chip), ("label", &value), ("sensor", sensor)],
                        1.0,
                    );
                    continue;
                }
                let Some((name, help, scale)) = metric(kind, element) else {
                    continue;
                };
                let Ok(raw) = value.parse::<f64>() else {
                    continue;
                };
                families
                    .entry(name.clone())
                    .or_insert_with(|| FamilyBuilder::gauge(&name, &help))
                    .sample(&labels, raw * scale);
            }
        }
        let mut out = vec![chip_names.build(), sensor_labels.build()];
        out.extend(families.into_values().map(FamilyBuilder::build));
        Ok(out.into_iter().filter(|f| !f.samples.is_empty()).collect())
    }
}

/// `temp1_crit_alarm` → (`temp`, `temp1`, `crit_alarm`).
pub fn split_sensor_file(file: &str) -> Option<(&str, &str, &str)> {
    let (sensor, element) = file.split_once('_')?;
    let kind_end = sensor.find(|c: char| c.is_ascii_digit())?;
    let kind = &sensor[..kind_end];
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) || element.is_empty() {
        return None;
    }
    Some((kind, sensor, element))
}

/// node_exporter's name, help and scale for one sensor element; `None` for types it does not
/// export here.
pub fn metric(kind: &str, element: &str) -> Option<(String, String, f64)> {
    let (unit, what, scale) = match kind {
        "temp" => ("celsius", "temperature", 0.001),
        "in" | "cpu" => ("volts", "voltage", 0.001),
        "curr" => ("amps", "current", 0.001),
        "power" => ("watt", "power", 0.000_001),
        "fan" => ("rpm", "fan speed", 1.0),
        _ => return None,
    };
    let clean = element.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    // Alarm, fault and beep flags carry no unit.
    if matches!(element, "alarm" | "fault" | "beep") {
        let suffix = if element == "beep" {
            "beep_enabled"
        } else {
            element
        };
        return Some((
            format!("node_hwmon_{kind}_{suffix}"),
            format!("Hardware sensor {element} status ({kind})"),
            1.0,
        ));
    }
    let name = if element == "input" {
        format!("node_hwmon_{kind}_{unit}")
    } else {
        format!("node_hwmon_{kind}_{clean}_{unit}")
    };
    let scale = if element.ends_with("alarm") {
        1.0
    } else {
        scale
    };
    Some((
        name,
        format!("Hardware monitor for {what} ({element})"),
        scale,
    ))
}

/// node_exporter's `hwmonName`: `<bus>_<device>` from the device link, else the `name` file,
/// else the hwmon directory's own name; lower case, other characters as `_`.
pub fn chip_name(dir: &Path) -> String {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let name = device.file_name().map(|n| clean(&n.to_string_lossy()));
        let bus = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean(&n.to_string_lossy()));
        match (bus, name) {
            (Some(bus), Some(name)) if !bus.is_empty() && !name.is_empty() => {
                return format!("{bus}_{name}");
            }
            (_, Some(name)) if !name.is_empty() => return name,
            _ => {}
        }
    }
    if let Some(name) = read_attribute(&dir.join("name"))
        .map(|n| clean(&n))
        .filter(|n| !n.is_empty())
    {
        return name;
    }
    clean(
        &dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

fn clean(name: &str) -> String {
    name.to_lowercase()
        .replace(
            |c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_'),
            "_",
        )
        .trim_matches('_')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(sys: PathBuf) -> Paths {
        Paths {
            proc: sys.clone(),
            rootfs: sys.clone(),
            sys,
        }
    }

    fn value(families: &[Family], name: &str) -> f64 {
        families.iter().find(|f| f.name == name).unwrap().samples[0].value
    }

    #[test]
    fn reads_sensors_with_node_exporters_names() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sys");
        let families = Hwmon::new(&paths(testdata)).collect().unwrap();
        assert_eq!(value(&families, "node_hwmon_temp_celsius"), 55.0);
        assert_eq!(value(&families, "node_hwmon_temp_crit_celsius"), 100.0);
        assert_eq!(value(&families, "node_hwmon_temp_crit_alarm_celsius"), 0.0);
        assert_eq!(value(&families, "node_hwmon_in_volts"), 1.104);
        assert_eq!(value(&families, "node_hwmon_fan_rpm"), 1200.0);
        let temp = families
            .iter()
            .find(|f| f.name == "node_hwmon_temp_celsius")
            .unwrap();
        assert_eq!(temp.samples[0].labels["chip"], "platform_coretemp_0");
        assert_eq!(temp.samples[0].labels["sensor"], "temp1");
        assert_eq!(temp.help, "Hardware monitor for temperature (input)");
        let label = families
            .iter()
            .find(|f| f.name == "node_hwmon_sensor_label")
            .unwrap();
        assert_eq!(label.samples[0].labels["label"], "Package id 0");
        let chip = families
            .iter()
            .find(|f| f.name == "node_hwmon_chip_names")
            .unwrap();
        assert_eq!(chip.samples[0].labels["chip_name"], "coretemp");
    }

    #[test]
    fn a_machine_without_hwmon_has_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let error = Hwmon::new(&paths(dir.path().to_owned()))
            .collect()
            .unwrap_err();
        assert!(matches!(error, CollectError::NoData(_)), "{error}");
    }

    #[test]
    fn splits_sensor_files() {
        assert_eq!(
            split_sensor_file("temp1_crit_alarm"),
            Some(("temp", "temp1", "crit_alarm"))
        );
        assert_eq!(split_sensor_file("in0_input"), Some(("in", "in0", "input")));
        assert_eq!(split_sensor_file("name"), None);
        assert_eq!(split_sensor_file("uevent"), None);
    }
}
