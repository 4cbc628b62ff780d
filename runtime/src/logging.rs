//! Log setup: human-readable lines on stderr, level from `PANTAU_LOG` (`RUST_LOG` syntax,
//! default `info`). journald adds its own timestamps, but plain runs need them, so keep them.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_env("PANTAU_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
