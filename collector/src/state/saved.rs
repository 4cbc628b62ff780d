//! The file that keeps each agent's sequence accounting (received, duplicates, late, missed,
//! and the window of numbers seen) across collector restarts: `sequences.bin` in
//! `storage.dir`.
//!
//! One checksummed file, replaced whole, rather than a table in the announcements' SQLite
//! database: that database exists only when announcements are on, while the accounting is
//! always kept; the snapshot is taken under one lock, so a single atomic rename keeps it
//! consistent across agents; and a CRC32 over the whole file tells a torn or damaged file
//! from a good one, which then starts afresh instead of being half believed.
//!
//! Layout, little-endian: `MAGIC`, the agent count (u32), the agents, then a CRC32 of all
//! that. Each agent: id and site (u16 length + UTF-8), the wall time of its last activity
//! (i64 Unix ms), its last birth's `connected_ms` (a flag and an i64), the window (a flag and the newest number, where counting starts, missed,
//! the bitmap) and the received, duplicate and late counters. The bitmap's `WORDS` words are
//! written as runs (u16 count of runs, then each as a u16 length and the u64 word): a window
//! where everything arrived is one run of all ones, so the file is about 100 bytes per agent
//! instead of 4 KiB, which matters on an SD card written every few seconds; the worst case
//! is 5 KiB.

use thiserror::Error;

use super::sequence::{WORDS, WindowParts};

/// The file inside `storage.dir`.
pub const FILE_NAME: &str = "sequences.bin";

/// Format and version of the file; a new layout takes a new magic.
const MAGIC: &[u8; 8] = b"PNTSEQ01";

/// Longest id or site written; the state refuses longer ones long before.
const MAX_TEXT: usize = u16::MAX as usize;

/// One agent's accounting as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedAgent {
    pub id: String,
    pub site: String,
    /// When anything about the agent last happened (Unix ms, wall clock): drives forgetting
    /// agents that stay away.
    pub last_activity_ms: i64,
    pub window: WindowParts,
    /// `connected_ms` of the agent's last birth, so a replayed birth is known as seen.
    pub online_connected_ms: Option<i64>,
    pub messages_total: u64,
    pub duplicates_total: u64,
    pub late_total: u64,
}

/// Why a saved file cannot be believed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Corrupt {
    #[error("not a Pantau sequence file (bad magic)")]
    Magic,
    #[error("checksum mismatch: the file is damaged or was cut short")]
    Checksum,
    #[error("file is cut short")]
    Short,
    #[error("an agent id or site is not UTF-8")]
    Text,
    #[error("a window's bitmap does not have the right length")]
    Bitmap,
    #[error("{0} bytes left over after the last agent")]
    Trailing(usize),
}

/// The file's bytes for `agents`.
pub fn encode(agents: &[SavedAgent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + agents.len() * 128);
    out.extend_from_slice(MAGIC);
    let count = u32::try_from(agents.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for agent in agents.iter().take(count as usize) {
        put_text(&mut out, &agent.id);
        put_text(&mut out, &agent.site);
        out.extend_from_slice(&agent.last_activity_ms.to_le_bytes());
        out.push(u8::from(agent.online_connected_ms.is_some()));
        out.extend_from_slice(&agent.online_connected_ms.unwrap_or(0).to_le_bytes());
        let window = &agent.window;
        out.push(u8::from(window.top.is_some()));
        for value in [window.top.unwrap_or(0), window.counted_from, window.missed] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        put_runs(&mut out, &window.seen);
        for value in [
            agent.messages_total,
            agent.duplicates_total,
            agent.late_total,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The agents in a file's `bytes`, or why it cannot be believed.
pub fn decode(bytes: &[u8]) -> Result<Vec<SavedAgent>, Corrupt> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Corrupt::Magic);
    }
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(Corrupt::Short);
    };
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(Corrupt::Checksum);
    }
    let mut reader = Reader {
        rest: &body[MAGIC.len()..],
    };
    let count = reader.u32()?;
    // Not `with_capacity(count)`: the count is only trusted as far as the bytes go.
    let mut agents = Vec::new();
    for _ in 0..count {
        let id = reader.text()?;
        let site = reader.text()?;
        let last_activity_ms = reader.u64()? as i64;
        let has_connected = reader.take(1)?[0] != 0;
        let connected_ms = reader.u64()? as i64;
        let has_top = reader.take(1)?[0] != 0;
        let top = reader.u64()?;
        let counted_from = reader.u64()?;
        let missed = reader.u64()?;
        let seen = reader.runs()?;
        agents.push(SavedAgent {
            id,
            site,
            last_activity_ms,
            window: WindowParts {
                top: has_top.then_some(top),
                counted_from,
                missed,
                seen,
            },
            online_connected_ms: has_connected.then_some(connected_ms),
            messages_total: reader.u64()?,
            duplicates_total: reader.u64()?,
            late_total: reader.u64()?,
        });
    }
    match reader.rest.len() {
        0 => Ok(agents),
        left => Err(Corrupt::Trailing(left)),
    }
}

/// The bitmap's words as runs of equal words; missing words are zeros.
fn put_runs(out: &mut Vec<u8>, words: &[u64]) {
    let mut runs: Vec<(u16, u64)> = Vec::new();
    for word in words
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(WORDS)
    {
        match runs.last_mut() {
            Some((len, last)) if *last == word => *len += 1,
            _ => runs.push((1, word)),
        }
    }
    out.extend_from_slice(&(runs.len() as u16).to_le_bytes());
    for (len, word) in runs {
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&word.to_le_bytes());
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    // Cut at a character boundary; ids are far shorter (limits on topic levels).
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.rest.len() < n {
            return Err(Corrupt::Short);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| Corrupt::Short)?,
        ))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| Corrupt::Short)?,
        ))
    }

    /// Runs written by `put_runs`; they must add up to `WORDS` words exactly.
    fn runs(&mut self) -> Result<Vec<u64>, Corrupt> {
        let count = self.u16()?;
        let mut words = Vec::with_capacity(WORDS);
        for _ in 0..count {
            let len = usize::from(self.u16()?);
            let word = self.u64()?;
            if len == 0 || words.len() + len > WORDS {
                return Err(Corrupt::Bitmap);
            }
            words.resize(words.len() + len, word);
        }
        match words.len() == WORDS {
            true => Ok(words),
            false => Err(Corrupt::Bitmap),
        }
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn text(&mut self) -> Result<String, Corrupt> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Corrupt::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, top: Option<u64>) -> SavedAgent {
        let mut seen = vec![0; WORDS];
        seen[0] = 0b1011;
        seen[WORDS - 1] = u64::MAX;
        SavedAgent {
            id: id.to_owned(),
            site: "dc".to_owned(),
            last_activity_ms: 1_700_000_000_000,
            window: WindowParts {
                top,
                counted_from: 2,
                missed: 7,
                seen,
            },
            online_connected_ms: top.map(|_| 1_700_000_000_500),
            messages_total: 11,
            duplicates_total: 3,
            late_total: 1,
        }
    }

    #[test]
    fn agents_round_trip() {
        let agents = vec![agent("dc-a", Some(40_000)), agent("dc-ü", None)];
        assert_eq!(decode(&encode(&agents)).unwrap(), agents);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn a_full_window_is_small_and_any_bitmap_round_trips() {
        let mut full = agent("dc-a", Some(40_000));
        full.window.seen = vec![u64::MAX; WORDS];
        let bytes = encode(std::slice::from_ref(&full));
        assert!(bytes.len() < 120, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), vec![full]);
        // Every word different: the worst case, still whole.
        let mut mixed = agent("dc-b", Some(7));
        mixed.window.seen = (0..WORDS as u64).collect();
        let bytes = encode(std::slice::from_ref(&mixed));
        assert!(bytes.len() < 6 * 1024, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), vec![mixed]);
    }

    #[test]
    fn damage_is_detected_never_parsed() {
        let bytes = encode(&[agent("dc-a", Some(5))]);
        assert_eq!(decode(b"garbage!garbage"), Err(Corrupt::Magic));
        assert_eq!(decode(&bytes[..3]), Err(Corrupt::Magic));
        // Every cut and every flipped byte after the magic fails the checksum.
        for cut in MAGIC.len()..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in [MAGIC.len(), 20, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert_eq!(decode(&bad), Err(Corrupt::Checksum), "flip at {at}");
        }
    }

    #[test]
    fn a_lying_count_is_caught_after_the_checksum() {
        // A count larger than the agents present, with a checksum that matches.
        let mut body = encode(&[agent("dc-a", Some(5))]);
        body.truncate(body.len() - 4);
        body[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&body), Err(Corrupt::Short));
    }
}
