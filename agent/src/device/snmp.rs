//! Switches and routers over SNMP (v2c, or v3 USM with authentication and privacy), through
//! the `async-snmp` client: IF-MIB interface rows and sysUpTime under snmp_exporter's names
//! (`if_mib.rs`), `pantau_device_up{kind="snmp"}` and failures counted by reason. An interface
//! whose ifOperStatus changes is an event at once. The SNMP exchange itself is in
//! `snmp_client.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant};

use async_snmp::{Client, UdpHandle};
use pantau_protocol::{Event, Family, Severity};
use pantau_runtime::config::ConfigError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::if_mib::{self, Column, Table};
use super::snmp_client::{Reading, SnmpError, Target, connect, cut, explain_silence, poll};
use super::snmp_config::SnmpConfig;
use crate::metric::FamilyBuilder;
use crate::role::RoleContext;

/// One device: its target and its latest poll.
#[derive(Debug, Clone)]
pub struct Slot {
    target: Target,
    interval: Duration,
    up: bool,
    sys_uptime: Option<f64>,
    table: Table,
    errors: BTreeMap<&'static str, u64>,
}

impl Slot {
    pub fn new(config: &SnmpConfig, default_interval: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            target: Target {
                name: config.name.clone(),
                address: config.socket_address(),
                auth: config.auth()?,
                auth_without_privacy: config.auth_without_privacy()?,
                user: config.username.clone(),
                timeout: Duration::from_secs(config.timeout_seconds),
                retries: config.retries,
                watch: config.interfaces.clone(),
            },
            interval: Duration::from_secs(config.interval_seconds.unwrap_or(default_interval)),
            up: false,
            sys_uptime: None,
            table: Table::default(),
            errors: BTreeMap::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }
}

/// Polls the device every interval until shutdown.
pub async fn poll_forever(
    slot: Arc<Mutex<Slot>>,
    context: RoleContext,
    shutdown: CancellationToken,
) {
    let (target, interval) = {
        let slot = lock(&slot);
        (slot.target.clone(), slot.interval)
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client: Option<Client<UdpHandle>> = None;
    let mut last_status: Option<BTreeMap<u32, (String, f64)>> = None;
    let mut last_error: Option<&'static str> = None;
    let mut last_problems: BTreeSet<&'static str> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let result = match &client {
            Some(client) => poll(client, &target).await,
            None => match connect(&target, target.auth.clone(), target.retries).await {
                Ok(new) => poll(client.insert(new), &target).await,
                Err(error) => Err(error),
            },
        };
        let result = match result {
            Err(timeout @ SnmpError::Timeout { .. }) => {
                Err(explain_silence(&target).await.unwrap_or(timeout))
            }
            other => other,
        };
        debug!(device = %target.name, elapsed = ?started.elapsed(), ok = result.is_ok(), "SNMP poll");
        let mut events = Vec::new();
        match &result {
            Ok(reading) => {
                let status = oper_status(&reading.table);
                if let Some(previous) = &last_status {
                    events.extend(status_events(&target.name, previous, &status));
                }
                last_status = Some(status);
                // Logged when a kind of problem starts, not at every poll; counted always.
                let problems: BTreeSet<&'static str> = reading
                    .table
                    .problems
                    .iter()
                    .map(|(reason, _)| *reason)
                    .collect();
                for (reason, detail) in &reading.table.problems {
                    if last_problems.contains(reason) {
                        debug!(device = %target.name, reason, detail, "incomplete SNMP data");
                    } else {
                        warn!(device = %target.name, reason, detail, "incomplete SNMP data");
                    }
                }
                last_problems = problems;
                if last_error.take().is_some() {
                    info!(device = %target.name, "SNMP device readable again");
                    events.push(event(
                        "device_recovered",
                        Severity::Info,
                        format!("SNMP device {} answers again", target.name),
                        &target.name,
                        None,
                    ));
                }
            }
            Err(error) => {
                // The next poll starts afresh: a restarted agent has a new engine time.
                client = None;
                if last_error != Some(error.reason()) {
                    warn!(device = %target.name, reason = error.reason(), %error, "cannot read the SNMP device");
                    events.push(event(
                        "device_unreachable",
                        Severity::Warning,
                        format!("SNMP device {}: {error}", target.name),
                        &target.name,
                        None,
                    ));
                }
                last_error = Some(error.reason());
            }
        }
        store(&slot, result);
        if !events.is_empty() {
            for event in events {
                context.events.emit(event);
            }
            context.report_now.request();
        }
    }
}

fn store(slot: &Mutex<Slot>, result: Result<Reading, SnmpError>) {
    let mut slot = lock(slot);
    match result {
        Ok(reading) => {
            // Once per poll and reason, however many values were bad.
            let reasons: BTreeSet<&'static str> = reading
                .table
                .problems
                .iter()
                .map(|(reason, _)| *reason)
                .collect();
            for reason in reasons {
                *slot.errors.entry(reason).or_default() += 1;
            }
            slot.up = true;
            slot.sys_uptime = Some(reading.sys_uptime);
            slot.table = reading.table;
        }
        Err(error) => {
            slot.up = false;
            slot.sys_uptime = None;
            slot.table = Table::default();
            *slot.errors.entry(error.reason()).or_default() += 1;
        }
    }
}

fn oper_status(table: &Table) -> BTreeMap<u32, (String, f64)> {
    table
        .rows
        .iter()
        .filter_map(|(index, row)| {
            let status = row.values.get(&Column::OperStatus)?;
            Some((*index, (row.display_name(*index), *status)))
        })
        .collect()
}

/// Events for interfaces whose ifOperStatus left or reached up (1).
fn status_events(
    device: &str,
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (index, (name, status)) in after {
        let Some((_, previous)) = before.get(index) else {
            continue;
        };
        if *previous == 1.0 && *status != 1.0 {
            events.push(event(
                "snmp_interface_down",
                Severity::Warning,
                format!("{device} interface {name} went down (ifOperStatus {status})"),
                device,
                Some(name),
            ));
        } else if *previous != 1.0 && *status == 1.0 {
            events.push(event(
                "snmp_interface_up",
                Severity::Info,
                format!("{device} interface {name} is up again"),
                device,
                Some(name),
            ));
        }
    }
    events
}

fn event(
    kind: &str,
    severity: Severity,
    message: String,
    device: &str,
    interface: Option<&str>,
) -> Event {
    let mut labels = BTreeMap::from([
        ("kind".to_owned(), "snmp".to_owned()),
        ("device".to_owned(), device.to_owned()),
    ]);
    if let Some(interface) = interface {
        labels.insert("interface".to_owned(), interface.to_owned());
    }
    Event {
        kind: kind.to_owned(),
        severity,
        // The collector refuses event texts past 1,024 bytes; a client error can be long.
        message: cut(&message, 1000),
        labels,
    }
}

/// The IF-MIB families of every device, and its up and error samples into the shared families.
pub fn families(slots: &[Slot], up: &mut FamilyBuilder, errors: &mut FamilyBuilder) -> Vec<Family> {
    for slot in slots {
        let device = slot.name();
        up.sample(
            &[("kind", "snmp"), ("device", device)],
            f64::from(u8::from(slot.up)),
        );
        for (reason, count) in &slot.errors {
            errors.sample(
                &[("kind", "snmp"), ("device", device), ("reason", reason)],
                *count as f64,
            );
        }
    }
    let answered: Vec<(&str, Option<f64>, &Table)> = slots
        .iter()
        .filter(|slot| slot.up)
        .map(|slot| (slot.name(), slot.sys_uptime, &slot.table))
        .collect();
    if_mib::families(&answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(entries: &[(u32, &str, f64)]) -> BTreeMap<u32, (String, f64)> {
        entries
            .iter()
            .map(|(i, n, s)| (*i, ((*n).to_owned(), *s)))
            .collect()
    }

    #[test]
    fn oper_status_changes_become_events() {
        let before = status(&[(1, "lo", 1.0), (2, "eth0", 1.0), (3, "eth1", 2.0)]);
        let after = status(&[
            (1, "lo", 1.0),
            (2, "eth0", 7.0),
            (3, "eth1", 1.0),
            (4, "new", 2.0),
        ]);
        let events = status_events("sw1", &before, &after);
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.labels["interface"].as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("snmp_interface_down", "eth0"),
                ("snmp_interface_up", "eth1")
            ]
        );
        assert_eq!(events[0].labels["device"], "sw1");
    }

    #[test]
    fn long_event_texts_are_cut() {
        let long = event(
            "device_unreachable",
            Severity::Warning,
            "é".repeat(800),
            "sw1",
            None,
        );
        assert!(long.message.len() <= 1000 && long.message.chars().all(|c| c == 'é'));
        assert_eq!(long.labels["kind"], "snmp");
    }

    #[test]
    fn a_device_that_does_not_answer_shows_down_and_no_stale_rows() {
        let config: SnmpConfig =
            toml::from_str("name = \"sw1\"\ntarget = \"127.0.0.1:1161\"\ncommunity = \"c\"")
                .expect("table");
        let slot = Mutex::new(Slot::new(&config, 10).expect("slot"));
        store(
            &slot,
            Err(SnmpError::WrongCommunity {
                target: "127.0.0.1:1161".to_owned(),
            }),
        );
        let slot = lock(&slot).clone();
        let mut up = FamilyBuilder::gauge("pantau_device_up", "");
        let mut errors = FamilyBuilder::counter("pantau_device_poll_errors_total", "");
        let families = families(&[slot], &mut up, &mut errors);
        assert!(families.is_empty());
        let errors = errors.build();
        assert_eq!(errors.samples[0].labels["reason"], "wrong_community");
        assert_eq!(up.build().samples[0].value, 0.0);
    }
}
