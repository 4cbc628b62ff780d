//! Log setup: human-readable lines on stderr, level from `PANTAU_LOG` (`RUST_LOG` syntax).
//!
//! Under systemd, when stderr is the journal (`journal::stderr_is_journal`), a line has no
//! timestamp of its own (journald stamps every line) and no colours, and starts with the
//! `<N>` syslog priority that journald reads, so `journalctl -p warning -u pantau-collector`
//! filters by level. A plain run keeps timestamps, and colours on a terminal.
//!
//! Two guarantees hold for every line, whoever wrote the event (Pantau or a library such as
//! rumqttd), because they live here and not at each call site:
//! - One event is one line. Field values and messages are escaped (`escape`), so text a
//!   client sent (a user name, a client id, a topic) cannot start a line of its own or carry
//!   terminal control sequences.
//! - The embedded broker's per-connection errors, which any stranger who opens a socket can
//!   cause, become at most one WARN line per reason and period (`broker_limit`), each counted.

mod broker_limit;
mod escape;
mod journal;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use broker_limit::{BrokerConnectionLimit, count_broker_connection_errors};
pub use escape::{EscapedFields, escape};

/// The filter when `PANTAU_LOG` is unset. The embedded broker (rumqttd) logs every connection
/// at info and every ordinary disconnect as an error in its router, so it is quieted; set
/// `PANTAU_LOG=info,rumqttd=debug` to see it.
pub const DEFAULT_FILTER: &str = "info,rumqttd=warn,rumqttd::router::routing=off";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("PANTAU_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // The limit sits before the formatter, so a suppressed event is never formatted.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(BrokerConnectionLimit::default());
    if journal::stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(EscapedFields)
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(journal::WithPriority(format)),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(EscapedFields)
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init();
    }
}
