//! Why the collector refuses a message (`RejectReason`) or drops one family of an otherwise
//! accepted message (`DropReason`). Each is the `reason` label of a counter, so the label set
//! is defined here once and a dashboard sees every reason at zero before the first rejection.

/// The reason label of `pantau_collector_rejected_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    InvalidTopic,
    UnknownSchema,
    Oversized,
    InvalidJson,
    InvalidSchema,
    AgentMismatch,
    NonFiniteValue,
    InvalidMetricName,
    InvalidLabelName,
    DuplicateSeries,
    /// A number outside the range the protocol allows (e.g. `interval_seconds` of 0).
    OutOfRange,
    /// A histogram sample whose buckets, count or sum break the invariants.
    InvalidHistogram,
    /// A metric name or event kind longer than `Limits::max_metric_name_bytes`.
    MetricNameTooLong,
    /// A label name longer than `Limits::max_label_name_bytes`.
    LabelNameTooLong,
    /// A label value longer than `Limits::max_label_value_bytes`.
    LabelValueTooLong,
    /// A series or event with more labels than `Limits::max_labels_per_series`.
    TooManyLabels,
    /// A metrics message with more series than `Limits::max_series_per_message` (a message
    /// replaces the agent's series, so this is the limit of series per agent).
    TooManySeries,
    /// An events message with more events than `Limits::max_events_per_message`.
    TooManyEvents,
    /// An event text longer than `Limits::max_event_message_bytes`.
    EventMessageTooLong,
    /// Not produced by `decode`: the collector already follows as many agents as it may, and
    /// none of them is down long enough to make room.
    TooManyAgents,
    /// Not produced by `decode`: a sequence number too far from the agent's newest one to be
    /// a late or a next message (a forged one, or a restart the agent did not announce).
    SequenceOutOfWindow,
}

impl RejectReason {
    /// Every reason, so counters can start at zero and dashboards see them before the first
    /// rejection.
    pub const ALL: [RejectReason; 21] = [
        RejectReason::InvalidTopic,
        RejectReason::UnknownSchema,
        RejectReason::Oversized,
        RejectReason::InvalidJson,
        RejectReason::InvalidSchema,
        RejectReason::AgentMismatch,
        RejectReason::NonFiniteValue,
        RejectReason::InvalidMetricName,
        RejectReason::InvalidLabelName,
        RejectReason::DuplicateSeries,
        RejectReason::OutOfRange,
        RejectReason::InvalidHistogram,
        RejectReason::MetricNameTooLong,
        RejectReason::LabelNameTooLong,
        RejectReason::LabelValueTooLong,
        RejectReason::TooManyLabels,
        RejectReason::TooManySeries,
        RejectReason::TooManyEvents,
        RejectReason::EventMessageTooLong,
        RejectReason::TooManyAgents,
        RejectReason::SequenceOutOfWindow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTopic => "invalid_topic",
            RejectReason::UnknownSchema => "unknown_schema",
            RejectReason::Oversized => "oversized",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidSchema => "invalid_schema",
            RejectReason::AgentMismatch => "agent_mismatch",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::InvalidLabelName => "invalid_label_name",
            RejectReason::DuplicateSeries => "duplicate_series",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidHistogram => "invalid_histogram",
            RejectReason::MetricNameTooLong => "metric_name_too_long",
            RejectReason::LabelNameTooLong => "label_name_too_long",
            RejectReason::LabelValueTooLong => "label_value_too_long",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::TooManySeries => "too_many_series",
            RejectReason::TooManyEvents => "too_many_events",
            RejectReason::EventMessageTooLong => "event_message_too_long",
            RejectReason::TooManyAgents => "too_many_agents",
            RejectReason::SequenceOutOfWindow => "sequence_out_of_window",
        }
    }
}

/// The reason label of `pantau_collector_dropped_families_total`: one family of an accepted
/// message was left out, the rest of the message was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The family's type differs from the type the name is pinned to (`pinned_kind`) or that
    /// another live agent uses it with: Prometheus cannot expose one name with two types.
    TypeConflict,
}

impl DropReason {
    /// Every reason, for counters that start at zero.
    pub const ALL: [DropReason; 1] = [DropReason::TypeConflict];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TypeConflict => "type_conflict",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: HashSet<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
        let drops: HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(drops.len(), DropReason::ALL.len());
    }
}
