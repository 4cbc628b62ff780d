#!/usr/bin/env python3
"""Failover time and sustained rate of a 3-node NATS cluster (JetStream, MQTT) against one
Mosquitto, on loopback. Run through bench/failover.sh.

Failover time: a real pantau-agent (1 s interval, mqtt.url listing node 1 first) reports to the
cluster; a mosquitto_sub on node 3 timestamps what arrives. Node 1 is SIGKILLed; the time from
the kill to the first message of the agent delivered after it (necessarily published through
node 2 or 3) is the failover time. It includes the agent's reconnect backoff (0.5 s) and up to
one reporting interval, which is what an operator sees.

Rate: mosquitto_pub -l publishes COUNT messages of 300 bytes at QoS 1 to node 1 (or to
Mosquitto); a QoS 1 mosquitto_sub on node 3 (or Mosquitto) counts them; rate = COUNT / time
from the first publish to the last message received. Bounded by COUNT and a timeout.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "5"))
RATE_RUNS = int(os.environ.get("RATE_RUNS", "3"))
COUNT = int(os.environ.get("COUNT", "5000"))
TIMEOUT = 120


def agent_binary():
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "pantau-agent")
        if os.path.exists(path):
            return path
    sys.exit("build pantau-agent first: cargo build --release -p pantau-agent")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200, response.read()
    except Exception:
        return False, b""


class Cluster:
    def __init__(self, work):
        self.work = work
        ports = free_ports(12)
        self.nodes = []
        for i in range(3):
            client, route, mqtt, http = ports[i * 4 : i * 4 + 4]
            self.nodes.append({"name": f"n{i + 1}", "client": client, "route": route,
                               "mqtt": mqtt, "http": http, "proc": None})
        routes = ", ".join(f"nats-route://127.0.0.1:{n['route']}" for n in self.nodes)
        for n in self.nodes:
            n["conf"] = os.path.join(work, f"{n['name']}.conf")
            with open(n["conf"], "w") as f:
                f.write(
                    f"server_name: {n['name']}\nlisten: 127.0.0.1:{n['client']}\n"
                    f"http: 127.0.0.1:{n['http']}\n"
                    f"jetstream {{ store_dir: \"{work}/js-{n['name']}\" }}\n"
                    f"cluster {{ name: pantau, listen: 127.0.0.1:{n['route']}, routes: [{routes}] }}\n"
                    f"mqtt {{ listen: 127.0.0.1:{n['mqtt']}, stream_replicas: 3 }}\n"
                )
        for i in range(3):
            self.start(i)
        for i in range(3):
            self.wait_ready(i)

    def start(self, i):
        n = self.nodes[i]
        log = open(os.path.join(self.work, f"{n['name']}.log"), "a")
        n["proc"] = subprocess.Popen(["nats-server", "-c", n["conf"]], stdout=log, stderr=log)

    def wait_ready(self, i):
        n = self.nodes[i]

        def ready():
            ok, body = http_ok(f"http://127.0.0.1:{n['http']}/routez")
            if not ok or json.loads(body).get("num_routes", 0) < 2:
                return False
            if not http_ok(f"http://127.0.0.1:{n['http']}/healthz?js-enabled-only=true")[0]:
                return False
            return subprocess.run(
                ["mosquitto_pub", "-p", str(n["mqtt"]), "-i", f"ready-{i}", "-q", "1",
                 "-t", "bench/ready", "-m", "1"], timeout=15, capture_output=True,
            ).returncode == 0

        try:
            wait(f"node {n['name']}", ready, 120)
        except SystemExit:
            with open(os.path.join(self.work, f"{n['name']}.log")) as f:
                print("".join(f.readlines()[-30:]), file=sys.stderr)
            raise

    def kill(self, i):
        proc = self.nodes[i]["proc"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self):
        for n in self.nodes:
            if n["proc"] and n["proc"].poll() is None:
                n["proc"].kill()
                n["proc"].wait()


def failover_once(cluster, work, run):
    urls = ",".join(f"mqtt://127.0.0.1:{n['mqtt']}" for n in cluster.nodes)
    agent_id = f"bench-{run}"
    sub_out = open(os.path.join(work, f"sub-{run}.out"), "w")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(cluster.nodes[2]["mqtt"]), "-q", "1", "-i", f"bench-sub-{run}",
         "-t", f"pantau/v1/dc/{agent_id}/metrics", "-F", "%U"], stdout=sub_out)
    env = dict(os.environ, PANTAU_AGENT__ID=agent_id, PANTAU_AGENT__SITE="dc",
               PANTAU_AGENT__INTERVAL_SECONDS="1",
               PANTAU_AGENT__STATE_DIR=os.path.join(work, agent_id),
               PANTAU_MQTT__URL=urls, PANTAU_HOST__COLLECTORS="[loadavg]", PANTAU_LOG="info")
    agent_log = open(os.path.join(work, f"{agent_id}.log"), "w")
    agent = subprocess.Popen([agent_binary(), "--config",
                              os.path.join(ROOT, "configs", "agent-server.toml")],
                             env=env, stdout=agent_log, stderr=agent_log)

    def arrivals():
        with open(sub_out.name) as f:
            return [float(line) for line in f if line.strip()]

    wait("three messages through the cluster", lambda: len(arrivals()) >= 3, 30)
    killed = time.time()
    cluster.kill(0)
    # Anything published on node 1 before the kill is delivered within milliseconds; the
    # first arrival 50 ms or more after the kill came through another node.
    wait("a message after the kill", lambda: any(t >= killed + 0.05 for t in arrivals()), 60)
    first = min(t for t in arrivals() if t >= killed + 0.05)
    agent.terminate()
    agent.wait(timeout=10)
    if os.environ.get("VERBOSE"):
        print(f"killed at {killed:.3f}, first after at {first:.3f}")
        print(open(agent_log.name).read())
    sub.terminate()
    sub.wait()
    cluster.start(0)
    cluster.wait_ready(0)
    return first - killed


def rate_once(pub_port, sub_port, tag):
    payload = "x" * 300
    sub_args = ["mosquitto_sub", "-p", str(sub_port), "-q", "1", "-i", f"rate-sub-{tag}", "-c",
                "-t", f"bench/rate/{tag}"]
    # A persistent session subscribed before the first publish: nothing is missed while the
    # counting subscriber connects.
    subprocess.run(sub_args + ["-E"], check=True, timeout=30, capture_output=True)
    sub = subprocess.Popen(sub_args + ["-C", str(COUNT), "-W", str(TIMEOUT)],
                           stdout=subprocess.DEVNULL)
    started = time.time()
    pub = subprocess.Popen(
        ["mosquitto_pub", "-p", str(pub_port), "-q", "1", "-i", f"rate-pub-{tag}", "-t",
         f"bench/rate/{tag}", "-l"], stdin=subprocess.PIPE)
    try:
        pub.communicate(("\n".join([payload] * COUNT) + "\n").encode(), timeout=TIMEOUT)
        code = sub.wait(timeout=TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        code = None
    elapsed = time.time() - started
    for proc in (pub, sub):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        return None  # COUNT did not arrive within TIMEOUT: lost or too slow
    return COUNT / elapsed


def mosquitto(work):
    port = free_ports(1)[0]
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_queued_messages 0\n")
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait("mosquitto", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
    return proc, port


def summary(name, values, unit, fmt):
    good = [v for v in values if v is not None]
    if not good:
        print(f"{name}: no complete run ({values})")
        return
    print(f"{name}: median {fmt.format(statistics.median(good))} {unit}, "
          f"min {fmt.format(min(good))}, max {fmt.format(max(good))} "
          f"({len(good)}/{len(values)} runs: {', '.join(fmt.format(v) for v in good)})")


def main():
    work = tempfile.mkdtemp(prefix="pantau-failover-")
    cluster = Cluster(work)
    broker, port = mosquitto(work)
    try:
        # Rates first, on the fresh cluster: every node kill leaves JetStream work behind.
        nats_rates, mosquitto_rates = [], []
        for run in range(RATE_RUNS):
            nats_rates.append(rate_once(cluster.nodes[0]["mqtt"], cluster.nodes[2]["mqtt"],
                                        f"nats{run}"))
            mosquitto_rates.append(rate_once(port, port, f"mosq{run}"))
        failovers = [failover_once(cluster, work, run) for run in range(RUNS)]
        print(f"agent: {agent_binary()}")
        summary("failover time (kill -> first message via another node)", failovers, "s",
                "{:.2f}")
        summary(f"3-node NATS, QoS 1, {COUNT} x 300 B, pub node 1 -> sub node 3", nats_rates,
                "msg/s", "{:.0f}")
        summary(f"Mosquitto, QoS 1, {COUNT} x 300 B", mosquitto_rates, "msg/s", "{:.0f}")
    finally:
        cluster.stop()
        broker.kill()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
