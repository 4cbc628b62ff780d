//! Switches and routers over SNMP (v2c, or v3 USM with authentication and privacy), through
//! the `async-snmp` client: IF-MIB interface rows and sysUpTime under snmp_exporter's names
//! (`if_mib.rs`), `pantau_device_up{kind="snmp"}` and failures counted by reason. An interface
//! whose ifOperStatus changes is an event at once.
//!
//! A wrong v2c community gets no answer at all: agents drop such requests silently (RFC 3584
//! leaves no other choice; snmpd only counts them in snmpInBadCommunityNames). So after an
//! unanswered v2c request the poll sends one SNMPv3 engine discovery, which every v3-capable
//! agent answers without credentials (RFC 3414 section 4). An answer proves the agent is alive
//! and ignoring our community: `wrong_community`; silence stays `timeout`. A v2c-only device
//! with a wrong community therefore shows as `timeout`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_snmp::{
    Auth, Client, Error as ClientError, Oid, Retry, UdpHandle, UsmConfig, Value, v3::ReportStatus,
};
use pantau_protocol::{Event, Family, Severity};
use pantau_runtime::config::ConfigError;
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::if_mib::{self, Column, SYS_UPTIME, Table};
use super::snmp_config::SnmpConfig;
use crate::metric::FamilyBuilder;
use crate::role::RoleContext;

/// Rows asked for per GETBULK.
const MAX_REPETITIONS: u32 = 25;
/// Most varbinds one column walk may return: a walk that goes on past this is cut.
const MAX_WALK_RESULTS: usize = 4096;

/// Why a poll failed; `reason()` is the metric's `reason` label.
#[derive(Debug, Error)]
pub enum SnmpError {
    #[error(
        "no answer from {target} after {tries} tries of {seconds} s: the device is down, unreachable or not an SNMP agent there (or, for v2c, the community is wrong on a device that does not speak SNMPv3)"
    )]
    Timeout {
        target: String,
        seconds: u64,
        tries: u32,
    },
    #[error(
        "{target} is alive (it answered SNMPv3 engine discovery) but ignored our v2c requests: the community is wrong or not allowed from this address"
    )]
    WrongCommunity { target: String },
    #[error(
        "{target} refused the SNMPv3 authentication of user '{user}' ({detail}): wrong auth password or protocol"
    )]
    AuthFailed {
        target: String,
        user: String,
        detail: String,
    },
    #[error("{target} does not know the SNMPv3 user '{user}'")]
    UnknownUser { target: String, user: String },
    #[error("{target} could not decrypt our request: wrong privacy password or protocol")]
    PrivacyFailed { target: String },
    #[error("the walk of {target} ended early: {detail}")]
    PartialWalk { target: String, detail: String },
    #[error("cannot decode the answer of {target}: {detail}")]
    Decode { target: String, detail: String },
    #[error("cannot reach {target}: {detail}")]
    Network { target: String, detail: String },
    #[error("{target} answered with an error: {detail}")]
    Refused { target: String, detail: String },
}

impl SnmpError {
    pub fn reason(&self) -> &'static str {
        match self {
            SnmpError::Timeout { .. } => "timeout",
            SnmpError::WrongCommunity { .. } => "wrong_community",
            SnmpError::AuthFailed { .. } => "auth_failed",
            SnmpError::UnknownUser { .. } => "unknown_user",
            SnmpError::PrivacyFailed { .. } => "privacy_failed",
            SnmpError::PartialWalk { .. } => "partial_walk",
            SnmpError::Decode { .. } => "decode",
            SnmpError::Network { .. } => "network",
            SnmpError::Refused { .. } => "refused",
        }
    }
}

/// How to reach one device.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub address: String,
    pub auth: Auth,
    pub user: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub watch: Vec<String>,
}

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

pub fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A successful poll.
#[derive(Debug)]
struct Reading {
    sys_uptime: f64,
    table: Table,
}

async fn connect(
    target: &Target,
    auth: Auth,
    retries: u32,
) -> Result<Client<UdpHandle>, SnmpError> {
    let retry = Retry::fixed(retries, Duration::ZERO).unwrap_or_else(|_| Retry::none());
    Client::builder(target.address.as_str(), auth)
        // An agent answers a wrong v3 password with an unauthenticated usmStatsWrongDigests
        // report (it cannot sign with a key that did not verify, RFC 3414 3.2 step 6). The
        // client drops unauthenticated replies unless this is on, and the wrong password then
        // looks like a timeout. With it on, a forged report can at most make a poll fail or
        // set one packet's time fields; it never supplies data.
        .allow_unauthenticated_v3_time_correction(true)
        .request_timeout(target.timeout)
        .construction_timeout(target.timeout)
        .retry(retry)
        .connect()
        .await
        .map_err(|error| SnmpError::Network {
            target: target.address.clone(),
            detail: error.to_string(),
        })
}

/// Reads sysUpTime and the IF-MIB columns.
async fn poll(client: &Client<UdpHandle>, target: &Target) -> Result<Reading, SnmpError> {
    let response = client
        .get(&Oid::from_slice(&SYS_UPTIME))
        .await
        .map_err(|error| classify(target, &error))?;
    let sys_uptime = response
        .single()
        .and_then(|varbind| match &varbind.value {
            Value::TimeTicks(ticks) => Some(f64::from(*ticks)),
            _ => None,
        })
        .ok_or_else(|| SnmpError::Decode {
            target: target.address.clone(),
            detail: format!("sysUpTime.0 is not TimeTicks: {:?}", response.varbinds),
        })?;
    let mut columns = BTreeMap::new();
    for column in Column::ALL {
        let rows = walk(client, target, column)
            .await
            .map_err(|error| match error {
                // The device answered the first request: a failure now cuts the walk short.
                SnmpError::Timeout { .. } | SnmpError::Network { .. } => SnmpError::PartialWalk {
                    target: target.address.clone(),
                    detail: format!("{}: {error}", column.name()),
                },
                other => other,
            })?;
        columns.insert(column, rows);
    }
    Ok(Reading {
        sys_uptime,
        table: if_mib::assemble(&columns, &target.watch),
    })
}

async fn walk(
    client: &Client<UdpHandle>,
    target: &Target,
    column: Column,
) -> Result<Vec<(Vec<u32>, Value)>, SnmpError> {
    let mut options = client.walk_options();
    options.method = async_snmp::WalkMethod::GetBulk;
    options.max_repetitions = MAX_REPETITIONS;
    options.result_limit = Some(MAX_WALK_RESULTS);
    let mut stream = client
        .walk_with(Oid::from_slice(&column.oid()), options)
        .map_err(|error| classify(target, &error))?;
    let mut rows = Vec::new();
    while let Some(item) = stream.next().await {
        let varbind = item.map_err(|error| match &*error {
            ClientError::WalkAborted { reason, .. } => SnmpError::PartialWalk {
                target: target.address.clone(),
                detail: format!("{}: {reason}", column.name()),
            },
            _ => classify(target, &error),
        })?;
        rows.push((varbind.oid.arcs().to_vec(), varbind.value));
    }
    Ok(rows)
}

/// Maps the client's error to one of ours, looking through its wrappers.
fn classify(target: &Target, error: &ClientError) -> SnmpError {
    let address = target.address.clone();
    let user = target.user.clone().unwrap_or_default();
    match error {
        ClientError::Exchange { source, .. } => classify(target, source),
        ClientError::SharedOperation { source } => classify(target, source),
        ClientError::Timeout { retries, .. } => SnmpError::Timeout {
            target: address,
            seconds: target.timeout.as_secs(),
            tries: retries + 1,
        },
        ClientError::ConstructionTimeout { .. } => SnmpError::Timeout {
            target: address,
            seconds: target.timeout.as_secs(),
            tries: 1,
        },
        ClientError::Auth { .. } => SnmpError::AuthFailed {
            target: address,
            user,
            detail: "the answer's digest did not verify".to_owned(),
        },
        ClientError::Report { status, .. } => match &**status {
            ReportStatus::WrongDigest { .. } => SnmpError::AuthFailed {
                target: address,
                user,
                detail: "usmStatsWrongDigests".to_owned(),
            },
            ReportStatus::UnknownUserName { .. } => SnmpError::UnknownUser {
                target: address,
                user,
            },
            ReportStatus::DecryptionError { .. } => SnmpError::PrivacyFailed { target: address },
            other => SnmpError::Refused {
                target: address,
                detail: format!("SNMPv3 report: {other}"),
            },
        },
        ClientError::Decode(_)
        | ClientError::MalformedResponse { .. }
        | ClientError::ResponseShape { .. }
        | ClientError::InvalidMessage(_) => SnmpError::Decode {
            target: address,
            detail: error.to_string(),
        },
        ClientError::Network { .. } | ClientError::Closed { .. } => SnmpError::Network {
            target: address,
            detail: error.to_string(),
        },
        _ => SnmpError::Refused {
            target: address,
            detail: error.to_string(),
        },
    }
}

/// After an unanswered v2c request: does the agent answer SNMPv3 engine discovery? Any answer
/// (even the expected unknown-user report) proves it is up and dropping our community.
async fn answers_v3_discovery(target: &Target) -> bool {
    let Ok(client) = connect(target, UsmConfig::new("pantau-discovery").into(), 0).await else {
        return false;
    };
    match client.get(&Oid::from_slice(&SYS_UPTIME)).await {
        Ok(_) => true,
        Err(error) => !matches!(
            classify(target, &error),
            SnmpError::Timeout { .. } | SnmpError::Network { .. }
        ),
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
    let v2c = matches!(target.auth, Auth::Community { .. });
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client: Option<Client<UdpHandle>> = None;
    let mut last_status: Option<BTreeMap<u32, (String, f64)>> = None;
    let mut last_error: Option<&'static str> = None;
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
            Err(SnmpError::Timeout { .. }) if v2c && answers_v3_discovery(&target).await => {
                Err(SnmpError::WrongCommunity {
                    target: target.address.clone(),
                })
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
                for (reason, detail) in &reading.table.problems {
                    warn!(device = %target.name, reason, detail, "incomplete SNMP data");
                }
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
            for (reason, _) in &reading.table.problems {
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
        message,
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
