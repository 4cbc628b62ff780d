//! A network namespace of the test's own, joined to the test's namespace by a veth pair: a
//! remote "host" across a link that only this test owns (RECIPES.md, "Network faults").
//!
//! The addresses (10.213.x.y/30 and fd70:7a17:x:y::/64) exist only on the two ends of this
//! veth pair; nothing is routed beyond it. Everything is deleted when the value is dropped.
//! Needs root (CAP_NET_ADMIN); a test that uses it must not skip itself, so failure to create
//! the namespace panics with the command's output.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::run_with_timeout;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace with one end of a veth pair; the other end stays in the test's namespace.
pub struct NetnsPair {
    /// The namespace's name, for `ip netns exec`.
    pub name: String,
    /// The veth end in the test's (the agent's) namespace: the link a test cuts.
    pub near_interface: String,
    /// The veth end inside the namespace.
    pub far_interface: String,
    pub near_v4: String,
    pub far_v4: String,
    pub near_v6: String,
    pub far_v6: String,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The /30 within 10.213.0.0/16 and the /64 within fd70:7a17::/32 from pid and count.
        let a = pid % 250;
        let b = (n % 64) * 4;
        let name = format!("pantau-t{pid}-{n}");
        let tag = format!("{:x}{n}", pid % 0x10000);
        let pair = NetnsPair {
            name,
            near_interface: format!("pn{tag}"),
            far_interface: format!("pf{tag}"),
            near_v4: format!("10.213.{a}.{}", b + 1),
            far_v4: format!("10.213.{a}.{}", b + 2),
            near_v6: format!("fd70:7a17:{a:x}:{n:x}::1"),
            far_v6: format!("fd70:7a17:{a:x}:{n:x}::2"),
        };
        pair.create();
        pair
    }

    fn create(&self) {
        let (near, far, ns) = (&self.near_interface, &self.far_interface, &self.name);
        run_ok(&["ip", "netns", "add", ns]);
        run_ok(&[
            "ip", "link", "add", near, "type", "veth", "peer", "name", far, "netns", ns,
        ]);
        run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.near_v4),
            "dev",
            near,
        ]);
        run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", self.near_v6),
            "dev",
            near,
            "nodad",
        ]);
        run_ok(&["ip", "link", "set", near, "up"]);
        self.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.far_v4),
            "dev",
            far,
        ]);
        self.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", self.far_v6),
            "dev",
            far,
            "nodad",
        ]);
        self.exec_ok(&["ip", "link", "set", far, "up"]);
        self.exec_ok(&["ip", "link", "set", "lo", "up"]);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `args` inside the namespace and panics unless it succeeds; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// `sysctl -w key=value` inside the namespace (per-namespace keys such as
    /// `net.ipv4.ping_group_range` and `net.ipv4.icmp_echo_ignore_all`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Cuts the link: the near end goes down (carrier and operstate change).
    pub fn link_down(&self) {
        run_ok(&["ip", "link", "set", &self.near_interface, "down"]);
    }

    pub fn link_up(&self) {
        run_ok(&["ip", "link", "set", &self.near_interface, "up"]);
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        NetnsPair::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.near_interface]);
    }
}

fn run(args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(args[0]).args(&args[1..]),
        b"",
        Duration::from_secs(20),
    )
}

/// Runs `args` and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed ({}); network namespace tests need root\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
