//! Lines for journald: recognising that stderr is the journal, and the `<N>` priority prefix
//! it reads (sd-daemon(3)), so levels survive as journal priorities.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the stream systemd connected to the journal. systemd sets
/// `JOURNAL_STREAM=<device>:<inode>` of that stream (systemd.exec(5)); a child whose stderr
/// was redirected inherits the variable but not the stream, so the two are compared.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // /proc/self/fd/2 resolves to the open stream itself, a socket included.
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|stream| names_stream(&value, stream.dev(), stream.ino()))
}

fn names_stream(value: &str, device: u64, inode: u64) -> bool {
    parse(value) == Some((device, inode))
}

fn parse(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

/// The syslog priority journald gives a line that starts with `<N>`.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that starts each line with its journald priority.
pub struct WithPriority<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(context, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_values_are_read_strictly() {
        assert_eq!(parse("8:123456"), Some((8, 123456)));
        assert_eq!(parse("8"), None);
        assert_eq!(parse("x:1"), None);
        assert_eq!(parse("1:"), None);
    }

    #[test]
    fn only_the_stream_journal_stream_names_is_the_journal() {
        assert!(names_stream("8:123", 8, 123));
        assert!(!names_stream("8:124", 8, 123), "stderr was redirected");
        assert!(!names_stream("9:123", 8, 123));
        assert!(!names_stream("", 8, 123));
    }

    #[test]
    fn levels_become_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
