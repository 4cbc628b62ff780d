//! Where the Pantau binaries under test are.

use std::env;
use std::path::PathBuf;

/// The path of a Pantau binary (`"pantau-agent"`, `"pantau-collector"`) built into the same
/// target dir as the running test: the test runs as `target/<profile>/deps/<test>-<hash>`, so
/// the binary is `target/<profile>/<name>`. `PANTAU_BIN_DIR`, when set, is used instead.
///
/// Cargo builds a workspace's binaries for integration tests only of the same package, so
/// they must be built first.
///
/// # Panics
/// When the file does not exist: "build the binaries first: cargo build --workspace --bins".
pub fn pantau_binary(name: &str) -> PathBuf {
    let dir = match env::var_os("PANTAU_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = env::current_exe().expect("path of the running test executable");
            let mut dir = exe
                .parent()
                .expect("test executable has a parent dir")
                .to_path_buf();
            if dir.file_name().is_some_and(|last| last == "deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "{} does not exist: build the binaries first: cargo build --workspace --bins",
            path.display()
        );
    }
    path
}
