//! Escaping in the log formatter: every field value and message is written through `escape`,
//! so a line ends only where the formatter ends it.
//!
//! Escaped: C0 and C1 controls and DEL (`\n`, `\r`, `\t`, others as `\u{1b}`), the Unicode line
//! and paragraph separators, and the bidirectional overrides that can make a line read
//! differently from what it holds. A backslash is left as it is, so a value that `?` already
//! escaped (Rust's `Debug` for strings) is not escaped twice; a client that types a literal
//! `\n` still cannot start a new line with it.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats fields as tracing-subscriber's `DefaultFields` does (the message first, then
/// `name=value`, strings quoted), with every value escaped. Used for events and span fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            result: Ok(()),
            empty: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    empty: bool,
}

impl Visitor<'_> {
    fn write(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.empty {
                self.writer.write_char(' ')?;
            }
            self.empty = false;
            if name != "message" {
                // Field names are static identifiers in the source, never client text.
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{name}=")?;
            }
            let mut escaping = Escaping(&mut self.writer);
            escaping.write_fmt(value)
        })();
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.write("message", format_args!("{value}")),
            name => self.write(name, format_args!("{value:?}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // tracing-log's metadata fields; DefaultFields leaves them out too.
        if name.starts_with("log.") {
            return;
        }
        self.write(name, format_args!("{value:?}"));
    }
}

/// A `fmt::Write` that escapes what passes through it, as it passes.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut plain = 0;
    for (at, c) in text.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        out.write_str(&text[plain..at])?;
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "\\u{{{:x}}}", u32::from(other))?,
        }
        plain = at + c.len_utf8();
    }
    out.write_str(&text[plain..])
}

/// `text` with control and line-breaking characters escaped, as the log formatter writes it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = escape_into(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span, warn};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn controls_are_escaped_visibly() {
        assert_eq!(escape("plain text"), "plain text");
        assert_eq!(escape("a\r\nb"), "a\\r\\nb");
        assert_eq!(escape("tab\there"), "tab\\there");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("nul\0 del\u{7f}"), "nul\\u{0} del\\u{7f}");
        // C1: NEL (a line break to some readers) and CSI (an ANSI escape on some terminals).
        assert_eq!(escape("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
        assert_eq!(escape("\u{202e}nimda"), "\\u{202e}nimda");
        // Letters of any script stay as they are; a backslash too.
        assert_eq!(escape("Bahasa Ñ 日本 \\n"), "Bahasa Ñ 日本 \\n");
    }

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn capture(emit: impl FnOnce()) -> String {
        let out = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str = "x\r\nconsole: logged in user=siti role=admin";

    #[test]
    fn a_display_field_cannot_start_a_line() {
        let out = capture(|| info!(user = %FORGED, role = "viewer", "console: logged in"));
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.ends_with(
                "console: logged in user=x\\r\\nconsole: logged in user=siti role=admin \
                 role=\"viewer\"\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn messages_debug_fields_and_spans_are_escaped() {
        let out = capture(|| {
            let span = info_span!("remote_link", client_id = %"evil\nid");
            let _entered = span.enter();
            warn!(topic = ?"a\nb", error = %io::Error::other("bad\u{1b}[2J"), "{FORGED}");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("remote_link{client_id=evil\\nid}"), "{out}");
        assert!(
            out.contains("x\\r\\nconsole: logged in user=siti role=admin"),
            "{out}"
        );
        // `?` already escaped the newline: not escaped twice.
        assert!(out.contains("topic=\"a\\nb\""), "{out}");
        assert!(out.contains("error=bad\\u{1b}[2J"), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
    }

    #[test]
    fn ordinary_lines_look_as_before() {
        let escaped = capture(|| info!(count = 3, name = "dc", ok = true, "agent up"));
        let out = Capture::default();
        let default = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(default, || {
            info!(count = 3, name = "dc", ok = true, "agent up");
        });
        let plain = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(escaped, plain);
    }
}
