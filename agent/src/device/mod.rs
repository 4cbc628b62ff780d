//! The device role: equipment that cannot run an agent, polled by one that can, and reported
//! as this agent's own series, so the outbox, loss accounting and offline detection cover it.
//! One file per kind of device: `ups.rs` (UPSes through Network UPS Tools, client in `nut.rs`),
//! `snmp.rs` (switches and routers over SNMP: the exchange in `snmp_client.rs`, IF-MIB rows in
//! `if_mib.rs`).
//!
//! Each device is polled by its own task on its own cadence and leaves its latest reading in
//! a shared slot; `collect` turns the slots into series at the report's tick. A device that
//! cannot be read shows `pantau_device_up 0` and none of its stale values.

mod config;
mod if_mib;
mod nut;
mod snmp;
mod snmp_client;
mod snmp_config;
mod ups;

use std::sync::{Arc, Mutex};

use pantau_protocol::{AnyFamily, Family};
use pantau_runtime::config::ConfigError;
use pantau_runtime::supervise::Supervisor;

pub use config::UpsConfig;
pub use snmp_config::SnmpConfig;

use crate::metric::FamilyBuilder;
use crate::role::RoleContext;

/// Validates `[[ups]]` and `[[snmp]]`.
pub fn validate(ups: &[UpsConfig], snmp: &[SnmpConfig]) -> Result<(), ConfigError> {
    config::validate(ups)?;
    snmp_config::validate(snmp)
}

/// The device role: every configured UPS and SNMP device.
pub struct DeviceRole {
    ups: Vec<Arc<Mutex<ups::Slot>>>,
    snmp: Vec<Arc<Mutex<snmp::Slot>>>,
}

impl DeviceRole {
    /// `default_interval` is `agent.interval_seconds`. The config was validated at load.
    pub fn new(
        ups: &[UpsConfig],
        snmp: &[SnmpConfig],
        default_interval: u64,
    ) -> Result<Self, ConfigError> {
        let ups = ups
            .iter()
            .map(|config| ups::Slot::new(config, default_interval).map(|s| Arc::new(Mutex::new(s))))
            .collect::<Result<_, _>>()?;
        let snmp = snmp
            .iter()
            .map(|config| {
                snmp::Slot::new(config, default_interval).map(|s| Arc::new(Mutex::new(s)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { ups, snmp })
    }

    pub fn start(&mut self, context: &RoleContext, supervisor: &mut Supervisor) {
        for slot in &self.ups {
            let name = ups::lock(slot).name().to_owned();
            supervisor.spawn(
                &format!("ups-{name}"),
                ups::poll_forever(slot.clone(), context.clone(), supervisor.shutdown()),
            );
        }
        for slot in &self.snmp {
            let name = snmp::lock(slot).name().to_owned();
            supervisor.spawn(
                &format!("snmp-{name}"),
                snmp::poll_forever(slot.clone(), context.clone(), supervisor.shutdown()),
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
        let snmp: Vec<_> = self
            .snmp
            .iter()
            .map(|slot| snmp::lock(slot).clone())
            .collect();
        // Both kinds share these two families: one family per name in a message.
        let mut up = FamilyBuilder::gauge(
            "pantau_device_up",
            "1 if the device answered its last poll, else 0.",
        );
        let mut errors = FamilyBuilder::counter(
            "pantau_device_poll_errors_total",
            "Failed polls of a device, by reason.",
        );
        let mut families: Vec<Family> = ups::families(&slots, &mut up, &mut errors);
        families.extend(snmp::families(&snmp, &mut up, &mut errors));
        families.push(up.build());
        families.push(errors.build());
        families.into_iter().map(AnyFamily::Plain).collect()
    }
}
