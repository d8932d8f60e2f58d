#!/usr/bin/env bash
# THE test command: installs dependencies, builds, runs the whole test suite with ctest.
# Exits with ctest's status.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/test.sh [--help]

Runs scripts/deps.sh, scripts/build.sh, then
  ctest --test-dir build --output-on-failure -j2 --no-tests=error $FF_CTEST_ARGS
under an overall time limit, and prints ctest's summary. Every integration test starts its own
nats-server / PostgreSQL on free ports, so tests run in parallel without locks. Tests that cannot
run here (a missing server binary) are reported as skipped, never as passed.

Environment:
  FF_CTEST_ARGS      extra ctest arguments, split on spaces (e.g. "-L integration" or "-R Nats")
  FF_CTEST_JOBS      parallel tests (default: 2)
  FF_TEST_TIMEOUT    overall limit for ctest in seconds (default: 1800)
  FF_SKIP_DEPS=1     do not run scripts/deps.sh
  FF_BUILD_DIR       build directory (default: build)
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "test.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
build_dir=${FF_BUILD_DIR:-build}

if [[ "${FF_SKIP_DEPS:-0}" != 1 ]]; then
  bash scripts/deps.sh
fi
bash scripts/build.sh

ctest_args=(--test-dir "$build_dir" --output-on-failure --no-tests=error
  -j "${FF_CTEST_JOBS:-2}")
if [[ -n "${FF_CTEST_ARGS:-}" ]]; then
  read -r -a extra <<<"$FF_CTEST_ARGS"
  ctest_args+=("${extra[@]}")
fi

log="$build_dir/ctest.log"
echo "test.sh: ctest ${ctest_args[*]}"
status=0
timeout --signal=TERM --kill-after=30 "${FF_TEST_TIMEOUT:-1800}" \
  ctest "${ctest_args[@]}" </dev/null 2>&1 | tee "$log" || status=${PIPESTATUS[0]}

echo
echo "==================== test summary ===================="
if ((status == 124)); then
  echo "test.sh: ctest did not finish within ${FF_TEST_TIMEOUT:-1800} s"
fi
summary=$(grep -E '^[0-9]+% tests passed|^No tests were found|^Errors while running CTest' "$log" ||
  true)
skipped=$(grep -cE '\*\*\*Skipped|Not Run' "$log" || true)
echo "${summary:-test.sh: no ctest summary (see $log)}"
if ((skipped > 0)); then
  echo "skipped: $skipped (see 'Skipped' / 'Not Run' in $log)"
fi
echo "ctest exit status: $status (full log: $log)"
exit "$status"
