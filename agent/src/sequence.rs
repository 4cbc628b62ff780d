//! The agent's message sequence number, persisted in `state_dir/sequence` so it keeps growing
//! by one per message across restarts. The collector counts gaps as lost messages and repeats
//! as duplicates, so a number must never be handed out twice.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SequenceError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds {content:?}, not a sequence number; remove it to start again from 0")]
    Corrupt { path: PathBuf, content: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Hands out sequence numbers and records each one before it is used.
#[derive(Debug)]
pub struct Sequence {
    path: PathBuf,
    /// The next number to hand out; shared so the birth message can announce it.
    next: Arc<AtomicU64>,
}

impl Sequence {
    /// Opens (or starts) the sequence in `state_dir`, creating the directory if needed.
    pub fn open(state_dir: &Path) -> Result<Self, SequenceError> {
        fs::create_dir_all(state_dir).map_err(|source| SequenceError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join("sequence");
        let next = match fs::read_to_string(&path) {
            Ok(content) => content
                .trim()
                .parse::<u64>()
                .map_err(|_| SequenceError::Corrupt {
                    path: path.clone(),
                    content: content.chars().take(40).collect(),
                })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => return Err(SequenceError::Read { path, source }),
        };
        let sequence = Self {
            path,
            next: Arc::new(AtomicU64::new(next)),
        };
        // Prove now, not at the first message, that the directory is writable.
        sequence.store(next)?;
        Ok(sequence)
    }

    /// Takes the next number. It is written to disk first, so a crash right after cannot hand
    /// the same number out again.
    pub fn take(&self) -> Result<u64, SequenceError> {
        let seq = self.next.load(Ordering::SeqCst);
        self.store(seq + 1)?;
        self.next.store(seq + 1, Ordering::SeqCst);
        Ok(seq)
    }

    /// A view of the next number, for the birth message.
    pub fn next_handle(&self) -> Arc<AtomicU64> {
        self.next.clone()
    }

    /// Writes atomically: a temp file, fsync, rename, so a power cut leaves the old or the new
    /// value, never a torn one.
    fn store(&self, next: u64) -> Result<(), SequenceError> {
        let write_error = |source| SequenceError::Write {
            path: self.path.clone(),
            source,
        };
        let temp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&temp).map_err(write_error)?;
        file.write_all(format!("{next}\n").as_bytes())
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        fs::rename(&temp, &self.path).map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("nested/state");
        let sequence = Sequence::open(&state_dir).unwrap();
        assert_eq!(sequence.take().unwrap(), 0);
        assert_eq!(sequence.take().unwrap(), 1);
        drop(sequence);
        let sequence = Sequence::open(&state_dir).unwrap();
        assert_eq!(sequence.next_handle().load(Ordering::SeqCst), 2);
        assert_eq!(sequence.take().unwrap(), 2);
        assert_eq!(
            fs::read_to_string(state_dir.join("sequence")).unwrap(),
            "3\n"
        );
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("sequence"), "garbage").unwrap();
        let error = Sequence::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("holds \"garbage\""), "{error}");
    }

    #[test]
    fn an_unwritable_directory_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let error = Sequence::open(&blocker.join("state")).unwrap_err();
        assert!(matches!(error, SequenceError::CreateDir { .. }), "{error}");
    }
}
