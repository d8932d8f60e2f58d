#!/usr/bin/env bash
# Regenerates the committed replay fixture: tests/data/fleet_seed42.ffrc (fleet-sim --seed 42,
# 4 vehicles, 5 s, recorded live with `fleetflow record`) and its golden rows
# tests/data/fleet_seed42_rows.csv (written by replay_e2e_test with FF_UPDATE_GOLDEN=1).
# Needs a build in build/ and nats-server on PATH. Review the diff of the CSV before committing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
port="${PORT:-24299}"
tmp="$(mktemp -d)"
nats-server -a 127.0.0.1 -p "$port" >"$tmp/nats.log" 2>&1 &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
sleep 0.5
"$build/apps/fleetflow" record --url "nats://127.0.0.1:$port" --out "$tmp/rec.ffrc" \
  2>"$tmp/record.log" &
rec_pid=$!
until grep -q recording "$tmp/record.log"; do sleep 0.1; done
"$build/firmware/fleet-sim" --nats-url "nats://127.0.0.1:$port" --vehicles 4 --seed 42 \
  --duration 5 --quiet
sleep 0.5
kill -INT "$rec_pid"
wait "$rec_pid"
mkdir -p "$root/tests/data"
cp "$tmp/rec.ffrc" "$root/tests/data/fleet_seed42.ffrc"
FF_UPDATE_GOLDEN=1 "$build/tests/e2e/replay_e2e_test" \
  --gtest_filter='ReplayE2E.CommittedRecordingGivesTheGoldenRows'
ls -l "$root/tests/data/fleet_seed42.ffrc" "$root/tests/data/fleet_seed42_rows.csv"
