//! The outbox on disk: every message is written (and synced) before it is handed to the
//! broker, and survives SIGKILL and power loss.
//!
//! An append-only log of segment files (`<first record number>.seg`, rotated at 4 MiB) of
//! records `[body length u32][crc32 of body u32][body]`, body = `[seq u64][written ms i64]
//! [topic length u16][topic][payload]`. A segment file is deleted once every record in it is
//! acknowledged (or dropped). At start every segment is read back: a record whose length runs
//! past the end or whose checksum does not match is a torn write, the file is cut there and
//! the record counted, never parsed as data. Acknowledgements are kept as a watermark in the
//! file `done` (every number below it is acknowledged or dropped), written as it moves but not
//! synced: after a power cut a few delivered messages may be sent again, and the collector drops
//! repeats by sequence number. A log of our own (with crc32fast for the checksum) rather than an embedded database:
//! the access pattern is append, read in order, drop whole files, and a database would add
//! compaction and a second durability story for no gain.
//!
//! When the directory cannot be written (read-only, disk full) new messages wait in memory,
//! bounded by the same byte limit; the outbox says so (`on_disk` false) and moves them back to
//! disk as soon as a write succeeds again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Envelope, Outbox, OutboxStats};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Record header: body length and checksum.
const HEADER_BYTES: u64 = 8;
/// The largest body a record may claim; anything larger is a torn or foreign write.
const MAX_BODY_BYTES: u32 = 64 * 1024 * 1024;

/// Size of the `done` file: the watermark left-aligned in 20 columns and a newline.
const DONE_BYTES: u64 = 21;

/// Where a message waits.
#[derive(Debug, Clone)]
enum Place {
    Disk { segment: u64, offset: u64, len: u32 },
    Memory(Envelope),
}

#[derive(Debug, Clone)]
struct Entry {
    place: Place,
    written_ms: i64,
    bytes: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Kept open: records are read back through it even if the directory is renamed or
    /// removed meanwhile (an operator's mistake must not lose what is already stored).
    file: File,
    size: u64,
    /// Records in it not yet acknowledged or dropped.
    live: usize,
}

/// The disk-backed outbox.
#[derive(Debug)]
pub struct DiskOutbox {
    dir: PathBuf,
    max_bytes: u64,
    max_age_ms: i64,
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to.
    active: Option<u64>,
    entries: BTreeMap<u64, Entry>,
    /// Handed out since the last rewind and not yet acknowledged.
    handed: BTreeSet<u64>,
    bytes: u64,
    /// Whether the last write reached the disk.
    on_disk: bool,
    corrupt_records: u64,
    expired: u64,
    /// Every number below this is acknowledged or dropped (persisted in `done`).
    done_below: u64,
    /// One past the highest number stored so far.
    next_seq: u64,
    /// What the clock says, for ages; a function so tests can move it.
    now_ms: fn() -> i64,
}

impl DiskOutbox {
    /// Opens the outbox in `dir`, reading back whatever a previous run left there. A
    /// directory that cannot be used is not fatal: messages wait in memory until it can be
    /// written (the error is returned for the log).
    pub fn open(dir: &Path, max_bytes: u64, max_age_ms: i64) -> (Self, Option<io::Error>) {
        match Self::open_with_clock(dir, max_bytes, max_age_ms, wall_ms) {
            Ok(outbox) => (outbox, None),
            Err(error) => {
                let mut outbox = Self::empty(dir, max_bytes, max_age_ms, wall_ms);
                outbox.on_disk = false;
                (outbox, Some(error))
            }
        }
    }

    fn empty(dir: &Path, max_bytes: u64, max_age_ms: i64, now_ms: fn() -> i64) -> Self {
        Self {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1),
            max_age_ms,
            segments: BTreeMap::new(),
            active: None,
            entries: BTreeMap::new(),
            handed: BTreeSet::new(),
            bytes: 0,
            on_disk: true,
            corrupt_records: 0,
            expired: 0,
            done_below: 0,
            next_seq: 0,
            now_ms,
        }
    }

    fn open_with_clock(
        dir: &Path,
        max_bytes: u64,
        max_age_ms: i64,
        now_ms: fn() -> i64,
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut outbox = Self::empty(dir, max_bytes, max_age_ms, now_ms);
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let number = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()?;
                Some((number, path))
            })
            .collect();
        names.sort();
        outbox.done_below = fs::read_to_string(dir.join("done"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        for (number, path) in names {
            outbox.recover(number, &path)?;
        }
        Ok(outbox)
    }

    /// Reads one segment back, cutting it at the first torn record.
    fn recover(&mut self, number: u64, path: &Path) -> io::Result<()> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut offset = 0usize;
        let mut live = 0;
        while offset < data.len() {
            match parse_record(&data[offset..]) {
                Some((len, seq, written_ms)) => {
                    let bytes = HEADER_BYTES + u64::from(len);
                    self.next_seq = self.next_seq.max(seq + 1);
                    if seq < self.done_below {
                        // Acknowledged before the restart.
                        offset += bytes as usize;
                        continue;
                    }
                    if let Some(old) = self.entries.insert(
                        seq,
                        Entry {
                            place: Place::Disk {
                                segment: number,
                                offset: offset as u64,
                                len,
                            },
                            written_ms,
                            bytes,
                        },
                    ) {
                        self.forget(&old);
                    }
                    self.bytes += bytes;
                    live += 1;
                    offset += bytes as usize;
                }
                None => {
                    // A torn write (power cut mid-record): cut it off, count it.
                    self.corrupt_records += 1;
                    file.set_len(offset as u64)?;
                    file.sync_all()?;
                    break;
                }
            }
        }
        let size = offset as u64;
        if live == 0 {
            fs::remove_file(path)?;
            return Ok(());
        }
        self.segments.insert(
            number,
            Segment {
                path: path.to_owned(),
                file,
                size,
                live,
            },
        );
        Ok(())
    }

    /// Records cut off as torn writes since the agent started.
    #[cfg(test)]
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records
    }

    fn forget(&mut self, entry: &Entry) {
        self.bytes = self.bytes.saturating_sub(entry.bytes);
        if let Place::Disk { segment, .. } = entry.place
            && let Some(state) = self.segments.get_mut(&segment)
        {
            state.live = state.live.saturating_sub(1);
            let active = self.active == Some(segment);
            if state.live == 0 && !active {
                let path = state.path.clone();
                self.segments.remove(&segment);
                let _ = fs::remove_file(path);
            }
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        self.handed.remove(&seq);
        let entry = self.entries.remove(&seq)?;
        self.forget(&entry);
        self.advance_done();
        Some(entry)
    }

    /// Moves the watermark up to the oldest number still waiting, and writes it down.
    fn advance_done(&mut self) {
        let done = self.entries.keys().next().copied().unwrap_or(self.next_seq);
        if done <= self.done_below {
            return;
        }
        self.done_below = done;
        // In place and padded to a fixed width, not a temp file and a rename: that cost an
        // inode and a journal commit per acknowledgement (BENCHMARKS.md, issue 13). A write
        // this small lies within one sector; a torn or unreadable file reads as 0, which only
        // sends stored messages again.
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join("done"))
            .and_then(|file| {
                file.write_all_at(format!("{done:<20}\n").as_bytes(), 0)?;
                file.set_len(DONE_BYTES)
            });
        // Not fatal: at worst a restart sends some delivered messages again.
        let _ = written;
    }

    /// Appends a record to the active segment (starting one if needed) and syncs it.
    fn write(&mut self, seq: u64, written_ms: i64, envelope: &Envelope) -> io::Result<Place> {
        let record = encode_record(seq, written_ms, envelope);
        let rotate = match self.active {
            Some(number) => self
                .segments
                .get(&number)
                .is_none_or(|segment| segment.size >= SEGMENT_BYTES),
            None => true,
        };
        if rotate {
            if let Some(number) = self.active.take()
                && self.segments.get(&number).is_some_and(|s| s.live == 0)
                && let Some(segment) = self.segments.remove(&number)
            {
                let _ = fs::remove_file(segment.path);
            }
            fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(format!("{seq:020}.seg"));
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            self.segments.insert(
                seq,
                Segment {
                    path,
                    file,
                    size: 0,
                    live: 0,
                },
            );
            self.active = Some(seq);
        }
        let number = self
            .active
            .ok_or_else(|| io::Error::other("no active segment"))?;
        let file = &mut self
            .segments
            .get_mut(&number)
            .ok_or_else(|| io::Error::other("no active segment"))?
            .file;
        let offset = file.seek(SeekFrom::End(0))?;
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Leave no half record behind for the next run to trip over.
            let _ = file.set_len(offset);
            return Err(error);
        }
        if let Some(segment) = self.segments.get_mut(&number) {
            segment.size = offset + record.len() as u64;
            segment.live += 1;
        }
        Ok(Place::Disk {
            segment: number,
            offset,
            len: (record.len() as u64 - HEADER_BYTES) as u32,
        })
    }

    /// Moves messages waiting in memory to disk, oldest first, while writes succeed.
    fn flush_memory(&mut self) {
        let waiting: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.place, Place::Memory(_)))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in waiting {
            let Some(entry) = self.entries.get(&seq).cloned() else {
                continue;
            };
            let Place::Memory(envelope) = &entry.place else {
                continue;
            };
            match self.write(seq, entry.written_ms, envelope) {
                Ok(place) => {
                    if let Some(stored) = self.entries.get_mut(&seq) {
                        stored.place = place;
                    }
                }
                Err(_) => {
                    self.on_disk = false;
                    return;
                }
            }
        }
    }

    /// Drops messages older than the age limit.
    fn expire(&mut self) -> Vec<u64> {
        let horizon = (self.now_ms)().saturating_sub(self.max_age_ms);
        let old: Vec<u64> = self
            .entries
            .iter()
            .take_while(|(_, entry)| entry.written_ms < horizon)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &old {
            self.remove(*seq);
            self.expired += 1;
        }
        old
    }

    fn read(&self, seq: u64, entry: &Entry) -> Option<Envelope> {
        match &entry.place {
            Place::Memory(envelope) => Some(envelope.clone()),
            Place::Disk {
                segment,
                offset,
                len,
            } => {
                let file = &self.segments.get(segment)?.file;
                let mut data = vec![0u8; (HEADER_BYTES + u64::from(*len)) as usize];
                file.read_exact_at(&mut data, *offset).ok()?;
                decode_record(&data).filter(|envelope| envelope.seq == seq)
            }
        }
    }
}

impl Outbox for DiskOutbox {
    fn push(&mut self, envelope: Envelope) -> Vec<u64> {
        let mut dropped = self.expire();
        let written_ms = (self.now_ms)();
        let bytes = HEADER_BYTES + encoded_body_len(&envelope) as u64;
        while self.bytes + bytes > self.max_bytes {
            let Some((&oldest, _)) = self.entries.first_key_value() else {
                break;
            };
            self.remove(oldest);
            dropped.push(oldest);
        }
        if !self.on_disk {
            self.on_disk = true;
            self.flush_memory();
        }
        let seq = envelope.seq;
        self.next_seq = self.next_seq.max(seq + 1);
        let place = match self.on_disk {
            true => match self.write(seq, written_ms, &envelope) {
                Ok(place) => place,
                Err(_) => {
                    self.on_disk = false;
                    Place::Memory(envelope)
                }
            },
            false => Place::Memory(envelope),
        };
        self.entries.insert(
            seq,
            Entry {
                place,
                written_ms,
                bytes,
            },
        );
        self.bytes += bytes;
        dropped
    }

    fn next_unsent(&mut self, from: u64, until: u64) -> Option<Envelope> {
        loop {
            // At most the in-flight window is handed out and not yet acknowledged, so this
            // skips a few entries at most.
            let (seq, entry) = self
                .entries
                .range(from..until)
                .find(|(seq, _)| !self.handed.contains(seq))
                .map(|(seq, entry)| (*seq, entry.clone()))?;
            self.handed.insert(seq);
            match self.read(seq, &entry) {
                Some(envelope) => return Some(envelope),
                None => {
                    // Unreadable now (a file removed under us): count it and go on.
                    self.remove(seq);
                    self.corrupt_records += 1;
                }
            }
        }
    }

    fn acknowledge(&mut self, seq: u64) {
        self.remove(seq);
    }

    fn rewind(&mut self) {
        self.handed.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn stats(&self) -> OutboxStats {
        OutboxStats {
            messages: self.entries.len() as u64,
            bytes: self.bytes,
            oldest_ms: self.entries.values().next().map(|entry| entry.written_ms),
            on_disk: self.on_disk,
            corrupt_records: self.corrupt_records,
            expired: self.expired,
        }
    }
}

fn wall_ms() -> i64 {
    crate::message::unix_millis(std::time::SystemTime::now())
}

fn encoded_body_len(envelope: &Envelope) -> usize {
    8 + 8 + 2 + envelope.topic.len() + envelope.payload.len()
}

fn encode_record(seq: u64, written_ms: i64, envelope: &Envelope) -> Vec<u8> {
    let topic = envelope.topic.as_bytes();
    let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let topic = &topic[..usize::from(topic_len)];
    let mut body = Vec::with_capacity(encoded_body_len(envelope));
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&written_ms.to_le_bytes());
    body.extend_from_slice(&topic_len.to_le_bytes());
    body.extend_from_slice(topic);
    body.extend_from_slice(&envelope.payload);
    let mut record = Vec::with_capacity(body.len() + HEADER_BYTES as usize);
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

/// The length, sequence number and write time of the record at the start of `data`, if it is
/// whole and its checksum holds.
fn parse_record(data: &[u8]) -> Option<(u32, u64, i64)> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    if !(18..=MAX_BODY_BYTES).contains(&len) {
        return None;
    }
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    let body = data.get(8..8 + len as usize)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let written_ms = i64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    let topic_len = usize::from(u16::from_le_bytes(body.get(16..18)?.try_into().ok()?));
    body.get(18..18 + topic_len)?;
    Some((len, seq, written_ms))
}

fn decode_record(data: &[u8]) -> Option<Envelope> {
    let (len, seq, _) = parse_record(data)?;
    let body = data.get(8..8 + len as usize)?;
    let topic_len = usize::from(u16::from_le_bytes(body.get(16..18)?.try_into().ok()?));
    let topic = String::from_utf8(body.get(18..18 + topic_len)?.to_vec()).ok()?;
    Some(Envelope {
        seq,
        topic,
        payload: body.get(18 + topic_len..)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    static CLOCK: AtomicI64 = AtomicI64::new(1_800_000_000_000);

    fn clock() -> i64 {
        CLOCK.load(Ordering::Relaxed)
    }

    fn envelope(seq: u64, size: usize) -> Envelope {
        Envelope {
            seq,
            topic: "pantau/v1/dc/srv/metrics".to_owned(),
            payload: vec![(seq % 251) as u8; size],
        }
    }

    fn open(dir: &Path, max_bytes: u64) -> DiskOutbox {
        DiskOutbox::open_with_clock(dir, max_bytes, 86_400_000, clock).unwrap()
    }

    fn drain(outbox: &mut DiskOutbox) -> Vec<u64> {
        std::iter::from_fn(|| outbox.next_unsent(0, u64::MAX).map(|e| e.seq)).collect()
    }

    #[test]
    fn messages_survive_a_restart_and_acknowledged_ones_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        for seq in 1..=5 {
            outbox.push(envelope(seq, 100));
        }
        outbox.acknowledge(1);
        outbox.acknowledge(2);
        drop(outbox);
        let mut again = open(dir.path(), 1 << 30);
        // 1 and 2 were acknowledged: the watermark keeps them from coming back.
        assert_eq!(drain(&mut again), [3, 4, 5]);
        let message = again.entries.get(&4).cloned().unwrap();
        assert_eq!(again.read(4, &message).unwrap(), envelope(4, 100));
    }

    #[test]
    fn hands_out_in_order_once_and_again_after_a_rewind() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        for seq in 1..=4 {
            outbox.push(envelope(seq, 10));
        }
        assert_eq!(drain(&mut outbox), [1, 2, 3, 4]);
        assert_eq!(drain(&mut outbox), Vec::<u64>::new());
        outbox.acknowledge(1);
        outbox.acknowledge(3);
        assert_eq!(outbox.len(), 2);
        outbox.rewind();
        assert_eq!(drain(&mut outbox), [2, 4]);
        outbox.push(envelope(5, 10));
        assert_eq!(
            drain(&mut outbox),
            [5],
            "pushed after handing out, it follows"
        );
    }

    #[test]
    fn a_fully_acknowledged_segment_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        // 3 records of 2 MiB: the first segment closes after two.
        for seq in 1..=3 {
            outbox.push(envelope(seq, 2 * 1024 * 1024));
        }
        assert_eq!(outbox.segments.len(), 2);
        outbox.acknowledge(1);
        outbox.acknowledge(2);
        assert_eq!(outbox.segments.len(), 1);
        let segment_files = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "seg"))
            .count();
        assert_eq!(segment_files, 1);
        assert_eq!(
            fs::read_to_string(dir.path().join("done")).unwrap(),
            format!("{:<20}\n", 3)
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        for seq in 1..=20 {
            outbox.push(envelope(seq, 50 + seq as usize));
        }
        drop(outbox);
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let whole = fs::read(&path).unwrap();
        // Every offset inside the last three records: the complete ones survive.
        let mut boundaries = vec![0usize];
        let mut at = 0;
        while at < whole.len() {
            let (len, _, _) = parse_record(&whole[at..]).unwrap();
            at += 8 + len as usize;
            boundaries.push(at);
        }
        for cut in (boundaries[17] + 1)..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let mut outbox = open(dir.path(), 1 << 30);
            let complete = boundaries.iter().filter(|b| **b <= cut && **b > 0).count() as u64;
            let torn = u64::from(!boundaries.contains(&cut));
            assert_eq!(outbox.corrupt_records(), torn, "cut at {cut}");
            assert_eq!(
                drain(&mut outbox),
                (1..=complete).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            drop(outbox);
            // The cut file is valid again: a second start finds nothing torn.
            assert_eq!(open(dir.path(), 1 << 30).corrupt_records(), 0);
            fs::write(&path, &whole).unwrap();
        }
    }

    #[test]
    fn a_flipped_bit_is_not_parsed_as_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        for seq in 1..=3 {
            outbox.push(envelope(seq, 64));
        }
        drop(outbox);
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let mut outbox = open(dir.path(), 1 << 30);
        assert_eq!(outbox.corrupt_records(), 1);
        assert_eq!(drain(&mut outbox), [1, 2]);
    }

    #[test]
    fn the_oldest_go_first_at_the_byte_limit_and_the_age_limit() {
        let dir = tempfile::tempdir().unwrap();
        let record = HEADER_BYTES + encoded_body_len(&envelope(1, 100)) as u64;
        let mut outbox = open(dir.path(), record * 3);
        for seq in 1..=3 {
            assert!(outbox.push(envelope(seq, 100)).is_empty());
        }
        assert_eq!(outbox.push(envelope(4, 100)), [1]);
        assert_eq!(outbox.stats().bytes, record * 3);
        CLOCK.fetch_add(86_400_001, Ordering::Relaxed);
        assert_eq!(outbox.push(envelope(5, 100)), [2, 3, 4]);
        assert_eq!(drain(&mut outbox), [5]);
        assert_eq!(outbox.stats().expired, 3);
    }

    #[test]
    fn an_unwritable_directory_falls_back_to_memory_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("outbox");
        let mut outbox = open(&store, 1 << 30);
        outbox.push(envelope(1, 10));
        // The directory replaced by a file: no new segment can be made, even by root.
        fs::remove_dir_all(&store).unwrap();
        fs::write(&store, "").unwrap();
        outbox.active = None;
        outbox.push(envelope(2, 10));
        assert!(!outbox.stats().on_disk);
        fs::remove_file(&store).unwrap();
        fs::create_dir_all(&store).unwrap();
        outbox.push(envelope(3, 10));
        assert!(outbox.stats().on_disk);
        drop(outbox);
        let mut again = open(&store, 1 << 30);
        assert_eq!(
            drain(&mut again),
            [2, 3],
            "the memory ones were moved to disk"
        );
    }
}
