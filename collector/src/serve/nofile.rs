//! The open-file limit: the soft RLIMIT_NOFILE raised to the hard limit at start, as servers do
//! (systemd's default soft limit of 1024 is for programs that still use `select()`), and the
//! HTTP connection cap kept below what is left after the rest of the process.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tracing::{info, warn};

/// File handles kept out of the HTTP cap for everything else: the SQLite store, the backfill
/// queue, logs, the MQTT connection, the runtime's own.
pub const RESERVED_HANDLES: u64 = 256;

/// Raises the soft limit to the hard one and returns the soft limit in force (`None`:
/// unlimited or unknown).
pub fn raise_to_hard_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => info!(
                from = ?limit.current,
                to = ?limit.maximum,
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            ),
            Err(error) => warn!(%error, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// A cap never goes below this many connections (or `wanted`, when smaller): the console and
/// Prometheus must still get in when the broker's own cap already claims the whole limit.
const MIN_CAP: usize = 64;

/// `wanted` HTTP connections, or fewer when the open-file limit cannot hold them next to
/// `others` handles used elsewhere (the embedded broker's connections).
pub fn connection_cap(wanted: usize, limit: Option<u64>, others: u64) -> usize {
    let Some(limit) = limit else {
        return wanted;
    };
    let room = limit.saturating_sub(RESERVED_HANDLES + others);
    let room = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .max(MIN_CAP.min(wanted));
    if wanted > room {
        warn!(
            http.max_connections = wanted,
            capped_to = room,
            open_file_limit = limit,
            "http.max_connections does not fit the open-file limit (RLIMIT_NOFILE; raise \
             LimitNOFILE= in the unit), so fewer connections are admitted"
        );
        return room;
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(2048, Some(524_288), 10_000), 2048);
        assert_eq!(connection_cap(2048, Some(1024), 0), 1024 - 256);
        assert_eq!(connection_cap(2048, Some(1024), 10_000), 64);
        assert_eq!(connection_cap(10, Some(1024), 10_000), 10);
        assert_eq!(connection_cap(2048, None, 10_000), 2048);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = raise_to_hard_limit();
        assert_eq!(soft, getrlimit(Resource::Nofile).maximum);
    }
}
