//! Processes a test starts: killed on drop, output kept in files, never lost on a failure.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use rustix::process::{Pid, kill_process};

pub use rustix::process::Signal;

use crate::wait::poll_until;

/// How many lines of each output file are printed when a test panics.
const TAIL_LINES: usize = 40;

/// A running child process that is killed (SIGKILL) and reaped when dropped.
///
/// Its stdout and stderr go to `<log_dir>/<name>.stdout.log` and `<name>.stderr.log` (appended,
/// so a restarted process with the same name adds to the same files). If the guard is dropped
/// while the test is panicking, the last 40 lines of both are printed to stderr, so a failing
/// test always shows what the process said.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdin closed and output to files in `log_dir`.
    ///
    /// # Panics
    /// When the program cannot be started (not installed, not executable).
    pub fn spawn(name: &str, command: &mut Command, log_dir: &Path) -> ChildGuard {
        let stdout_path = log_dir.join(format!("{name}.stdout.log"));
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(append(&stdout_path))
            .stderr(append(&stderr_path))
            .spawn()
            .unwrap_or_else(|err| panic!("start {name} ({command:?}): {err}"));
        ChildGuard {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `Signal::TERM`, `Signal::KILL`, `Signal::INT`) unless the process
    /// has already exited. Does not wait: follow with [`ChildGuard::wait_exit`].
    pub fn kill_with(&mut self, signal: Signal) {
        // Only signal a pid we have not reaped yet: once reaped, it may belong to someone else.
        if self.try_wait().is_some() {
            return;
        }
        kill_process(Pid::from_child(&self.child), signal).unwrap_or_else(|err| {
            panic!(
                "send {signal:?} to {} (pid {}): {err}",
                self.name,
                self.pid()
            )
        });
    }

    /// SIGKILL, then waits for the process to be gone and returns its status.
    pub fn kill(&mut self) -> ExitStatus {
        self.kill_with(Signal::KILL);
        self.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "{} (pid {}) survived SIGKILL for 10s",
                self.name,
                self.pid()
            )
        })
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|err| panic!("wait for {} (pid {}): {err}", self.name, self.child.id()))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.try_wait())
    }

    /// Everything written to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything written to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Both outputs with headers, for an assertion message: `assert!(ok, "{}", guard.logs())`.
    pub fn logs(&self) -> String {
        format!(
            "---- {name} (pid {pid}) stdout ----\n{out}---- {name} (pid {pid}) stderr ----\n{err}",
            name = self.name,
            pid = self.pid(),
            out = self.stdout(),
            err = self.stderr(),
        )
    }

    /// Waits until stdout or stderr contains `needle`, e.g. a "listening" line.
    ///
    /// # Panics
    /// On timeout, or as soon as the process exits without having printed it; both with logs.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let found = poll_until(timeout, || {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Some(true);
            }
            self.try_wait().map(|_| false)
        });
        match found {
            Some(true) => {}
            Some(false) => panic!(
                "{} exited before logging {needle:?}\n{}",
                self.name,
                self.logs()
            ),
            None => panic!(
                "timed out after {timeout:?} waiting for {} to log {needle:?}\n{}",
                self.name,
                self.logs()
            ),
        }
    }

    fn tail(&self) -> String {
        format!(
            "---- {name} (pid {pid}) stdout, last {TAIL_LINES} lines of {out_path} ----\n{out}\
             ---- {name} (pid {pid}) stderr, last {TAIL_LINES} lines of {err_path} ----\n{err}",
            name = self.name,
            pid = self.pid(),
            out_path = self.stdout_path.display(),
            err_path = self.stderr_path.display(),
            out = last_lines(&self.stdout(), TAIL_LINES),
            err = last_lines(&self.stderr(), TAIL_LINES),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // std's kill is a no-op once the child has been reaped, so this never hits a reused pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.tail());
        }
    }
}

/// Why a server did not become ready.
pub(crate) enum NotReady {
    /// It exited first because its port was taken (the race documented at `free_port`).
    PortTaken,
}

/// Waits until `ready()` while the child keeps running. Returns `NotReady::PortTaken` when it
/// exited because its port was in use; panics with its logs when it exited for another reason
/// or did not become ready within `timeout`.
pub(crate) fn wait_ready(
    child: &mut ChildGuard,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), NotReady> {
    let what = format!("{} (pid {}) to be ready", child.name, child.pid());
    let outcome = poll_until(timeout, || {
        if ready() {
            return Some(None);
        }
        child.try_wait().map(Some)
    });
    match outcome {
        Some(None) => Ok(()),
        // snmpd logs (-Lo) to stdout and words it its own way.
        Some(Some(_))
            if ["address already in use", "error opening specified endpoint"]
                .iter()
                .any(|words| child.logs().to_lowercase().contains(words)) =>
        {
            Err(NotReady::PortTaken)
        }
        Some(Some(status)) => {
            panic!(
                "{} exited ({status}) before it was ready\n{}",
                child.name,
                child.logs()
            )
        }
        None => panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            child.logs()
        ),
    }
}

/// Runs a short-lived command to completion with `stdin` as its input, and returns its output
/// whatever the exit status. Use it for tools such as `promtool` or `ip`, so that even they
/// cannot hang a test.
///
/// # Panics
/// When the program cannot be started, or it is still running after `timeout` (it is killed).
pub fn run_with_timeout(command: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    // Feed and drain on threads, so a large input or output cannot deadlock against the pipes.
    let mut input = child.stdin.take().expect("piped stdin");
    let bytes = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A program that exits without reading all its input closes the pipe: not our error.
        let _ = input.write_all(&bytes);
    });
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = poll_until(timeout, || child.try_wait().expect("wait for child"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} still running after {timeout:?}; killed");
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: stderr.join().expect("stderr reader thread"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|err| panic!("open log file {}: {err}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Helper for the service modules: readiness by a plain TCP connect.
pub(crate) fn port_accepts(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits for a server that must come back on a fixed port (no retry possible).
pub(crate) fn wait_ready_fixed_port(
    child: &mut ChildGuard,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) {
    if wait_ready(child, timeout, ready).is_err() {
        panic!(
            "{}: its port is now taken by another process\n{}",
            child.name,
            child.logs()
        );
    }
}

/// Starts a server with `attempt(port)` on a port from [`crate::free_port`], trying again with
/// another port when the first one was taken in the meantime (at most 3 tries).
pub(crate) fn start_on_free_port<T>(
    what: &str,
    mut attempt: impl FnMut(u16) -> Result<T, NotReady>,
) -> T {
    for _ in 0..3 {
        match attempt(crate::free_port()) {
            Ok(started) => return started,
            Err(NotReady::PortTaken) => continue,
        }
    }
    panic!("{what}: every free port was taken before it could bind it (3 tries)")
}
