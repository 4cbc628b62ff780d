//! node_exporter's `time` collector: the system time, the local time zone's offset, and the
//! available and current clock sources from /sys/devices/system/clocksource.

use std::path::PathBuf;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths, list_dir, read_attribute};

/// The `time` collector.
pub struct Time {
    clocksource: PathBuf,
    zone: TimeZone,
}

impl Time {
    pub fn new(paths: &Paths) -> Self {
        Self {
            clocksource: paths.sys.join("devices/system/clocksource"),
            zone: TimeZone::system(),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let now = Timestamp::now();
        let info = self.zone.to_offset_info(now);
        let abbreviation = info.abbreviation().to_owned();
        let mut families = vec![
            FamilyBuilder::gauge(
                "node_time_seconds",
                "System time in seconds since epoch (1970).",
            )
            .single(now.as_nanosecond() as f64 / 1e9),
        ];
        let mut zone = FamilyBuilder::gauge(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
        );
        zone.sample(
            &[("time_zone", &abbreviation)],
            f64::from(info.offset().seconds()),
        );
        families.push(zone.build());
        families.extend(self.clocksources());
        Ok(families)
    }

    /// Clock sources; a kernel or container without them just has none.
    fn clocksources(&self) -> Vec<Family> {
        let mut available = FamilyBuilder::gauge(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
        );
        let mut current = FamilyBuilder::gauge(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
        );
        for (name, dir) in list_dir(&self.clocksource, "clocksource").unwrap_or_default() {
            let device = &name["clocksource".len()..];
            for source in read_attribute(&dir.join("available_clocksource"))
                .unwrap_or_default()
                .split_whitespace()
            {
                available.sample(&[("clocksource", source), ("device", device)], 1.0);
            }
            if let Some(source) = read_attribute(&dir.join("current_clocksource")) {
                current.sample(&[("clocksource", &source), ("device", device)], 1.0);
            }
        }
        [available.build(), current.build()]
            .into_iter()
            .filter(|family| !family.samples.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn reports_time_zone_and_clocksources() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: testdata.join("proc"),
            rootfs: testdata.clone(),
            sys: testdata.join("sys"),
        };
        let mut time = Time::new(&paths);
        time.zone = TimeZone::get("Asia/Jakarta").unwrap();
        let families = time.collect().unwrap();
        assert!(families[0].samples[0].value > 1.7e9);
        let zone = &families[1].samples[0];
        assert_eq!(zone.labels["time_zone"], "WIB");
        assert_eq!(zone.value, 7.0 * 3600.0);
        let available: Vec<_> = families[2]
            .samples
            .iter()
            .map(|s| s.labels["clocksource"].as_str())
            .collect();
        assert_eq!(available, ["tsc", "hpet", "acpi_pm"]);
        assert_eq!(families[3].samples[0].labels["clocksource"], "tsc");
        assert_eq!(families[3].samples[0].labels["device"], "0");
    }
}
