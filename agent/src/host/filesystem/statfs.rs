//! statvfs(2) with a timeout, for the `filesystem` collector.
//!
//! statvfs on a dead NFS or FUSE mount blocks in the kernel, possibly for ever, and nothing can
//! cancel it. So each call runs on a thread of its own and is waited for at most the timeout.
//! A path whose call timed out is "stuck": it is not tried again (its result is an error) until
//! that call returns, so at most one thread is ever parked on it. This is node_exporter's
//! `stuckMounts` scheme.
//!
//! Spawning a thread per mount per round was most of this collector's cost, and nearly every
//! call returns at once. So calls go one after another to one long-lived worker thread; when
//! one of them times out, that worker is left to it (it exits once the call returns) and the
//! round's remaining calls run a thread each, as before, with one shared deadline. A round with
//! a newly stuck mount thus waits at most two timeouts instead of one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// What statvfs(2) says about one mount, in node_exporter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub size_bytes: f64,
    pub free_bytes: f64,
    pub avail_bytes: f64,
    pub files: f64,
    pub files_free: f64,
}

/// The statvfs call; a plain function so tests can put a slow one in its place.
pub type StatFn = fn(&Path) -> std::io::Result<Usage>;

pub fn statvfs_usage(path: &Path) -> std::io::Result<Usage> {
    let stat = rustix::fs::statvfs(path)?;
    // node_exporter multiplies by f_bsize, not f_frsize; Linux gives both the same value on
    // nearly every file system, and matching node_exporter keeps the numbers identical.
    let block = stat.f_bsize as f64;
    Ok(Usage {
        size_bytes: stat.f_blocks as f64 * block,
        free_bytes: stat.f_bfree as f64 * block,
        avail_bytes: stat.f_bavail as f64 * block,
        files: stat.f_files as f64,
        files_free: stat.f_ffree as f64,
    })
}

/// Runs statvfs calls with a timeout and remembers the stuck ones.
pub struct TimedStatfs {
    timeout: Duration,
    stat: StatFn,
    /// Sends calls to the long-lived worker; `None` until the first round, and after the
    /// worker was left to a stuck call.
    worker: Option<mpsc::Sender<Job>>,
    /// Paths whose call timed out and has not returned yet. The helper thread removes its path
    /// when the call returns; a timed-out wait inserts it only under the same lock and only if
    /// no result arrived meanwhile, so a late return is never missed.
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl TimedStatfs {
    pub fn new(timeout: Duration, stat: StatFn) -> Self {
        Self {
            timeout,
            stat,
            worker: None,
            stuck: Arc::default(),
        }
    }

    /// Calls statvfs on every path; `None` where it failed, timed out or is still stuck.
    pub fn stat_all(&mut self, paths: &[PathBuf]) -> Vec<Option<Usage>> {
        let mut results = Vec::with_capacity(paths.len());
        for (index, path) in paths.iter().enumerate() {
            if lock(&self.stuck).contains(path) {
                debug!(path = %path.display(), "mount is still unresponsive; skipping it");
                results.push(None);
                continue;
            }
            let Some(call) = self.send_to_worker(path) else {
                results.extend(self.stat_each_on_a_thread(&paths[index..]));
                return results;
            };
            let usage = self.finish(call, Instant::now() + self.timeout);
            if usage.is_none() && lock(&self.stuck).contains(path) {
                // The worker is parked on this path; leave it and finish the round the old way.
                self.worker = None;
                results.push(None);
                results.extend(self.stat_each_on_a_thread(&paths[index + 1..]));
                return results;
            }
            results.push(usage);
        }
        results
    }

    /// Hands one call to the worker, starting it if needed; `None` if no worker can run.
    fn send_to_worker(&mut self, path: &Path) -> Option<Call> {
        for _ in 0..2 {
            let worker = match &self.worker {
                Some(worker) => worker.clone(),
                None => {
                    let worker = self.spawn_worker()?;
                    self.worker = Some(worker.clone());
                    worker
                }
            };
            let (sender, receiver) = mpsc::channel();
            if worker.send((path.to_owned(), sender)).is_ok() {
                return Some(Call::Started {
                    path: path.to_owned(),
                    receiver,
                });
            }
            // The worker is gone (it cannot panic, but be safe): start another once.
            self.worker = None;
        }
        None
    }

    fn spawn_worker(&self) -> Option<mpsc::Sender<Job>> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let stuck = Arc::clone(&self.stuck);
        let stat = self.stat;
        let spawned = thread::Builder::new()
            .name("statvfs".to_owned())
            .spawn(move || {
                for (path, reply) in receiver {
                    let result = stat(&path);
                    let mut stuck = lock(&stuck);
                    if stuck.remove(&path) {
                        info!(path = %path.display(), "stuck mount responded; monitoring it again");
                    }
                    let _ = reply.send(result);
                }
            });
        match spawned {
            Ok(_) => Some(jobs),
            Err(error) => {
                debug!(%error, "could not start the statvfs worker");
                None
            }
        }
    }

    /// The old way: a thread per call, one shared deadline.
    fn stat_each_on_a_thread(&self, paths: &[PathBuf]) -> Vec<Option<Usage>> {
        let calls: Vec<_> = paths.iter().map(|path| self.start(path)).collect();
        // One deadline for all calls, taken once they all started: many mounts going stuck at
        // once (one NFS server down) cost one timeout, not one each.
        let deadline = Instant::now() + self.timeout;
        calls
            .into_iter()
            .map(|call| self.finish(call, deadline))
            .collect()
    }

    fn start(&self, path: &Path) -> Call {
        if lock(&self.stuck).contains(path) {
            debug!(path = %path.display(), "mount is still unresponsive; skipping it");
            return Call::Skipped;
        }
        let (sender, receiver) = mpsc::channel();
        let stuck = Arc::clone(&self.stuck);
        let stat = self.stat;
        let thread_path = path.to_owned();
        let spawned = thread::Builder::new()
            .name("statvfs".to_owned())
            .spawn(move || {
                let result = stat(&thread_path);
                // Under the lock, so the waiter either sees this result or has already marked
                // the path stuck and it is unmarked here.
                let mut stuck = lock(&stuck);
                if stuck.remove(&thread_path) {
                    info!(path = %thread_path.display(), "stuck mount responded; monitoring it again");
                }
                // The waiter may have given up; then nobody needs the result.
                let _ = sender.send(result);
            });
        match spawned {
            Ok(_) => Call::Started {
                path: path.to_owned(),
                receiver,
            },
            Err(error) => {
                debug!(path = %path.display(), %error, "could not start a statvfs thread");
                Call::Skipped
            }
        }
    }

    fn finish(&self, call: Call, deadline: Instant) -> Option<Usage> {
        let Call::Started { path, receiver } = call else {
            return None;
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let result = match receiver.recv_timeout(wait) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                let mut stuck = lock(&self.stuck);
                match receiver.try_recv() {
                    Ok(result) => result,
                    Err(_) => {
                        // Logged once: later rounds skip the path at debug level.
                        warn!(
                            path = %path.display(),
                            timeout_seconds = self.timeout.as_secs_f64(),
                            "statvfs timed out; skipping this mount until the call returns"
                        );
                        stuck.insert(path);
                        return None;
                    }
                }
            }
            // The thread ended without sending, i.e. it panicked; statvfs does not.
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        result
            .inspect_err(|error| debug!(path = %path.display(), %error, "statvfs failed"))
            .ok()
    }

    #[cfg(test)]
    fn is_stuck(&self, path: &Path) -> bool {
        lock(&self.stuck).contains(path)
    }
}

/// A call for the worker: the path and where to send its result.
type Job = (PathBuf, mpsc::Sender<std::io::Result<Usage>>);

/// A statvfs call in flight, or none for a path that is stuck.
enum Call {
    Skipped,
    Started {
        path: PathBuf,
        receiver: Receiver<std::io::Result<Usage>>,
    },
}

fn lock(stuck: &Mutex<HashSet<PathBuf>>) -> MutexGuard<'_, HashSet<PathBuf>> {
    // Every update is one insert or remove, so the set is consistent even after a panic.
    stuck.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Held by the test while the fake NFS mount should hang.
    static NFS_GATE: Mutex<()> = Mutex::new(());
    static NFS_CALLS: AtomicUsize = AtomicUsize::new(0);

    const USAGE: Usage = Usage {
        size_bytes: 100.0,
        free_bytes: 60.0,
        avail_bytes: 50.0,
        files: 10.0,
        files_free: 5.0,
    };

    fn fake_stat(path: &Path) -> std::io::Result<Usage> {
        if path.ends_with("nfs") {
            NFS_CALLS.fetch_add(1, Ordering::SeqCst);
            drop(NFS_GATE.lock().unwrap_or_else(PoisonError::into_inner));
        }
        if path.ends_with("gone") {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(USAGE)
    }

    #[test]
    fn a_hanging_call_marks_the_path_stuck_until_it_returns() {
        let mut statfs = TimedStatfs::new(Duration::from_millis(50), fake_stat);
        let paths = [
            PathBuf::from("/ok"),
            PathBuf::from("/nfs"),
            PathBuf::from("/gone"),
        ];
        let gate = NFS_GATE.lock().unwrap();

        assert_eq!(statfs.stat_all(&paths), [Some(USAGE), None, None]);
        assert!(statfs.is_stuck(&paths[1]));
        // The calls after the stuck one still ran, on threads of their own.
        assert!(!statfs.is_stuck(&paths[2]));
        let after = [
            PathBuf::from("/ok"),
            PathBuf::from("/nfs"),
            PathBuf::from("/also-ok"),
        ];
        assert_eq!(statfs.stat_all(&after), [Some(USAGE), None, Some(USAGE)]);
        // Still stuck: skipped without a second thread parked on it.
        assert_eq!(statfs.stat_all(&paths), [Some(USAGE), None, None]);
        assert_eq!(NFS_CALLS.load(Ordering::SeqCst), 1);

        drop(gate);
        // The helper thread unmarks the path as soon as its call returns.
        let started = Instant::now();
        while statfs.is_stuck(&paths[1]) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never recovered"
            );
            thread::yield_now();
        }
        assert_eq!(statfs.stat_all(&paths), [Some(USAGE), Some(USAGE), None]);
        assert_eq!(NFS_CALLS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn statvfs_reports_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let usage = statvfs_usage(dir.path()).unwrap();
        assert!(usage.size_bytes > 0.0);
        assert!(usage.avail_bytes <= usage.free_bytes);
        assert!(statvfs_usage(&dir.path().join("missing")).is_err());
    }
}
