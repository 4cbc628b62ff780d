//! A temp dir per test.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary directory owned by one test, removed when dropped. Keep it alive for as long
/// as a process started with it runs (declare it before the [`crate::ChildGuard`]s that use
/// it, so they are dropped first).
#[derive(Debug)]
pub struct TestDir {
    dir: TempDir,
}

impl TestDir {
    /// Creates a fresh directory under the system temp dir (`$TMPDIR` or `/tmp`).
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("pantau-test-")
            .tempdir()
            .expect("create a temp dir for the test");
        TestDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `self.path().join(name)`, for files the test expects something else to create.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` (relative; parent dirs are created) and returns its path.
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|err| panic!("create {}: {err}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}
