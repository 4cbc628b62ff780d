#!/usr/bin/env bash
# Failover time of Pantau on a 3-node NATS cluster (JetStream, MQTT) and the sustained QoS 1
# rate of that cluster against a single Mosquitto, in one run on loopback (BENCHMARKS.md,
# "Beyond one machine"). Needs nats-server, mosquitto, mosquitto-clients and a built
# pantau-agent (release preferred, else debug).
#
#   ./bench/failover.sh                 # 5 failovers, 3 rate runs of 5000 messages each
#   RUNS=3 RATE_RUNS=1 COUNT=5000 ./bench/failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nats-server mosquitto mosquitto_pub mosquitto_sub python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
exec python3 bench/failover.py
