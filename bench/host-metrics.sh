#!/usr/bin/env bash
# Cost of host metrics on this machine: pantau-agent (collect, encode, publish over MQTT to the
# collector's embedded broker) against node_exporter (collect and encode one scrape), with the
# same twenty collectors (the agent's defaults, configs/agent-server.toml) and upstream
# node_exporter's default filters (Debian's package narrows them). Both run at the same time,
# one round a second each, so load from anything else on the machine falls on both alike.
# Also the collector's cost per message.
#
#   ROUNDS=60 ./bench/host-metrics.sh
#   AGENT_BUILD=small ROUNDS=60 ./bench/host-metrics.sh   # which agent build (see below)
#
# AGENT_BUILD: `release` (the default build), `small` (the `small` profile), `lean` (the `small`
# profile without the sound role, glibc linked statically: the build for servers without
# speakers, README "A lean agent for servers").
#
# CPU is user+system time from /proc/<pid>/stat between the first and the last round, so start-up
# is excluded; RSS is VmRSS at the end. Everything listens on 127.0.0.1, on ports the OS picks.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-60}"
(( rounds >= 5 && rounds <= 3600 )) || { echo "ROUNDS must be 5..3600" >&2; exit 2; }

agent_build="${AGENT_BUILD:-release}"
cargo build --release --bins --quiet
case "$agent_build" in
    release) agent_bin=./target/release/pantau-agent ;;
    small) cargo build --profile small -p pantau-agent --quiet
           agent_bin=./target/small/pantau-agent ;;
    lean) agent_bin="./$(./scripts/build-lean-agent)" ;;
    *) echo "AGENT_BUILD must be release, small or lean" >&2; exit 2 ;;
esac
tmp="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz="$(getconf CLK_TCK)"
wait_for() {  # wait_for <description> <seconds> <command...>
    local what="$1" limit="$2"; shift 2
    for _ in $(seq $((limit * 10))); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2; exit 1
}

http="$(free_port)"; mqtt="$(free_port)"
# The API needs a login: a viewer token of the collector's token file.
api_token="bench-viewer-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$api_token viewer" >"$tmp/api-tokens"
PANTAU_HTTP__LISTEN="127.0.0.1:$http" PANTAU_BROKER__LISTEN="127.0.0.1:$mqtt" PANTAU_BROKER__PASSWORD_FILE= \
PANTAU_API__TOKEN_FILE="$tmp/api-tokens" \
    ./target/release/pantau-collector --config configs/collector.toml 2>"$tmp/collector.log" &
collector=$!; pids+=("$collector")
wait_for "the collector" 20 curl -sf "http://127.0.0.1:$http/readyz" -o /dev/null

PANTAU_MQTT__URL="mqtt://127.0.0.1:$mqtt" PANTAU_AGENT__ID=bench PANTAU_AGENT__SITE=bench \
PANTAU_AGENT__STATE_DIR="$tmp/agent" PANTAU_AGENT__INTERVAL_SECONDS=1 \
    "$agent_bin" --config configs/agent-server.toml 2>"$tmp/agent.log" &
agent=$!; pids+=("$agent")
# Sequence 0 is the agent_started event, 1 the first metrics message, N the N-th.
last_seq() {
    curl -sf -H "Authorization: Bearer $api_token" "http://127.0.0.1:$http/api/v1/agents/bench" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["last_sequence"] or 0)' 2>/dev/null || echo 0
}
seq_at_least() { [ "$(last_seq)" -ge "$1" ]; }
wait_for "the first report" 30 seq_at_least 1
ne_port="$(free_port)"
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" --collector.disable-defaults \
    --collector.cpu --collector.stat --collector.meminfo --collector.filesystem \
    --collector.netdev --collector.loadavg --collector.diskstats --collector.netclass \
    --collector.uname --collector.os --collector.time --collector.filefd --collector.entropy \
    --collector.vmstat --collector.netstat --collector.sockstat --collector.pressure \
    --collector.hwmon --collector.thermal_zone --collector.timex --no-collector.netdev.netlink \
    --collector.netdev.device-exclude= \
    '--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)' \
    2>"$tmp/ne.log" &
ne=$!; pids+=("$ne")
wait_for "node_exporter" 20 curl -sf "http://127.0.0.1:$ne_port/metrics" -o /dev/null
message_bytes="$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mqtt" -t 'pantau/v1/bench/bench/metrics' -C 1 | wc -c)"
agent_start="$(ticks "$agent")"; collector_start="$(ticks "$collector")"; ne_start="$(ticks "$ne")"
first="$(last_seq)"
# node_exporter is scraped once a second while the agent reports once a second; stay off the
# collector's HTTP side while it is measured and check the count afterwards.
for _ in $(seq "$rounds"); do
    curl -sf "http://127.0.0.1:$ne_port/metrics" -o "$tmp/ne.prom"
    sleep 1
done
ne_cpu=$(( $(ticks "$ne") - ne_start ))
agent_cpu=$(( $(ticks "$agent") - agent_start )); collector_cpu=$(( $(ticks "$collector") - collector_start ))
# The agent's own count of rounds in the window (its messages are numbered), so a slow curl
# loop does not flatter it.
agent_rounds=$(( $(last_seq) - first ))
(( agent_rounds > 0 )) || { echo "the agent reported nothing during the run" >&2; exit 1; }
agent_rss="$(rss_kib "$agent")"; collector_rss="$(rss_kib "$collector")"
series_count="$(curl -sf "http://127.0.0.1:$http/metrics" | grep '^node_' | grep -c 'instance="bench"')"
ne_rss="$(rss_kib "$ne")"; ne_bytes="$(wc -c < "$tmp/ne.prom")"
ne_series="$(grep -c '^node_' "$tmp/ne.prom")"

ms() { awk -v t="$1" -v n="${2:-$rounds}" -v hz="$hz" 'BEGIN {printf "%.2f", t * 1000 / hz / n}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
printf '%s rounds, agent build %s, on %s (%s cores), %s\n\n' "$rounds" "$agent_build" "$(uname -r)" "$(nproc)" "$(date -u +%F)"
printf '| | CPU per round (ms) | RSS (MiB) | bytes per round | node_* series |\n|---|---|---|---|---|\n'
printf '| pantau-agent (collect + JSON + MQTT publish) | %s | %s | %s | %s |\n' "$(ms $agent_cpu $agent_rounds)" "$(mib $agent_rss)" "$message_bytes" "$series_count"
printf '| node_exporter 1.5 (collect + one scrape) | %s | %s | %s | %s |\n' "$(ms $ne_cpu)" "$(mib $ne_rss)" "$ne_bytes" "$ne_series"
printf '| pantau-collector (embedded broker + ingest of that message) | %s | %s | | |\n' "$(ms $collector_cpu $agent_rounds)" "$(mib $collector_rss)"
printf '\nCPU resolution is one clock tick (%s ms) over the whole run.\n' "$(awk -v hz="$hz" 'BEGIN {print 1000 / hz}')"
