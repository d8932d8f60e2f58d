#!/usr/bin/env bash
# Checks a firmware-only build (-DFLEETFLOW_FIRMWARE_ONLY=ON) for the engine's dependencies:
#  1. its configure looked for none of oneTBB, RapidJSON, spdlog, prometheus-cpp, libpqxx, libpq,
#     cpp-httplib (CMakeCache.txt has no entry of find_package / pkg_check_modules for them);
#  2. no object it compiled included a header of oneTBB, libpqxx, libpq, RapidJSON or spdlog
#     (the compiler's dependency lists, Ninja builds only);
#  3. fleet-sensor, fleetctl and fleet-sim need no libtbb*, libpqxx, libpq or libspdlog (NEEDED
#     entries of the ELF dynamic section).
# scripts/test.sh runs it in its firmware stage; exit status 1 names every finding.
set -euo pipefail

case "${1:-}" in
  -h | --help | "")
    echo "Usage: firmware/check_deps.sh BUILD_DIR  (configured with -DFLEETFLOW_FIRMWARE_ONLY=ON)"
    [[ -n "${1:-}" ]] && exit 0 || exit 2
    ;;
esac
build_dir=$1
programs=(fleet-sensor fleetctl fleet-sim)
failed=0
fail() {
  echo "check_deps: FAILED: $*" >&2
  failed=1
}

cache=$build_dir/CMakeCache.txt
[[ -f $cache ]] || { echo "check_deps: $cache not found: configure $build_dir first" >&2; exit 1; }
grep -q '^FLEETFLOW_FIRMWARE_ONLY:BOOL=ON$' "$cache" ||
  fail "$build_dir is not configured with -DFLEETFLOW_FIRMWARE_ONLY=ON"

# 1. The configure path.
looked_for='^((TBB|RapidJSON|spdlog|prometheus-cpp)_DIR|(PQXX|PQ|HTTPLIB)_FOUND|__pkg_config_checked_(PQXX|PQ|HTTPLIB))[:=]'
if found=$(grep -E "$looked_for" "$cache"); then
  fail "the configure looked for an engine dependency:"$'\n'"$found"
fi

# 2. Headers: Ninja keeps every object's header list in .ninja_deps.
engine_headers='/(tbb|oneapi|pqxx|rapidjson|spdlog)/|/libpq-fe\.h'
if [[ -f $build_dir/build.ninja ]]; then
  deps=$(ninja -C "$build_dir" -t deps) || fail "ninja -t deps failed in $build_dir"
  if found=$(awk -v re="$engine_headers" '/^[^ ]/ { object = $1 } /^ / && $0 ~ re { print object }' \
    <<<"$deps" | sort -u | grep .); then
    fail "these objects include headers of engine dependencies:"$'\n'"$found"
  fi
else
  echo "check_deps: not a Ninja build, header lists not checked"
fi

# 3. The programs' shared libraries.
for program in "${programs[@]}"; do
  bin=$build_dir/firmware/$program
  if [[ ! -x $bin ]]; then
    fail "$bin not built"
    continue
  fi
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  echo "check_deps: $program needs:" $needed
  if found=$(grep -E '^lib(tbb|pqxx|pq\.|spdlog)' <<<"$needed"); then
    fail "$program needs" $found
  fi
done

if ((failed)); then
  echo "check_deps: the firmware build depends on the engine's libraries (see above)" >&2
  exit 1
fi
echo "check_deps: OK: no oneTBB, libpqxx, libpq, RapidJSON or spdlog in $build_dir"
