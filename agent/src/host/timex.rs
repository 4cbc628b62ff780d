//! node_exporter's `timex` collector: the kernel clock's synchronisation state from
//! `adjtimex(2)` (read-only). Signed commands and schedules carry expiry times, so a clock that
//! has drifted or lost its NTP source is worth an alert before it makes a message expire early.

use pantau_protocol::Family;
use pantau_sys::ClockState;

use super::{CollectError, FamilyBuilder};

/// `adjtimex` returns TIME_ERROR when the clock is not synchronised to a reliable server.
const TIME_ERROR: i32 = 5;
/// `status` bit: `offset` and `jitter` are in nanoseconds, not microseconds.
const STA_NANO: i32 = 0x2000;
const MICROSECONDS: f64 = 1e6;
const NANOSECONDS: f64 = 1e9;
/// `freq`, `ppsfreq` and `stabil` are in ppm with a 16-bit fraction (adjtimex(2), NOTES).
const PPM16FRAC: f64 = 1e6 * 65536.0;

/// The `timex` collector.
pub struct Timex;

impl Timex {
    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let state = pantau_sys::read_clock_state().map_err(|error| {
            if error.kind() == std::io::ErrorKind::PermissionDenied {
                // A seccomp filter (systemd's ProtectClock=) or a container denies even the
                // read-only call: no data, as node_exporter treats it, not a failure each round.
                CollectError::NoData(format!("adjtimex(2) is not permitted here: {error}"))
            } else {
                CollectError::io("adjtimex(2)", error)
            }
        })?;
        Ok(families(&state))
    }
}

/// The families node_exporter 1.5 exposes, with its names, help texts and unit conversions.
fn families(state: &ClockState) -> Vec<Family> {
    let sync = if state.state == TIME_ERROR { 0.0 } else { 1.0 };
    let divisor = if state.status & STA_NANO != 0 {
        NANOSECONDS
    } else {
        MICROSECONDS
    };
    let gauge = |name: &str, help: &str, value: f64| FamilyBuilder::gauge(name, help).single(value);
    let counter = |name: &str, help: &str, value: i64| {
        FamilyBuilder::counter(name, help).single(value as f64)
    };
    vec![
        gauge(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            sync,
        ),
        gauge(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            state.offset as f64 / divisor,
        ),
        gauge(
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + state.freq as f64 / PPM16FRAC,
        ),
        gauge(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            state.maxerror as f64 / MICROSECONDS,
        ),
        gauge(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            state.esterror as f64 / MICROSECONDS,
        ),
        gauge(
            "node_timex_status",
            "Value of the status array bits.",
            f64::from(state.status),
        ),
        gauge(
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            state.constant as f64,
        ),
        gauge(
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            state.tick as f64 / MICROSECONDS,
        ),
        gauge(
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            state.ppsfreq as f64 / PPM16FRAC,
        ),
        gauge(
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            state.jitter as f64 / divisor,
        ),
        gauge(
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            f64::from(state.shift),
        ),
        gauge(
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            state.stabil as f64 / PPM16FRAC,
        ),
        counter(
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            state.jitcnt,
        ),
        counter(
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            state.calcnt,
        ),
        counter(
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            state.errcnt,
        ),
        counter(
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            state.stbcnt,
        ),
        gauge(
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            f64::from(state.tai),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: i32, state: i32) -> ClockState {
        ClockState {
            state,
            offset: -1_500,
            freq: 65_536 * 12,
            maxerror: 16_000,
            esterror: 250,
            status,
            constant: 7,
            tick: 10_000,
            ppsfreq: 0,
            jitter: 3_000,
            shift: 0,
            stabil: 0,
            jitcnt: 4,
            calcnt: 0,
            errcnt: 0,
            stbcnt: 0,
            tai: 37,
        }
    }

    fn value(families: &[Family], name: &str) -> f64 {
        families
            .iter()
            .find(|family| family.name == name)
            .unwrap_or_else(|| panic!("{name} is missing"))
            .samples[0]
            .value
    }

    #[test]
    fn microsecond_units_are_converted_as_node_exporter_does() {
        let families = families(&state(0x0001, 0));
        assert_eq!(value(&families, "node_timex_sync_status"), 1.0);
        assert_eq!(value(&families, "node_timex_offset_seconds"), -0.0015);
        assert_eq!(value(&families, "node_timex_pps_jitter_seconds"), 0.003);
        assert_eq!(value(&families, "node_timex_maxerror_seconds"), 0.016);
        assert_eq!(value(&families, "node_timex_tick_seconds"), 0.01);
        assert_eq!(
            value(&families, "node_timex_frequency_adjustment_ratio"),
            1.000012
        );
        assert_eq!(value(&families, "node_timex_tai_offset_seconds"), 37.0);
        assert_eq!(value(&families, "node_timex_pps_jitter_total"), 4.0);
        assert_eq!(families.len(), 17);
    }

    #[test]
    fn nanosecond_status_and_time_error_change_offset_units_and_sync() {
        let families = families(&state(STA_NANO | 0x0040, TIME_ERROR));
        assert_eq!(value(&families, "node_timex_sync_status"), 0.0);
        assert_eq!(value(&families, "node_timex_offset_seconds"), -0.0000015);
        assert_eq!(value(&families, "node_timex_status"), f64::from(0x2040));
    }

    #[test]
    fn this_kernel_answers() {
        let families = Timex
            .collect()
            .expect("adjtimex is readable without privilege");
        assert!(value(&families, "node_timex_tick_seconds") > 0.0);
    }
}
