//! The simulated fleet: connections, births, paced metrics, and the per-agent tally.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{AgentState, Channel, SCHEMA_VERSION, StatusMessage, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::time::Instant;

use crate::pace;
use crate::payload::Template;

/// What one run is asked to do (already checked against the caps).
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub site: String,
    pub agents: usize,
    pub rate: f64,
    pub duration: Duration,
    /// `None`: one connection per agent.
    pub connections: Option<usize>,
    pub interval_seconds: u64,
    pub max_packet_bytes: usize,
}

/// One simulated agent's tally.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    pub agent: String,
    /// Metrics messages handed to the MQTT client, with sequence numbers 1..=sent.
    pub sent: u64,
    pub last_seq: u64,
}

/// The run's result, printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub agents: Vec<AgentReport>,
    pub connections: usize,
    /// Metrics messages sent over all agents.
    pub total: u64,
    /// Publishes (births included) the broker acknowledged (QoS 1 PUBACK): equal to
    /// `total + births` when the broker took everything.
    pub acked: u64,
    pub births: u64,
    pub samples_per_message: usize,
    pub offered_rate: f64,
    /// `total` over the publishing time (births and the final wait for acks excluded).
    pub achieved_rate: f64,
    pub seconds: f64,
    pub connection_errors: u64,
}

/// How long past the end a publish may wait for room in the client's queue.
const GRACE: Duration = Duration::from_secs(5);

pub fn agent_id(index: usize) -> String {
    format!("sim-{:05}", index + 1)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn run(plan: Plan, template: Arc<Template>) -> Report {
    let connections = plan.connections.unwrap_or(plan.agents);
    let groups = pace::split(plan.agents, connections, plan.rate);
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::with_capacity(groups.len());
    for (number, (group, rate)) in groups.into_iter().enumerate() {
        let plan = plan.clone();
        let template = template.clone();
        let (acked, errors) = (acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            connection(number, plan, group, rate, template, start, acked, errors).await
        }));
    }
    let mut agents = Vec::with_capacity(plan.agents);
    let mut births = 0;
    let mut published_until = start;
    for task in tasks {
        if let Ok((reports, born, finished)) = task.await {
            agents.extend(reports);
            births += born;
            published_until = published_until.max(finished);
        }
    }
    agents.sort_by(|a, b| a.agent.cmp(&b.agent));
    let total = agents.iter().map(|agent| agent.sent).sum();
    let seconds = published_until
        .saturating_duration_since(start)
        .as_secs_f64();
    Report {
        connections: connections.min(plan.agents),
        total,
        acked: acked.load(Ordering::Relaxed),
        births,
        samples_per_message: template.samples(),
        offered_rate: plan.rate,
        achieved_rate: if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        },
        seconds,
        connection_errors: errors.load(Ordering::Relaxed),
        agents,
    }
}

/// One MQTT connection publishing for `group`'s agents in turn at `rate`.
#[allow(clippy::too_many_arguments)]
async fn connection(
    number: usize,
    plan: Plan,
    group: Vec<usize>,
    rate: f64,
    template: Arc<Template>,
    start: Instant,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> (Vec<AgentReport>, u64, Instant) {
    let ids: Vec<String> = group.iter().map(|&index| agent_id(index)).collect();
    let client_id = match (plan.connections, ids.first()) {
        (None, Some(id)) => format!("pantau-agent-{id}"),
        _ => format!("pantau-simulate-{}-{number}", std::process::id()),
    };
    let mut options = MqttOptions::new(client_id, plan.host.clone(), plan.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(plan.max_packet_bytes, plan.max_packet_bytes)
        .set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 1000);
    let connected = Arc::new(AtomicBool::new(false));
    let mine = Arc::new(AtomicU64::new(0));
    let poller = {
        let (connected, mine, acked, errors) = (
            connected.clone(),
            mine.clone(),
            acked.clone(),
            errors.clone(),
        );
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.store(true, Ordering::Release)
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        mine.fetch_add(1, Ordering::Relaxed);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        // rumqttc reconnects on the next poll with no backoff of its own.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connected.load(Ordering::Acquire) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut births = 0;
    for id in &ids {
        let status = StatusMessage {
            schema: SCHEMA_VERSION,
            agent: id.clone(),
            site: plan.site.clone(),
            state: AgentState::Online,
            timestamp_ms: now_ms(),
            interval_seconds: Some(plan.interval_seconds),
            version: Some("simulate".to_owned()),
            next_seq: Some(1),
            connected_ms: Some(now_ms()),
            roles: vec!["host".to_owned()],
            clips: Vec::new(),
        };
        let topic = Topic::new(&plan.site, id, Channel::Status).render(&plan.prefix);
        let payload = serde_json::to_vec(&status).expect("a status message serializes");
        let publish = client.publish(topic, QoS::AtLeastOnce, true, payload);
        if let Ok(Ok(())) = tokio::time::timeout_at(start + plan.duration + GRACE, publish).await {
            births += 1;
        }
    }
    let topics: Vec<String> = ids
        .iter()
        .map(|id| Topic::new(&plan.site, id, Channel::Metrics).render(&plan.prefix))
        .collect();
    let mut sent = vec![0u64; ids.len()];
    let end = start + plan.duration;
    let mut buffer = Vec::new();
    let mut index: u64 = 0;
    loop {
        let due = start + pace::due(index, rate);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let slot = (index % ids.len() as u64) as usize;
        let seq = sent[slot] + 1;
        template.render(&ids[slot], &plan.site, seq, now_ms(), &mut buffer);
        // Bounded even if the broker is gone and the client's queue stays full.
        let publish = client.publish(
            topics[slot].clone(),
            QoS::AtLeastOnce,
            false,
            buffer.clone(),
        );
        if !matches!(
            tokio::time::timeout_at(end + GRACE, publish).await,
            Ok(Ok(()))
        ) {
            break;
        }
        sent[slot] = seq;
        index += 1;
    }
    let finished = Instant::now();
    // Wait (bounded) for the broker to acknowledge everything before leaving.
    let expected = births + sent.iter().sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mine.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout(GRACE, client.disconnect()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    poller.abort();
    let reports = ids
        .into_iter()
        .zip(sent)
        .map(|(agent, sent)| AgentReport {
            agent,
            sent,
            last_seq: sent,
        })
        .collect();
    (reports, births, finished)
}
