#!/usr/bin/env bash
# Logins under attack (BENCHMARKS.md "Logins under attack"): CONCURRENCY (200) concurrent wrong
# HTTP Basic passwords from as many loopback addresses, ROUNDS (3) times, against a release
# pantau-collector and against Prometheus's basic_auth_users in the same run.
#
#   ./bench/login-storm.sh
#   CONCURRENCY=400 ROUNDS=5 ./bench/login-storm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pantau-collector --quiet
exec python3 bench/login_storm.py target/release
