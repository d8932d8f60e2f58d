#!/usr/bin/env bash
# Builds and installs the TimescaleDB extension (Apache-licensed edition) for PostgreSQL 15 from
# Debian's source package, once per machine. Debian 12 has no timescaledb package; Debian 13
# (trixie) has its source, which builds against Debian 12's PostgreSQL 15. Only the source
# package comes from trixie (a deb-src line of its own, binaries pinned away): no binary package
# from trixie is ever installed. Idempotent: returns at once when the extension is installed.
set -euo pipefail

PG_MAJOR=${FF_PG_MAJOR:-15}
BUILD_DEPS=(build-essential cmake dpkg-dev "postgresql-server-dev-$PG_MAJOR" libssl-dev libkrb5-dev)
SOURCES_FILE=/etc/apt/sources.list.d/fleetflow-timescaledb-src.sources
PIN_FILE=/etc/apt/preferences.d/fleetflow-timescaledb-src

usage() {
  cat <<EOF
Usage: scripts/timescaledb.sh [--check] [--help]

Installs TimescaleDB (Apache-licensed edition: hypertables and chunks, no compression or policy
jobs) into PostgreSQL $PG_MAJOR's extension directory, built from Debian trixie's source package
'timescaledb' (apt-get source), as root. Skips everything when it is already installed:
  /usr/share/postgresql/$PG_MAJOR/extension/timescaledb.control and
  /usr/lib/postgresql/$PG_MAJOR/lib/timescaledb*.so

It adds $SOURCES_FILE (deb-src only) and $PIN_FILE (no binary
package from trixie), installs the build dependencies (${BUILD_DEPS[*]})
from Debian 12, and builds in a temporary directory (about 1.5 minutes on 2 cores).

To use it, a PostgreSQL server must preload it: shared_preload_libraries = 'timescaledb'.

  --check   only report whether it is installed; exit 1 if not
  --help    show this help

Environment: FF_TSDB_WORK (build directory, default: a new one under \$TMPDIR, removed after).
EOF
}

check_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "timescaledb.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

ext_dir=/usr/share/postgresql/$PG_MAJOR/extension
lib_dir=/usr/lib/postgresql/$PG_MAJOR/lib
installed() {
  [[ -f "$ext_dir/timescaledb.control" ]] && compgen -G "$lib_dir/timescaledb*.so" >/dev/null
}

if installed; then
  echo "timescaledb.sh: TimescaleDB is installed ($ext_dir/timescaledb.control)."
  exit 0
fi
if ((check_only)); then
  echo "timescaledb.sh: TimescaleDB is not installed (run scripts/timescaledb.sh as root)." >&2
  exit 1
fi
if ((EUID != 0)); then
  echo "timescaledb.sh: TimescaleDB is not installed and this is not root: run" \
    "'sudo scripts/timescaledb.sh' (it builds Debian trixie's source package)." >&2
  exit 1
fi
if [[ ! -x /usr/lib/postgresql/$PG_MAJOR/bin/postgres ]]; then
  echo "timescaledb.sh: PostgreSQL $PG_MAJOR is not installed: run scripts/deps.sh first." >&2
  exit 1
fi

# One install at a time on this machine; a second caller waits and then finds it installed.
exec 9>/var/lock/fleetflow-timescaledb.lock
flock -w 1800 9 || { echo "timescaledb.sh: another install holds the lock for 30 min" >&2; exit 1; }
if installed; then
  echo "timescaledb.sh: TimescaleDB is installed (by a concurrent run)."
  exit 0
fi

started=$(date +%s)
apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold)

# Source only, and only for this package: a deb-src line for trixie, and a pin that keeps every
# binary package of trixie out should a deb line for it ever appear.
cat >"$SOURCES_FILE" <<'EOF'
# From fleetflow scripts/timescaledb.sh: the source package timescaledb (Debian 12 has none).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$PIN_FILE" <<'EOF'
# From fleetflow scripts/timescaledb.sh: no binary package from trixie.
Package: *
Pin: release n=trixie
Pin-Priority: -1
EOF

echo "timescaledb.sh: apt-get update"
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -q </dev/null >/dev/null
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "timescaledb.sh: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q --no-install-recommends \
    "${missing[@]}" </dev/null >/dev/null
fi

work=${FF_TSDB_WORK:-}
own_work=0
if [[ -z "$work" ]]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/fleetflow-timescaledb.XXXXXX")
  own_work=1
fi
cleanup() { if ((own_work)); then rm -rf "$work"; fi; }
trap cleanup EXIT
mkdir -p "$work"
cd "$work"
echo "timescaledb.sh: apt-get source timescaledb/trixie (in $work)"
# apt's sandbox user must be able to write here.
chmod 755 "$work"
apt-get -q source timescaledb/trixie </dev/null >source.log 2>&1 || {
  tail -20 source.log >&2
  echo "timescaledb.sh: apt-get source failed (log above)" >&2
  exit 1
}
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -1)
[[ -n "$src" && -f "$src/CMakeLists.txt" ]] || {
  echo "timescaledb.sh: no source tree after apt-get source" >&2
  exit 1
}
echo "timescaledb.sh: building $(basename "$src") (Apache-licensed edition)"
pg_config=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
if ! cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPG_CONFIG="$pg_config" \
  -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF >"$work/configure.log" 2>&1 </dev/null; then
  tail -30 "$work/configure.log" >&2
  echo "timescaledb.sh: cmake configure failed" >&2
  exit 1
fi
if ! cmake --build "$work/build" -j"$(nproc)" >"$work/build.log" 2>&1 </dev/null; then
  tail -30 "$work/build.log" >&2
  echo "timescaledb.sh: build failed" >&2
  exit 1
fi
cmake --install "$work/build" >"$work/install.log" 2>&1 </dev/null || {
  tail -30 "$work/install.log" >&2
  echo "timescaledb.sh: install failed" >&2
  exit 1
}
installed || { echo "timescaledb.sh: installed, yet $ext_dir/timescaledb.control is missing" >&2; exit 1; }
echo "timescaledb.sh: installed TimescaleDB in $(($(date +%s) - started)) s" \
  "(preload it with shared_preload_libraries = 'timescaledb')."
