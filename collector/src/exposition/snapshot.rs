//! The agents' part of `/metrics`: every up agent's relayed series plus the per-agent
//! `pantau_agent_*` series, written in the Prometheus text format (0.0.4) straight from a
//! snapshot of `State`, family by family, into chunks of bounded size. Nothing is built per
//! series first, so a scrape of 100,000 series costs an index of its families and a few
//! chunks, not a second copy of the state.
//!
//! The output is byte for byte what the prometheus crate's `TextEncoder` writes (same
//! escaping, same number format); the golden file checks it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use pantau_protocol::{MetricKind, agent_series};
use tokio::time::Instant;

use super::AgentFilter;
use crate::state::{AgentView, Label, State, StoredFamily};

/// Where rendered text goes: chunks of about `CHUNK_BYTES`, handed to `sink`, which returns
/// false once nobody is reading any more.
pub struct ChunkWriter<F: FnMut(Vec<u8>) -> bool> {
    buffer: Vec<u8>,
    sink: F,
    open: bool,
}

/// Size of the pieces a scrape's body is sent in.
pub const CHUNK_BYTES: usize = 64 * 1024;

impl<F: FnMut(Vec<u8>) -> bool> ChunkWriter<F> {
    pub fn new(sink: F) -> Self {
        Self {
            buffer: Vec::with_capacity(CHUNK_BYTES + 4096),
            sink,
            open: true,
        }
    }

    /// Whether the reader is still there; writing stops early when not.
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn write(&mut self, text: &str) {
        self.buffer.extend_from_slice(text.as_bytes());
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// One sample line, written straight into the chunk: no allocation per series.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let out = &mut self.buffer;
        out.extend_from_slice(name.as_bytes());
        for (index, (label, text)) in labels.iter().enumerate() {
            out.push(if index == 0 { b'{' } else { b',' });
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"=\"");
            out.extend_from_slice(escape(text, true).as_bytes());
            out.push(b'"');
        }
        if !labels.is_empty() {
            out.push(b'}');
        }
        out.push(b' ');
        // Display of f64, as `f64::to_string` and the prometheus crate write it.
        let _ = write!(out, "{value}");
        out.push(b'\n');
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// Hands over what is buffered.
    pub fn flush(&mut self) {
        if self.open && !self.buffer.is_empty() {
            let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES + 4096));
            self.open = (self.sink)(chunk);
        }
    }
}

/// All agents at one moment, ordered by id, copied out so the state lock is held only briefly
/// (the samples themselves are shared, not copied).
pub struct Snapshot {
    rows: Vec<AgentView>,
}

/// What one name in the output is made of.
enum Source<'a> {
    /// Agents' families of this name, in agent order.
    Relayed(Vec<(&'a AgentView, &'a StoredFamily)>),
    /// One of the per-agent series.
    PerAgent(PerAgent),
}

#[derive(Clone, Copy)]
enum PerAgent {
    Up,
    LastSeen,
    Messages,
    Missed,
    Duplicates,
    Late,
    SequenceGaps,
    Events,
    Info,
}

impl PerAgent {
    const ALL: [PerAgent; 9] = [
        PerAgent::Up,
        PerAgent::LastSeen,
        PerAgent::Messages,
        PerAgent::Missed,
        PerAgent::Duplicates,
        PerAgent::Late,
        PerAgent::SequenceGaps,
        PerAgent::Events,
        PerAgent::Info,
    ];

    fn describe(self) -> (&'static str, &'static str, MetricKind) {
        use MetricKind::{Counter, Gauge};
        match self {
            PerAgent::Up => (
                agent_series::UP,
                "1 if the agent is online and sent a message within its silence limit, else 0.",
                Gauge,
            ),
            PerAgent::LastSeen => (
                agent_series::LAST_SEEN,
                "When the collector last received a message from the agent.",
                Gauge,
            ),
            PerAgent::Messages => (
                agent_series::MESSAGES,
                "Messages accepted from the agent.",
                Counter,
            ),
            PerAgent::Missed => (
                agent_series::MISSED,
                "Messages the agent sent that never arrived: sequence numbers the collector's \
                 window moved past without them.",
                Counter,
            ),
            PerAgent::Duplicates => (
                agent_series::DUPLICATES,
                "Messages from the agent whose sequence number was already seen, dropped.",
                Counter,
            ),
            PerAgent::Late => (
                agent_series::LATE,
                "Messages accepted below the agent's newest sequence number (a replayed \
                 backlog); their samples do not replace newer ones.",
                Counter,
            ),
            PerAgent::SequenceGaps => (
                agent_series::SEQUENCE_GAPS,
                "Sequence numbers inside the collector's window not received yet; they count \
                 as missed once the window moves past them.",
                Gauge,
            ),
            PerAgent::Events => (
                agent_series::EVENTS,
                "Events reported by the agent, by severity.",
                Counter,
            ),
            PerAgent::Info => (
                agent_series::INFO,
                "Always 1; the labels describe the agent.",
                Gauge,
            ),
        }
    }

    /// The row's samples of this series: extra label (after instance and site) and value.
    fn samples(self, row: &AgentView) -> Vec<(Option<(&'static str, &str)>, f64)> {
        match self {
            PerAgent::Up => vec![(None, if row.online { 1.0 } else { 0.0 })],
            PerAgent::LastSeen => row
                .last_seen
                .map(|seen| (None, unix_seconds(seen)))
                .into_iter()
                .collect(),
            PerAgent::Messages => vec![(None, row.messages_total as f64)],
            PerAgent::Missed => vec![(None, row.missed_messages_total as f64)],
            PerAgent::Duplicates => vec![(None, row.duplicate_messages_total as f64)],
            PerAgent::Late => vec![(None, row.late_messages_total as f64)],
            PerAgent::SequenceGaps => vec![(None, row.sequence_gaps as f64)],
            PerAgent::Events => row
                .events_total
                .iter()
                .map(|(severity, count)| (Some(("severity", severity.as_str())), count as f64))
                .collect(),
            PerAgent::Info => row
                .version
                .as_deref()
                .map(|version| (Some(("version", version)), 1.0))
                .into_iter()
                .collect(),
        }
    }
}

impl Snapshot {
    /// Every agent's view at `now` (scrapes go through `take_matching`).
    #[cfg(test)]
    pub fn take(state: &State, now: Instant) -> Self {
        Self {
            rows: state.views(now),
        }
    }

    /// The agents `filter` matches at `now`.
    pub fn take_matching(state: &State, now: Instant, filter: &AgentFilter) -> Self {
        Self {
            rows: state.views_where(now, |id, site| filter.matches(id, site)),
        }
    }

    /// Writes every family, relayed and per-agent, sorted by name.
    pub fn write<F: FnMut(Vec<u8>) -> bool>(&self, out: &mut ChunkWriter<F>) {
        let mut names: BTreeMap<&str, Source> = BTreeMap::new();
        for row in &self.rows {
            for family in row.families.iter().flat_map(|families| families.iter()) {
                if let Source::Relayed(rows) = names
                    .entry(family.name())
                    .or_insert_with(|| Source::Relayed(Vec::new()))
                {
                    rows.push((row, family));
                }
            }
        }
        if !self.rows.is_empty() {
            for series in PerAgent::ALL {
                names.insert(series.describe().0, Source::PerAgent(series));
            }
        }
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for (name, source) in &names {
            if !out.is_open() {
                return;
            }
            match source {
                Source::Relayed(rows) => {
                    let Some((_, first)) = rows.first() else {
                        continue;
                    };
                    header(out, name, first.help(), first.kind());
                    for (row, family) in rows {
                        for_each_series(family, agent_labels(&row.id, &row.site), |series| {
                            out.sample(series.name, series.labels, series.value);
                        });
                    }
                }
                Source::PerAgent(series) => {
                    let (name, help, kind) = series.describe();
                    let mut started = false;
                    for row in &self.rows {
                        for (extra, value) in series.samples(row) {
                            if !started {
                                header(out, name, help, kind);
                                started = true;
                            }
                            labels.clear();
                            labels.extend(agent_labels(&row.id, &row.site));
                            labels.extend(extra);
                            out.sample(name, &labels, value);
                        }
                    }
                }
            }
        }
    }
}

/// The labels the scrape gives every series of agent `id` of site `site`, besides its own.
pub fn agent_labels<'a>(id: &'a str, site: &'a str) -> [(&'a str, &'a str); 2] {
    [("instance", id), ("site", site)]
}

/// One series of a relayed family as `/metrics` shows it.
pub struct Series<'a> {
    /// The series' name: the family's, or a histogram's `_bucket`, `_sum` or `_count`.
    pub name: &'a str,
    /// The sample's labels plus the agent's (and `le` for a bucket), sorted by name.
    pub labels: &'a [(&'a str, &'a str)],
    pub value: f64,
}

/// Calls `each` for every series of one agent's `family`, exactly as the scrape exposes them:
/// `/metrics` is written from this, and so is what remote write backfills, so the two always
/// land in the same Prometheus series.
pub fn for_each_series<'a>(
    family: &'a StoredFamily,
    base: [(&'a str, &'a str); 2],
    mut each: impl FnMut(Series<'_>),
) {
    // One label buffer for the whole family: a scrape allocates nothing per series.
    let mut labels = Vec::new();
    if family.kind() != MetricKind::Histogram {
        for (sample, values) in family.samples() {
            with_base(&mut labels, &sample.labels, base, None);
            for &value in values {
                each(Series {
                    name: family.name(),
                    labels: &labels,
                    value,
                });
            }
        }
        return;
    }
    let name = family.name();
    let bucket = format!("{name}_bucket");
    let sum = format!("{name}_sum");
    let count = format!("{name}_count");
    for (sample, values) in family.samples() {
        let (counts, totals) = values.split_at(sample.buckets.len().min(values.len()));
        for ((_, le), &value) in sample.buckets.iter().zip(counts) {
            with_base(&mut labels, &sample.labels, base, Some(le));
            each(Series {
                name: &bucket,
                labels: &labels,
                value,
            });
        }
        with_base(&mut labels, &sample.labels, base, None);
        if let [sum_value, count_value] = *totals {
            each(Series {
                name: &sum,
                labels: &labels,
                value: sum_value,
            });
            each(Series {
                name: &count,
                labels: &labels,
                value: count_value,
            });
        }
    }
}

/// A sample's labels plus `instance` and `site` (and `le` for a bucket), sorted by name: the
/// sample's are sorted already, so the others are merged in rather than the whole sorted.
fn with_base<'a>(
    all: &mut Vec<(&'a str, &'a str)>,
    labels: &'a [Label],
    base: [(&'a str, &'a str); 2],
    le: Option<&'a str>,
) {
    all.clear();
    let mut extra = [None; 3];
    let mut extras = 0;
    for label in base.into_iter().chain(le.map(|le| ("le", le))) {
        extra[extras] = Some(label);
        extras += 1;
    }
    // `instance` < `le` < `site`: keep the extra labels in name order.
    extra[..extras].sort_unstable_by_key(|label| label.map(|(name, _)| name));
    let mut pending = extra[..extras].iter().flatten().copied().peekable();
    for (name, value) in labels {
        while let Some(next) = pending.next_if(|(extra, _)| *extra < &**name) {
            all.push(next);
        }
        all.push((name, value));
    }
    all.extend(pending);
}

fn header<F: FnMut(Vec<u8>) -> bool>(
    out: &mut ChunkWriter<F>,
    name: &str,
    help: &str,
    kind: MetricKind,
) {
    if !help.is_empty() {
        out.write(&format!("# HELP {name} {}\n", escape(help, false)));
    }
    out.write(&format!("# TYPE {name} {}\n", kind.as_str()));
}

/// The text format's escaping: `\` and newline always, `"` in label values.
fn escape(text: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let needs_escaping = text.contains(['\\', '\n']) || (quote && text.contains('"'));
    if !needs_escaping {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quote => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// The snapshot's text, whole: for tests.
#[cfg(test)]
pub fn render_snapshot(snapshot: &Snapshot) -> String {
    let mut text = Vec::new();
    let mut out = ChunkWriter::new(|chunk: Vec<u8>| {
        text.extend_from_slice(&chunk);
        true
    });
    snapshot.write(&mut out);
    out.flush();
    drop(out);
    String::from_utf8(text).unwrap_or_default()
}
