#!/usr/bin/env bash
# Emergency announcement latency: command arrival to the first non-silent audio frame, through
# the real ALSA path into a capture read at real time, speech synthesis included; against
# `espeak-ng | aplay` started at the same moment.
#
#   RUNS=50 ./bench/sound-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-50}"
(( runs >= 5 && runs <= 500 )) || { echo "RUNS must be 5..500" >&2; exit 2; }
cargo build --release --bins --quiet
PANTAU_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" RUNS="$runs" python3 bench/sound_latency.py
