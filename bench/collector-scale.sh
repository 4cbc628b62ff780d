#!/usr/bin/env bash
# The collector at province scale (issue 16), all parts in one run on one machine:
#   a) the broker's ceiling: a plain counting subscriber (mosquitto_sub) on Mosquitto;
#   b) the collector behind Mosquitto and with its embedded broker: highest lossless rate,
#      CPU per sample (utime+stime delta / samples), RSS; the best rate confirmed for CONFIRM s;
#   c) mqtt-exporter (PyPI) on the same broker with a flat 30-field message;
#   d) /metrics at 100, 1,000 and 5,000 host agents: wall time, CPU, body size, RSS;
#   e) publish -> visible latency (API last_sequence) at half the sustained rate.
# Each measurement RUNS times; medians with min-max. Load comes from pantau-simulate.
#
#   ./bench/collector-scale.sh                  # full: about 40 minutes
#   QUICK=1 ./bench/collector-scale.sh          # shorter steps, 1 run: about 5 minutes
#   BIN=/path/to/release/dir ./bench/collector-scale.sh   # another build (the BEFORE numbers)
#   PARTS="a b" MODES=external ...              # only some parts / broker modes
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1}; STEP=${STEP:-5}; CONFIRM=${CONFIRM:-15}; LAT_COUNT=${LAT_COUNT:-100}
else
    RUNS=${RUNS:-3}; STEP=${STEP:-8}; CONFIRM=${CONFIRM:-60}; LAT_COUNT=${LAT_COUNT:-200}
fi
PARTS=${PARTS:-a b c d e}
MODES=${MODES:-external embedded}
AGENTS=${AGENTS:-1000}
# Offered rates (messages/s) for the small (30-sample) and the host-template workloads.
SMALL_RATES=${SMALL_RATES:-20000 40000 60000 80000 100000}
CEILING_RATES=${CEILING_RATES:-20000 40000 60000 80000 100000}
HOST_RATES=${HOST_RATES:-2000 4000 6000}
EXPORTER_RATES=${EXPORTER_RATES:-1000 2000 3000 4000}
SCRAPE_AGENTS=${SCRAPE_AGENTS:-100 1000 5000}
BIN=${BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -p pantau-collector -p pantau-simulate -p pantau-agent >&2
    BIN=$ROOT/target/release
fi
SIM=${SIM:-$ROOT/target/release/pantau-simulate}
AGENT_BIN=${AGENT_BIN:-$ROOT/target/release/pantau-agent}
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
HZ=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the embedded broker's threads (rumqttd's listener `mqtt`, its `router-N`, and the
# thread it is started on), so its cost can be told from the collector's own.
broker_ticks() {
    local total=0 task
    for task in /proc/"$1"/task/*; do
        case "$(cat "$task/comm" 2>/dev/null)" in
            mqtt|router-*|mqtt-broker|timer) total=$(( total + $(awk '{print $14 + $15}' "$task/stat" 2>/dev/null || echo 0) )) ;;
        esac
    done
    echo "$total"
}
rss() { awk '/VmRSS/ {printf "%d\n", $2 * 1024}' "/proc/$1/status"; }
wait_for() {  # wait_for <what> <seconds> <command...>
    local what="$1" limit="$2"; shift 2
    for _ in $(seq $((limit * 10))); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2; return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# median and spread of numbers on stdin: "median (min-max)"
stats() { python3 -c '
import statistics, sys
v = [float(x) for x in sys.stdin.read().split()]
if not v: print("n/a"); sys.exit()
f = lambda x: f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
print(f"{f(statistics.median(v))} ({f(min(v))}-{f(max(v))})" if len(v) > 1 else f(v[0]))'; }
json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

start_mosquitto() {  # sets MQTT and MOSQ
    MQTT=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 1000\nmax_packet_size 16777216\n' "$MQTT" >"$WORK/mosquitto.conf"
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    MOSQ=$!; pids+=("$MOSQ")
    wait_for mosquitto 10 bash -c "echo >/dev/tcp/127.0.0.1/$MQTT" 2>/dev/null
}

# The API needs a login: a viewer token for the counts and the latency probe.
API_TOKEN="bench-viewer-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PANTAU_API_TOKEN="$API_TOKEN"
start_collector() {  # start_collector external|embedded; sets HTTP, COLL and (embedded) MQTT
    echo "$API_TOKEN viewer" >"$WORK/api-tokens"
    HTTP=$(free_port)
    local mode=$1
    local env=(PANTAU_HTTP__LISTEN=127.0.0.1:$HTTP PANTAU_LOG=warn
        PANTAU_LIMITS__MAX_AGENTS=20000 PANTAU_LIMITS__MAX_SERIES_PER_AGENT=5000
        PANTAU_INGEST__MAX_PAYLOAD_BYTES=4000000 PANTAU_BROKER__MAX_PACKET_BYTES=16777216
        PANTAU_BROKER__MAX_CONNECTIONS=20000 PANTAU_AGENTS__DEFAULT_INTERVAL_SECONDS=3600
        PANTAU_BROKER__PASSWORD_FILE= PANTAU_STORAGE__DIR=$WORK/storage-$HTTP
        PANTAU_API__TOKEN_FILE=$WORK/api-tokens)
    if [ "$mode" = external ]; then
        env+=(PANTAU_BROKER__EMBEDDED=false PANTAU_MQTT__URL=mqtt://127.0.0.1:$MQTT)
    else
        MQTT=$(free_port)
        env+=(PANTAU_BROKER__LISTEN=127.0.0.1:$MQTT)
    fi
    env "${env[@]}" "$BIN/pantau-collector" --config configs/collector.toml >"$WORK/collector.log" 2>&1 &
    COLL=$!; pids+=("$COLL")
    wait_for collector 30 curl -sf "http://127.0.0.1:$HTTP/readyz" -o /dev/null
}

# Sum of messages_total (births included) and of missed plus open gaps over the simulated
# agents, from the API.
api_counts() {
    curl -sf -H "Authorization: Bearer $API_TOKEN" "http://127.0.0.1:$HTTP/api/v1/agents" | python3 -c '
import json, sys
a = [x for x in json.load(sys.stdin)["agents"] if x["id"].startswith("sim-0")]
print(sum(x["messages_total"] for x in a), sum(x["missed_messages_total"] + x["sequence_gaps"] for x in a), len(a))'
}
# Waits until the collector's count stops moving (bounded), prints "messages missed agents".
settle() {
    local last="" now
    for _ in $(seq 120); do
        now=$(api_counts)
        [ "$now" = "$last" ] && break
        last=$now; sleep 1
    done
    echo "$last"
}

simulate() {  # simulate <agents> <rate> <seconds> <payload args...>
    local agents=$1 rate=$2 secs=$3; shift 3
    local conns=$(( agents < 50 ? agents : 50 ))
    "$SIM" run --url "mqtt://127.0.0.1:$MQTT" --agents "$agents" --rate "$rate" \
        --duration "$secs" --connections "$conns" "$@" >"$WORK/sim.json"
}

capture_template() {
    start_mosquitto
    PANTAU_MQTT__URL="mqtt://127.0.0.1:$MQTT" PANTAU_AGENT__ID=capture PANTAU_AGENT__SITE=bench \
    PANTAU_AGENT__STATE_DIR="$WORK/agent" PANTAU_AGENT__INTERVAL_SECONDS=1 \
        "$AGENT_BIN" --config configs/agent-server.toml 2>"$WORK/agent.log" &
    local agent=$!; pids+=("$agent")
    timeout 30 mosquitto_sub -p "$MQTT" -t 'pantau/v1/bench/capture/metrics' -C 2 >"$WORK/two.json"
    tail -n 1 "$WORK/two.json" >"$WORK/host.json"
    stop "$agent"; stop "$MOSQ"
    echo "host template: $(wc -c <"$WORK/host.json") bytes, $(python3 -c '
import json,sys; m=json.load(open(sys.argv[1]))
print(sum(len(f.get("samples",[])) for f in m["families"]))' "$WORK/host.json") samples" >&2
}

echo "# collector-scale: $(date -u +%FT%TZ), $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo), binaries $BIN, RUNS=$RUNS STEP=${STEP}s CONFIRM=${CONFIRM}s"
capture_template

# A run "keeps up" when everything sent is in within KEPT_UP_S seconds of the last publish, and
# is lossless when nothing is missing once the count stops moving. Both are needed: Mosquitto
# queues up to max_queued_messages (1,000,000 here) for a slow subscriber, so a short step
# can end lossless behind a reader that is slower than the offered rate; and past its own
# capacity it stops delivering what it queued (seen with mosquitto_sub as with the collector).
KEPT_UP_S=${KEPT_UP_S:-2}

# a) Broker ceiling: mosquitto_sub counting topics at rising rates (small payload, QoS 1).
subscriber_step() {  # subscriber_step <rate> <secs>; prints "kept_up ok achieved sent"
    local rate=$1 secs=$2
    start_mosquitto
    mosquitto_sub -p "$MQTT" -q 1 -t 'pantau/v1/+/+/metrics' -F '%t' >"$WORK/count.txt" &
    local sub=$!; pids+=("$sub")
    sleep 0.5
    simulate "$AGENTS" "$rate" "$secs" --shape small
    sleep "$KEPT_UP_S"
    local sent kept=0 ok=0; sent=$(json_get "$WORK/sim.json" 'd["total"]')
    [ "$(wc -l <"$WORK/count.txt")" -ge "$sent" ] && kept=1
    wait_for "the subscriber" 60 bash -c "[ \$(wc -l <'$WORK/count.txt') -ge $sent ]" 2>/dev/null || true
    sleep 1
    [ "$(wc -l <"$WORK/count.txt")" -eq "$sent" ] && ok=1
    stop "$sub"; stop "$MOSQ"
    echo "$kept $ok $(json_get "$WORK/sim.json" 'round(d["achieved_rate"])') $sent"
}

part_a() {
    echo "## a) Mosquitto ceiling, counting subscriber (mosquitto_sub -q 1), small payload, $AGENTS agents"
    echo "| offered msg/s | achieved msg/s | kept up (in within ${KEPT_UP_S} s) | lossless runs |"
    echo "|---|---|---|---|"
    local best=""
    for rate in $CEILING_RATES; do
        local got="" kept_runs=0 ok_runs=0
        for _ in $(seq "$RUNS"); do
            read -r kept ok achieved _ <<<"$(subscriber_step "$rate" "$STEP")"
            got+=" $achieved"; kept_runs=$((kept_runs + kept)); ok_runs=$((ok_runs + ok))
        done
        echo "| $rate | $(echo "$got" | stats) | $kept_runs/$RUNS | $ok_runs/$RUNS |"
        [ "$kept_runs" = "$RUNS" ] && [ "$ok_runs" = "$RUNS" ] && best=$rate
    done
    if [ -n "$best" ]; then
        read -r kept ok achieved sent <<<"$(subscriber_step "$best" "$CONFIRM")"
        echo "| $best for ${CONFIRM}s | $achieved | $kept/1 | $ok/1 (sent $sent) |"
        echo "subscriber small $best" >>"$WORK/best.txt"
    fi
}

# b) The collector: lossless rate, CPU per sample, RSS, for one broker mode and payload.
collector_step() {  # collector_step <mode> <rate> <secs> <payload args...>; prints "ok rate us_per_sample rss sent messages missed us_without_broker kept_up"
    local mode=$1 rate=$2 secs=$3; shift 3
    [ "$mode" = external ] && start_mosquitto
    start_collector "$mode"
    local before broker_before; before=$(ticks "$COLL"); broker_before=$(broker_ticks "$COLL")
    simulate "$AGENTS" "$rate" "$secs" "$@"
    sleep "$KEPT_UP_S"
    local early; read -r early _ <<<"$(api_counts)"
    read -r messages missed _ <<<"$(settle)"
    local cpu=$(( $(ticks "$COLL") - before ))
    local own=$(( cpu - ($(broker_ticks "$COLL") - broker_before) ))
    local sent samples; sent=$(json_get "$WORK/sim.json" 'd["total"] + d["births"]')
    samples=$(json_get "$WORK/sim.json" 'd["samples_per_message"]')
    # Lossless: every metrics message and birth counted, no sequence number missed or open.
    local ok=0 kept=0; [ "$messages" -eq "$sent" ] && [ "$missed" -eq 0 ] && ok=1
    [ "$early" -ge "$sent" ] && kept=1
    # CPU per sample the collector took in (births count as one sample; they are few).
    local per_sample="$HZ * 1e6 / max(1, $messages * $samples)"
    echo "$ok $(json_get "$WORK/sim.json" 'round(d["achieved_rate"])') $(python3 -c "print($cpu / $per_sample)") $(rss "$COLL") $sent $messages $missed $(python3 -c "print($own / $per_sample)") $kept"
    stop "$COLL"; [ "$mode" = external ] && stop "$MOSQ"
    return 0
}

part_b() {
    echo "## b) Collector, $AGENTS agents over 50 connections: highest lossless rate, CPU per sample, RSS"
    echo "(µs CPU/sample: the collector process; without broker: less the embedded broker's threads)"
    echo "| broker | payload | offered msg/s | achieved msg/s | kept up (in within ${KEPT_UP_S} s) | lossless runs | µs CPU/sample | without broker | RSS MB |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for mode in $MODES; do
        for payload in small host; do
            local rates args best=""
            if [ "$payload" = small ]; then rates=$SMALL_RATES; args=(--shape small); else rates=$HOST_RATES; args=(--template "$WORK/host.json"); fi
            for rate in $rates; do
                local oks=0 kepts=0 got="" cpu="" own_cpu="" mem=""
                for _ in $(seq "$RUNS"); do
                    read -r ok achieved us bytes sent messages missed own kept <<<"$(collector_step "$mode" "$rate" "$STEP" "${args[@]}")"
                    oks=$((oks + ok)); kepts=$((kepts + kept)); got+=" $achieved"; cpu+=" $us"; own_cpu+=" $own"; mem+=" $((bytes / 1000000))"
                    [ "$ok" = 1 ] || echo "  (loss: sent $sent, collector counted $messages, missed or open $missed)" >&2
                done
                echo "| $mode | $payload | $rate | $(echo "$got" | stats) | $kepts/$RUNS | $oks/$RUNS | $(echo "$cpu" | stats) | $(echo "$own_cpu" | stats) | $(echo "$mem" | stats) |"
                [ "$oks" = "$RUNS" ] && [ "$kepts" = "$RUNS" ] && best=$rate
            done
            if [ -n "$best" ]; then
                read -r ok achieved us bytes sent messages missed own kept <<<"$(collector_step "$mode" "$best" "$CONFIRM" "${args[@]}")"
                echo "| $mode | $payload | $best for ${CONFIRM}s | $achieved | $kept/1 | $ok/1 (sent $sent, counted $messages, missed $missed) | $(printf '%.3g' "$us") | $(printf '%.3g' "$own") | $((bytes / 1000000)) |"
                echo "$mode $payload $best" >>"$WORK/best.txt"
            fi
        done
    done
}

# c) mqtt-exporter on Mosquitto with a flat 30-field message (plus seq, schema, timestamp_ms).
part_c() {
    echo "## c) mqtt-exporter (PyPI) on Mosquitto, flat 33-field message, $AGENTS agents"
    local venv=${EXPORTER_VENV:-$WORK/venv}
    if [ ! -x "$venv/bin/mqtt-exporter" ]; then
        python3 -m venv "$venv" && "$venv/bin/pip" install -q mqtt-exporter >&2
    fi
    echo "| offered msg/s | achieved msg/s | processed/sent | µs CPU/field | RSS MB |"
    echo "|---|---|---|---|---|"
    for rate in $EXPORTER_RATES; do
        local got="" done_="" cpu="" mem=""
        for _ in $(seq "$RUNS"); do
            start_mosquitto
            local port; port=$(free_port)
            MQTT_ADDRESS=127.0.0.1 MQTT_PORT=$MQTT MQTT_TOPIC='pantau/#' PROMETHEUS_PORT=$port \
            PROMETHEUS_ADDRESS=127.0.0.1 LOG_LEVEL=WARNING "$venv/bin/mqtt-exporter" >"$WORK/exporter.log" 2>&1 &
            local exp=$!; pids+=("$exp")
            wait_for mqtt-exporter 20 curl -sf "http://127.0.0.1:$port/" -o /dev/null
            local before; before=$(ticks "$exp")
            simulate "$AGENTS" "$rate" "$STEP" --shape flat
            local sent; sent=$(json_get "$WORK/sim.json" 'd["total"]')
            # Its own counter of received messages (mqtt_message_total{topic}), summed, until it stops moving.
            local last="" now
            for _ in $(seq 60); do
                now=$(curl -sf "http://127.0.0.1:$port/" | awk '/^mqtt_message_total/ {s += $2} END {print s + 0}')
                [ "$now" = "$last" ] && break; last=$now; sleep 1
            done
            local cpu_ticks=$(( $(ticks "$exp") - before ))
            got+=" $(json_get "$WORK/sim.json" 'd["achieved_rate"]')"
            done_+=" $(python3 -c "print(${last:-0} / max(1, $sent))")"
            cpu+=" $(python3 -c "print($cpu_ticks / $HZ * 1e6 / max(1, ${last:-0} * 33))")"
            mem+=" $(( $(rss "$exp") / 1000000 ))"
            stop "$exp"; stop "$MOSQ"
        done
        echo "| $rate | $(echo "$got" | stats) | $(echo "$done_" | stats) | $(echo "$cpu" | stats) | $(echo "$mem" | stats) |"
    done
}

# d) /metrics at 100, 1,000 and 5,000 host agents, beside Mosquitto: with the embedded
# broker its log of recent messages (up to broker.max_buffer_bytes, 256 MiB) would be counted
# in the collector's RSS as if it were stored series.
part_d() {
    echo "## d) /metrics with host agents (real host message), external Mosquitto"
    echo "| agents | series | RSS empty MB | RSS stored MB | bytes RSS/series | scrape s | µs CPU/series | body MB | RSS after scrapes MB |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for agents in $SCRAPE_AGENTS; do
        start_mosquitto; start_collector external
        local empty; empty=$(rss "$COLL")
        local rate=$(( agents < 2000 ? agents : 2000 ))
        simulate "$agents" "$rate" $(( agents / rate + 2 )) --template "$WORK/host.json"
        settle >/dev/null
        local stored; stored=$(rss "$COLL")
        local walls="" cpus="" size=0 series=0
        for _ in $(seq "$RUNS"); do
            local before; before=$(ticks "$COLL")
            local t0; t0=$(date +%s.%N)
            curl -sf "http://127.0.0.1:$HTTP/metrics?scope=collector" -o /dev/null || true
            curl -sf "http://127.0.0.1:$HTTP/metrics" -o "$WORK/body.txt"
            walls+=" $(echo "$(date +%s.%N) - $t0" | bc)"
            size=$(stat -c %s "$WORK/body.txt")
            series=$(grep -vc '^#' "$WORK/body.txt")
            cpus+=" $(python3 -c "print(($(ticks "$COLL") - $before) / $HZ * 1e6 / $series)")"
        done
        local relayed; relayed=$(grep -v '^#' "$WORK/body.txt" | grep -vc '^pantau_collector_\|^process_\|^pantau_agent_')
        echo "| $agents | $relayed | $((empty / 1000000)) | $((stored / 1000000)) | $(( (stored - empty) / (relayed > 0 ? relayed : 1) )) | $(echo "$walls" | stats) | $(echo "$cpus" | stats) | $((size / 1000000)) | $(( $(rss "$COLL") / 1000000 )) |"
        stop "$COLL"; stop "$MOSQ"
    done
}

# e) Publish -> visible latency at half the sustained (small payload, external broker) rate.
part_e() {
    local best; best=$( { awk '$1 == "external" && $2 == "small" {print $3}' "$WORK/best.txt" 2>/dev/null || true; } | tail -n 1)
    best=${best:-${LAT_RATE:-10000}}
    local half=$(( best / 2 ))
    echo "## e) publish -> visible (API last_sequence), external Mosquitto, background $half msg/s small from $AGENTS agents"
    echo "| run | samples | timeouts | p50 ms | p99 ms | max ms |"
    echo "|---|---|---|---|---|---|"
    for run in $(seq "$RUNS"); do
        start_mosquitto; start_collector external
        local secs=$(( LAT_COUNT / 10 + 15 ))
        "$SIM" run --url "mqtt://127.0.0.1:$MQTT" --agents "$AGENTS" --rate "$half" --duration "$secs" \
            --connections 50 --shape small >/dev/null &
        local load=$!; pids+=("$load")
        sleep 3
        "$SIM" latency --url "mqtt://127.0.0.1:$MQTT" --http "127.0.0.1:$HTTP" --count "$LAT_COUNT" >"$WORK/lat.json"
        echo "| $run | $(json_get "$WORK/lat.json" 'd["samples"]') | $(json_get "$WORK/lat.json" 'd["timeouts"]') | $(json_get "$WORK/lat.json" 'round(d["p50_ms"],2)') | $(json_get "$WORK/lat.json" 'round(d["p99_ms"],2)') | $(json_get "$WORK/lat.json" 'round(d["max_ms"],2)') |"
        stop "$load"; stop "$COLL"; stop "$MOSQ"
    done
}

for part in $PARTS; do "part_$part"; done
