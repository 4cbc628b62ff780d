//! The one place where the agent composes its messages: every payload's header (`schema`,
//! `agent`, `site`, `timestamp_ms`, and `seq` where the channel has one) and topic come from
//! [`Header`], so no role or task can send a message that names another agent.

use std::time::{SystemTime, UNIX_EPOCH};

use pantau_protocol::{
    AgentState, AnyFamily, Channel, Event, EventsMessage, MetricsPayload, SCHEMA_VERSION,
    StatusMessage, Topic,
};

/// Who the agent is on the wire.
#[derive(Debug, Clone)]
pub struct Header {
    pub prefix: String,
    pub agent: String,
    pub site: String,
}

/// What a birth message announces besides the header.
#[derive(Debug, Clone)]
pub struct Birth {
    pub interval_seconds: u64,
    pub next_seq: u64,
    pub roles: Vec<String>,
    pub clips: Vec<String>,
}

impl Header {
    /// The topic of `channel` for this agent.
    pub fn topic(&self, channel: Channel) -> String {
        Topic::new(&self.site, &self.agent, channel).render(&self.prefix)
    }

    /// The filter matching every command addressed to this agent.
    pub fn command_filter(&self) -> String {
        format!(
            "{}/#",
            self.topic(Channel::Command(String::new()))
                .trim_end_matches('/')
        )
    }

    pub fn metrics(&self, seq: u64, families: Vec<AnyFamily>) -> MetricsPayload {
        MetricsPayload {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            seq,
            timestamp_ms: unix_millis(SystemTime::now()),
            families,
        }
    }

    pub fn events(&self, seq: u64, events: Vec<Event>) -> EventsMessage {
        EventsMessage {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            seq,
            timestamp_ms: unix_millis(SystemTime::now()),
            events,
        }
    }

    /// A birth (`Some(birth)`) or an `offline` status, for the connection opened at
    /// `connected_ms`.
    pub fn status(&self, birth: Option<Birth>, connected_ms: i64) -> StatusMessage {
        let state = match birth {
            Some(_) => AgentState::Online,
            None => AgentState::Offline,
        };
        let (interval_seconds, next_seq, roles, clips) = match birth {
            Some(birth) => (
                Some(birth.interval_seconds),
                Some(birth.next_seq),
                birth.roles,
                birth.clips,
            ),
            None => (None, None, Vec::new(), Vec::new()),
        };
        StatusMessage {
            schema: SCHEMA_VERSION,
            agent: self.agent.clone(),
            site: self.site.clone(),
            state,
            timestamp_ms: unix_millis(SystemTime::now()),
            interval_seconds,
            version: (state == AgentState::Online).then(|| env!("CARGO_PKG_VERSION").to_owned()),
            next_seq,
            connected_ms: Some(connected_ms),
            roles,
            clips,
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            prefix: "pantau".to_owned(),
            agent: "dc-srv-01".to_owned(),
            site: "dc".to_owned(),
        }
    }

    #[test]
    fn topics_and_command_filter() {
        let header = header();
        assert_eq!(
            header.topic(Channel::Metrics),
            "pantau/v1/dc/dc-srv-01/metrics"
        );
        assert_eq!(header.command_filter(), "pantau/v1/dc/dc-srv-01/cmd/#");
    }

    #[test]
    fn birth_and_offline_status() {
        let header = header();
        let birth = header.status(
            Some(Birth {
                interval_seconds: 15,
                next_seq: 42,
                roles: vec!["host".to_owned()],
                clips: Vec::new(),
            }),
            7,
        );
        assert_eq!(birth.state, AgentState::Online);
        assert_eq!(birth.next_seq, Some(42));
        assert_eq!(birth.roles, ["host"]);
        assert_eq!(birth.connected_ms, Some(7));
        let offline = header.status(None, 7);
        assert_eq!(offline.state, AgentState::Offline);
        assert!(offline.next_seq.is_none() && offline.version.is_none());
        assert_eq!(offline.connected_ms, Some(7));
    }
}
