#!/usr/bin/env bash
# Builds and runs the benchmarks at a chosen scale; prints the table and writes CSV to docs/bench/.
#
#   bench/run.sh                 # quick scale: < 3 minutes on 2 cores
#   bench/run.sh --full          # full scale: 2 000 000 messages, 3 repeats (about 15 minutes, extrapolated)
#   bench/run.sh --quick --build-dir build-bench -- --contenders baseline,fleetflow
#
# Everything after `--` goes to ff-bench-jetstream as is (see its --help). The benchmark starts its
# own nats-server (free port, store in a temporary directory) and stops it when done. It is not a
# test: figures depend on the machine and on what else runs on it; compare the ratios within one
# run, not absolute figures across runs.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

scale=quick
build_dir=${BUILD_DIR:-build}
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) scale=quick ;;
    --full) scale=full ;;
    --build-dir)
      build_dir=$2
      shift
      ;;
    --)
      shift
      extra=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench/run.sh: unknown option '$1' (--quick, --full, --build-dir DIR, -- ARGS)" >&2
      exit 2
      ;;
  esac
  shift
done

if ! command -v nats-server > /dev/null && [[ ! -x /usr/sbin/nats-server ]]; then
  echo "bench/run.sh: nats-server not found; run scripts/deps.sh first" >&2
  exit 1
fi

if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build_dir" --target ff-bench-jetstream

case "$scale" in
  quick) args=(--messages 200000 --repeats 3) ;;
  full) args=(--messages 2000000 --repeats 3 --timeout 1200) ;;
esac

mkdir -p docs/bench
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== JetStream ingest ($scale)"
"$root/$build_dir/bench/ff-bench-jetstream" "${args[@]}" --scale "$scale" \
  --csv "docs/bench/jetstream_ingest_${scale}.csv" "${extra[@]}"
