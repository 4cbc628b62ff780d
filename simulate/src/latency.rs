//! Publish -> visible latency: one agent publishes a message at a time and polls the
//! collector's `GET /api/v1/agents/<id>` until its `last_sequence` shows that message.
//! Run it next to `pantau-simulate run` at half the sustained rate.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_protocol::{AgentState, Channel, SCHEMA_VERSION, StatusMessage, Topic};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::payload::{Shape, Template};

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub samples: usize,
    pub timeouts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The agent's `last_sequence` from the API, or none if unknown or unreadable.
async fn last_sequence(http: SocketAddr, token: &str, agent: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(http).await.ok()?;
    let request = format!(
        "GET /api/v1/agents/{agent} HTTP/1.1\r\nHost: {http}\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let view: serde_json::Value = serde_json::from_slice(&response[body_at..]).ok()?;
    view.get("last_sequence")?.as_u64()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn measure(
    host: String,
    port: u16,
    http: SocketAddr,
    token: &str,
    prefix: &str,
    site: &str,
    count: usize,
) -> LatencyReport {
    let agent = "sim-latency";
    let mut options = MqttOptions::new(format!("pantau-agent-{agent}"), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100);
    let poller = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let status = StatusMessage {
        schema: SCHEMA_VERSION,
        agent: agent.to_owned(),
        site: site.to_owned(),
        state: AgentState::Online,
        timestamp_ms: now_ms(),
        interval_seconds: Some(3600),
        version: Some("simulate".to_owned()),
        next_seq: Some(1),
        connected_ms: Some(now_ms()),
        roles: vec!["host".to_owned()],
        clips: Vec::new(),
    };
    let status_topic = Topic::new(site, agent, Channel::Status).render(prefix);
    let payload = serde_json::to_vec(&status).expect("a status message serializes");
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        client.publish(status_topic, QoS::AtLeastOnce, true, payload),
    )
    .await;
    let topic = Topic::new(site, agent, Channel::Metrics).render(prefix);
    let template = Template::shape(Shape::Small);
    let mut buffer = Vec::new();
    let mut times = Vec::with_capacity(count);
    let mut timeouts = 0;
    // Wait for the birth to be visible (the agent known) before timing anything.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1;
    while Instant::now() < deadline {
        template.render(agent, site, seq, now_ms(), &mut buffer);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            client.publish(topic.clone(), QoS::AtLeastOnce, false, buffer.clone()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_sequence(http, token, agent).await == Some(seq) {
            break;
        }
        seq += 1;
    }
    for _ in 0..count {
        seq += 1;
        template.render(agent, site, seq, now_ms(), &mut buffer);
        let sent = Instant::now();
        let publish = client.publish(topic.clone(), QoS::AtLeastOnce, false, buffer.clone());
        if !matches!(
            tokio::time::timeout(Duration::from_secs(5), publish).await,
            Ok(Ok(()))
        ) {
            break;
        }
        let deadline = sent + Duration::from_secs(5);
        loop {
            if last_sequence(http, token, agent).await >= Some(seq) {
                times.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                timeouts += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poller.abort();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    LatencyReport {
        samples: times.len(),
        timeouts,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: times.last().copied().unwrap_or(f64::NAN),
    }
}
