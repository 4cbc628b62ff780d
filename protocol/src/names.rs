//! Metric and label name rules: Prometheus' grammar plus the names the collector reserves for
//! itself, so an agent can neither break the exposition nor forge the collector's own series.

use thiserror::Error;

/// Labels the collector adds to every relayed series; an agent may not set them.
pub const COLLECTOR_OWNED_LABELS: [&str; 2] = ["instance", "site"];

/// Per-agent series the collector computes itself.
const COLLECTOR_OWNED_METRICS: [&str; 6] = [
    "pantau_agent_up",
    "pantau_agent_last_seen_timestamp_seconds",
    "pantau_agent_messages_total",
    "pantau_agent_missed_messages_total",
    "pantau_agent_duplicate_messages_total",
    "pantau_agent_info",
];

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
    name.starts_with("pantau_collector_") || COLLECTOR_OWNED_METRICS.contains(&name)
}

/// Checks `[a-zA-Z_:][a-zA-Z0-9_:]*` and the collector's reserved names.
pub fn validate_metric_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
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
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
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
            "pantau_collector_rejected_messages_total",
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
