#!/usr/bin/env bash
# THE test command: installs dependencies, builds, runs the whole test suite with ctest, checks
# that the firmware builds without the engine's dependencies, then (time allowing) the fuzzers and
# the suite again under AddressSanitizer + UBSan.
# Exits non-zero when any stage failed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/test.sh [--help]

Runs scripts/deps.sh, scripts/build.sh, then these stages, each in its own build directory and
(but firmware) a ctest run (see docs/testing.md):

  main   ctest --test-dir build --output-on-failure -j2 --no-tests=error $FF_CTEST_ARGS
  firmware  build-firmware (-DFLEETFLOW_FIRMWARE_ONLY=ON, oneTBB/RapidJSON/spdlog hidden from
         find_package): builds fleet-sensor, fleetctl, fleet-sim (-j2) and runs
         firmware/check_deps.sh: no engine dependency in the configure, the headers or NEEDED
  fuzz   clang build in build-fuzz (-DFLEETFLOW_FUZZ=ON); each libFuzzer target runs
         FF_FUZZ_SECONDS on its committed corpus (ctest -L fuzz)
  asan   build-asan (-DFLEETFLOW_SANITIZE=ON: ASan + UBSan, undefined behaviour is fatal);
         ctest -L "$FF_ASAN_LABELS"; the e2e label too when FF_ASAN_E2E allows
  tsan   only with FF_TSAN=1: build-tsan (-DFLEETFLOW_TSAN=ON), the tests of the concurrent
         parts (runtime, keyed_last_value and its KV store, window_join, nats_source, replay)

Every integration test starts its own nats-server / PostgreSQL on free ports, so tests run in
parallel without locks. Tests that cannot run here (a missing server binary) are reported as
skipped, never as passed. A stage that does not fit in what is left of FF_TOTAL_BUDGET is skipped,
and says so in the summary; a stage that cannot run for another reason (no clang) fails.

Environment:
  FF_CTEST_ARGS      extra ctest arguments for the main stage, split on spaces (e.g. "-L unit")
  FF_CTEST_JOBS      parallel tests (default: 2)
  FF_TEST_TIMEOUT    limit for the main stage's ctest in seconds (default: 1800)
  FF_SKIP_DEPS=1     do not run scripts/deps.sh
  FF_BUILD_DIR       build directory of the main stage (default: build)
  FF_FIRMWARE        1 (default) / 0: the firmware stage
  FF_FUZZ            1 (default) / 0: the fuzz stage
  FF_FUZZ_SECONDS    seconds per fuzz target (default: 60)
  FF_ASAN            1 (default) / 0: the asan stage
  FF_ASAN_LABELS     ctest label regex of the asan stage (default: unit|integration)
  FF_ASAN_E2E        auto (default: e2e too when at least 1500 s of the budget are left after
                     the other labels) / 1 / 0
  FF_TSAN            0 (default) / 1: the tsan stage
  FF_TOTAL_BUDGET    seconds the whole script may take, dependencies included (default: 4500);
                     later stages are skipped, or stopped, to stay within it
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "test.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
start=$SECONDS
budget=${FF_TOTAL_BUDGET:-4500}
jobs=${FF_CTEST_JOBS:-2}
build_dir=${FF_BUILD_DIR:-build}

remaining() { echo $((budget - (SECONDS - start))); }

summary_lines=()  # one per stage, printed at the end
overall=0
total_passed=0 total_failed=0 total_skipped=0

# run_ctest <stage> <build dir> <time limit s> <ctest args...>: runs ctest, records its summary.
run_ctest() {
  local stage=$1 dir=$2 limit=$3
  shift 3
  local log="$dir/ctest.log" status=0
  echo "test.sh: [$stage] ctest --test-dir $dir $* (limit ${limit} s)"
  timeout --signal=TERM --kill-after=30 "$limit" \
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "$@" </dev/null 2>&1 |
    tee "$log" || status=${PIPESTATUS[0]}
  local line total=0 failed=0 skipped
  line=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
  if [[ "$line" =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
    failed=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
  fi
  skipped=$(grep -cE '\(Skipped\)|\(Not Run\)' "$log" || true)
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
  total_passed=$((total_passed + total - failed - skipped))
  local note=""
  ((status == 124)) && note=" (stopped: did not finish within $limit s)"
  ((skipped > 0)) && note+=" ($skipped skipped: see 'Skipped' / 'Not Run' in $log)"
  summary_lines+=("[$stage] ${line:-no ctest summary (see $log)}${note}; exit $status")
  if ((status != 0)); then
    overall=1
  fi
  return 0
}

# stage_fails <stage> <message>: a stage that could not run counts as a failure.
stage_fails() {
  echo "test.sh: [$1] FAILED: $2" >&2
  summary_lines+=("[$1] FAILED: $2")
  overall=1
}
stage_skipped() {
  echo "test.sh: [$1] SKIPPED: $2"
  summary_lines+=("[$1] SKIPPED: $2")
}

# build_in <stage> <dir> <limit s> <build.sh args...>: false (and the stage failed) on error.
build_in() {
  local stage=$1 dir=$2 limit=$3
  shift 3
  local status=0
  FF_BUILD_DIR=$dir timeout --signal=TERM --kill-after=30 "$limit" bash scripts/build.sh "$@" \
    </dev/null || status=$?
  if ((status == 124)); then
    stage_fails "$stage" "build in $dir did not finish within $limit s"
  elif ((status != 0)); then
    stage_fails "$stage" "build in $dir failed (exit $status)"
  fi
  return "$status"
}

if [[ "${FF_SKIP_DEPS:-0}" != 1 ]]; then
  bash scripts/deps.sh
fi

# --- main: the whole suite in the normal build -------------------------------------------------
stage_start=$SECONDS
# Tests and benchmarks on, also in a build directory the demo configured without them.
bash scripts/build.sh -- -DFLEETFLOW_BUILD_TESTS=ON -DFLEETFLOW_BUILD_BENCH=ON
main_args=()
if [[ -n "${FF_CTEST_ARGS:-}" ]]; then
  read -r -a main_args <<<"$FF_CTEST_ARGS"
fi
run_ctest main "$build_dir" "${FF_TEST_TIMEOUT:-1800}" "${main_args[@]}"
echo "test.sh: [main] took $((SECONDS - stage_start)) s"

# --- firmware: the vehicle side builds without the engine's dependencies ------------------------
if [[ "${FF_FIRMWARE:-1}" == 0 ]]; then
  stage_skipped firmware "FF_FIRMWARE=0"
elif (($(remaining) < 300)); then
  stage_skipped firmware "only $(remaining) s of FF_TOTAL_BUDGET=$budget left (needs about 300)"
else
  stage_start=$SECONDS
  # The engine's find_package calls would fail here; the option must not reach them.
  if FF_JOBS=${FF_JOBS:-2} FF_BUILD_TARGET="fleet-sensor fleetctl fleet-sim" \
    build_in firmware build-firmware 600 -- -DFLEETFLOW_FIRMWARE_ONLY=ON \
    -DCMAKE_DISABLE_FIND_PACKAGE_TBB=ON -DCMAKE_DISABLE_FIND_PACKAGE_RapidJSON=ON \
    -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON -DCMAKE_DISABLE_FIND_PACKAGE_prometheus-cpp=ON; then
    if bash firmware/check_deps.sh build-firmware; then
      summary_lines+=("[firmware] build-firmware: no oneTBB, libpqxx, libpq, RapidJSON or spdlog")
    else
      stage_fails firmware "firmware/check_deps.sh: engine dependencies in build-firmware (above)"
    fi
  fi
  echo "test.sh: [firmware] took $((SECONDS - stage_start)) s"
fi

# --- fuzz: libFuzzer targets, bounded --------------------------------------------------------
fuzz_seconds=${FF_FUZZ_SECONDS:-60}
if [[ "${FF_FUZZ:-1}" == 0 ]]; then
  stage_skipped fuzz "FF_FUZZ=0"
elif ! command -v clang++ >/dev/null 2>&1; then
  stage_fails fuzz "clang++ not found: install clang and libclang-rt-14-dev (scripts/deps.sh), or set FF_FUZZ=0 to leave the fuzzers out"
elif (($(remaining) < 600 + 3 * fuzz_seconds)); then
  stage_skipped fuzz "only $(remaining) s of FF_TOTAL_BUDGET=$budget left"
else
  stage_start=$SECONDS
  fuzz_dir=build-fuzz
  # CC/CXX matter only when build-fuzz is configured the first time.
  if CC=clang CXX=clang++ FF_BUILD_TARGET=fuzzers \
    build_in fuzz "$fuzz_dir" "$(($(remaining) - 3 * fuzz_seconds - 60))" -- \
    -DFLEETFLOW_FUZZ=ON -DFLEETFLOW_BUILD_TESTS=OFF -DFLEETFLOW_BUILD_BENCH=OFF \
    "-DFLEETFLOW_FUZZ_SECONDS=$fuzz_seconds"; then
    run_ctest fuzz "$fuzz_dir" "$(($(remaining) > 0 ? $(remaining) : 1))" -L fuzz
  fi
  echo "test.sh: [fuzz] took $((SECONDS - stage_start)) s"
fi

# --- asan: the suite under AddressSanitizer + UndefinedBehaviorSanitizer ------------------------
asan_labels=${FF_ASAN_LABELS:-unit|integration}
if [[ "${FF_ASAN:-1}" == 0 ]]; then
  stage_skipped asan "FF_ASAN=0"
elif (($(remaining) < 1500)); then
  stage_skipped asan "only $(remaining) s of FF_TOTAL_BUDGET=$budget left (needs about 1500)"
else
  stage_start=$SECONDS
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$repo_root/tests/sanitizers/lsan.supp}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  if build_in asan build-asan "$(($(remaining) - 300))" -- \
    -DFLEETFLOW_SANITIZE=ON -DFLEETFLOW_BUILD_BENCH=OFF \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1"; then
    run_ctest asan build-asan "$(remaining)" -L "$asan_labels"
    e2e=${FF_ASAN_E2E:-auto}
    if [[ "$e2e" == auto ]]; then
      if (($(remaining) >= 1500)); then e2e=1; else e2e=0; fi
    fi
    if [[ "$e2e" == 1 ]]; then
      run_ctest asan-e2e build-asan "$(remaining)" -L e2e
    else
      stage_skipped asan-e2e "only $(remaining) s of FF_TOTAL_BUDGET=$budget left (needs 1500)"
    fi
  fi
  echo "test.sh: [asan] took $((SECONDS - stage_start)) s"
fi

# --- tsan: ThreadSanitizer on the concurrent parts (opt-in) -----------------------------------
if [[ "${FF_TSAN:-0}" != 1 ]]; then
  stage_skipped tsan "opt-in: FF_TSAN=1"
elif (($(remaining) < 900)); then
  stage_skipped tsan "only $(remaining) s of FF_TOTAL_BUDGET=$budget left (needs about 900)"
else
  stage_start=$SECONDS
  export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$repo_root/tests/sanitizers/tsan.supp halt_on_error=1 second_deadlock_stack=1}
  if FF_BUILD_TARGET="runtime_test keyed_last_value_test keyed_last_value_kv_test window_join_test nats_source_test replay_source_test" \
    build_in tsan build-tsan "$(($(remaining) - 120))" -- \
    -DFLEETFLOW_TSAN=ON -DFLEETFLOW_BUILD_BENCH=OFF \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1"; then
    run_ctest tsan build-tsan "$(remaining)" \
      -R '^(RuntimeTest|KeyedLastValue|JetStreamKv|WindowJoin|NatsSource|ReplaySource)'
  fi
  echo "test.sh: [tsan] took $((SECONDS - stage_start)) s"
fi

echo
echo "==================== test summary ===================="
for line in "${summary_lines[@]}"; do
  echo "$line"
done
echo "total time: $((SECONDS - start)) s of FF_TOTAL_BUDGET=$budget"
echo "all stages: $total_passed passed, $total_failed failed, $total_skipped skipped"
echo "test.sh exit status: $overall"
exit "$overall"
