//! Test support for Pantau's end-to-end tests in `tests/tests/*.rs`.
//!
//! Each test starts what it needs from its own temp dir, on ports from [`free_port`], bound to
//! 127.0.0.1 only, and everything it started is stopped when the handle is dropped:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use pantau_tests::{Agent, Collector, Mosquitto, Prometheus, TestDir};
//!
//! // Declare the dir first: it must outlive the processes that write into it.
//! let dir = TestDir::new();
//! let broker = Mosquitto::start();
//! // configs/collector.toml with PANTAU_* overrides: external broker, a free HTTP port.
//! let collector = Collector::with_broker(&dir, &broker);
//! // configs/agent-server.toml as agent "dc-srv-01" of site "dc", reporting every second.
//! let agent = Agent::start(&dir, "dc-srv-01", "dc", &broker.url(), 1);
//! collector.wait_for_sample(
//!     r#"pantau_agent_up{instance="dc-srv-01",site="dc"}"#,
//!     Duration::from_secs(20),
//!     |value| value == 1.0,
//! );
//! let target = collector.url().trim_start_matches("http://").to_owned();
//! let prometheus = Prometheus::builder().scrape("pantau", &target).start();
//! let up = prometheus.wait_for_query(r#"node_load1{instance="dc-srv-01"}"#, Duration::from_secs(20));
//! assert_eq!(up.len(), 1, "{}", agent.logs());
//! ```
//!
//! Every wait goes through [`wait_until`] (or [`poll_until`]) with a timeout, and readiness is
//! always a real signal (a port that accepts, `/-/ready`, a broker log line), never a sleep.
//! When a test panics, every [`ChildGuard`] prints the tail of its process's output to stderr.

// This crate is test support: failing loudly with a clear message is the right behaviour here,
// so `expect` and `unwrap` are allowed (the workspace denies them in production code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alertmanager;
mod audio;
mod binary;
mod certs;
mod dir;
mod http;
mod mosquitto;
mod nats;
mod netns;
mod nut;
mod pantau;
mod port;
mod process;
mod prometheus;
mod promtool;
pub mod raw_http;
mod signing;
mod snmpd;
mod wait;
mod webdriver;
mod webhook;

pub use alertmanager::Alertmanager;
pub use audio::{AudioCapture, BYTES_PER_SECOND, Chunk, rms, tone_hz};
pub use binary::pantau_binary;
pub use certs::{TestCa, self_signed_certificate};
pub use dir::TestDir;
pub use http::{http_get, http_get_with, http_post, http_post_json};
pub use mosquitto::{
    Message, Mosquitto, MosquittoBuilder, Subscription, mosquitto_pub, shipped_mosquitto_file,
    start_shipped,
};
pub use nats::NatsCluster;
pub use netns::NetnsPair;
pub use nut::Nut;
pub use pantau::{Agent, Collector, VIEWER_TOKEN, example_config, sample, write_password_file};
pub use port::free_port;
pub use process::{ChildGuard, Signal, run_with_timeout};
pub use prometheus::{Prometheus, PrometheusBuilder};
pub use promtool::{
    promtool_check_metrics, promtool_check_rules, promtool_metric_lints, promtool_test_rules,
    shipped_prometheus_config,
};
pub use signing::{derive_agent_key_file, old_style_signed_command, signed_command};
pub use snmpd::{
    SNMP_COMMUNITY, SNMP_V3_AUTH_PASSWORD, SNMP_V3_PRIVACY_PASSWORD, SNMP_V3_USER, SnmpExporter,
    Snmpd, free_udp_port,
};
pub use wait::{poll_until, wait_until};
pub use webdriver::{Browser, Element, screenshot_dir};
pub use webhook::WebhookReceiver;

/// The host role's default collectors, by node_exporter's names: node_exporter 1.5 runs the
/// same set for the parity tests.
pub const NODE_EXPORTER_COLLECTORS: [&str; 20] = [
    "cpu",
    "stat",
    "meminfo",
    "filesystem",
    "netdev",
    "loadavg",
    "diskstats",
    "netclass",
    "uname",
    "os",
    "time",
    "filefd",
    "entropy",
    "vmstat",
    "netstat",
    "sockstat",
    "pressure",
    "hwmon",
    "thermal_zone",
    "timex",
];

/// True when running under CI (`CI=true`, as `.ci/run` is started). Use it only to word a
/// failure message; a test must never skip itself because of it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}
