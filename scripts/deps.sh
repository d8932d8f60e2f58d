#!/usr/bin/env bash
# Installs the Debian 12 packages fleetflow needs to build, test and run its demo.
# Idempotent: when every package is already installed it returns at once, without apt.
set -euo pipefail

# What the demo builds and runs (scripts/demo.sh: the engine and fleet-sim, nats-server and
# PostgreSQL).
PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates ccache
  libnats-dev libssl-dev libtbb-dev libzstd-dev libgeos-dev libpqxx-dev libpq-dev libflatbuffers-dev flatbuffers-compiler
  rapidjson-dev libmuparser-dev libabsl-dev libcli11-dev libcpp-httplib-dev libspdlog-dev libfmt-dev prometheus-cpp-dev
  nats-server postgresql-15 postgresql-client-15 procps iproute2
)
# What the tests add (unless --demo): GoogleTest, clang for the fuzzers, clang-format for the
# format check, Google Benchmark; for tests/deploy openssl makes TLS certificates, Node.js runs
# the manifest checks (npm installs their pinned packages), kubectl's built-in kustomize renders
# deploy/k8s, prometheus (with promtool) checks the alert rules and the engine dashboard's queries
# (the tests run their own on free ports, never the service); PostGIS for the sink's geometry
# column (optional for the demo and in production: without it the sink writes the plain
# columns, docs/deploy.md); for the packages (tests/install: man_pages_check, package_test)
# help2man makes the man pages from --help, dpkg-dev's dpkg-shlibdeps the Depends of cpack's
# packages, systemd's systemd-analyze verifies their units and man-db finds their man pages.
# npm and kubectl are only added when missing, so one installed another way (e.g. NodeSource)
# is not replaced.
TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev clang-format
  openssl nodejs tmux prometheus postgresql-15-postgis-3
  help2man dpkg-dev systemd man-db
)
command -v npm >/dev/null 2>&1 || TEST_PACKAGES+=(npm)
command -v kubectl >/dev/null 2>&1 || TEST_PACKAGES+=(kubernetes-client)

usage() {
  cat <<'EOF'
Usage: scripts/deps.sh [--demo] [--check] [--help]

Installs the Debian 12 (bookworm) packages fleetflow needs, with apt-get, as root (or via sudo).
Skips apt entirely when everything is already installed. Then runs scripts/timescaledb.sh, which
builds TimescaleDB (not packaged in Debian 12) from Debian trixie's source package once per machine,
and scripts/nats210.sh, which unpacks trixie's nats-server 2.10 into /opt/fleetflow (the tests
run the partition tests on it too); both return at once when installed. No system service is started: the demo and the tests
run their own nats-server and PostgreSQL.

  --demo    only what scripts/demo.sh needs (build tools, libraries, nats-server, PostgreSQL):
            no test, fuzz, benchmark or deploy-check tools, no TimescaleDB build (the demo
            then writes a plain PostgreSQL table) and no nats-server 2.10
  --check   only report missing packages (and TimescaleDB, nats-server 2.10); exit 1 if any
            are missing
  --help    show this help
EOF
}

check_only=0
demo_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --demo) demo_only=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deps.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

((demo_only)) || PACKAGES+=("${TEST_PACKAGES[@]}")

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ "$status" == ii* ]] || printf '%s\n' "$pkg"
  done
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps.sh: dpkg-query not found: this script supports Debian 12 only." >&2
  exit 1
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# What Debian 12 does not package, installed by a script of its own once per machine (quick when
# installed): TimescaleDB, built from Debian trixie's source package (scripts/timescaledb.sh), and
# a nats-server 2.10 beside 2.9.10, from trixie's binary package (scripts/nats210.sh). A failure
# does not stop the rest: the tests that need it then fail, saying so.
beside() {
  local script=$1 consequence=$2
  ((demo_only)) && return 0
  if ((check_only)); then
    bash "$script_dir/$script" --check
    return
  fi
  local sudo=()
  if ((EUID != 0)) && ! bash "$script_dir/$script" --check >/dev/null 2>&1; then
    sudo=(sudo -n)
  fi
  if ! "${sudo[@]}" bash "$script_dir/$script"; then
    echo "deps.sh: *** $script failed (above): $consequence ***" >&2
  fi
}
extras() {
  local status=0
  beside timescaledb.sh "the tests that need TimescaleDB will FAIL; the demo and the engine use \
plain PostgreSQL tables" || status=1
  beside nats210.sh "the tests that need nats-server 2.10 will FAIL" || status=1
  return $status
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
  echo "deps.sh: all ${#PACKAGES[@]} packages are installed."
  extras
  exit $?
fi
echo "deps.sh: missing: ${missing[*]}"
if ((check_only)); then
  exit 1
fi

SUDO=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "deps.sh: not root and no password-less sudo: install the packages above as root, or" \
      "run: sudo scripts/deps.sh" >&2
    exit 1
  fi
fi

# Forbid service starts while installing (the postgresql package creates a cluster "main" and
# would start it): an existing policy-rc.d is left alone, ours is removed on exit.
policy=/usr/sbin/policy-rc.d
own_policy=0
remove_policy() {
  if ((own_policy)); then
    "${SUDO[@]}" rm -f "$policy"
  fi
}
trap remove_policy EXIT
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\n# temporary, from fleetflow scripts/deps.sh\nexit 101\n' |
    "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  own_policy=1
fi

apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold)
echo "deps.sh: apt-get update"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -q </dev/null
# Only the missing ones: packages already installed are not upgraded behind the user's back.
echo "deps.sh: apt-get install ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q \
  --no-install-recommends "${missing[@]}" </dev/null

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} != 0)); then
  echo "deps.sh: still missing after install: ${missing[*]}" >&2
  exit 1
fi
extras
echo "deps.sh: done."
