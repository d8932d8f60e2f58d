#!/usr/bin/env bash
# Regenerates the seed-* files of tests/fuzz/corpus/ with ff_fuzz_seeds (tests/fuzz/make_seeds.cpp),
# built in an existing build directory (default: build). Inputs the fuzzer found (other names)
# are kept. Commit the result.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${FF_BUILD_DIR:-$repo_root/build}
cmake --build "$build_dir" --target ff_fuzz_seeds
"$build_dir/tests/fuzz/ff_fuzz_seeds" "$repo_root" "$repo_root/tests/fuzz/corpus"
for d in "$repo_root"/tests/fuzz/corpus/*/; do
  echo "make_seeds.sh: $(basename "$d"): $(find "$d" -type f | wc -l) files"
done
