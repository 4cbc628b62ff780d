#!/usr/bin/env bash
# Collector memory per stored series, and /healthz latency during scrapes.
#
# Starts the release collector (embedded broker, limits raised so nothing is refused), has
# AGENTS fake agents publish one metrics message each of SERIES series shaped as SHAPE, waits
# until all are stored, and prints RSS before, after ingest and after one scrape, per series;
# then runs 8 scrapes in parallel while timing /healthz.
#
#   SHAPE=node  AGENTS=100 SERIES=2000 ./bench/collector-memory.sh   # node_exporter-like labels
#   SHAPE=wide  AGENTS=100 SERIES=95   ./bench/collector-memory.sh   # 16 labels of 256-byte values
#   SHAPE=bare  AGENTS=100 SERIES=2000 ./bench/collector-memory.sh   # no labels at all
#   SHAPE=fill  AGENTS=100 SERIES=2000 ./bench/collector-memory.sh   # 4 labels of 48 bytes: ~500 KB
#   UNIQUE=1 ...                     # label values differ per agent: no shape or value is shared
#                                    # between agents (the worst case of the compact store)
set -euo pipefail

AGENTS=${AGENTS:-100}
SERIES=${SERIES:-2000}
SHAPE=${SHAPE:-node}
UNIQUE=${UNIQUE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pantau-collector}
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT=$(free_port)
HTTP=$(free_port)

PANTAU_BROKER__LISTEN=127.0.0.1:$MQTT PANTAU_HTTP__LISTEN=127.0.0.1:$HTTP PANTAU_LOG=warn \
PANTAU_LIMITS__MAX_AGENTS=100000 PANTAU_LIMITS__MAX_SERIES_PER_AGENT=1000000 \
PANTAU_INGEST__MAX_PAYLOAD_BYTES=16000000 PANTAU_BROKER__MAX_PACKET_BYTES=16777216 \
PANTAU_BROKER__PASSWORD_FILE= PANTAU_AGENTS__DEFAULT_INTERVAL_SECONDS=3600 \
PANTAU_STORAGE__DIR="$WORK/storage" \
  "$BIN" --config "$ROOT/configs/collector.toml" >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$PID/status"; }
before=$(rss)

for agent in $(seq 1 "$AGENTS"); do
  python3 - "$agent" "$SERIES" "$SHAPE" "$UNIQUE" >"$WORK/p.json" <<'EOF'
import json, sys
agent, series, shape, unique = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
def labels(i):
    own = plain_labels(i)
    if not unique:
        return own
    # Prefixed with the agent; cut to the same length where the shape sits at the size limits.
    cut = shape in ("fill", "wide")
    return {k: (f"{agent}-{v}"[:len(v)] if cut else f"{agent}-{v}") for k, v in own.items()}
def plain_labels(i):
    if shape == "bare":
        return {}
    if shape == "fill":
        return {f"label_{k}": f"{i:08d}" + "v" * 40 for k in range(4)}
    if shape == "wide":
        return {f"label_{k:02d}_" + "x" * 52: f"{i:08d}" + "v" * 248 for k in range(16)}
    return {"device": f"eth{i % 8}", "mode": f"m{i}", "cpu": str(i % 64)}
families = [{"name": "bench_series" if shape != "bare" else f"bench_series_{i}",
             "type": "gauge", "samples": []} for i in range(1 if shape != "bare" else series)]
for i in range(series):
    families[0 if shape != "bare" else i]["samples"].append({"labels": labels(i), "value": i * 1.5})
# Taken now: samples older than the live window are history (backfill), never stored as current.
import time
print(json.dumps({"schema": 1, "agent": f"bench-{agent}", "site": "dc", "seq": 1,
                  "timestamp_ms": int(time.time() * 1000), "families": families}))
EOF
  mosquitto_pub -p "$MQTT" -q 1 -t "pantau/v1/dc/bench-$agent/metrics" -f "$WORK/p.json"
done
payload=$(stat -c %s "$WORK/p.json")

for _ in $(seq 600); do
  up=$(curl -sf "http://127.0.0.1:$HTTP/metrics" | grep -c '^pantau_agent_up{.*} 1$' || true)
  [ "$up" -ge "$AGENTS" ] && break
  sleep 0.5
done
stored=$(rss)
start=$(date +%s.%N)
curl -sf "http://127.0.0.1:$HTTP/metrics" >"$WORK/body"; size=$(wc -c <"$WORK/body"); [ -z "${KEEP_BODY:-}" ] || cp "$WORK/body" "$KEEP_BODY"
scrape_s=$(echo "$(date +%s.%N) - $start" | bc)
scraped=$(rss)

scrapers=()
for _ in $(seq 8); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP/metrics" & scrapers+=($!); done
worst=0
for _ in $(seq 20); do
  t=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$HTTP/healthz")
  worst=$(echo "if ($t > $worst) $t else $worst" | bc)
done
wait "${scrapers[@]}"
parallel=$(rss)

total=$((AGENTS * SERIES))
echo "shape=$SHAPE agents=$AGENTS series/agent=$SERIES payload=${payload}B total=$total"
echo "rss_before=$((before / 1048576))MiB rss_stored=$((stored / 1048576))MiB rss_after_scrape=$((scraped / 1048576))MiB rss_after_8_parallel=$((parallel / 1048576))MiB"
echo "bytes_per_series_stored=$(( (stored - before) / total )) bytes_per_series_after_scrape=$(( (scraped - before) / total ))"
echo "scrape=${size}B in ${scrape_s}s; worst /healthz during 8 parallel scrapes: ${worst}s"
