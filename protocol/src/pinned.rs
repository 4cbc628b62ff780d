//! Metric names whose type is documented elsewhere and therefore fixed: the node_exporter
//! families the agent's host role sends, blackbox_exporter's `probe_*` and smokeping_prober's
//! counters. The collector accepts such a name only with this type, so no agent, however early
//! it reports, can claim `node_load1` as a counter and lock the real ones out.
//!
//! The agent has a test that every family its host role emits (on the fixture and on the
//! machine running the tests) agrees with this table.

use crate::message::MetricKind;

/// How a rule matches a name.
enum Pattern {
    Exact(&'static str),
    /// Starts with the first and ends with the second.
    Affix(&'static str, &'static str),
    Prefix(&'static str),
}

use MetricKind::{Counter, Gauge, Histogram, Untyped};
use Pattern::{Affix, Exact, Prefix};

/// First match wins, so the specific rules come before the prefixes that would also match.
const RULES: &[(Pattern, MetricKind)] = &[
    // node_exporter: cpu
    (Exact("node_cpu_seconds_total"), Counter),
    (Exact("node_cpu_guest_seconds_total"), Counter),
    // stat
    (Exact("node_intr_total"), Counter),
    (Exact("node_context_switches_total"), Counter),
    (Exact("node_forks_total"), Counter),
    (Exact("node_boot_time_seconds"), Gauge),
    (Exact("node_procs_running"), Gauge),
    (Exact("node_procs_blocked"), Gauge),
    // meminfo: every field a gauge, except (node_exporter's rule) those ending in `_total`
    (Affix("node_memory_", "_total"), Counter),
    (Prefix("node_memory_"), Gauge),
    // filesystem
    (Exact("node_filesystem_size_bytes"), Gauge),
    (Exact("node_filesystem_free_bytes"), Gauge),
    (Exact("node_filesystem_avail_bytes"), Gauge),
    (Exact("node_filesystem_files"), Gauge),
    (Exact("node_filesystem_files_free"), Gauge),
    (Exact("node_filesystem_readonly"), Gauge),
    (Exact("node_filesystem_device_error"), Gauge),
    // netdev: `node_network_<statistic>_total`; netclass's three counters end the same way
    (Affix("node_network_", "_total"), Counter),
    // netclass: every other property a gauge (node_network_up, _info, _mtu_bytes, _flags, ...)
    (Prefix("node_network_"), Gauge),
    // diskstats: counters end in `_total`; io_now and info are gauges
    (Affix("node_disk_", "_total"), Counter),
    (Prefix("node_disk_"), Gauge),
    // uname, os, time, filefd, entropy
    (Exact("node_uname_info"), Gauge),
    (Exact("node_os_info"), Gauge),
    (Exact("node_os_version"), Gauge),
    (Prefix("node_time_"), Gauge),
    (Prefix("node_filefd_"), Gauge),
    (Prefix("node_entropy_"), Gauge),
    // vmstat and netstat: untyped in node_exporter
    (Prefix("node_vmstat_"), Untyped),
    (Prefix("node_netstat_"), Untyped),
    (Prefix("node_sockstat_"), Gauge),
    // pressure
    (Affix("node_pressure_", "_seconds_total"), Counter),
    // hwmon, thermal_zone
    (Prefix("node_hwmon_"), Gauge),
    (Exact("node_thermal_zone_temp"), Gauge),
    (Exact("node_cooling_device_cur_state"), Gauge),
    (Exact("node_cooling_device_max_state"), Gauge),
    // timex: the pps event counts end in `_total`
    (Affix("node_timex_", "_total"), Counter),
    (Prefix("node_timex_"), Gauge),
    // textfile's own
    (Exact("node_textfile_mtime_seconds"), Gauge),
    (Exact("node_textfile_scrape_error"), Gauge),
    // process-exporter
    (Exact("namedprocess_namegroup_cpu_seconds_total"), Counter),
    (Prefix("namedprocess_namegroup_"), Gauge),
    // loadavg
    (Exact("node_load1"), Gauge),
    (Exact("node_load5"), Gauge),
    (Exact("node_load15"), Gauge),
    // node_exporter's own
    (Exact("node_scrape_collector_success"), Gauge),
    (Exact("node_scrape_collector_duration_seconds"), Gauge),
    // smokeping_prober
    (Exact("smokeping_response_duration_seconds"), Histogram),
    (Exact("smokeping_requests_total"), Counter),
    (Exact("smokeping_receive_errors_total"), Counter),
    (Exact("smokeping_response_duplicates_total"), Counter),
    (Exact("smokeping_response_ttl"), Gauge),
    // blackbox_exporter: every probe_* series is a gauge (probe_success,
    // probe_duration_seconds, probe_http_status_code, probe_ssl_earliest_cert_expiry,
    // probe_dns_lookup_time_seconds, probe_icmp_duration_seconds, ...)
    (Prefix("probe_"), Gauge),
];

/// The type `name` must have, if it is one of the documented names.
pub fn pinned_kind(name: &str) -> Option<MetricKind> {
    RULES.iter().find_map(|(pattern, kind)| {
        let matches = match pattern {
            Exact(exact) => name == *exact,
            Affix(prefix, suffix) => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
            Prefix(prefix) => name.starts_with(prefix),
        };
        matches.then_some(*kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_names_have_their_documented_type() {
        for (name, kind) in [
            ("node_load1", Gauge),
            ("node_cpu_seconds_total", Counter),
            ("node_memory_MemFree_bytes", Gauge),
            ("node_memory_Foo_total", Counter),
            ("node_network_receive_bytes_total", Counter),
            ("node_filesystem_avail_bytes", Gauge),
            ("probe_success", Gauge),
            ("probe_http_status_code", Gauge),
            ("probe_ssl_earliest_cert_expiry", Gauge),
            ("probe_icmp_duration_rtt_min_seconds", Gauge),
            ("smokeping_requests_total", Counter),
            ("node_network_up", Gauge),
            ("node_network_carrier_changes_total", Counter),
            ("node_disk_io_now", Gauge),
            ("node_disk_read_bytes_total", Counter),
            ("node_pressure_io_stalled_seconds_total", Counter),
            ("node_netstat_Tcp_RetransSegs", Untyped),
            ("namedprocess_namegroup_num_procs", Gauge),
        ] {
            assert_eq!(pinned_kind(name), Some(kind), "{name}");
        }
    }

    #[test]
    fn other_names_are_free() {
        for name in [
            "node_memory",
            "pantau_agent_outbox_messages",
            "ups_battery_charge",
            "node_loadavg",
        ] {
            assert_eq!(pinned_kind(name), None, "{name}");
        }
    }
}
