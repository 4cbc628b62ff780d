//! The backfill's queue on disk: what waits for the remote write endpoint, kept across
//! collector restarts and bounded in bytes.
//!
//! Append-only segment files (`<id>.seg`, ids increasing) of records
//! `[len u32][crc32 u32][samples u32][timestamp_ms i64][payload]` (little endian; the crc covers
//! everything after itself). A torn or corrupt tail, from a crash mid-write, is cut off at
//! open and never parsed as data. What was sent is marked by `cursor` (segment id and offset,
//! replaced atomically by rename), so a restart does not send it twice. At the byte limit the
//! oldest segment goes, its unsent samples counted as dropped. Records are written with one
//! `write` each and not fsynced: a crash of the collector loses nothing, a power loss may
//! lose the last records (the agents' outboxes are the durable copy until then).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::record::{HEADER_BYTES, encode, read_record, scan};

const CURSOR_FILE: &str = "cursor";

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("backfill queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub fn io_error(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where sending stands: everything before `offset` of segment `segment` (and every older
/// segment) was sent.
/// Ordered by segment, then offset: queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Samples in records from the cursor on (all of them, past the first segment).
    unsent_samples: u64,
    /// Oldest sample timestamp of the segment's records.
    oldest_ms: Option<i64>,
}

/// Records read for one request.
#[derive(Debug)]
pub struct Batch {
    /// Payloads laid end to end.
    pub payload: Vec<u8>,
    pub samples: u64,
    /// Records (messages) in it.
    pub records: u64,
    /// Where the cursor goes once the batch is sent.
    pub end: Cursor,
}

/// What `open` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub samples: u64,
    /// Bytes of torn or corrupt tails cut off.
    pub cut_bytes: u64,
}

#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    cursor: Cursor,
    writer: Option<File>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, keeping at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Queue, Recovered), QueueError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let name = entry.map_err(io_error(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|id| id.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let saved = read_cursor(&dir.join(CURSOR_FILE));
        let cursor = match saved {
            Some(saved) if ids.contains(&saved.segment) => saved,
            // Everything was sent: new segments continue the numbering.
            Some(saved) if ids.is_empty() => Cursor {
                segment: saved.segment,
                offset: 0,
            },
            _ => Cursor {
                segment: ids.first().copied().unwrap_or(0),
                offset: 0,
            },
        };
        let mut queue = Queue {
            dir: dir.to_owned(),
            max_bytes,
            // Several segments fit under the limit, so dropping one frees a part, not all.
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 8 * 1024 * 1024),
            segments: VecDeque::new(),
            cursor,
            writer: None,
        };
        let mut recovered = Recovered::default();
        for id in ids {
            let path = queue.segment_path(id);
            if id < cursor.segment {
                // Sent already; left behind by a crash before its removal.
                fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            let scan = scan(&path)?;
            if scan.valid_bytes < scan.file_bytes {
                recovered.cut_bytes += scan.file_bytes - scan.valid_bytes;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(scan.valid_bytes).map_err(io_error(&path))?;
            }
            let from = if id == cursor.segment {
                cursor.offset
            } else {
                0
            };
            let unsent: u64 = scan
                .records
                .iter()
                .filter(|(offset, _)| *offset >= from)
                .map(|(_, samples)| *samples)
                .sum();
            recovered.samples += unsent;
            queue.segments.push_back(Segment {
                id,
                bytes: scan.valid_bytes,
                unsent_samples: unsent,
                oldest_ms: scan.oldest_ms,
            });
        }
        if queue.cursor.offset > queue.front_bytes() {
            queue.cursor.offset = queue.front_bytes();
        }
        Ok((queue, recovered))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.seg"))
    }

    fn front_bytes(&self) -> u64 {
        self.segments.front().map_or(0, |segment| segment.bytes)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.bytes).sum()
    }

    /// Samples not sent yet.
    #[cfg(test)]
    pub fn unsent_samples(&self) -> u64 {
        self.segments.iter().map(|s| s.unsent_samples).sum()
    }

    /// The oldest sample timestamp among the segments still queued.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.segments
            .iter()
            .filter(|s| s.unsent_samples > 0)
            .filter_map(|s| s.oldest_ms)
            .min()
    }

    /// Appends a record of `samples` samples taken at `timestamp_ms`; returns how many unsent
    /// samples were dropped (the oldest segments) to stay under the byte limit.
    pub fn push(
        &mut self,
        samples: u32,
        timestamp_ms: i64,
        payload: &[u8],
    ) -> Result<u64, QueueError> {
        let record = encode(samples, timestamp_ms, payload);

        let rotate = match self.segments.back() {
            None => true,
            Some(last) => last.bytes >= self.segment_bytes,
        };
        if rotate {
            let id = self
                .segments
                .back()
                .map_or(self.cursor.segment, |s| s.id + 1);
            let path = self.segment_path(id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.writer = Some(file);
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                unsent_samples: 0,
                oldest_ms: None,
            });
            if self.segments.len() == 1 {
                self.cursor = Cursor {
                    segment: id,
                    offset: 0,
                };
            }
        }
        let mut dropped = 0;
        while self.bytes() + record.len() as u64 > self.max_bytes && self.segments.len() > 1 {
            dropped += self.drop_front()?;
        }
        let Some(last) = self.segments.back_mut() else {
            return Ok(dropped);
        };
        let path = self.dir.join(format!("{:020}.seg", last.id));
        if self.writer.is_none() {
            self.writer = Some(
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error(&path))?,
            );
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.write_all(&record).map_err(io_error(&path))?;
        }
        last.bytes += record.len() as u64;
        last.unsent_samples += u64::from(samples);
        last.oldest_ms = Some(last.oldest_ms.map_or(timestamp_ms, |o| o.min(timestamp_ms)));
        Ok(dropped)
    }

    /// Removes the oldest segment; returns its unsent samples.
    fn drop_front(&mut self) -> Result<u64, QueueError> {
        let Some(front) = self.segments.pop_front() else {
            return Ok(0);
        };
        let path = self.segment_path(front.id);
        fs::remove_file(&path).map_err(io_error(&path))?;
        if let Some(next) = self.segments.front() {
            self.cursor = Cursor {
                segment: next.id,
                offset: 0,
            };
            self.save_cursor()?;
        }
        Ok(front.unsent_samples)
    }

    /// Reads unsent records from the cursor on, up to `max_samples` samples (at least one
    /// record); `None` when everything was sent.
    pub fn peek(&self, max_samples: u64) -> Result<Option<Batch>, QueueError> {
        let mut batch = Batch {
            payload: Vec::new(),
            samples: 0,
            records: 0,
            end: self.cursor,
        };
        for segment in &self.segments {
            let start = if segment.id == self.cursor.segment {
                self.cursor.offset
            } else {
                0
            };
            if start >= segment.bytes {
                batch.end = Cursor {
                    segment: segment.id,
                    offset: segment.bytes,
                };
                continue;
            }
            let path = self.segment_path(segment.id);
            let mut file = File::open(&path).map_err(io_error(&path))?;
            file.seek(SeekFrom::Start(start)).map_err(io_error(&path))?;
            let mut reader = io::BufReader::new(file.take(segment.bytes - start));
            let mut offset = start;
            while offset < segment.bytes {
                let Some(record) = read_record(&mut reader).map_err(io_error(&path))? else {
                    break;
                };
                if batch.samples > 0 && batch.samples + record.samples > max_samples {
                    return Ok(Some(batch));
                }
                offset += HEADER_BYTES + record.payload.len() as u64;
                batch.payload.extend_from_slice(&record.payload);
                batch.samples += record.samples;
                batch.records += 1;
                batch.end = Cursor {
                    segment: segment.id,
                    offset,
                };
            }
        }
        Ok((!batch.payload.is_empty() || batch.samples > 0).then_some(batch))
    }

    /// Marks everything before `end` as sent: older segments are removed.
    pub fn ack(&mut self, end: Cursor, samples: u64) -> Result<(), QueueError> {
        let mut left = samples;
        while let Some(front) = self.segments.front_mut() {
            if front.id >= end.segment {
                // Past it: the batch's segment was dropped at the limit while it was sent.
                if front.id == end.segment {
                    front.unsent_samples = front.unsent_samples.saturating_sub(left);
                }
                break;
            }
            left = left.saturating_sub(front.unsent_samples);
            let id = front.id;
            self.segments.pop_front();
            let path = self.segment_path(id);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        if self
            .segments
            .front()
            .is_some_and(|front| front.id == end.segment)
        {
            self.cursor = end;
        }
        // All sent: the last segment goes too, so an idle queue takes no disk.
        let done = match (self.segments.len(), self.segments.front()) {
            (1, Some(only)) => (only.id == self.cursor.segment && only.bytes == self.cursor.offset)
                .then_some(only.id),
            _ => None,
        };
        if let Some(id) = done {
            let path = self.segment_path(id);
            self.cursor = Cursor {
                segment: id + 1,
                offset: 0,
            };
            self.segments.clear();
            self.writer = None;
            self.save_cursor()?;
            return fs::remove_file(&path).map_err(io_error(&path));
        }
        self.save_cursor()
    }

    fn save_cursor(&self) -> Result<(), QueueError> {
        let path = self.dir.join(CURSOR_FILE);
        let temp = self.dir.join("cursor.tmp");
        let text = format!("{} {}\n", self.cursor.segment, self.cursor.offset);
        fs::write(&temp, text).map_err(io_error(&temp))?;
        fs::rename(&temp, &path).map_err(io_error(&path))
    }
}

fn read_cursor(path: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Cursor { segment, offset })
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
