#!/usr/bin/env bash
# Cost of link probes on this machine: pantau-agent's probe role against blackbox_exporter,
# side by side in one run, both probing the same 50 targets every 5 s: first ICMP (one echo
# request per probe, blackbox's default), then TCP connect. The targets are 50 addresses in a
# network namespace of the script's own behind a veth pair (10.214.0.0/24); nothing else is
# touched. blackbox_exporter is driven by a curl per target and round, as Prometheus would.
# Needs root (namespace, raw sockets).
#
#   ROUNDS=12 ./bench/probes.sh        # 12 rounds of 5 s per phase
#
# CPU is user+system time from /proc/<pid>/stat over the measured rounds (start-up excluded),
# divided by the probes run; RSS is VmRSS at the end of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-12}"
targets=50
interval=5
(( rounds >= 2 && rounds <= 720 )) || { echo "ROUNDS must be 2..720" >&2; exit 2; }
command -v prometheus-blackbox-exporter >/dev/null \
    || { echo "install prometheus-blackbox-exporter" >&2; exit 2; }

cargo build --release -p pantau-agent --quiet
tmp="$(mktemp -d)"
ns="pantau-bench-$$"; near="pb$$n"; far="pb$$f"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true; ip link del "$near" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz="$(getconf CLK_TCK)"

ip netns add "$ns"
ip link add "$near" type veth peer name "$far" netns "$ns"
ip addr add 10.214.0.1/24 dev "$near"; ip link set "$near" up
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip link set "$far" up
addresses=()
for i in $(seq 10 $((10 + targets - 1))); do
    ip netns exec "$ns" ip addr add "10.214.0.$i/24" dev "$far"
    addresses+=("10.214.0.$i")
done
ip netns exec "$ns" python3 tests/scripts/responder.py tcp 7000 0 >"$tmp/tcp.log" 2>&1 &
pids+=("$!")

mqtt="$(free_port)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt" >"$tmp/mosquitto.conf"
mosquitto -c "$tmp/mosquitto.conf" 2>"$tmp/mosquitto.log" &
pids+=("$!")

bb_port="$(free_port)"
cat >"$tmp/blackbox.yml" <<YAML
modules:
  icmp:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
  tcp:
    prober: tcp
    timeout: 2s
    tcp:
      preferred_ip_protocol: ip4
YAML
prometheus-blackbox-exporter --config.file="$tmp/blackbox.yml" \
    --web.listen-address="127.0.0.1:$bb_port" 2>"$tmp/blackbox.log" &
blackbox=$!; pids+=("$blackbox")
sleep 1

# phase <kind> <target suffix>: runs both for $rounds rounds and prints one line each.
phase() {
    local kind="$1" suffix="$2" config="$tmp/agent-$1.toml"
    {
        printf '[agent]\nid = "bench"\nsite = "bench"\ninterval_seconds = %s\nstate_dir = "%s"\n' \
            "$interval" "$tmp/state"
        printf '[mqtt]\nurl = "mqtt://127.0.0.1:%s"\n' "$mqtt"
        for address in "${addresses[@]}"; do
            printf '[[probes]]\nkind = "%s"\ntarget = "%s%s"\nlink = "bench"\n' "$kind" "$address" "$suffix"
            [ "$kind" = icmp ] && printf 'count = 1\n'
            printf 'timeout_seconds = 2\n'
        done
    } >"$config"
    PANTAU_LOG=warn ./target/release/pantau-agent --config "$config" 2>"$tmp/agent-$kind.log" &
    local agent=$!
    pids+=("$agent")
    sleep "$interval"   # start-up and the first round are not measured
    local agent_start blackbox_start
    agent_start="$(ticks "$agent")"; blackbox_start="$(ticks "$blackbox")"
    for _ in $(seq "$rounds"); do
        local started=$SECONDS
        printf '%s\n' "${addresses[@]}" | xargs -P "$targets" -I{} \
            curl -sf -o /dev/null "http://127.0.0.1:$bb_port/probe?module=$kind&target={}$suffix"
        sleep $(( interval - (SECONDS - started) > 0 ? interval - (SECONDS - started) : 0 ))
    done
    local agent_cpu=$(( $(ticks "$agent") - agent_start ))
    local blackbox_cpu=$(( $(ticks "$blackbox") - blackbox_start ))
    local probes=$(( rounds * targets ))
    awk -v a="$agent_cpu" -v b="$blackbox_cpu" -v n="$probes" -v hz="$hz" \
        -v ar="$(rss_kib "$agent")" -v br="$(rss_kib "$blackbox")" -v k="$kind" 'BEGIN {
        printf "%-4s pantau-agent     %6.3f ms CPU per probe  RSS %5.1f MiB  (%d probes)\n", k, a * 1000 / hz / n, ar / 1024, n
        printf "%-4s blackbox_exporter %5.3f ms CPU per probe  RSS %5.1f MiB\n", k, b * 1000 / hz / n, br / 1024
        printf "%-4s ratio            %6.2f\n", k, (b > 0 ? a / b : 0)
    }'
    if grep -q "probe failed" "$tmp/agent-$kind.log"; then
        echo "warning: some $kind probes failed:"; grep -m3 "probe failed" "$tmp/agent-$kind.log"
    fi
    kill "$agent"; wait "$agent" 2>/dev/null || true
}

echo "$targets targets every ${interval}s, $rounds rounds per phase, $(nproc) CPUs, $(uname -r)"
phase icmp ""
phase tcp ":7000"
