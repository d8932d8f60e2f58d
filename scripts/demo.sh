#!/usr/bin/env bash
# The fleetflow demo: a local nats-server (JetStream) and PostgreSQL in .run/, the engine running
# pipelines/default.json, and fleet-sim publishing a simulated fleet; shows live progress, then
# stops everything it started and prints a summary. No system service is used.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/demo.sh [OPTIONS]

Installs what it needs (scripts/deps.sh --demo), builds the engine and fleet-sim only
(scripts/build.sh), then runs, all inside .run/ of the checkout:
  nats-server with JetStream   127.0.0.1:14222 (or the next free port)
  PostgreSQL                   127.0.0.1:15432 (or the next free port), data in .run/pg,
                               database "fleetflow"; preloading TimescaleDB when it is
                               installed (scripts/timescaledb.sh; the test command runs it), so
                               the table is a hypertable (the summary says which was used)
  build/apps/fleetflow run pipelines/default.json
  build/firmware/fleet-sim --vehicles N --seed 1
and shows once a second: messages in (engine metrics), rows written and vehicles active (SQL).
Stop with Ctrl-C, or give --duration. Then fleet-sim is stopped, the last windows are written,
the engine drains, the servers stop (PostgreSQL keeps its data in .run/pg), and a summary is
printed. Exits non-zero if no row was written.

Options:
  --vehicles N      simulated vehicles (default: $VEHICLES or 50)
  --duration SEC    stop by itself after SEC seconds (default: run until Ctrl-C)
  --keep            leave nats-server and PostgreSQL running at the end (stop: --stop)
  --stop            stop the servers a previous --keep run left in .run/, then exit
  --fresh           stop leftovers and delete .run/ (JetStream store, PostgreSQL data) first
  --no-deps         skip scripts/deps.sh --demo
  --no-build        skip scripts/build.sh
  --plain           do not preload TimescaleDB even when it is installed (a plain table)
  -h, --help        show this help

Environment: VEHICLES, NATS_PORT (14222), PG_PORT (15432), METRICS_PORT (9464),
  FF_BUILD_DIR (build), FF_DEMO_DIR (.run), PIPELINE (pipelines/default.json),
  DEMO_TABLE (vehicle_telemetry), PG_BIN (newest /usr/lib/postgresql/*/bin).
EOF
}

# ---------------------------------------------------------------------------------------------
# Options

vehicles=${VEHICLES:-50}
duration=0
keep=0
action=run
fresh=0
run_deps=1
run_build=1
use_timescaledb=1
while (($#)); do
  case "$1" in
    --vehicles)
      [[ $# -ge 2 ]] || { echo "demo.sh: --vehicles needs a value" >&2; exit 2; }
      vehicles=$2; shift ;;
    --vehicles=*) vehicles=${1#*=} ;;
    --duration)
      [[ $# -ge 2 ]] || { echo "demo.sh: --duration needs a value" >&2; exit 2; }
      duration=$2; shift ;;
    --duration=*) duration=${1#*=} ;;
    --keep) keep=1 ;;
    --stop) action=stop ;;
    --fresh) fresh=1 ;;
    --no-deps) run_deps=0 ;;
    --no-build) run_build=0 ;;
    --plain) use_timescaledb=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ "$vehicles" =~ ^[0-9]+$ ]] || ((vehicles < 1)); then
  echo "demo.sh: --vehicles must be a positive integer, not '$vehicles'" >&2
  exit 2
fi
if ! [[ "$duration" =~ ^[0-9]+$ ]]; then
  echo "demo.sh: --duration must be a whole number of seconds, not '$duration'" >&2
  exit 2
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

run_dir=${FF_DEMO_DIR:-$repo_root/.run}
[[ "$run_dir" == /* ]] || run_dir=$repo_root/$run_dir
build_dir=${FF_BUILD_DIR:-$repo_root/build}
[[ "$build_dir" == /* ]] || build_dir=$repo_root/$build_dir
pipeline=${PIPELINE:-pipelines/default.json}
table=${DEMO_TABLE:-vehicle_telemetry}
nats_port=${NATS_PORT:-14222}
pg_port=${PG_PORT:-15432}
metrics_port=${METRICS_PORT:-9464}
pg_dir=$run_dir/pg

# The pipeline's window period and lateness (for the final wait and the rows of this run).
json_int() {
  grep -oE "\"$1\"[[:space:]]*:[[:space:]]*[0-9]+" "$pipeline" 2>/dev/null | head -n 1 |
    grep -oE '[0-9]+$' || echo "$2"
}
every_ms=$(json_int every_ms 1000)
lateness_ms=$(json_int allowed_lateness_ms 0)

# ---------------------------------------------------------------------------------------------
# Helpers

progress_open=0  # a \r progress line is on screen and needs a newline before other output
# Output never fails the script: a closed terminal or pipe must not stop the cleanup.
say() {
  if ((progress_open)); then
    printf '\n' 2>/dev/null || true
    progress_open=0
  fi
  printf 'demo: %s\n' "$*" 2>/dev/null || true
}
warn() { say "warning: $*" >&2; }
die() {
  say "error: $*" >&2
  exit 1
}

# Last lines of a log file, indented, for error messages.
log_tail() {
  if [[ -f "$1" ]]; then tail -n "${2:-20}" "$1" | sed 's/^/    | /' >&2; fi
}

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# True if process $1 is alive and its command name is $2 (guards against recycled pids).
alive_as() { alive "$1" && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]; }

# Polls "$@" every 0.2 s for at most $1 seconds; true as soon as the command succeeds.
poll_until() {
  local deadline=$((SECONDS + $1))
  shift
  while true; do
    "$@" && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# A port is in use if something listens on it, or if any socket (even in TIME-WAIT, which blocks
# a server that binds without SO_REUSEADDR) has it as its local port.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
  command -v ss >/dev/null 2>&1 && [[ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]]
}

# Prints $1 if free, else the next free port above it.
pick_port() {
  local p
  for ((p = $1; p < $1 + 200; p++)); do
    if ! port_in_use "$p"; then
      echo "$p"
      return 0
    fi
  done
  die "no free port in $1..$(($1 + 199))"
}

nats_greets() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    IFS= read -r -t 2 line <&3
    [[ "$line" == "INFO "* ]]
  ) 2>/dev/null
}

# GET http://127.0.0.1:$metrics_port$1: prints the body, fails unless the status is 2xx.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 "http://127.0.0.1:$metrics_port$1" 2>/dev/null
    return
  fi
  local response
  response=$(
    exec 3<>"/dev/tcp/127.0.0.1/$metrics_port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3
    timeout 2 cat <&3
  ) 2>/dev/null || return 1
  [[ "$response" =~ ^HTTP/1\.[01]\ 2 ]] || return 1
  printf '%s\n' "${response#*$'\r\n\r\n'}"
}

# Sum of all series of fleetflow_messages_in_total, or "-" when the endpoint does not answer.
messages_in() {
  local body
  if body=$(http_get /metrics); then
    awk '$1 ~ /^fleetflow_messages_in_total($|[{])/ { s += $NF; n++ }
         END { if (n) printf "%.0f\n", s; else print "-" }' <<<"$body"
  else
    echo "-"
  fi
}

# Runs a command as the PostgreSQL user: "postgres" when we are root, ourselves otherwise.
as_pg() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

psql_q() {
  PGCONNECT_TIMEOUT=3 "$pg_bin/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" \
    -U postgres -d "${2:-fleetflow}" -c "$1" 2>/dev/null </dev/null
}

# SIGTERM, wait up to $3 s, then SIGKILL; reaps it if it is our child. The caller checks that
# the pid is the process it means.
stop_pid() {
  local pid=$1 name=$2 grace=$3
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! poll_until "$grace" eval "! kill -0 $pid 2>/dev/null"; then
    warn "$name (pid $pid) did not stop within ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Starts "$@" in its own session (so a Ctrl-C reaches only this script, which then stops things
# in order), stdin from /dev/null, output appended to log $1. Sets started_pid.
start_bg() {
  local log=$1
  shift
  setsid "$@" </dev/null >>"$log" 2>&1 &
  started_pid=$!
}

pg_bin=${PG_BIN:-}
if [[ -z "$pg_bin" ]]; then
  pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
    sort -V | tail -n 1 || true)
fi

pg_running() { [[ -f "$pg_dir/PG_VERSION" ]] && as_pg "$pg_bin/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; }

stop_pg() {
  if [[ -n "$pg_bin" ]] && pg_running; then
    say "stopping PostgreSQL (data stays in $pg_dir)"
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir" -m fast -w -t 60 -s stop || warn "pg_ctl stop failed"
  fi
}

nats_pid=""  # set when this run started nats-server
stop_nats() {
  local pid=$nats_pid
  if [[ -z "$pid" ]]; then
    pid=$(cat "$run_dir/nats-server.pid" 2>/dev/null || true)
    alive_as "$pid" nats-server || pid=""
  fi
  if alive "$pid"; then
    say "stopping nats-server (pid $pid)"
    stop_pid "$pid" nats-server 15
  fi
  rm -f "$run_dir/nats-server.pid" "$run_dir/nats-server.port"
  nats_pid=""
}

# Processes of an earlier run that was killed before it could clean up.
stop_stale() {
  local name pid
  for name in fleet-sim fleetflow; do
    pid=$(cat "$run_dir/$name.pid" 2>/dev/null || true)
    if alive_as "$pid" "$name"; then
      say "stopping $name left over from an earlier run (pid $pid)"
      stop_pid "$pid" "$name" 30
    fi
    rm -f "$run_dir/$name.pid"
  done
}

pg_ctl_cmd() {
  local prefix=""
  ((EUID == 0)) && prefix="runuser -u postgres -- "
  printf '%s%s/pg_ctl -D %s -l %s/server.log %s' "$prefix" "$pg_bin" "$pg_dir" "$pg_dir" "$1"
}

psql_cmd() {
  local psql=psql
  command -v psql >/dev/null 2>&1 || psql=$pg_bin/psql
  printf "%s -h 127.0.0.1 -p %s -U postgres fleetflow -c 'SELECT * FROM %s ORDER BY time DESC LIMIT 20'" \
    "$psql" "$pg_port" "$table"
}

# ---------------------------------------------------------------------------------------------
# --stop and --fresh

if [[ "$action" == stop ]]; then
  mkdir -p "$run_dir"
  stop_stale
  stop_nats
  stop_pg
  say "nothing of the demo is running any more"
  exit 0
fi
if ((fresh)) && [[ -d "$run_dir" ]]; then
  stop_stale
  stop_nats
  stop_pg
  say "deleting the JetStream store, PostgreSQL data and logs in $run_dir"
  rm -rf "${run_dir:?}/nats" "$pg_dir" "$run_dir"/*.log "$run_dir"/*.pid
fi

# ---------------------------------------------------------------------------------------------
# Dependencies and build

# As root, PostgreSQL runs as the user postgres, which must reach the data directory: every
# directory above it needs the execute bit for others (or to belong to postgres). Checked before
# anything is installed or built, so a checkout under e.g. a mode-700 home fails at once.
unreachable_parent() {
  local dir=$1 mode owner
  while [[ ! -d "$dir" ]]; do dir=$(dirname "$dir"); done
  while :; do
    read -r mode owner < <(stat -c '%a %U' "$dir")
    if [[ "$owner" != postgres ]] && (((8#$mode & 1) == 0)); then
      echo "$dir"
      return
    fi
    [[ "$dir" == / ]] && return
    dir=$(dirname "$dir")
  done
}
if ((EUID == 0)) && [[ -z "$(ls -A "$pg_dir" 2>/dev/null)" ]]; then
  blocked=$(unreachable_parent "$pg_dir")
  if [[ -n "$blocked" ]]; then
    die "PostgreSQL runs as the user 'postgres', which cannot enter $blocked (mode" \
      "$(stat -c %a "$blocked")), a parent of its data directory $pg_dir: set FF_DEMO_DIR to a" \
      "directory under /tmp (e.g. FF_DEMO_DIR=/tmp/fleetflow-demo), or chmod o+x $blocked"
  fi
fi

if ((run_deps)); then
  bash scripts/deps.sh --demo  # the test command installs the rest
fi
if ((run_build)); then
  # Only the two programs the demo runs. A fresh build directory is configured without tests and
  # benchmarks (which need packages the demo does not install); scripts/test.sh turns them on.
  demo_configure=()
  [[ -f "$build_dir/CMakeCache.txt" ]] ||
    demo_configure=(-- -DFLEETFLOW_BUILD_TESTS=OFF -DFLEETFLOW_BUILD_BENCH=OFF)
  FF_BUILD_DIR=$build_dir FF_BUILD_TARGET="fleetflow fleet-sim" \
    bash scripts/build.sh "${demo_configure[@]}"
fi

fleetflow_bin=$build_dir/apps/fleetflow
archive_dir=$run_dir/archive  # the pipeline's archive node (docs/archive.md), when it has one
sim_bin=$build_dir/firmware/fleet-sim
nats_bin=$(command -v nats-server || true)
[[ -n "$nats_bin" ]] || nats_bin=/usr/sbin/nats-server
[[ -x "$fleetflow_bin" ]] || die "$fleetflow_bin not built: run scripts/build.sh"
[[ -x "$sim_bin" ]] || die "$sim_bin not built: run scripts/build.sh"
[[ -x "$nats_bin" ]] || die "nats-server not installed: run scripts/deps.sh"
[[ -n "$pg_bin" && -x "$pg_bin/initdb" ]] || die "PostgreSQL server not installed: run scripts/deps.sh"
[[ -f "$pipeline" ]] || die "pipeline $pipeline not found"
if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
  die "running as root but the user 'postgres' does not exist (it comes with postgresql-15)"
fi

# ---------------------------------------------------------------------------------------------
# Everything started from here on is stopped on every exit path.

sim_pid=""
engine_pid=""
nats_started=0
pg_started=0
stop_requested=0

cleanup() {
  local rc=$?
  trap '' INT TERM HUP PIPE
  if [[ -n "$sim_pid" ]]; then stop_pid "$sim_pid" fleet-sim 10; fi
  if [[ -n "$engine_pid" ]]; then stop_pid "$engine_pid" fleetflow 30; fi
  rm -f "$run_dir/fleet-sim.pid" "$run_dir/fleetflow.pid"
  if ((keep == 0)); then
    if ((nats_started)); then stop_nats; fi
    if ((pg_started)); then stop_pg; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'stop_requested=1' INT TERM HUP
# A Ctrl-C while starting up: stop at the next step (the EXIT trap cleans up).
check_stop() {
  if ((stop_requested)); then
    say "interrupted"
    exit 130
  fi
}

mkdir -p "$run_dir"
stop_stale
: >"$run_dir/fleetflow.log"
: >"$run_dir/fleet-sim.log"

# nats-server -------------------------------------------------------------------------------
existing=$(cat "$run_dir/nats-server.pid" 2>/dev/null || true)
if alive_as "$existing" nats-server && [[ -f "$run_dir/nats-server.port" ]]; then
  nats_port=$(cat "$run_dir/nats-server.port")
  say "using the nats-server left running by an earlier run on port $nats_port (pid $existing)"
  nats_started=1
else
  nats_port=$(pick_port "$nats_port")
  mkdir -p "$run_dir/nats"
  say "starting nats-server with JetStream on 127.0.0.1:$nats_port (log $run_dir/nats-server.log)"
  start_bg "$run_dir/nats-server.log" "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js \
    -sd "$run_dir/nats"
  echo "$started_pid" >"$run_dir/nats-server.pid"
  echo "$nats_port" >"$run_dir/nats-server.port"
  nats_started=1
  nats_pid=$started_pid
  nats_ready() { ((stop_requested)) || { alive "$nats_pid" && nats_greets "$nats_port"; }; }
  poll_until 10 nats_ready || true
  check_stop
  if ! nats_ready; then
    log_tail "$run_dir/nats-server.log"
    die "nats-server did not come up on port $nats_port within 10 s"
  fi
fi
nats_url=nats://127.0.0.1:$nats_port

# PostgreSQL --------------------------------------------------------------------------------
if [[ ! -f "$pg_dir/PG_VERSION" ]]; then
  if [[ -d "$pg_dir" ]] && [[ -n "$(ls -A "$pg_dir")" ]]; then
    die "$pg_dir is not empty but holds no PostgreSQL cluster: remove it or use --fresh"
  fi
  mkdir -p "$pg_dir"
  chmod 700 "$pg_dir"
  if ((EUID == 0)); then
    chown postgres:postgres "$pg_dir"
    if ! runuser -u postgres -- test -w "$pg_dir"; then
      die "the user 'postgres' cannot write $pg_dir (a parent directory is not accessible to" \
        "it); set FF_DEMO_DIR to a directory under /tmp"
    fi
  fi
  say "creating a PostgreSQL cluster in $pg_dir"
  if ! as_pg env LC_ALL=C LANG=C "$pg_bin/initdb" -D "$pg_dir" -A trust -U postgres -E UTF8 \
    --locale=C --no-sync >"$run_dir/initdb.log" 2>&1 </dev/null; then
    log_tail "$run_dir/initdb.log"
    die "initdb failed (log $run_dir/initdb.log)"
  fi
  printf "\n# fleetflow demo: port and addresses, rewritten by scripts/demo.sh\ninclude_if_exists = 'fleetflow_demo.conf'\n" |
    as_pg tee -a "$pg_dir/postgresql.conf" >/dev/null
fi

# TimescaleDB, when installed for this PostgreSQL (scripts/timescaledb.sh; not with --plain),
# is preloaded in the demo's cluster, so that the sink makes the table a hypertable.
pg_major=$(basename "$(dirname "$pg_bin")")
tsdb_installed=0
if ((use_timescaledb)) && [[ -f /usr/share/postgresql/$pg_major/extension/timescaledb.control ]]; then
  tsdb_installed=1
fi
# What the table is, for the summary: a hypertable or a plain table, and why.
storage_kind() {
  local version license
  version=$(psql_q "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") || version=""
  if [[ -n "$version" && "$(psql_q "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = '$table'")" == 1 ]]; then
    license=$(psql_q "SELECT current_setting('timescaledb.license', true)") || license="?"
    echo "TimescaleDB $version hypertable (edition: $license)"
  elif ((tsdb_installed)); then
    echo "plain PostgreSQL table (TimescaleDB is installed but was not used: see the engine's warning in $run_dir/fleetflow.log)"
  elif ((use_timescaledb)); then
    echo "plain PostgreSQL table (TimescaleDB is not installed: scripts/timescaledb.sh builds it)"
  else
    echo "plain PostgreSQL table (--plain)"
  fi
}

if pg_running; then
  pg_port=$(sed -n 4p "$pg_dir/postmaster.pid")
  say "using the PostgreSQL left running by an earlier run on port $pg_port"
  pg_started=1
else
  pg_port=$(pick_port "$pg_port")
  {
    printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" "$pg_port"
    if ((tsdb_installed)); then
      printf "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
    else
      printf "shared_preload_libraries = ''\n"
    fi
  } | as_pg tee "$pg_dir/fleetflow_demo.conf" >/dev/null
  if ((tsdb_installed)); then
    say "TimescaleDB is installed: this PostgreSQL preloads it (the table becomes a hypertable)"
  elif ((use_timescaledb)); then
    say "TimescaleDB is not installed (scripts/timescaledb.sh builds it): a plain PostgreSQL table"
  else
    say "--plain: TimescaleDB is not preloaded, a plain PostgreSQL table"
  fi
  say "starting PostgreSQL on 127.0.0.1:$pg_port (log $pg_dir/server.log)"
  pg_started=1
  if ! as_pg "$pg_bin/pg_ctl" -D "$pg_dir" -l "$pg_dir/server.log" -w -t 30 -s start \
    </dev/null; then
    log_tail "$pg_dir/server.log"
    die "PostgreSQL did not start"
  fi
fi
if [[ "$(psql_q "SELECT 1 FROM pg_database WHERE datname = 'fleetflow'" postgres)" != 1 ]]; then
  psql_q "CREATE DATABASE fleetflow" postgres || die "cannot create the database fleetflow"
fi
check_stop

# Engine ------------------------------------------------------------------------------------
metrics_host_flag=()
if timeout 10 "$fleetflow_bin" run --help 2>&1 </dev/null | grep -q -- --metrics-host; then
  metrics_host_flag=(--metrics-host 127.0.0.1)
fi
engine_ready() { ((stop_requested)) || ! alive "$engine_pid" || http_get /readyz >/dev/null; }
for attempt in 1 2 3; do
  metrics_port=$(pick_port "$metrics_port")
  engine_args=(run "$pipeline" --metrics-port "$metrics_port" "${metrics_host_flag[@]}")
  say "starting the engine: fleetflow ${engine_args[*]} (log $run_dir/fleetflow.log)"
  start_bg "$run_dir/fleetflow.log" env NATS_URL="$nats_url" PGHOST=127.0.0.1 \
    FLEETFLOW_ARCHIVE_DIR="$archive_dir" \
    PGPORT="$pg_port" PGUSER=postgres PGDATABASE=fleetflow \
    FLEETFLOW_PG="host=127.0.0.1 port=$pg_port user=postgres dbname=fleetflow" \
    "$fleetflow_bin" "${engine_args[@]}"
  engine_pid=$started_pid
  echo "$engine_pid" >"$run_dir/fleetflow.pid"
  poll_until 30 engine_ready || true
  check_stop
  alive "$engine_pid" && break
  status=0
  wait "$engine_pid" || status=$?
  engine_pid=""
  # Another program took the metrics port between our check and the engine's bind: next port.
  if ((attempt < 3)) && tail -n 5 "$run_dir/fleetflow.log" | grep -q "cannot listen"; then
    warn "metrics port $metrics_port was taken meanwhile; trying the next one"
    metrics_port=$((metrics_port + 1))
    continue
  fi
  log_tail "$run_dir/fleetflow.log"
  die "the engine exited with status $status (log $run_dir/fleetflow.log)"
done
http_get /readyz >/dev/null || warn "the engine is not ready after 30 s; continuing"

# fleet-sim ---------------------------------------------------------------------------------
# Rows of this run: window times from (about) now on; a window may start up to a period earlier.
run_start=$(($(date +%s) - (every_ms + 999) / 1000))
sim_args=(--nats-url "$nats_url" --vehicles "$vehicles" --seed 1)
((duration > 0)) && sim_args+=(--duration "$duration")
say "starting fleet-sim ${sim_args[*]} (log $run_dir/fleet-sim.log)"
start_bg "$run_dir/fleet-sim.log" "$sim_bin" "${sim_args[@]}"
sim_pid=$started_pid
echo "$sim_pid" >"$run_dir/fleet-sim.pid"
if ((duration > 0)); then
  say "running for ${duration}s (Ctrl-C stops earlier)"
else
  say "running until Ctrl-C"
fi

# Live progress -----------------------------------------------------------------------------
# Prints "rows vehicles_active" of this run; "- -" while the table does not exist yet.
sql_figures() {
  local out
  out=$(psql_q "SELECT count(*), count(DISTINCT vehicle_id) FILTER (WHERE time > now() - interval '5 seconds') FROM $table WHERE time >= to_timestamp($run_start)") ||
    out="-|-"
  echo "${out/|/ }"
}

tty=0
[[ -t 1 ]] && tty=1
started=$SECONDS
last_in=""
last_plain=-5
while ((stop_requested == 0)); do
  sleep 1 &
  wait $! || true
  ((stop_requested == 0)) || break
  alive "$engine_pid" || break
  alive "$sim_pid" || break
  elapsed=$((SECONDS - started))
  if ((duration > 0 && elapsed > duration + 30)); then
    warn "fleet-sim still runs ${elapsed}s after starting; stopping it"
    break
  fi
  # A Ctrl-C also reaches curl and psql (same process group): tolerate their death.
  msgs=$(messages_in) || msgs="-"
  figures=$(sql_figures) || figures="- -"
  read -r rows active <<<"$figures" || true
  ((stop_requested == 0)) || break
  rate="-"
  if [[ "$msgs" =~ ^[0-9]+$ && "$last_in" =~ ^[0-9]+$ ]]; then rate=$((msgs - last_in)); fi
  last_in=$msgs
  printf -v line '[%4ds] messages in: %s (%s/s) | rows written: %s | vehicles active: %s/%s' \
    "$elapsed" "$msgs" "$rate" "$rows" "$active" "$vehicles"
  if ((tty)); then
    printf '\r%s\033[K' "$line"
    progress_open=1
  elif ((elapsed - last_plain >= 5)); then
    printf '%s\n' "$line"
    last_plain=$elapsed
  fi
done
trap '' INT TERM HUP  # shutting down in order now; the EXIT trap still covers failures

# Shutdown in order -------------------------------------------------------------------------
failed=0
if ! alive "$engine_pid"; then
  status=0
  wait "$engine_pid" || status=$?
  engine_pid=""
  log_tail "$run_dir/fleetflow.log"
  say "the engine stopped by itself with status $status (log $run_dir/fleetflow.log)"
  failed=1
fi

if alive "$sim_pid"; then
  say "stopping fleet-sim"
  kill -TERM "$sim_pid" 2>/dev/null || true
  poll_until 15 eval "! kill -0 $sim_pid 2>/dev/null" || kill -KILL "$sim_pid" 2>/dev/null || true
fi
sim_status=0
wait "$sim_pid" || sim_status=$?
sim_pid=""
sim_summary=$(grep -E '^\{' "$run_dir/fleet-sim.log" | tail -n 1 || true)
if ((sim_status != 0)); then
  log_tail "$run_dir/fleet-sim.log"
  say "fleet-sim exited with status $sim_status (log $run_dir/fleet-sim.log)"
  failed=1
fi

if [[ -n "$engine_pid" ]]; then
  # The last samples become rows one window plus the allowed lateness later: wait until the row
  # count stops growing for two such periods (at most 30 s).
  settle_s=$(((2 * (every_ms + lateness_ms) + 999) / 1000))
  ((settle_s >= 2)) || settle_s=2
  say "waiting for the last windows (until rows stop growing for ${settle_s}s, at most 30s)"
  deadline=$((SECONDS + 30))
  last_rows=""
  stable_since=$SECONDS
  while ((SECONDS < deadline)); do
    figures=$(sql_figures) || figures="- -"
    read -r rows _ <<<"$figures" || true
    if [[ "$rows" != "$last_rows" ]]; then
      last_rows=$rows
      stable_since=$SECONDS
    elif ((SECONDS - stable_since >= settle_s)); then
      break
    fi
    sleep 0.5
  done

  say "stopping the engine (SIGTERM, drain)"
  final_in=$(messages_in) || final_in="-"
  kill -TERM "$engine_pid" 2>/dev/null || true
  if ! poll_until 30 eval "! kill -0 $engine_pid 2>/dev/null"; then
    warn "the engine did not stop within 30 s: SIGKILL"
    kill -KILL "$engine_pid" 2>/dev/null || true
  fi
  engine_status=0
  wait "$engine_pid" || engine_status=$?
  engine_pid=""
  if ((engine_status != 0)); then
    log_tail "$run_dir/fleetflow.log"
    say "the engine exited with status $engine_status (log $run_dir/fleetflow.log)"
    failed=1
  fi
fi
rm -f "$run_dir/fleet-sim.pid" "$run_dir/fleetflow.pid"

# Summary -----------------------------------------------------------------------------------
summary=$(psql_q "SELECT count(*), count(DISTINCT vehicle_id), coalesce(min(time)::text, '-'), coalesce(max(time)::text, '-') FROM $table WHERE time >= to_timestamp($run_start)" ||
  echo "0|0|-|-")
IFS='|' read -r rows n_vehicles t_min t_max <<<"$summary"
say "summary"
printf '  rows written:  %s (table %s, this run)\n' "$rows" "$table"
printf '  vehicles:      %s of %s simulated\n' "$n_vehicles" "$vehicles"
printf '  time range:    %s .. %s\n' "$t_min" "$t_max"
printf '  messages in:   %s (engine)\n' "${final_in:--}"
printf '  fleet-sim:     %s\n' "${sim_summary:-no summary line (see $run_dir/fleet-sim.log)}"
printf '  storage:       %s\n' "$(storage_kind)"
printf '  logs:          %s/{nats-server,fleetflow,fleet-sim}.log, %s/server.log\n' "$run_dir" "$pg_dir"

# The archive: every sample, and which vehicles crossed central Paris (the simulated fleet drives
# around it) during this run, asked of it with `fleetflow find`.
if [[ -d "$archive_dir" ]]; then
  chunks=$(find "$archive_dir" -name '*.csv.zst' | wc -l)
  bytes=$(find "$archive_dir" -name '*.csv.zst' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  printf '  archive:       %s chunks, %s bytes in %s\n' "$chunks" "$bytes" "$archive_dir"
  area=$run_dir/paris-centre.geojson
  printf '%s\n' '{"type": "Polygon", "coordinates": [[[2.30, 48.83], [2.40, 48.83], [2.40, 48.88], [2.30, 48.88], [2.30, 48.83]]]}' >"$area"
  find_cmd=("$fleetflow_bin" find --archive "$archive_dir" --area "$area"
    --from "$(date -u -d "@$run_start" +%Y-%m-%dT%H:%M:%SZ)" --to "$(date -u -d '+1 minute' +%Y-%m-%dT%H:%M:%SZ)")
  if found=$("${find_cmd[@]}" --format csv 2>/dev/null); then
    printf '  in the area:   %s vehicles crossed central Paris (%s); ask it yourself:\n    %s\n' \
      "$(($(printf '%s\n' "$found" | wc -l) - 1))" "$area" "${find_cmd[*]}"
  else
    printf '  find:          %s failed (see its message)\n' "${find_cmd[*]}"
  fi
fi

if ((keep)); then
  say "servers left running (stop them with: scripts/demo.sh --stop)"
  printf '  NATS:        %s (store %s/nats)\n' "$nats_url" "$run_dir"
  printf '  PostgreSQL:  127.0.0.1:%s, database fleetflow, data %s\n' "$pg_port" "$pg_dir"
  printf '  look at the rows:\n    %s\n' "$(psql_cmd)"
else
  stop_nats
  nats_started=0
  stop_pg
  pg_started=0
  say "PostgreSQL keeps the rows in $pg_dir. To look at them later:"
  printf '    %s\n' "$(pg_ctl_cmd start)"
  printf '    %s\n' "$(psql_cmd)"
  printf '    %s\n' "$(pg_ctl_cmd stop)"
  printf '  (or run scripts/demo.sh --keep next time)\n'
fi

if ! [[ "$rows" =~ ^[0-9]+$ ]] || ((rows == 0)); then
  say "FAILED: no row was written to $table"
  exit 1
fi
if ((failed)); then
  say "FAILED: rows were written, but a process failed (see above)"
  exit 1
fi
say "OK"
