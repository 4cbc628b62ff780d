//! Run-time plumbing shared by `pantau-agent` and `pantau-collector`: loading a TOML config with
//! `PANTAU_<SECTION>__<KEY>` overrides, MQTT endpoint parsing and client options, reconnect
//! backoff, the single shutdown token, supervision of essential tasks, and log setup.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod logging;
pub mod mqtt;
pub mod mqtt_failover;
pub mod mqtt_tls;
pub mod owned_files;
pub mod ratelimit;
pub mod shutdown;
pub mod supervise;
pub mod time;
