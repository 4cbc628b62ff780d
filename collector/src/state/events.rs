//! An agent's events: a count per severity since the collector started (for
//! `pantau_agent_events_total`) and the most recent events themselves, in a list of bounded
//! length (for `/api/v1/agents/{id}/events`), so a chatty agent cannot grow the collector.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use pantau_protocol::{Event, Severity};
use serde::Serialize;

use super::view::serialize_rfc3339;

/// Events received per severity, in `Severity::ALL` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts([u64; Severity::ALL.len()]);

impl EventCounts {
    pub fn add(&mut self, severity: Severity) {
        // Zipping with ALL instead of indexing by discriminant keeps the order defined in one
        // place, next to the enum.
        for (count, known) in self.0.iter_mut().zip(Severity::ALL) {
            if known == severity {
                *count += 1;
            }
        }
    }

    /// Every severity with its count, zeros included, in `Severity::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (Severity, u64)> + '_ {
        Severity::ALL.into_iter().zip(self.0.iter().copied())
    }
}

/// One event as stored and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// When the collector received the message carrying it (RFC 3339 in JSON).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub received: SystemTime,
    /// The message's `timestamp_ms`: when the agent composed it.
    pub timestamp_ms: i64,
    /// The message's sequence number.
    pub seq: u64,
    pub kind: String,
    pub severity: Severity,
    pub message: String,
    pub labels: BTreeMap<String, String>,
}

/// The last `capacity` events, oldest dropped first.
#[derive(Debug, Clone)]
pub struct RecentEvents {
    capacity: usize,
    events: VecDeque<EventRecord>,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            // Not preallocated: most agents send few events, and there may be thousands.
            events: VecDeque::new(),
        }
    }

    /// Adds the events of one message, in the order the agent listed them.
    pub fn push(&mut self, received: SystemTime, timestamp_ms: i64, seq: u64, events: &[Event]) {
        if self.capacity == 0 {
            return;
        }
        for event in events {
            if self.events.len() >= self.capacity {
                self.events.pop_front();
            }
            self.events.push_back(EventRecord {
                received,
                timestamp_ms,
                seq,
                kind: event.kind.clone(),
                severity: event.severity,
                message: event.message.clone(),
                labels: event.labels.clone(),
            });
        }
    }

    /// Adds one record made by the collector itself.
    pub fn push_record(&mut self, record: EventRecord) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(record);
    }

    /// The stored events, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &EventRecord> {
        self.events.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn event(kind: &str, severity: Severity) -> Event {
        Event {
            kind: kind.to_owned(),
            severity,
            message: format!("{kind} happened"),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn counts_follow_the_order_of_severity_all() {
        let mut counts = EventCounts::default();
        counts.add(Severity::Critical);
        counts.add(Severity::Critical);
        counts.add(Severity::Info);
        let listed: Vec<(Severity, u64)> = counts.iter().collect();
        assert_eq!(
            listed,
            vec![
                (Severity::Info, 1),
                (Severity::Warning, 0),
                (Severity::Critical, 2)
            ]
        );
    }

    #[test]
    fn the_oldest_events_make_room_and_the_newest_come_first() {
        let mut recent = RecentEvents::new(3);
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        recent.push(at, 1, 10, &[event("a", Severity::Info)]);
        recent.push(
            at,
            2,
            11,
            &[
                event("b", Severity::Warning),
                event("c", Severity::Info),
                event("d", Severity::Critical),
            ],
        );
        let kinds: Vec<&str> = recent.newest_first().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["d", "c", "b"]);
        assert_eq!(recent.newest_first().count(), 3);
        let newest = recent.newest_first().next().unwrap();
        assert_eq!((newest.seq, newest.timestamp_ms), (11, 2));
    }

    #[test]
    fn an_event_serializes_with_an_rfc3339_receive_time() {
        let mut recent = RecentEvents::new(1);
        let at = UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let mut labelled = event("link_down", Severity::Critical);
        labelled
            .labels
            .insert("iface".to_owned(), "wan0".to_owned());
        recent.push(at, 1_800_000_000_000, 7, &[labelled]);
        let json = serde_json::to_value(recent.newest_first().next().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "received": "2027-01-15T08:00:00.250Z",
                "timestamp_ms": 1_800_000_000_000_i64,
                "seq": 7,
                "kind": "link_down",
                "severity": "critical",
                "message": "link_down happened",
                "labels": {"iface": "wan0"},
            })
        );
    }
}
