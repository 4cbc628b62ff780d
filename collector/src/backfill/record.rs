//! One record of the backfill queue's segment files:
//! `[len u32][crc32 u32][samples u32][timestamp_ms i64][payload]`, little endian, the crc over
//! everything after itself. Reading stops at the first torn or corrupt record.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::queue::{QueueError, io_error};

pub const HEADER_BYTES: u64 = 20;
/// Largest record accepted when reading: anything longer is corruption.
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// The bytes of a record of `samples` samples taken at `timestamp_ms`.
pub fn encode(samples: u32, timestamp_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(payload.len() + HEADER_BYTES as usize);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&samples.to_le_bytes());
    record.extend_from_slice(&timestamp_ms.to_le_bytes());
    record.extend_from_slice(payload);
    let crc = crc32fast::hash(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

pub struct Record {
    pub samples: u64,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// The next record, `None` at the end or at a torn or corrupt one.
pub fn read_record(reader: &mut impl Read) -> io::Result<Option<Record>> {
    let mut header = [0u8; HEADER_BYTES as usize];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let field = |range: std::ops::Range<usize>| -> [u8; 4] {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&header[range]);
        bytes
    };
    let len = u64::from(u32::from_le_bytes(field(0..4)));
    let crc = u32::from_le_bytes(field(4..8));
    let samples = u64::from(u32::from_le_bytes(field(8..12)));
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&header[12..20]);
    let timestamp_ms = i64::from_le_bytes(stamp);
    if len > MAX_RECORD_BYTES {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..]);
    hasher.update(&payload);
    if hasher.finalize() != crc {
        return Ok(None);
    }
    Ok(Some(Record {
        samples,
        timestamp_ms,
        payload,
    }))
}

pub struct Scan {
    pub file_bytes: u64,
    pub valid_bytes: u64,
    /// Offset and samples of every valid record.
    pub records: Vec<(u64, u64)>,
    pub oldest_ms: Option<i64>,
}

pub fn scan(path: &Path) -> Result<Scan, QueueError> {
    let file = File::open(path).map_err(io_error(path))?;
    let file_bytes = file.metadata().map_err(io_error(path))?.len();
    let mut reader = io::BufReader::new(file);
    let mut scan = Scan {
        file_bytes,
        valid_bytes: 0,
        records: Vec::new(),
        oldest_ms: None,
    };
    while let Some(record) = read_record(&mut reader).map_err(io_error(path))? {
        scan.records.push((scan.valid_bytes, record.samples));
        scan.valid_bytes += HEADER_BYTES + record.payload.len() as u64;
        scan.oldest_ms = Some(
            scan.oldest_ms
                .map_or(record.timestamp_ms, |o| o.min(record.timestamp_ms)),
        );
    }
    Ok(scan)
}
