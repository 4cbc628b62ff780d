#!/usr/bin/env bash
# Announcement latency through the collector: `POST /api/v1/announcements` (emergency text)
# to the first non-silent audio frame, end to end (collector, Mosquitto, sound agent, speech,
# ALSA into a capture read at real time); against `espeak-ng --stdout | aplay` on the same
# device. Reuses bench/capture_reader.py and the helpers of bench/sound_latency.py.
#
#   RUNS=50 ./bench/announce-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-50}"
(( runs >= 5 && runs <= 500 )) || { echo "RUNS must be 5..500" >&2; exit 2; }
cargo build --release --bins --quiet
PANTAU_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" RUNS="$runs" python3 bench/announce_latency.py
