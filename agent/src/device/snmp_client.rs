//! The SNMP side of `snmp.rs`: one poll of a device with the `async-snmp` client (sysUpTime and
//! the IF-MIB column walks), the client's errors mapped to the reasons Pantau reports, and the
//! second question that tells a wrong community or privacy key from a dead device
//! (`explain_silence`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_snmp::{
    Auth, Client, Error as ClientError, Oid, Retry, UdpHandle, UsmConfig, Value, v3::ReportStatus,
};
use thiserror::Error;

use super::if_mib::{self, Column, SYS_UPTIME, Table};

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
    #[error(
        "{target} cannot read our encrypted requests for user '{user}' ({detail}): wrong privacy password or protocol"
    )]
    PrivacyFailed {
        target: String,
        user: String,
        detail: String,
    },
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
    /// v3 with privacy: the same user without it (see `explain_silence`).
    pub auth_without_privacy: Option<Auth>,
    pub user: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub watch: Vec<String>,
}

/// A successful poll.
#[derive(Debug)]
pub struct Reading {
    pub sys_uptime: f64,
    pub table: Table,
}

pub async fn connect(
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
pub async fn poll(client: &Client<UdpHandle>, target: &Target) -> Result<Reading, SnmpError> {
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
            detail: cut(
                &format!("sysUpTime.0 is not TimeTicks: {:?}", response.varbinds),
                200,
            ),
        })?;
    let mut columns = BTreeMap::new();
    let mut cut_short = None;
    for column in Column::ALL {
        match walk(client, target, column).await {
            Ok(rows) => {
                columns.insert(column, rows);
            }
            // The device answered the first request: silence or a broken walk now cuts the
            // poll short, and the columns read so far are still worth reporting.
            Err(SnmpError::Timeout { .. } | SnmpError::Network { .. }) => {
                cut_short = Some(format!("no answer while walking {}", column.name()));
                break;
            }
            Err(SnmpError::PartialWalk { detail, .. }) => {
                cut_short = Some(detail);
                break;
            }
            Err(other) => return Err(other),
        }
    }
    let mut table = if_mib::assemble(&columns, &target.watch);
    if let Some(detail) = cut_short {
        table.problems.push(("partial_walk", detail));
    }
    Ok(Reading { sys_uptime, table })
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
            ReportStatus::DecryptionError { .. } => SnmpError::PrivacyFailed {
                target: address,
                user,
                detail: "usmStatsDecryptionErrors".to_owned(),
            },
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

/// What an unanswered poll means, when a second question can tell. Agents drop what they
/// cannot accept without a word: a v2c request with a wrong community, and (with AES, whose
/// decryption cannot fail) a v3 request encrypted with a wrong privacy key, which then does not
/// parse. So after silence, ask something the agent does answer:
/// - v2c: an SNMPv3 engine discovery, which needs no credentials and which RFC 3414 has every
///   v3 agent answer. An answer: the agent is up and ignores our community.
/// - v3 with privacy: the same request from the same user, authenticated but not encrypted. An
///   authenticated answer (even "unsupported security level" or "authorization error"): the
///   agent is up and knows our auth key, so the privacy key or protocol is wrong.
///
/// Returns None when the second question is not answered either: then it stays a timeout.
pub async fn explain_silence(target: &Target) -> Option<SnmpError> {
    if matches!(target.auth, Auth::Community { .. }) {
        let discovery = UsmConfig::new("pantau-discovery").into();
        return answers(target, discovery)
            .await
            .then(|| SnmpError::WrongCommunity {
                target: target.address.clone(),
            });
    }
    let auth_only = target.auth_without_privacy.clone()?;
    answers(target, auth_only)
        .await
        .then(|| SnmpError::PrivacyFailed {
            target: target.address.clone(),
            user: target.user.clone().unwrap_or_default(),
            detail: "it answers the same user without encryption".to_owned(),
        })
}

/// Whether the agent answers one GET of sysUpTime.0 made with `auth`, whatever the answer.
async fn answers(target: &Target, auth: Auth) -> bool {
    let Ok(client) = connect(target, auth, 0).await else {
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

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
