//! The embedded broker's connection errors, at a limited rate.
//!
//! rumqttd logs, at ERROR and through `tracing`, one line for every connection that fails:
//! a socket that never sends CONNECT (after its 10 s timeout), garbage bytes, half a packet, a
//! refused login, a client that drops its socket. Anyone who can reach the port can cause
//! them, 200 sockets making 200 lines. This layer takes those events out of the log, counts
//! each by reason (`count_broker_connection_errors` hands the count to a metric) and writes
//! at most one WARN line per reason and period, saying how many it held back since. Its
//! per-connection INFO lines (shown only when `PANTAU_LOG` asks for rumqttd at info) pass at
//! one per message and period.

use std::sync::OnceLock;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, warn};
use tracing_subscriber::layer::{Context, Layer};

use crate::ratelimit::{LogLimiter, Verdict};

/// One line per reason per this period.
const PERIOD: Duration = Duration::from_secs(60);

/// Where rumqttd's per-connection events come from (`remote` and the listener loop).
const TARGET: &str = "rumqttd::server";

type Hook = Box<dyn Fn(&'static str) + Send + Sync>;

static COUNT: OnceLock<Hook> = OnceLock::new();

/// Calls `count(reason)` for every broker connection error from now on (one hook per
/// process; a second call is ignored). Reasons: `BrokerConnectionLimit::REASONS`.
pub fn count_broker_connection_errors(count: impl Fn(&'static str) + Send + Sync + 'static) {
    let _ = COUNT.set(Box::new(count));
}

/// The `tracing` layer; see the module documentation.
#[derive(Debug)]
pub struct BrokerConnectionLimit {
    limiter: LogLimiter,
}

impl Default for BrokerConnectionLimit {
    fn default() -> Self {
        Self {
            limiter: LogLimiter::new(PERIOD),
        }
    }
}

impl BrokerConnectionLimit {
    /// Every reason `classify` gives.
    pub const REASONS: [&'static str; 5] = [
        "connect_timeout",
        "login_refused",
        "bad_connect",
        "link",
        "disconnected",
    ];

    /// The reason for a rumqttd event at WARN or ERROR from `TARGET`, from its message and its
    /// `error` field (rumqttd's error types are not exported, so their `Debug` text it is).
    pub fn classify(message: &str, error: &str) -> &'static str {
        match message {
            "Error while handling MQTT connect packet" if error.starts_with("Timeout") => {
                "connect_timeout"
            }
            "Error while handling MQTT connect packet" if error.starts_with("InvalidAuth") => {
                "login_refused"
            }
            "Error while handling MQTT connect packet" => "bad_connect",
            "Remote link error" => "link",
            _ => "disconnected",
        }
    }

    /// Counts one event and says whether to log it: `Some(suppressed)` for the first of its
    /// reason in a period.
    fn admit(&self, reason: &'static str) -> Option<u64> {
        if let Some(count) = COUNT.get() {
            count(reason);
        }
        match self.limiter.check(reason) {
            Verdict::Log { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }
}

impl<S: Subscriber> Layer<S> for BrokerConnectionLimit {
    fn event_enabled(&self, event: &Event<'_>, _context: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !metadata.target().starts_with(TARGET) {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // Level order: ERROR < WARN < INFO. rumqttd's INFO lines (one `accept` per socket, when
        // `PANTAU_LOG` enables them) are not errors: the first of each per period passes.
        if *metadata.level() > Level::WARN {
            return matches!(
                self.limiter.check(&format!("info:{}", fields.message)),
                Verdict::Log { .. }
            );
        }
        let reason = Self::classify(&fields.message, &fields.error);
        if let Some(suppressed) = self.admit(reason) {
            // Another target, so this line is not caught again. The error text may hold
            // client bytes: the formatter escapes it like any field.
            warn!(
                target: "pantau::broker",
                reason,
                error = %fields.error,
                suppressed,
                "embedded broker: a client connection failed (one line per reason and minute; \
                 pantau_collector_broker_connection_errors_total counts all)"
            );
        }
        false
    }
}

/// The two fields of rumqttd's connection events.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rumqttds_connection_errors_get_a_reason() {
        let connect = "Error while handling MQTT connect packet";
        let classify = BrokerConnectionLimit::classify;
        assert_eq!(classify(connect, "Timeout(Elapsed(()))"), "connect_timeout");
        assert_eq!(classify(connect, "InvalidAuth"), "login_refused");
        assert_eq!(
            classify(connect, "Network(Protocol(InvalidProtocol))"),
            "bad_connect"
        );
        assert_eq!(classify(connect, "Io(Kind(UnexpectedEof))"), "bad_connect");
        assert_eq!(classify("Remote link error", "SessionEnd"), "link");
        assert_eq!(classify("disconnected", "Io(..)"), "disconnected");
        for reason in [
            classify(connect, "Timeout"),
            classify(connect, "InvalidAuth"),
            classify(connect, ""),
            classify("Remote link error", ""),
            classify("router-drop", ""),
        ] {
            assert!(BrokerConnectionLimit::REASONS.contains(&reason));
        }
    }

    #[test]
    fn one_line_per_reason_and_period() {
        let limit = BrokerConnectionLimit::default();
        assert_eq!(limit.admit("connect_timeout"), Some(0));
        for _ in 0..199 {
            assert_eq!(limit.admit("connect_timeout"), None);
        }
        // Another reason has its own line.
        assert_eq!(limit.admit("bad_connect"), Some(0));
    }
}
