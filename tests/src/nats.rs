//! A real NATS cluster (Debian's `nats-server`, 2.9) with JetStream and the MQTT listener on
//! every node: the clustered MQTT engine of issue 17.
//!
//! Each node has its own client, route, MQTT and monitoring port on 127.0.0.1 and its own
//! JetStream store dir, kept across [`NatsCluster::kill`] and [`NatsCluster::restart`], so a
//! restarted node rejoins with its data. MQTT sessions and retained messages live in
//! JetStream streams replicated to every node (`stream_replicas`), so they survive the loss
//! of one.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::http::http_get;
use crate::process::{ChildGuard, port_accepts, run_with_timeout};
use crate::wait::poll_until;

/// How long a node gets to start, and the cluster to form (seen: about 4 s).
const FORM_TIMEOUT: Duration = Duration::from_secs(40);

/// One node's ports and process.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    mqtt_port: u16,
    http_port: u16,
    config: PathBuf,
    child: Option<ChildGuard>,
}

/// A running NATS cluster on loopback; every node is stopped on drop.
#[derive(Debug)]
pub struct NatsCluster {
    // Dropped before `dir`: the processes go before their files.
    nodes: Vec<Node>,
    dir: TempDir,
}

/// Distinct free ports: each is held bound until all are chosen, so no two are the same.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("bound address").port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` nodes (`n1`, `n2`, ...) routed to each other and waits until the cluster
    /// is formed, JetStream is healthy on every node and each MQTT listener has carried a
    /// QoS 1 message (the first MQTT client of an account waits while NATS creates its
    /// streams; that wait is taken here, not in the test's timings).
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("pantau-nats-")
            .tempdir()
            .expect("create a temp dir for nats-server");
        let ports = free_ports(size * 4);
        let mut nodes: Vec<Node> = (0..size)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: ports[i * 4],
                route_port: ports[i * 4 + 1],
                mqtt_port: ports[i * 4 + 2],
                http_port: ports[i * 4 + 3],
                config: dir.path().join(format!("n{}.conf", i + 1)),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|node| format!("nats-route://127.0.0.1:{}", node.route_port))
            .collect();
        for node in &nodes {
            let store = dir.path().join(format!("js-{}", node.name));
            let config = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{http}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: pantau\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
                 mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: {replicas}\n}}\n",
                name = node.name,
                client = node.client_port,
                http = node.http_port,
                store = store.display(),
                route = node.route_port,
                routes = routes.join(", "),
                mqtt = node.mqtt_port,
                replicas = size.min(3),
            );
            fs::write(&node.config, config).expect("write a nats-server config");
        }
        for node in &mut nodes {
            node.child = Some(spawn(node, &dir));
        }
        let cluster = NatsCluster { nodes, dir };
        for index in 0..size {
            cluster.wait_node_ready(index);
        }
        cluster
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `mqtt://127.0.0.1:PORT` of node `index`'s MQTT listener.
    pub fn mqtt_url(&self, index: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[index].mqtt_port)
    }

    /// The MQTT port of node `index`.
    pub fn mqtt_port(&self, index: usize) -> u16 {
        self.nodes[index].mqtt_port
    }

    /// Every node's MQTT URL, comma-separated, starting at node `first` and wrapping: the
    /// `PANTAU_MQTT__URL` of a client that prefers that node and fails over to the others.
    pub fn urls_from(&self, first: usize) -> String {
        (0..self.len())
            .map(|i| self.mqtt_url((first + i) % self.len()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `index`: a node failure. Its store dir is kept for [`NatsCluster::restart`].
    pub fn kill(&mut self, index: usize) {
        if let Some(child) = self.nodes[index].child.as_mut() {
            child.kill();
        }
    }

    /// Starts node `index` again with the same config and store, and waits until it has
    /// rejoined (routes to every other running node, JetStream healthy, MQTT answering).
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let child = spawn(&self.nodes[index], &self.dir);
        self.nodes[index].child = Some(child);
        self.wait_node_ready(index);
    }

    /// Node `index`'s output so far.
    pub fn logs(&self, index: usize) -> String {
        self.nodes[index]
            .child
            .as_ref()
            .map(ChildGuard::logs)
            .unwrap_or_default()
    }

    /// Routes node `index` has to other nodes, from its monitoring endpoint `/routez`.
    pub fn routes(&self, index: usize) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/routez", self.nodes[index].http_port);
        let (status, body) = http_get(&url).ok()?;
        if status != 200 {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        value["num_routes"].as_u64()
    }

    fn wait_node_ready(&self, index: usize) {
        let node = &self.nodes[index];
        let others = (self.len() - 1) as u64;
        // Not the full /healthz: after a restart it can report a consumer of the MQTT streams
        // that belonged to the node's previous run as "not current" for minutes, while MQTT
        // works; the round trip below is the real check.
        let health = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            node.http_port
        );
        let ready = poll_until(FORM_TIMEOUT, || {
            let routed = self.routes(index).is_some_and(|routes| routes >= others);
            let healthy = http_get(&health).is_ok_and(|(status, _)| status == 200);
            (routed && healthy && port_accepts(node.mqtt_port) && self.mqtt_round_trip(index))
                .then_some(())
        });
        if ready.is_none() {
            panic!(
                "nats node {} not ready within {FORM_TIMEOUT:?} (routes {:?})\n{}",
                node.name,
                self.routes(index),
                self.logs(index)
            );
        }
    }

    /// Publishes one QoS 1 message to node `index` with the real `mosquitto_pub`; true once
    /// the node acknowledged it (its MQTT streams exist).
    fn mqtt_round_trip(&self, index: usize) -> bool {
        let output = run_with_timeout(
            Command::new("mosquitto_pub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.nodes[index].mqtt_port.to_string(),
                "-i",
                &format!("pantau-harness-ready-{index}"),
                "-q",
                "1",
                "-t",
                "pantau-harness/ready",
                "-m",
                "1",
            ]),
            b"",
            Duration::from_secs(15),
        );
        output.status.success()
    }
}

fn spawn(node: &Node, dir: &TempDir) -> ChildGuard {
    ChildGuard::spawn(
        &format!("nats-{}", node.name),
        Command::new("nats-server").arg("-c").arg(&node.config),
        dir.path(),
    )
}
