#!/usr/bin/env bash
# Slow HTTP clients: the collector's memory and file handles while N connections trickle a
# request head a byte at a time, and after they are closed, next to prometheus-node-exporter
# (a Go net/http server) measured the same way in the same run.
#
#   ./bench/http-slow-clients.sh                       # 2,000 connections, a byte every 2 s
#   N=200 EVERY=5 ./bench/http-slow-clients.sh         # issue 22's row as written
#   BIN=target/debug/pantau-collector ./bench/...      # another build
#   DEFAULT_CAPS=1 ./bench/http-slow-clients.sh        # the shipped caps (128 per address)
#
# The collector runs with http.header_read_timeout_seconds=TIMEOUT (default 10) and caps
# raised above N, so the timeout is what acts. Each server gets MAX seconds (default 60) of
# trickling; what is still open then is closed by the client.
set -euo pipefail

N=${N:-2000}
EVERY=${EVERY:-2}
MAX=${MAX:-60}
TIMEOUT=${TIMEOUT:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pantau-collector}
NODE_EXPORTER=${NODE_EXPORTER:-prometheus-node-exporter}
WORK=$(mktemp -d)
PID=
NE=
trap 'kill $PID $NE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -Sn "$(( N * 2 + 1024 ))"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT=$(free_port)
HTTP=$(free_port)
NE_PORT=$(free_port)

if [ "${DEFAULT_CAPS:-0}" != 1 ]; then
  export PANTAU_HTTP__MAX_CONNECTIONS=$(( N + 1000 )) PANTAU_HTTP__MAX_CONNECTIONS_PER_ADDRESS=$(( N + 500 ))
fi
PANTAU_BROKER__LISTEN=127.0.0.1:$MQTT PANTAU_HTTP__LISTEN=127.0.0.1:$HTTP PANTAU_LOG=info \
PANTAU_BROKER__PASSWORD_FILE= PANTAU_STORAGE__DIR="$WORK/storage" \
PANTAU_HTTP__HEADER_READ_TIMEOUT_SECONDS=$TIMEOUT \
  "$BIN" --config "$ROOT/configs/collector.toml" >"$WORK/collector.log" 2>&1 &
PID=$!
"$NODE_EXPORTER" --web.listen-address=127.0.0.1:$NE_PORT >"$WORK/node-exporter.log" 2>&1 &
NE=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && curl -sf "http://127.0.0.1:$NE_PORT/metrics" >/dev/null && break
  sleep 0.1
done
# One request of each kind first, so that lazily opened files count as idle.
curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null
curl -sf "http://127.0.0.1:$NE_PORT/metrics" >/dev/null

echo "$N connections, a header byte every ${EVERY} s, at most ${MAX} s each; collector header timeout ${TIMEOUT} s"
echo "pantau-collector ($(basename "$(dirname "$BIN")")): $(python3 "$ROOT/bench/slow_clients.py" "$PID" "$HTTP" "$N" "$EVERY" "$MAX")"
echo "prometheus-node-exporter $("$NODE_EXPORTER" --version 2>&1 | head -1 | awk '{print $3}'): $(python3 "$ROOT/bench/slow_clients.py" "$NE" "$NE_PORT" "$N" "$EVERY" "$MAX")"
curl -s "http://127.0.0.1:$HTTP/metrics" | grep -E '^pantau_collector_http_(open|timed_out|refused)' || true
echo "collector log lines about it: $(grep -c 'closed an HTTP connection' "$WORK/collector.log" || true)"
