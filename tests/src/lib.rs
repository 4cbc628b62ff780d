//! Test support for Pantau's end-to-end tests in `tests/tests/*.rs`.
//!
//! Each test starts what it needs from its own temp dir, on ports from [`free_port`], bound to
//! 127.0.0.1 only, and everything it started is stopped when the handle is dropped:
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//!
//! use pantau_tests::{ChildGuard, Mosquitto, Prometheus, TestDir, free_port, http_get};
//! use pantau_tests::{pantau_binary, wait_until};
//!
//! // Declare the dir first: it must outlive the processes that write into it.
//! let dir = TestDir::new();
//! let broker = Mosquitto::start();
//! let metrics_port = free_port();
//! // (An illustrative config: the collector's real keys live in its own docs.)
//! let config = dir.write(
//!     "collector.toml",
//!     format!("broker_url = {:?}\nlisten = \"127.0.0.1:{metrics_port}\"\n", broker.url()),
//! );
//! let mut collector = ChildGuard::spawn(
//!     "collector",
//!     Command::new(pantau_binary("pantau-collector")).arg("--config").arg(&config),
//!     dir.path(),
//! );
//! let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
//! wait_until("the collector to serve /metrics", Duration::from_secs(10), || {
//!     matches!(http_get(&metrics), Ok((200, _))).then_some(())
//! });
//! let prometheus = Prometheus::builder()
//!     .scrape("collector", &format!("127.0.0.1:{metrics_port}"))
//!     .start();
//! let up = prometheus.wait_for_query(r#"up{job="collector"} == 1"#, Duration::from_secs(10));
//! assert_eq!(up.len(), 1, "{}", collector.logs());
//! ```
//!
//! Every wait goes through [`wait_until`] (or [`poll_until`]) with a timeout, and readiness is
//! always a real signal (a port that accepts, `/-/ready`, a broker log line), never a sleep.
//! When a test panics, every [`ChildGuard`] prints the tail of its process's output to stderr.

// This crate is test support: failing loudly with a clear message is the right behaviour here,
// so `expect` and `unwrap` are allowed (the workspace denies them in production code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alertmanager;
mod binary;
mod dir;
mod http;
mod mosquitto;
mod port;
mod process;
mod prometheus;
mod promtool;
mod wait;
mod webhook;

pub use alertmanager::Alertmanager;
pub use binary::pantau_binary;
pub use dir::TestDir;
pub use http::{http_get, http_post, http_post_json};
pub use mosquitto::{Message, Mosquitto, MosquittoBuilder, Subscription};
pub use port::free_port;
pub use process::{ChildGuard, Signal, run_with_timeout};
pub use prometheus::{Prometheus, PrometheusBuilder};
pub use promtool::{promtool_check_metrics, promtool_check_rules, promtool_test_rules};
pub use wait::{poll_until, wait_until};
pub use webhook::WebhookReceiver;

/// True when running under CI (`CI=true`, as `.ci/run` is started). Use it only to word a
/// failure message; a test must never skip itself because of it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}
