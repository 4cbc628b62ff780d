//! Log setup: human-readable lines on stderr, level from `PANTAU_LOG` (`RUST_LOG` syntax).
//! journald adds its own timestamps, but plain runs need them, so keep them.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when `PANTAU_LOG` is unset. The embedded broker (rumqttd) logs every connection
/// at info and every ordinary disconnect as an error in its router, so it is quieted; set
/// `PANTAU_LOG=info,rumqttd=debug` to see it.
pub const DEFAULT_FILTER: &str = "info,rumqttd=warn,rumqttd::router::routing=off";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("PANTAU_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
