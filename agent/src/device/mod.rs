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

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

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
            let name = lock(slot).name().to_owned();
            supervisor.spawn(
                &format!("ups-{name}"),
                ups::poll_forever(slot.clone(), context.clone(), supervisor.shutdown()),
            );
        }
        for slot in &self.snmp {
            let name = lock(slot).name().to_owned();
            supervisor.spawn(
                &format!("snmp-{name}"),
                snmp::poll_forever(slot.clone(), context.clone(), supervisor.shutdown()),
            );
        }
    }

    /// The latest reading of every device.
    pub fn collect(&self) -> Vec<AnyFamily> {
        let slots: Vec<_> = self.ups.iter().map(|slot| lock(slot).clone()).collect();
        let snmp: Vec<_> = self.snmp.iter().map(|slot| lock(slot).clone()).collect();
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

/// A device's latest reading; a poll task that panicked mid-update leaves it as it was, which
/// is still worth showing.
pub fn lock<T>(slot: &Mutex<T>) -> MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks a device's `name` (a label value and part of log lines): 1 to 64 letters, digits,
/// '-', '_' or '.'. `hint` says where the name comes from, for the error.
pub fn check_name(field: String, name: &str, hint: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        name,
        format!("must be 1 to 64 letters, digits, '-', '_' or '.'{hint}"),
    ))
}

/// The first line of a secret file (a password, a community), without its line end.
pub fn first_line(path: &Path, field: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::invalid(field, path.display(), format!("cannot be read: {error}"))
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}
