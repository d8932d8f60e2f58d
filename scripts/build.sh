#!/usr/bin/env bash
# Configures and builds fleetflow into build/ (Ninja when available, RelWithDebInfo).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/build.sh [--clean] [--help] [-- CMAKE_ARGS...]

Configures (once) and builds fleetflow into build/ with all cores.

  --clean   remove the build directory first
  --help    show this help
  -- ARGS   extra arguments for the cmake configure step (e.g. -- -DFLEETFLOW_SANITIZE=ON)

Environment:
  FF_BUILD_DIR    build directory (default: build, relative to the repository root)
  FF_BUILD_TYPE   CMAKE_BUILD_TYPE (default: RelWithDebInfo)
  FF_CMAKE_ARGS   extra configure arguments, split on spaces
  FF_JOBS         parallel jobs (default: nproc)
  FF_BUILD_TARGET build only these targets, split on spaces (default: all), e.g. fuzzers
  CCACHE_DIR, CCACHE_MAXSIZE  ccache's cache (default ~/.cache/ccache, 12G here) when ccache is
                  installed; -DFLEETFLOW_CCACHE=OFF builds without it
EOF
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

clean=0
cmake_args=()
while (($#)); do
  case "$1" in
    --clean) clean=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; cmake_args+=("$@"); break ;;
    *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n "${FF_CMAKE_ARGS:-}" ]]; then
  read -r -a extra <<<"$FF_CMAKE_ARGS"
  cmake_args+=("${extra[@]}")
fi

build_dir=${FF_BUILD_DIR:-build}

# ccache (CMakeLists.txt uses it when installed): paths under the checkout are hashed relative to
# it, so a fresh clone elsewhere reuses what an earlier one compiled. Four build directories
# (main, firmware, fuzz, asan) fit in the default size.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$repo_root}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-12G}
build_type=${FF_BUILD_TYPE:-RelWithDebInfo}
jobs=${FF_JOBS:-$(nproc)}

if ((clean)); then
  echo "build.sh: removing $build_dir"
  rm -rf "$build_dir"
fi

configure=(cmake -S . -B "$build_dir" "-DCMAKE_BUILD_TYPE=$build_type")
# The generator can only be chosen for a fresh build directory.
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure+=(-G Ninja)
fi
configure+=("${cmake_args[@]}")

echo "build.sh: ${configure[*]}"
"${configure[@]}"
build=(cmake --build "$build_dir" -j "$jobs")
if [[ -n "${FF_BUILD_TARGET:-}" ]]; then
  read -r -a targets <<<"$FF_BUILD_TARGET"
  build+=(--target "${targets[@]}")
fi
echo "build.sh: ${build[*]}"
"${build[@]}"
echo "build.sh: build finished in $build_dir"
