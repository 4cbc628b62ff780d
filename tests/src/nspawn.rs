//! A Debian machine with real systemd as PID 1, for the package tests: systemd-nspawn over a
//! debootstrap rootfs (../shared/RECIPES.md, "Real systemd for packages and units").
//!
//! The rootfs is built once per machine and package list, under
//! `/var/cache/pantau-test/rootfs-<suite>-<hash>`, and never booted itself: each container
//! boots its own copy in the test's temp dir, so a reboot keeps what the test did and nothing
//! leaks between tests. Containers get a private network (only their own loopback), so two
//! can run at once, and nothing they start is reachable from outside.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::{ChildGuard, run_with_timeout};
use crate::wait::{poll_until, wait_until};

/// The Debian release of the test machines: the one this project targets.
pub const SUITE: &str = "bookworm";

/// What the test machines have besides `minbase`: systemd, what the Pantau packages depend on
/// or recommend (so installing them needs no network), and the tools the tests run inside.
pub const ROOTFS_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "adduser",
    "mosquitto",
    "mosquitto-clients",
    "espeak-ng",
    "libasound2",
    "curl",
    "ca-certificates",
    "procps",
    "iproute2",
];

const CACHE: &str = "/var/cache/pantau-test";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The cached rootfs, built now (debootstrap, a few minutes) if this machine has none.
///
/// # Panics
/// When debootstrap fails (no mirror reachable): the package tests cannot run without it.
pub fn debian_rootfs() -> PathBuf {
    let key = fnv1a(format!("{SUITE} {}", ROOTFS_PACKAGES.join(",")).as_bytes());
    let root = PathBuf::from(CACHE).join(format!("rootfs-{SUITE}-{key:016x}"));
    fs::create_dir_all(CACHE).expect("create /var/cache/pantau-test");
    // Tests running at once build it once: the second waits for the first's lock.
    let lock = File::create(PathBuf::from(CACHE).join("rootfs.lock")).expect("rootfs lock");
    rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .expect("lock the rootfs cache");
    if root.join("usr/bin/systemctl").exists() {
        return root;
    }
    let partial = root.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    let mirror = debian_mirror();
    eprintln!("building the {SUITE} rootfs for the package tests from {mirror} (once per machine)");
    let output = run_with_timeout(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", ROOTFS_PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&partial)
            .arg(&mirror),
        b"",
        Duration::from_secs(1200),
    );
    assert!(
        output.status.success(),
        "debootstrap failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The downloaded .debs are installed already; apt keeps its (now empty) archive dirs.
    if let Ok(entries) = fs::read_dir(partial.join("var/cache/apt/archives")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "deb") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    fs::rename(&partial, &root).expect("move the finished rootfs into place");
    root
}

/// The Debian mirror apt on this machine uses (the same the recipes use).
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for word in text.split_whitespace() {
            if word.starts_with("http") && word.contains("debian") && !word.contains("security") {
                return word.trim_end_matches('/').to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A booted container. Powered off (or killed) when dropped.
#[derive(Debug)]
pub struct Container {
    name: String,
    root: PathBuf,
    log_dir: PathBuf,
    binds: Vec<(PathBuf, String)>,
    nspawn: Option<ChildGuard>,
    leader: u32,
    boots: u32,
}

impl Container {
    /// Copies the cached rootfs to `dir/<name>` and boots it, with each host path of `binds`
    /// mounted read-only at its container path.
    pub fn boot(dir: &Path, name: &str, binds: &[(&Path, &str)]) -> Container {
        let rootfs = debian_rootfs();
        let root = dir.join(name);
        let output = run_with_timeout(
            Command::new("cp")
                .arg("-a")
                .arg("--reflink=auto")
                .arg(&rootfs)
                .arg(&root),
            b"",
            Duration::from_secs(300),
        );
        assert!(output.status.success(), "copy the rootfs: {output:?}");
        let mut container = Container {
            name: name.to_owned(),
            root,
            log_dir: dir.to_owned(),
            binds: binds
                .iter()
                .map(|(host, inside)| ((*host).to_owned(), (*inside).to_owned()))
                .collect(),
            nspawn: None,
            leader: 0,
            boots: 0,
        };
        container.start();
        container
    }

    fn start(&mut self) {
        self.boots += 1;
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("-D")
            .arg(&self.root)
            .args(["-b", "--register=no", "--keep-unit", "--console=passive"])
            .arg("--private-network")
            .arg(format!("--machine={}", self.name));
        for (host, inside) in &self.binds {
            command.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let nspawn = ChildGuard::spawn(
            &format!("nspawn-{}-boot{}", self.name, self.boots),
            &mut command,
            &self.log_dir,
        );
        let parent = nspawn.pid();
        self.nspawn = Some(nspawn);
        self.leader = wait_until("the container's systemd", BOOT_TIMEOUT, || {
            let output = Command::new("pgrep")
                .args(["-P", &parent.to_string(), "-x", "systemd"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        });
        wait_until("systemd's private socket", BOOT_TIMEOUT, || {
            let output = self.nsenter(&["-m", "--", "test", "-S", "/run/systemd/private"]);
            output.status.success().then_some(())
        });
        let state = self.run("systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
        assert!(
            state == "running" || state == "degraded",
            "the container did not boot: {state}\n{}",
            self.stdout("systemctl --failed --no-pager; journalctl -b --no-pager | tail -n 50")
        );
    }

    fn nsenter(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.leader.to_string())
                .args(args),
            b"",
            COMMAND_TIMEOUT,
        )
    }

    /// Runs `script` with /bin/sh inside the container as root (all its namespaces, a clean
    /// environment), feeding `stdin`.
    pub fn run_with_input(&self, script: &str, stdin: &[u8]) -> Output {
        run_with_timeout(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.leader.to_string())
                .args(["-a", "--", "env", "-i"])
                .args([
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                    "HOME=/root",
                    "DEBIAN_FRONTEND=noninteractive",
                ])
                .args(["/bin/sh", "-c", script]),
            stdin,
            COMMAND_TIMEOUT,
        )
    }

    /// Runs `script` inside the container; its output whatever the exit status.
    pub fn run(&self, script: &str) -> Output {
        self.run_with_input(script, b"")
    }

    /// Runs `script` inside the container and returns its stdout.
    ///
    /// # Panics
    /// When it exits non-zero (both outputs are shown).
    pub fn stdout(&self, script: &str) -> String {
        let output = self.run(script);
        assert!(
            output.status.success(),
            "in container {}: `{script}` failed ({}):\n{}\n{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until `script` exits 0 inside the container, and returns its stdout then.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> String {
        let found = poll_until(timeout, || {
            let output = self.run(script);
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        });
        found.unwrap_or_else(|| {
            let last = self.run(script);
            panic!(
                "in container {}: timed out after {timeout:?} waiting for {what} (`{script}`):\n{}\n{}\n{}",
                self.name,
                String::from_utf8_lossy(&last.stdout),
                String::from_utf8_lossy(&last.stderr),
                String::from_utf8_lossy(
                    &self
                        .run("journalctl -b --no-pager -u 'pantau*' -u mosquitto | tail -n 60")
                        .stdout
                )
            )
        })
    }

    /// A file of the container's filesystem, seen from the host (for reading what a test
    /// cannot ask a program inside for).
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Shuts the machine down cleanly, as `systemctl poweroff` does on a server.
    pub fn poweroff(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        let _ = self.run("systemctl poweroff --no-block");
        if nspawn.wait_exit(Duration::from_secs(60)).is_none() {
            // Killing a PID namespace's init ends every process in it.
            let _ = Command::new("kill")
                .args(["-KILL", &self.leader.to_string()])
                .status();
            let _ = nspawn.wait_exit(Duration::from_secs(20));
        }
    }

    /// Powers off and boots the same filesystem again: a reboot.
    pub fn reboot(&mut self) {
        self.poweroff();
        self.start();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.poweroff();
    }
}
