#!/usr/bin/env bash
# Measures fleet-sensor's footprint as docs/firmware.md reports it: stripped binary size, the
# shared libraries it needs (never oneTBB, libpqxx or RapidJSON), and its resident memory and CPU
# share while it samples 4 sensors at 30 Hz for 60 s against a local nats-server.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: firmware/footprint.sh [--build-dir DIR] [--seconds N] [--batch-ms MS] [--ack MODE]

  --build-dir DIR  where fleet-sensor was built (default: build)
  --seconds N      how long to sample (default: 60)
  --batch-ms MS    fleet-sensor --batch-ms (default: 0, one message per sample: the worst case)
  --ack MODE       fleet-sensor --ack: flush (default) or jetstream (the server then runs
                   JetStream with a stream TELEMETRY on vehicle.*.*, so every message is stored
                   and acknowledged)

Starts its own nats-server on a free port of 127.0.0.1 and removes everything it made.
USAGE
}

build_dir=build
seconds=60
batch_ms=0
ack=flush
while (($#)); do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --batch-ms) batch_ms=$2; shift 2 ;;
    --ack) ack=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

bin=$build_dir/firmware/fleet-sensor
[[ -x $bin ]] || { echo "footprint: $bin not built (ninja -C $build_dir fleet-sensor)" >&2; exit 1; }
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x $nats_server ]] || { echo "footprint: nats-server not installed" >&2; exit 1; }

work=$(mktemp -d /tmp/ff-footprint-XXXXXX)
server_pid="" sensor_pid=""
cleanup() {
  [[ -n $sensor_pid ]] && kill "$sensor_pid" 2>/dev/null || true
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Binary and libraries.
strip -o "$work/fleet-sensor" "$bin"
size_bytes=$(stat -c %s "$work/fleet-sensor")
libs=$(ldd "$bin" | awk '/=>/ {print $1}' | sort | tr '\n' ' ')
if grep -Eqi 'tbb|pqxx|rapidjson' <<<"$libs"; then
  echo "footprint: fleet-sensor links a forbidden library: $libs" >&2
  exit 1
fi

# A free port, then the server.
port=""
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 30000))
  if ! (echo >"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[[ -n $port ]] || { echo "footprint: no free port" >&2; exit 1; }
case $ack in
  flush) js_args=() ;;
  jetstream) js_args=(-js -sd "$work/js") ;;
  *) usage >&2; exit 2 ;;
esac
"$nats_server" -a 127.0.0.1 -p "$port" "${js_args[@]}" >"$work/nats.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q "Server is ready" "$work/nats.log" && (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
    break
  sleep 0.1
done

# The stream the acknowledgements come from, created through the plain NATS protocol (no CLI).
create_stream() {
  local body='{"name":"TELEMETRY","subjects":["vehicle.*.*"],"storage":"file"}' line reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  read -r -t 5 -u 3 line  # INFO
  printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.footprint 1\r\n' >&3
  printf 'PUB $JS.API.STREAM.CREATE.TELEMETRY _INBOX.footprint %d\r\n%s\r\n' \
    "${#body}" "$body" >&3
  while read -r -t 5 -u 3 line; do
    if [[ $line == MSG* ]]; then read -r -t 5 -u 3 reply; break; fi
  done
  exec 3>&-
  [[ $reply == *'"type":"io.nats.jetstream.api.v1.stream_create_response"'* &&
     $reply != *'"error"'* ]] || { echo "footprint: cannot create the stream: $reply" >&2; exit 1; }
}
[[ $ack == jetstream ]] && create_stream

"$bin" --vehicle footprint --nats-url "nats://127.0.0.1:$port" --quiet --batch-ms "$batch_ms" \
  --ack "$ack" --sensors gps=30,speed=30,soc=30,torque=30 >"$work/sensor.log" 2>&1 &
sensor_pid=$!

cpu_ticks() { awk '{print $14 + $15}' "/proc/$sensor_pid/stat"; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$sensor_pid/status"; }

sleep 2  # start-up (connect, first samples) is not part of the steady state
t0=$(date +%s.%N)
c0=$(cpu_ticks)
sleep "$seconds"
t1=$(date +%s.%N)
c1=$(cpu_ticks)
rss=$(status_kb VmRSS) hwm=$(status_kb VmHWM) anon=$(status_kb RssAnon) file=$(status_kb RssFile)
threads=$(status_kb Threads)
pss=$(awk '$1 == "Pss:" {print $2}' "/proc/$sensor_pid/smaps_rollup")
private=$(awk '$1 ~ /^Private_(Clean|Dirty):$/ {s += $2} END {print s}' "/proc/$sensor_pid/smaps_rollup")
kill -TERM "$sensor_pid"
wait "$sensor_pid" || true
sensor_pid=""
hz=$(getconf CLK_TCK)
cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" \
  'BEGIN {printf "%.2f", 100 * c / hz / (t1 - t0)}')
published=$(grep -o '"published_samples":[0-9]*' "$work/sensor.log" | cut -d: -f2)

acked=$(grep -o '"buffered_bytes":[0-9]*' "$work/sensor.log" | cut -d: -f2)
resent=$(grep -o '"resent_messages":[0-9]*' "$work/sensor.log" | cut -d: -f2)

echo "fleet-sensor footprint: 4 sensors x 30 Hz, batch ${batch_ms} ms, --ack ${ack}, ${seconds} s"
echo "| measure | value |"
echo "|---|---|"
echo "| stripped binary | $size_bytes bytes ($(awk -v b="$size_bytes" 'BEGIN {printf "%.0f", b / 1024}') KiB) |"
echo "| shared libraries | $libs|"
echo "| resident memory (VmRSS at the end / peak VmHWM) | $rss KiB / $hwm KiB |"
echo "| of which anonymous / file-backed (shared libraries) | $anon KiB / $file KiB |"
echo "| proportional (PSS) / private to the process | $pss KiB / $private KiB |"
echo "| threads | $threads |"
echo "| CPU (user + system, % of one core) | $cpu % |"
echo "| samples published | ${published:-?} |"
echo "| left unconfirmed at the end (bytes) / messages resent | ${acked:-?} / ${resent:-?} |"
