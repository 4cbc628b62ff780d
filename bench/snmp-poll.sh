#!/usr/bin/env bash
# Cost of SNMP polling on this machine: pantau-agent's [[snmp]] tables against
# prometheus-snmp-exporter 0.21's if_mib module, side by side, both polling the same snmpd on
# loopback every 5 s as DEVICES devices (v2c, every interface). snmp_exporter is driven by one
# curl per device and round, as Prometheus would scrape it, with the module in
# tests/testdata/snmp_exporter_if_mib.yml. Nothing outside 127.0.0.1 is touched.
#
#   ROUNDS=12 DEVICES=10 ./bench/snmp-poll.sh
#
# CPU is user+system time from /proc/<pid>/stat over the measured rounds (start-up and the first
# round excluded), divided by the polls; RSS is VmRSS at the end. The work differs: the agent
# walks the 10 IF-MIB columns it reports, snmp_exporter's if_mib walks all of ifTable and
# ifXTable; snmpd's own CPU is not counted for either.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-12}"
devices="${DEVICES:-10}"
interval=5
(( rounds >= 2 && rounds <= 720 )) || { echo "ROUNDS must be 2..720" >&2; exit 2; }
(( devices >= 1 && devices <= 64 )) || { echo "DEVICES must be 1..64" >&2; exit 2; }
for tool in snmpd prometheus-snmp-exporter mosquitto curl; do
    command -v "$tool" >/dev/null || { echo "install $tool" >&2; exit 2; }
done

cargo build --release -p pantau-agent --quiet
tmp="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.$1); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz="$(getconf CLK_TCK)"

# snmpd keeps its state in a file named like its config, so the two live apart.
mkdir -p "$tmp/snmpd/conf" "$tmp/snmpd/state" "$tmp/snmpd/mibs" "$tmp/state"
printf 'rocommunity public 127.0.0.1\n' >"$tmp/snmpd/conf/snmpd.conf"
snmp_port="$(free_port SOCK_DGRAM)"
MIBS= MIBDIRS="$tmp/snmpd/mibs" SNMP_PERSISTENT_DIR="$tmp/snmpd/state" \
    snmpd -f -Lf "$tmp/snmpd.log" -C -c "$tmp/snmpd/conf/snmpd.conf" -p "$tmp/snmpd.pid" \
    "udp:127.0.0.1:$snmp_port" &
pids+=("$!")

mqtt="$(free_port SOCK_STREAM)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt" >"$tmp/mosquitto.conf"
mosquitto -c "$tmp/mosquitto.conf" 2>"$tmp/mosquitto.log" &
pids+=("$!")

exporter_port="$(free_port SOCK_STREAM)"
prometheus-snmp-exporter --config.file=tests/testdata/snmp_exporter_if_mib.yml \
    --web.listen-address="127.0.0.1:$exporter_port" 2>"$tmp/exporter.log" &
exporter=$!; pids+=("$exporter")
sleep 1

{
    printf '[agent]\nid = "bench"\nsite = "bench"\ninterval_seconds = %s\nstate_dir = "%s"\n' \
        "$interval" "$tmp/state"
    printf '[mqtt]\nurl = "mqtt://127.0.0.1:%s"\n' "$mqtt"
    for i in $(seq "$devices"); do
        printf '[[snmp]]\nname = "sw%s"\ntarget = "127.0.0.1:%s"\ncommunity = "public"\n' "$i" "$snmp_port"
    done
} >"$tmp/agent.toml"
PANTAU_LOG=warn ./target/release/pantau-agent --config "$tmp/agent.toml" 2>"$tmp/agent.log" &
agent=$!; pids+=("$agent")
sleep "$interval"   # start-up and the first round are not measured

interfaces="$(curl -sf "http://127.0.0.1:$exporter_port/snmp?module=if_mib&target=127.0.0.1:$snmp_port" \
    | grep -c '^ifOperStatus{')"
agent_start="$(ticks "$agent")"; exporter_start="$(ticks "$exporter")"
for _ in $(seq "$rounds"); do
    started=$SECONDS
    seq "$devices" | xargs -P "$devices" -I{} \
        curl -sf -o /dev/null "http://127.0.0.1:$exporter_port/snmp?module=if_mib&target=127.0.0.1:$snmp_port"
    sleep $(( interval - (SECONDS - started) > 0 ? interval - (SECONDS - started) : 0 ))
done
agent_cpu=$(( $(ticks "$agent") - agent_start ))
exporter_cpu=$(( $(ticks "$exporter") - exporter_start ))
polls=$(( rounds * devices ))
echo "$devices devices of $interfaces interfaces every ${interval}s, $rounds rounds, $(nproc) CPUs, $(uname -r)"
awk -v a="$agent_cpu" -v b="$exporter_cpu" -v n="$polls" -v hz="$hz" \
    -v ar="$(rss_kib "$agent")" -v br="$(rss_kib "$exporter")" 'BEGIN {
    printf "pantau-agent      %6.3f ms CPU per poll  RSS %5.1f MiB  (%d polls)\n", a * 1000 / hz / n, ar / 1024, n
    printf "snmp_exporter     %6.3f ms CPU per poll  RSS %5.1f MiB\n", b * 1000 / hz / n, br / 1024
    printf "ratio             %6.2f\n", (b > 0 ? a / b : 0)
}'
if grep -q "cannot read the SNMP device\|incomplete SNMP data" "$tmp/agent.log"; then
    echo "warning: some polls failed:"; grep -m3 "cannot read the SNMP device\|incomplete SNMP data" "$tmp/agent.log"
fi
