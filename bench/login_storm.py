#!/usr/bin/env python3
"""Logins under attack: N concurrent wrong HTTP Basic passwords, each from its own loopback
address (127.0.1.0/24 and up, so no per-address limit is hit), against a release
pantau-collector and, in the same run, against Prometheus with its own basic_auth_users
(bcrypt, cost 10: the peer that guards an HTTP endpoint with a password hash). Reports RSS
before, at peak and after, how long the storm took, what it was answered, and /healthz (or
Prometheus's /-/healthy) latency from another address while it ran.

Run by bench/login-storm.sh; everything listens on 127.0.0.1 on ports the OS picks.
"""
import base64
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt hashes for Prometheus's web config (glibc's libxcrypt)
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "200"))
assert 1 <= ROUNDS <= 20 and 1 <= CONCURRENCY <= 1000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def request(source, port, path, auth=None, timeout=60):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path
    if auth:
        head += "Authorization: Basic %s\r\n" % base64.b64encode(auth.encode()).decode()
    s.sendall((head + "\r\n").encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return int(data.split(b" ", 2)[1])


def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("timed out waiting for " + what)


def storm(pid, port, path, health, user):
    """One round: CONCURRENCY wrong passwords at once; returns the round's figures."""
    statuses, lock = {}, threading.Lock()

    def one(n):
        source = "127.0.%d.%d" % (1 + n // 250, n % 250 + 1)
        try:
            status = request(source, port, path, "%s:wrong-%d" % (user, n))
        except OSError as error:
            status = type(error).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    before, fds_before = rss_kib(pid), fds(pid)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENCY)]
    started = time.time()
    for t in threads:
        t.start()
    peak, latencies = before, []
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(pid))
        t0 = time.time()
        request("127.0.0.250", port, health, timeout=10)
        latencies.append((time.time() - t0) * 1000)
        time.sleep(0.02)
    for t in threads:
        t.join()
    took = time.time() - started
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None
    return {"rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(rss_kib(pid) / 1024, 1), "fds_before": fds_before,
            "fds_after": fds(pid), "seconds": round(took, 2), "answers": statuses,
            "health_p50_ms": round(pct(0.5), 1), "health_p99_ms": round(pct(0.99), 1),
            "health_samples": len(latencies)}


def main():
    bins = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {"concurrency": CONCURRENCY, "pantau": [], "prometheus": []}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            users = os.path.join(tmp, "api-users")
            subprocess.run([os.path.join(bins, "pantau-collector"), "user", "add", "rina",
                            "--role", "operator", "--file", users],
                           input=b"rahasia-rina-123\n", check=True, stdout=subprocess.DEVNULL)
            http, mqtt = free_port(), free_port()
            env = dict(os.environ, PANTAU_HTTP__LISTEN="127.0.0.1:%d" % http,
                       PANTAU_BROKER__LISTEN="127.0.0.1:%d" % mqtt, PANTAU_BROKER__PASSWORD_FILE="",
                       PANTAU_API__USERS_FILE=users, PANTAU_STORAGE__DIR=os.path.join(tmp, "s"),
                       PANTAU_LOG="warn")
            collector = subprocess.Popen([os.path.join(bins, "pantau-collector"), "--config",
                                          os.path.join(root, "configs/collector.toml")], env=env,
                                         stderr=open(os.path.join(tmp, "collector.log"), "w"))
            procs.append(collector)
            wait_for("the collector", lambda: request("127.0.0.1", http, "/readyz") == 200)
            # Prometheus with basic auth: bcrypt at Prometheus's documented cost of 10.
            web = os.path.join(tmp, "web.yml")
            with open(web, "w") as f:
                f.write("basic_auth_users:\n  rina: '%s'\n"
                        % crypt.crypt("rahasia-rina-123", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10)))
            prom_port = free_port()
            with open(os.path.join(tmp, "prom.yml"), "w") as f:
                f.write("global: {scrape_interval: 1h}\n")
            prometheus = subprocess.Popen(
                ["prometheus", "--config.file=" + os.path.join(tmp, "prom.yml"),
                 "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"), "--web.config.file=" + web,
                 "--web.listen-address=127.0.0.1:%d" % prom_port, "--log.level=error"],
                stderr=open(os.path.join(tmp, "prometheus.log"), "w"))
            procs.append(prometheus)
            wait_for("prometheus",
                     lambda: request("127.0.0.1", prom_port, "/-/ready", "rina:rahasia-rina-123") == 200)
            for round_ in range(ROUNDS):
                # A name of its own each round (unknown names cost a hash too): otherwise the
                # per-user limit refuses the second round's addresses before any hash runs.
                user = "rina" if round_ == 0 else "guess%d" % round_
                results["pantau"].append(storm(collector.pid, http, "/api/v1/agents", "/healthz", user))
                # Every address has failed once; a new round uses the same ones (below the limit).
                results["prometheus"].append(storm(prometheus.pid, prom_port, "/api/v1/status/buildinfo",
                                                   "/-/healthy", "rina"))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=20)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
