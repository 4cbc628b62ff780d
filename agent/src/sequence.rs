//! The agent's message sequence number, persisted in `state_dir/sequence` so it keeps growing
//! by one per message across restarts. The collector counts gaps as lost messages and repeats
//! as duplicates, so a number must never be handed out twice.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use thiserror::Error;
use tracing::{error, info};

use crate::telemetry::Telemetry;

/// The file's size: the number left-aligned in 20 columns (u64::MAX has 20 digits) and a newline.
const RECORD_BYTES: u64 = 21;

/// While the state directory stays unwritable, the error is repeated this often.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum SequenceError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds {content:?}, not a sequence number")]
    Corrupt { path: PathBuf, content: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Hands out sequence numbers and records each one before it is used.
///
/// A state directory that cannot be written (read-only, full disk, replaced by a file) never
/// stops reporting: numbers are then kept in memory, the failure is logged and shown in
/// `pantau_agent_state_persistence_failed`, and every later number retries the write, so the
/// agent recovers by itself once the directory is writable again.
#[derive(Debug)]
pub struct Sequence {
    state_dir: PathBuf,
    path: PathBuf,
    /// The next number to hand out; shared so the birth message can announce it.
    next: Arc<AtomicU64>,
    telemetry: Arc<Telemetry>,
    failing: bool,
    error_log: LogLimiter,
}

impl Sequence {
    /// Opens (or starts) the sequence in `state_dir`, creating the directory if needed. A
    /// number that cannot be read (unreadable or corrupt file) starts again from 0: the birth
    /// message announces it, and the collector then counts afresh instead of dropping the
    /// agent's messages as repeats.
    pub fn open(state_dir: &Path, telemetry: Arc<Telemetry>) -> Self {
        let path = state_dir.join("sequence");
        let mut sequence = Self {
            state_dir: state_dir.to_owned(),
            path,
            next: Arc::new(AtomicU64::new(0)),
            telemetry,
            failing: false,
            error_log: LogLimiter::new(ERROR_LOG_PERIOD),
        };
        match sequence.read() {
            Ok(next) => sequence.next.store(next, Ordering::SeqCst),
            Err(error) => error!(
                %error,
                "cannot read the sequence number; counting again from 0 (the collector is told \
                 in the birth message)"
            ),
        }
        // Prove now, not at the first message, that the directory is writable.
        let next = sequence.next.load(Ordering::SeqCst);
        sequence.persist(next);
        sequence
    }

    fn read(&self) -> Result<u64, SequenceError> {
        match fs::read_to_string(&self.path) {
            Ok(content) => content
                .trim()
                .parse::<u64>()
                .map_err(|_| SequenceError::Corrupt {
                    path: self.path.clone(),
                    content: content.chars().take(40).collect(),
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(SequenceError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Takes the next number. It is written to disk first, so a crash right after cannot hand
    /// the same number out again; when it cannot be written it is handed out all the same.
    pub fn take(&mut self) -> u64 {
        let seq = self.next.load(Ordering::SeqCst);
        self.persist(seq + 1);
        self.next.store(seq + 1, Ordering::SeqCst);
        seq
    }

    /// A view of the next number, for the birth message.
    pub fn next_handle(&self) -> Arc<AtomicU64> {
        self.next.clone()
    }

    /// Whether the last write failed.
    #[cfg(test)]
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    fn persist(&mut self, next: u64) {
        match self.store(next) {
            Ok(()) => {
                if self.failing {
                    info!(path = %self.path.display(), next, "state directory writable again, sequence number persisted");
                }
                self.failing = false;
                self.telemetry
                    .state_persistence_failed
                    .store(0, Ordering::Relaxed);
            }
            Err(error) => self.failed(&error),
        }
    }

    fn failed(&mut self, error: &SequenceError) {
        self.telemetry
            .state_write_errors
            .fetch_add(1, Ordering::Relaxed);
        self.telemetry
            .state_persistence_failed
            .store(1, Ordering::Relaxed);
        let first = !self.failing;
        self.failing = true;
        if let Verdict::Log { suppressed } = self.error_log.check("persist") {
            error!(
                %error,
                suppressed,
                first,
                "cannot persist the sequence number; reporting goes on with it in memory \
                 (a restart now would reuse numbers). Fix agent.state_dir"
            );
        }
    }

    /// Overwrites the number in place, padded to a fixed width so the file never changes size,
    /// and syncs the data: one open of an existing file and one fdatasync per message. A temp
    /// file and a rename per message cost an inode and a journal commit each, a fifth of the
    /// agent's CPU per round (BENCHMARKS.md, issue 13). A write this small lies within one disk
    /// sector, which a power cut leaves old or new; a torn file would read as corrupt and count
    /// again from 0, which the birth message announces.
    fn store(&self, next: u64) -> Result<(), SequenceError> {
        fs::create_dir_all(&self.state_dir).map_err(|source| SequenceError::CreateDir {
            path: self.state_dir.clone(),
            source,
        })?;
        let write_error = |source| SequenceError::Write {
            path: self.path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(write_error)?;
        file.write_all_at(format!("{next:<20}\n").as_bytes(), 0)
            .map_err(write_error)?;
        file.set_len(RECORD_BYTES).map_err(write_error)?;
        file.sync_data().map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Sequence {
        Sequence::open(dir, Arc::new(Telemetry::default()))
    }

    fn failed_gauge(sequence: &Sequence) -> u64 {
        sequence
            .telemetry
            .state_persistence_failed
            .load(Ordering::Relaxed)
    }

    #[test]
    fn survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("nested/state");
        let mut sequence = open(&state_dir);
        assert_eq!(sequence.take(), 0);
        assert_eq!(sequence.take(), 1);
        drop(sequence);
        let mut sequence = open(&state_dir);
        assert_eq!(sequence.next_handle().load(Ordering::SeqCst), 2);
        assert_eq!(sequence.take(), 2);
        assert_eq!(
            fs::read_to_string(state_dir.join("sequence")).unwrap(),
            format!("{:<20}\n", 3)
        );
        assert!(!sequence.is_failing());
    }

    #[test]
    fn a_corrupt_file_starts_again_from_zero_and_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("sequence"), "garbage").unwrap();
        let mut sequence = open(dir.path());
        assert_eq!(sequence.take(), 0);
        assert!(!sequence.is_failing(), "the write succeeded");
        assert_eq!(
            fs::read_to_string(dir.path().join("sequence")).unwrap(),
            format!("{:<20}\n", 1)
        );
    }

    #[test]
    fn an_unwritable_directory_keeps_counting_in_memory_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let mut sequence = open(&state_dir);
        assert_eq!(sequence.take(), 0);
        // Replace the directory by a file: unwritable even for root.
        fs::remove_dir_all(&state_dir).unwrap();
        fs::write(&state_dir, "").unwrap();
        assert_eq!(sequence.take(), 1);
        assert_eq!(sequence.take(), 2);
        assert!(sequence.is_failing());
        assert_eq!(failed_gauge(&sequence), 1);
        assert_eq!(
            sequence
                .telemetry
                .state_write_errors
                .load(Ordering::Relaxed),
            2
        );

        fs::remove_file(&state_dir).unwrap();
        assert_eq!(sequence.take(), 3);
        assert!(!sequence.is_failing());
        assert_eq!(failed_gauge(&sequence), 0);
        assert_eq!(
            fs::read_to_string(state_dir.join("sequence")).unwrap(),
            format!("{:<20}\n", 4)
        );
    }

    #[test]
    fn an_unusable_directory_at_start_does_not_stop_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let mut sequence = open(&blocker.join("state"));
        assert!(sequence.is_failing());
        assert_eq!(sequence.take(), 0);
        assert_eq!(failed_gauge(&sequence), 1);
    }
}
