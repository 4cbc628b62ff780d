//! The device role: equipment that cannot run an agent, polled by one that can, and reported
//! as this agent's own series, so the outbox, loss accounting and offline detection cover it.
//! One file per kind of device: `ups.rs` (UPSes through Network UPS Tools, client in `nut.rs`).
//!
//! Each device is polled by its own task on its own cadence and leaves its latest reading in
//! a shared slot; `collect` turns the slots into series at the report's tick. A device that
//! cannot be read shows `pantau_device_up 0` and none of its stale values.

mod config;
mod nut;
mod ups;

use std::sync::{Arc, Mutex};

use pantau_protocol::AnyFamily;
use pantau_runtime::config::ConfigError;
use pantau_runtime::supervise::Supervisor;

pub use config::UpsConfig;

use crate::role::RoleContext;

/// Validates `[[ups]]`.
pub fn validate(ups: &[UpsConfig]) -> Result<(), ConfigError> {
    config::validate(ups)
}

/// The device role: every configured UPS.
pub struct DeviceRole {
    ups: Vec<Arc<Mutex<ups::Slot>>>,
}

impl DeviceRole {
    /// `default_interval` is `agent.interval_seconds`. The config was validated at load.
    pub fn new(ups: &[UpsConfig], default_interval: u64) -> Result<Self, ConfigError> {
        let ups = ups
            .iter()
            .map(|config| ups::Slot::new(config, default_interval).map(|s| Arc::new(Mutex::new(s))))
            .collect::<Result<_, _>>()?;
        Ok(Self { ups })
    }

    pub fn start(&mut self, context: &RoleContext, supervisor: &mut Supervisor) {
        for slot in &self.ups {
            let name = ups::lock(slot).name().to_owned();
            supervisor.spawn(
                &format!("ups-{name}"),
                ups::poll_forever(slot.clone(), context.clone(), supervisor.shutdown()),
            );
        }
    }

    /// The latest reading of every device.
    pub fn collect(&self) -> Vec<AnyFamily> {
        let slots: Vec<_> = self
            .ups
            .iter()
            .map(|slot| ups::lock(slot).clone())
            .collect();
        ups::families(&slots)
            .into_iter()
            .map(AnyFamily::Plain)
            .collect()
    }
}
