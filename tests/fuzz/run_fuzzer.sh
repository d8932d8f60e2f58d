#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time (ctest label fuzz; see docs/testing.md).
# Usage: run_fuzzer.sh <fuzzer> <committed corpus dir> <work dir> <seconds> [libFuzzer args...]
# New inputs go to <work dir>/corpus (the committed corpus is only read); a crash leaves its
# input in <work dir>/last/ as crash-* / leak-* / timeout-* / oom-* and fails the run: fix the
# bug, then copy the input into the committed corpus.
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3 seconds=$4
shift 4
rm -rf "$work/last"
mkdir -p "$work/corpus" "$work/last"
args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536
  -print_final_stats=1 -artifact_prefix="$work/last/" "$@" "$work/corpus" "$seeds")
echo "run_fuzzer.sh: $fuzzer ${args[*]}"
status=0
"$fuzzer" "${args[@]}" </dev/null || status=$?
shopt -s nullglob
found=("$work"/last/*)
if ((status != 0)) || ((${#found[@]} > 0)); then
  echo "run_fuzzer.sh: $(basename "$fuzzer") FAILED (exit $status); inputs: ${found[*]:-none}"
  echo "run_fuzzer.sh: reproduce with: $fuzzer <input>"
  exit 1
fi
echo "run_fuzzer.sh: $(basename "$fuzzer") ran ${seconds} s without a crash"
