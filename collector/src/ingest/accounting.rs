//! Keeps each agent's sequence accounting on disk (`storage.dir/sequences.bin`), so that a
//! collector restart neither forgets a gap that opened while it was down nor counts twice a
//! late message that fills one.
//!
//! Read once at start; written every `SAVE_INTERVAL` and once more at shutdown, after the
//! decoder has applied everything already received. Each write goes to a temporary file that
//! is synced and renamed over the old one, so a crash leaves the previous file or the new one,
//! never a mix. After a crash (no final write) the accounting is at most `SAVE_INTERVAL` old:
//! messages received in that time count as open gaps again (missed if never replayed), an
//! overcount that errs on the side of showing loss.
//!
//! A file that cannot be read or believed is logged, counted, moved aside as
//! `sequences.bin.corrupt` for inspection, and the accounting starts afresh.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::Duration;

use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use prometheus::IntCounterVec;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::state::{ACCOUNTING_FILE, Corrupt, Moment, SharedState, decode_accounting};

/// How often the accounting is written while running.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Why the saved accounting was not used, or not written.
#[derive(Debug, Error)]
pub enum AccountingError {
    #[error("'{path}' is corrupt: {why}")]
    Corrupt { path: PathBuf, why: Corrupt },
    #[error("'{path}' cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{path}' cannot be written: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AccountingError {
    /// Every `reason` label of `pantau_collector_sequence_file_errors_total`.
    pub const REASONS: [&'static str; 3] = ["corrupt", "unreadable", "write"];

    fn reason(&self) -> &'static str {
        match self {
            Self::Corrupt { .. } => "corrupt",
            Self::Unreadable { .. } => "unreadable",
            Self::Write { .. } => "write",
        }
    }
}

/// The accounting file of one collector.
#[derive(Clone)]
pub struct Accounting {
    dir: PathBuf,
    state: SharedState,
    errors: IntCounterVec,
    /// A directory that stays unwritable fails every save: one log line per 10 minutes.
    write_log: std::sync::Arc<LogLimiter>,
}

impl Accounting {
    /// The accounting in `dir` (`storage.dir`) for `state`; failures count in `errors`.
    pub fn new(dir: &Path, state: SharedState, errors: IntCounterVec) -> Self {
        Self {
            dir: dir.to_owned(),
            state,
            errors,
            write_log: std::sync::Arc::new(LogLimiter::new(Duration::from_secs(600))),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(ACCOUNTING_FILE)
    }

    /// Reads the saved accounting into the state; on any failure, says so and starts afresh.
    pub async fn restore(&self) {
        let path = self.path();
        let read = tokio::task::spawn_blocking(move || read(&path)).await;
        let saved = match read {
            Ok(Ok(Some(saved))) => saved,
            Ok(Ok(None)) => {
                info!(file = %self.path().display(), "no saved sequence accounting: starting afresh");
                return;
            }
            Ok(Err(why)) => {
                self.errors.with_label_values(&[why.reason()]).inc();
                error!(error = %why, "saved sequence accounting not used: starting afresh");
                return;
            }
            Err(join) => {
                error!(error = %join, "reading the sequence accounting failed: starting afresh");
                return;
            }
        };
        let found = saved.len();
        let restored = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.restore(saved, Moment::now())
        };
        info!(found, restored, "sequence accounting restored");
    }

    /// Writes the accounting now.
    pub async fn save(&self) {
        let bytes = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            crate::state::encode_accounting(&state.accounting(Moment::now()))
        };
        let (dir, path) = (self.dir.clone(), self.path());
        let written = tokio::task::spawn_blocking(move || write_atomic(&dir, &path, &bytes)).await;
        let failure = match written {
            Ok(Ok(())) => return,
            Ok(Err(why)) => why,
            Err(join) => AccountingError::Write {
                path: self.path(),
                source: std::io::Error::other(join.to_string()),
            },
        };
        self.errors.with_label_values(&[failure.reason()]).inc();
        if let Verdict::Log { suppressed } = self.write_log.check("write") {
            warn!(error = %failure, suppressed, "sequence accounting not saved");
        }
    }

    /// Saves every `SAVE_INTERVAL` until `shutdown`. The last save is the caller's, once the
    /// decoder has finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SAVE_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.save().await,
            }
        }
    }
}

/// The saved accounting; none when there is no file yet. A corrupt file is moved aside.
fn read(path: &Path) -> Result<Option<Vec<crate::state::SavedAgent>>, AccountingError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AccountingError::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    decode_accounting(&bytes).map(Some).map_err(|why| {
        // Kept for inspection; the next save writes a fresh file.
        let _ = std::fs::rename(path, path.with_extension("bin.corrupt"));
        AccountingError::Corrupt {
            path: path.to_owned(),
            why,
        }
    })
}

/// Replaces `path` with `bytes`: written to a temporary file, synced, renamed, and the rename
/// synced through the directory, so a crash at any point leaves a whole file.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AccountingError> {
    let failed = |source| AccountingError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let temporary = path.with_extension("bin.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use prometheus::Opts;

    use super::*;
    use crate::state::{Liveness, State};

    fn accounting(dir: &Path) -> Accounting {
        let state = State::new(Liveness {
            silent_intervals: 3,
            default_interval: Duration::from_secs(1),
            forget_after: Duration::from_secs(3600),
        });
        let errors = IntCounterVec::new(Opts::new("e", "e"), &["reason"]).unwrap();
        Accounting::new(dir, Arc::new(RwLock::new(state)), errors)
    }

    #[tokio::test]
    async fn a_missing_file_is_a_fresh_start_and_a_save_writes_one() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("not-yet");
        let accounting = accounting(&sub);
        accounting.restore().await;
        accounting.save().await;
        let bytes = std::fs::read(sub.join(ACCOUNTING_FILE)).unwrap();
        assert_eq!(decode_accounting(&bytes).unwrap(), vec![]);
        assert!(!sub.join("sequences.bin.tmp").exists());
        for reason in AccountingError::REASONS {
            assert_eq!(accounting.errors.with_label_values(&[reason]).get(), 0);
        }
    }

    #[tokio::test]
    async fn a_corrupt_file_is_counted_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCOUNTING_FILE);
        std::fs::write(&path, b"PNTSEQ01 torn in half").unwrap();
        let accounting = accounting(dir.path());
        accounting.restore().await;
        assert_eq!(accounting.errors.with_label_values(&["corrupt"]).get(), 1);
        assert!(dir.path().join("sequences.bin.corrupt").exists());
        accounting.save().await;
        assert!(decode_accounting(&std::fs::read(&path).unwrap()).is_ok());
    }

    #[tokio::test]
    async fn an_unwritable_dir_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let accounting = accounting(&blocked);
        accounting.restore().await;
        assert_eq!(
            accounting.errors.with_label_values(&["unreadable"]).get(),
            1
        );
        accounting.save().await;
        assert_eq!(accounting.errors.with_label_values(&["write"]).get(), 1);
    }
}
