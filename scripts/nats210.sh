#!/usr/bin/env bash
# Installs a nats-server 2.10 beside Debian 12's 2.9.10, from Debian trixie's binary package
# (a static Go program: it needs only the C library), unpacked into its own directory: nothing of
# trixie is installed with dpkg and the machine's apt sources are left alone (apt reads trixie's
# package list into a private state directory). Idempotent: returns at once when it is there.
# The tests run the partition, hand-over and fault tests against it too (scripts/test.sh, stage
# nats-2.10): 2.10 is the first server whose streams transform their own subjects.
set -euo pipefail

DEST=${FF_NATS210_DIR:-/opt/fleetflow/nats-server-2.10}
BIN=$DEST/nats-server
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

usage() {
  cat <<EOF
Usage: scripts/nats210.sh [--check] [--print-path] [--help]

Installs nats-server 2.10 (Debian trixie's package nats-server, unpacked with dpkg -x) as
  $BIN
without registering it with dpkg and without touching /etc/apt: apt-get reads trixie's package
list into a temporary directory, downloads the one package, and the binary is copied out of it.
Debian 12's own nats-server (2.9.10) stays the one on \$PATH.

  --check        only report whether it is installed; exit 1 if not
  --print-path   print the binary's path when installed (exit 1 if not)
  --help         show this help

Environment: FF_NATS210_DIR (install directory, default /opt/fleetflow/nats-server-2.10).
EOF
}

check_only=0
print_path=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --print-path) print_path=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "nats210.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

# 2.10 or later: what `nats-server --version` prints is "nats-server: v2.10.27".
installed() {
  [[ -x "$BIN" ]] || return 1
  local v
  v=$("$BIN" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p')
  [[ -n "$v" ]] || return 1
  read -r major minor <<<"$v"
  ((major > 2 || (major == 2 && minor >= 10)))
}

if installed; then
  if ((print_path)); then
    echo "$BIN"
  else
    echo "nats210.sh: $("$BIN" --version) is installed ($BIN)."
  fi
  exit 0
fi
if ((check_only || print_path)); then
  echo "nats210.sh: nats-server 2.10 is not installed (run scripts/nats210.sh as root)." >&2
  exit 1
fi
mkdir -p "$DEST" 2>/dev/null && [[ -w "$DEST" ]] || {
  echo "nats210.sh: cannot write $DEST: run 'sudo scripts/nats210.sh', or set FF_NATS210_DIR" >&2
  exit 1
}
[[ -f "$KEYRING" ]] || {
  echo "nats210.sh: $KEYRING missing (package debian-archive-keyring)" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetflow-nats210.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc" "$work/prefs" "$work/lists/partial" "$work/archives/partial"
cat >"$work/etc/trixie.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: $KEYRING
EOF
# apt's sandbox user downloads into these; the private preferences directory stays empty
# (the pin of scripts/timescaledb.sh keeps trixie's binaries away from the system's apt).
chmod -R 755 "$work"
apt_private=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/etc"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
  -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$work/prefs")
started=$(date +%s)
echo "nats210.sh: reading trixie's package list (private apt state in $work)"
apt-get "${apt_private[@]}" -q update </dev/null >"$work/update.log" 2>&1 || {
  tail -20 "$work/update.log" >&2
  echo "nats210.sh: apt-get update of trixie's list failed (above)" >&2
  exit 1
}
(cd "$work/archives" && apt-get "${apt_private[@]}" -q download nats-server \
  </dev/null >"$work/download.log" 2>&1) || {
  tail -20 "$work/download.log" >&2
  echo "nats210.sh: apt-get download nats-server (trixie) failed (above)" >&2
  exit 1
}
deb=$(find "$work/archives" -maxdepth 1 -name 'nats-server_*.deb' | head -1)
[[ -n "$deb" ]] || { echo "nats210.sh: no nats-server package downloaded" >&2; exit 1; }
dpkg-deb -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/sbin/nats-server" "$BIN.new"
mv -f "$BIN.new" "$BIN"
installed || {
  echo "nats210.sh: $BIN from $(basename "$deb") is not a 2.10 or later server:" \
    "$("$BIN" --version 2>&1 || true)" >&2
  exit 1
}
echo "nats210.sh: installed $("$BIN" --version) from $(basename "$deb") in" \
  "$(($(date +%s) - started)) s ($BIN)."
