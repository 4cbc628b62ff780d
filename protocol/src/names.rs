//! Metric and label name rules: Prometheus' grammar plus the names the collector reserves for
//! itself, so an agent can neither break the exposition nor forge the collector's own series.

use thiserror::Error;

/// Labels the collector adds to every relayed series; an agent may not set them.
pub const COLLECTOR_OWNED_LABELS: [&str; 2] = ["instance", "site"];

/// The per-agent series the collector computes itself, by name. The exposition writes them
/// with these constants, and a collector test checks that a full scrape shows exactly these
/// plus `COLLECTOR_PREFIXES`, so what is reserved is what is emitted.
pub mod agent_series {
    pub const UP: &str = "pantau_agent_up";
    pub const LAST_SEEN: &str = "pantau_agent_last_seen_timestamp_seconds";
    pub const MESSAGES: &str = "pantau_agent_messages_total";
    pub const MISSED: &str = "pantau_agent_missed_messages_total";
    pub const DUPLICATES: &str = "pantau_agent_duplicate_messages_total";
    pub const LATE: &str = "pantau_agent_late_messages_total";
    pub const SEQUENCE_GAPS: &str = "pantau_agent_sequence_gaps";
    pub const EVENTS: &str = "pantau_agent_events_total";
    pub const INFO: &str = "pantau_agent_info";
}

/// Every name in `agent_series`.
pub const AGENT_SERIES: [&str; 9] = [
    agent_series::UP,
    agent_series::LAST_SEEN,
    agent_series::MESSAGES,
    agent_series::MISSED,
    agent_series::DUPLICATES,
    agent_series::LATE,
    agent_series::SEQUENCE_GAPS,
    agent_series::EVENTS,
    agent_series::INFO,
];

/// Prefixes of the collector's own metrics: its counters (`pantau_collector_*`) and the
/// process collector's (`process_*`).
pub const COLLECTOR_PREFIXES: [&str; 2] = ["pantau_collector_", "process_"];

/// Why a metric or label name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{0:?} is not a valid Prometheus name")]
    Grammar(String),
    #[error("{0:?} is reserved for the collector")]
    Reserved(String),
}

/// True for series names only the collector may produce.
pub fn is_collector_owned_metric(name: &str) -> bool {
    COLLECTOR_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || AGENT_SERIES.contains(&name)
}

/// Checks `[a-zA-Z_:][a-zA-Z0-9_:]*` and the collector's reserved names.
pub fn validate_metric_name(name: &str) -> Result<(), NameError> {
    // Bytes, not chars: every allowed character is ASCII, and any byte of a multi-byte
    // character fails the test just as the character would.
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
        return Err(NameError::Grammar(name.to_owned()));
    }
    if is_collector_owned_metric(name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// Checks `[a-zA-Z_][a-zA-Z0-9_]*`, refuses the `__` prefix Prometheus keeps for itself and the
/// labels the collector adds.
pub fn validate_label_name(name: &str) -> Result<(), NameError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(NameError::Grammar(name.to_owned()));
    }
    if name.starts_with("__") || COLLECTOR_OWNED_LABELS.contains(&name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for good in [
            "node_load1",
            "node_cpu_seconds_total",
            "a:b_c",
            "_x",
            "pantau_probe_up",
        ] {
            assert_eq!(validate_metric_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1abc", "node-load", "node load", "ünicode", "a.b"] {
            assert!(
                matches!(validate_metric_name(bad), Err(NameError::Grammar(_))),
                "{bad}"
            );
        }
        for reserved in [
            "pantau_agent_up",
            "pantau_agent_events_total",
            "pantau_collector_rejected_messages_total",
            "process_resident_memory_bytes",
        ] {
            assert!(matches!(
                validate_metric_name(reserved),
                Err(NameError::Reserved(_))
            ));
        }
    }

    #[test]
    fn label_names() {
        for good in ["cpu", "mode", "_private", "device2"] {
            assert_eq!(validate_label_name(good), Ok(()), "{good}");
        }
        for bad in ["", "2cpu", "a:b", "a-b"] {
            assert!(
                matches!(validate_label_name(bad), Err(NameError::Grammar(_))),
                "{bad}"
            );
        }
        for reserved in ["__name__", "instance", "site"] {
            assert!(matches!(
                validate_label_name(reserved),
                Err(NameError::Reserved(_))
            ));
        }
    }
}
