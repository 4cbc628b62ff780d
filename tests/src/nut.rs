//! A real Network UPS Tools server for tests: Debian's `dummy-ups` driver simulating one UPS
//! from a `.dev` file, and `upsd` serving it on a free loopback port, both in a temp dir
//! (RECIPES.md, "Devices without an agent"). Needs root to hand the dir to user `nut`.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ChildGuard, start_on_free_port, wait_ready};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running upsd with one simulated UPS.
pub struct Nut {
    // Dropped before the dir.
    upsd: ChildGuard,
    driver: ChildGuard,
    port: u16,
    ups: String,
    dir: TempDir,
}

impl Nut {
    /// Serves UPS `ups` with the `name: value` lines of `dev`, and `users` as
    /// `(name, password)` pairs in upsd.users, each allowed to log in as a monitor.
    pub fn start(ups: &str, dev: &str, users: &[(&str, &str)]) -> Nut {
        let dir = tempfile::Builder::new()
            .prefix("pantau-nut-")
            .tempdir()
            .expect("create a temp dir for NUT");
        let path = dir.path();
        write(path, "nut.conf", "MODE=standalone\n");
        write(
            path,
            "ups.conf",
            &format!("[{ups}]\n  driver = dummy-ups\n  port = {ups}.dev\n  desc = \"test UPS\"\n"),
        );
        let mut users_text = String::new();
        for (name, password) in users {
            users_text.push_str(&format!(
                "[{name}]\n  password = {password}\n  upsmon secondary\n"
            ));
        }
        write(path, "upsd.users", &users_text);
        write(path, &format!("{ups}.dev"), dev);
        // upsd and the driver drop to user `nut` and must read and write here.
        let chown = Command::new("chown")
            .arg("-R")
            .arg("nut:nut")
            .arg(path)
            .output()
            .expect("run chown");
        assert!(
            chown.status.success(),
            "chown nut (tests run as root in CI): {}",
            String::from_utf8_lossy(&chown.stderr)
        );
        let env = |command: &mut Command| {
            command
                .env("NUT_CONFPATH", path)
                .env("NUT_STATEPATH", path)
                .env("NUT_ALTPIDPATH", path);
        };
        let mut driver_command = Command::new("/lib/nut/dummy-ups");
        driver_command.args(["-a", ups, "-u", "nut", "-F"]);
        env(&mut driver_command);
        let driver = ChildGuard::spawn("dummy-ups", &mut driver_command, path);
        let socket = path.join(format!("dummy-ups-{ups}"));
        let driver_ready = crate::poll_until(START_TIMEOUT, || socket.exists().then_some(()));
        if driver_ready.is_none() {
            panic!("dummy-ups made no socket\n{}", driver.logs());
        }
        let (upsd, port) = start_on_free_port("upsd", |port| {
            write(
                path,
                "upsd.conf",
                &format!("LISTEN 127.0.0.1 {port}\nSTATEPATH {}\n", path.display()),
            );
            let mut command = Command::new("/lib/nut/upsd");
            command.args(["-u", "nut", "-F"]);
            env(&mut command);
            let mut child = ChildGuard::spawn("upsd", &mut command, path);
            wait_ready(&mut child, START_TIMEOUT, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .map(|()| (child, port))
        });
        Nut {
            upsd,
            driver,
            port,
            ups: ups.to_owned(),
            dir,
        }
    }

    /// `127.0.0.1:PORT` of upsd.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the simulated UPS's variables; the driver rereads the file when it changes.
    pub fn set(&self, dev: &str) {
        let path: PathBuf = self.dir.path().join(format!("{}.dev", self.ups));
        let temporary = self.dir.path().join("next.dev");
        fs::write(&temporary, dev).expect("write the next .dev file");
        fs::rename(&temporary, &path).expect("replace the .dev file");
    }

    /// upsd's and the driver's output so far.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.upsd.logs(), self.driver.logs())
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}
