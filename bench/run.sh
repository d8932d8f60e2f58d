#!/usr/bin/env bash
# Builds (Release, its own build directory) and runs every benchmark at a chosen scale, prints
# the summary table, writes CSV and draws PNG plots (gnuplot) into docs/bench/.
#
#   bench/run.sh                 # quick scale (the default): about 4 minutes on 2 cores, plus the build
#                                # (find: 3 more, and 3 the first time, to write its archive)
#   bench/run.sh --full          # full scale: 100 000 vehicles everywhere it applies (about 15 minutes)
#   bench/run.sh --only core,sink --build-dir build-bench
#   bench/run.sh --only find     # find --archive vs DuckDB (generates a 1.2 GB archive in /tmp once)
#   bench/run.sh --quick -- --contenders baseline,fleetflow   # extra args for ff-bench-jetstream
#   bench/run.sh --only archive  # archive bytes per sample by zstd level (not in the default list)
#   bench/run.sh --plots-only    # redraw the PNGs from the CSV files of the chosen scale
#   bench/run.sh --soak          # only the soak (ff-bench-soak, 20 minutes; not part of any scale)
#   bench/run.sh --soak -- --duration 3m   # its quick mode, to try it
#
# Benchmarks (--only takes these names): jetstream, core, sink, window, latency, memory, scaleout,
# find. find needs node and npm (DuckDB's Node API, installed into the build directory by npm ci).
# Each starts its own nats-server / PostgreSQL (free ports, temporary directories) and stops them.
# They are not tests: figures depend on the machine and on what else runs on it; compare the
# ratios within one run, not absolute figures across runs. See docs/BENCHMARKS.md.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

scale=quick
build_dir=${BUILD_DIR:-build-bench}
only=jetstream,core,sink,window,latency,memory,scaleout,find
plots_only=0
soak=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) scale=quick ;;
    --full) scale=full ;;
    --build-dir)
      build_dir=$2
      shift
      ;;
    --only)
      only=$2
      shift
      ;;
    --plots-only) plots_only=1 ;;
    --soak) soak=1 ;;
    --)
      shift
      extra=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench/run.sh: unknown option '$1' (--quick, --full, --only LIST, --build-dir DIR, --soak, -- ARGS)" >&2
      exit 2
      ;;
  esac
  shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }

if ! command -v nats-server > /dev/null && [[ ! -x /usr/sbin/nats-server ]]; then
  echo "bench/run.sh: nats-server not found; run scripts/deps.sh first" >&2
  exit 1
fi
# The soak (issue #40): one long run under a chaos schedule, on its own; the extra arguments
# (after --) go to ff-bench-soak, e.g. --duration 3m. Its table is written to docs/bench/soak.md.
if ((soak)); then
  if [[ ! -x "${FF_NATS210_SERVER:-/opt/fleetflow/nats-server-2.10/nats-server}" ]]; then
    echo "bench/run.sh: the soak runs nats-server 2.10: run scripts/nats210.sh first" >&2
    exit 1
  fi
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build_dir" --target ff-bench-soak fleetflow fleet-sensor
  mkdir -p docs/bench
  echo "== soak: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
  exec "$root/$build_dir/bench/ff-bench-soak" --markdown docs/bench/soak.md "${extra[@]}"
fi
if ! command -v gnuplot > /dev/null; then
  echo "== installing gnuplot-nox (plots)"
  if [[ $EUID -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox > /dev/null || true
  elif command -v sudo > /dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox > /dev/null || true
  fi
  command -v gnuplot > /dev/null || echo "bench/run.sh: gnuplot missing; no plots will be drawn" >&2
fi

out=docs/bench
summary="$out/summary_${scale}.csv"
if ((plots_only)); then only=none; fi
if ((!plots_only)); then
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build_dir/CMakeCache.txt")
cmake --build "$build_dir" --target ff-bench-jetstream ff-bench-core ff-bench-sink ff-bench-scale \
  ff-bench-latency ff-bench-scaleout fleetflow fleet-sim
if wants archive; then
  cmake --build "$build_dir" --target ff-bench-archive
fi
if wants find; then
  # DuckDB's Node API for the find benchmark: npm ci of bench/duckdb/package-lock.json.
  cmake --build "$build_dir" --target ff-bench-find ff-bench-find-node
fi
bin="$root/$build_dir/bench"

case "$scale" in
  quick)
    js_args=(--messages 200000 --repeats 3 --contenders baseline,baseline-ahead,fleetflow,ff-memory)
    core_args=(--vehicles 1000 --duration 10 --repeats 3 --timebox 8)
    sink_args=(--vehicles 10000 --windows 10 --repeats 3)
    window_args=(--vehicles 100000 --windows 5 --samples 3)
    latency_args=(--vehicles 1000 --rate 50000 --duration 12 --flush-ms 1000,100,0)
    memory_args=(--vehicles 10000 100000 --seconds 4)
    scaleout_args=(--vehicles 200 --seconds 10 --workers 1,2,4)
    # The issue's dataset at every scale (1 000 vehicles x 6 h of gps at 10 Hz, 216 M samples):
    # generated once into /tmp/fleetflow-bench-find (about 3 minutes), reused while it matches.
    find_args=(--vehicles 1000 --hours 6 --repeats 3)
    archive_args=(--vehicles 200 --minutes 60 --levels 3)  # about 70 s
    ;;
  full)
    js_args=(--messages 2000000 --repeats 3 --timeout 1200 --contenders baseline,baseline-ahead,fleetflow,ff-memory)
    core_args=(--vehicles 2000 --duration 15 --repeats 3 --timebox 20)
    sink_args=(--vehicles 20000 --windows 50 --repeats 3)
    window_args=(--vehicles 100000 --windows 10 --samples 3)
    latency_args=(--vehicles 2000 --rate 50000 --duration 30 --flush-ms 1000,100,0)
    memory_args=(--vehicles 10000 100000 --seconds 8)
    scaleout_args=(--vehicles 500 --seconds 30 --workers 1,2,3,4)
    find_args=(--vehicles 1000 --hours 6 --repeats 5)
    archive_args=(--vehicles 200 --minutes 60 --levels 3,1,9,15)  # about 8 min (19: +11 min)
    ;;
esac

mkdir -p "$out"
rm -f "$summary"
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "== machine: $machine, load $(cut -d' ' -f1-3 /proc/loadavg); build $build_type; scale $scale"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
  echo "machine: $machine"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "build: $build_type"
  echo "nats-server: $(nats-server --version 2> /dev/null || /usr/sbin/nats-server --version)"
} > "$out/machine_${scale}.txt"
started=$(date +%s)

if wants jetstream; then
  echo "== 2. JetStream ingest + KV backend vs bare fetch+ack"
  "$bin/ff-bench-jetstream" "${js_args[@]}" --scale "$scale" \
    --csv "$out/jetstream_ingest_${scale}.csv" "${extra[@]}"
  # Medians of the baseline and fleetflow rows into the summary.
  awk -F, -v out="$summary" '
    $4 == "median" && $2 == "baseline" { base = $10 }
    $4 == "median" && $2 == "baseline-ahead" { ahead = $10 }
    $4 == "median" && $2 == "fleetflow" { ff = $10 }
    END {
      if (base > 0 && ff > 0) {
        new = (system("test -f " out) != 0)
        if (new) print "bench,metric,fleetflow,baseline,ratio,goal,met,note" >> out
        printf "jetstream_ingest,samples/s,%d,%d,%.4f,>= 80%%,%s,\"nats_source jetstream -> keyed_last_value jetstream_kv -> window_join vs bare fetch+ack\"\n", ff, base, ff / base, (ff / base >= 0.8 ? "yes" : "no") >> out
      }
      if (ahead > 0 && ff > 0) {
        printf "jetstream_ingest_ahead,samples/s,%d,%d,%.4f,>= 85%%,%s,\"the same vs the bare loop that requests ahead as the worker does\"\n", ff, ahead, ff / ahead, (ff / ahead >= 0.85 ? "yes" : "no") >> out
      }
    }' "$out/jetstream_ingest_${scale}.csv"
fi
# Heading $1, then the benchmark (the rest: a program of bench/ and its arguments) writing its
# rows to $out/$2_$scale.csv and its headline figures to the summary.
run_bench() {
  local heading=$1 csv=$2
  shift 2
  echo "== $heading"
  "$@" --scale "$scale" --csv "$out/${csv}_${scale}.csv" --summary "$summary"
}
if wants core; then
  run_bench "1. core ingest vs bare queue subscriber, 7. reference design" core_ingest \
    "$bin/ff-bench-core" "${core_args[@]}"
fi
if wants sink; then
  run_bench "3. timescale_sink vs bare COPY + upsert" sink "$bin/ff-bench-sink" "${sink_args[@]}"
fi
if wants window; then
  run_bench "4. window join at scale" window_join "$bin/ff-bench-scale" window "${window_args[@]}"
fi
if wants latency; then
  run_bench "5. end-to-end latency" latency "$bin/ff-bench-latency" "${latency_args[@]}"
fi
if wants memory; then
  run_bench "6. memory" memory "$bin/ff-bench-scale" memory "${memory_args[@]}"
fi
if wants scaleout; then
  run_bench "8. scale-out by partition (1..4 workers)" scaleout "$bin/ff-bench-scaleout" \
    "${scaleout_args[@]}"
fi
if wants find; then
  # Exit status 3: a goal was missed (the table says which); the other benchmarks go on.
  run_bench "12. find --archive vs DuckDB" find "$bin/ff-bench-find" "${find_args[@]}" ||
    echo "bench/run.sh: ff-bench-find exited $? (3: a goal missed, see its table)" >&2
fi
if wants archive; then
  # 13. Only with --only archive (not in the default list); --figures is left to a run by hand.
  run_bench "13. archive bytes per sample" archive "$bin/ff-bench-archive" "${archive_args[@]}"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine_${scale}.txt"
echo "benchmarks took: $(($(date +%s) - started)) s" >> "$out/machine_${scale}.txt"
fi  # plots_only
started=${started:-$(date +%s)}

echo
echo "== summary ($scale scale, $(($(date +%s) - started)) s; ratio = fleetflow / baseline, same run)"
if [[ -f "$summary" ]]; then
  awk -F, 'NR == 1 { printf "%-17s %-32s %12s %12s %7s %-10s %-4s\n", $1, $2, $3, $4, "ratio", $6, $7; next }
    { printf "%-17s %-32s %12.6g %12s %7s %-10s %-4s\n", $1, $2, $3, $4, ($5 == "" ? "" : sprintf("%.1f%%", 100 * $5)), $6, $7 }' "$summary"
  echo "CSV: $out/*_${scale}.csv"
fi

# --- plots (gnuplot) ---
if ! command -v gnuplot > /dev/null; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plots=()
png() { echo "set terminal pngcairo noenhanced size 900,480 font 'DejaVu Sans,10'; set output '$out/$1_${scale}.png'"; }

# Ratios to the same-run baselines, with the goals.
if [[ -f "$summary" ]] && awk -F, 'NR > 1 && $5 != "" { n++ } END { exit !(n > 0) }' "$summary"; then
  awk -F, 'NR > 1 && $5 != "" {
      goal = $6; gsub(/[^0-9.]/, "", goal); if (goal == "") goal = "NaN"
      label = $1; if ($1 == "reference_design") label = "vs reference (" substr($2, 11) ")"
      printf "\"%s\" %.2f %s\n", label, 100 * $5, goal }' "$summary" > "$tmp/ratios.dat"
  gnuplot << GP
$(png ratios)
set title "fleetflow / bare baseline, same run ($scale scale); red points: goal"
set style fill solid 0.6 border -1; set boxwidth 0.6
set ylabel "% of baseline (log)"; set logscale y; set yrange [10:*]; set grid ytics
set xtics font ',9'
plot '$tmp/ratios.dat' using 0:2:xtic(1) with boxes lc rgb '#4477aa' notitle, \
     '' using 0:3 with points pt 7 ps 1.5 lc rgb '#cc3311' notitle, \
     '' using 0:2:(sprintf("%.0f%%", \$2)) with labels offset 0,1 notitle
GP
  plots+=(ratios)
fi

# Core ingest and the reference design: median samples/s per contender.
if [[ -f "$out/core_ingest_${scale}.csv" ]]; then
  awk -F, '$3 == "median" { printf "%s %.0f\n", $2, $6 }' "$out/core_ingest_${scale}.csv" > "$tmp/core.dat"
  gnuplot << GP
$(png core_ingest)
set title "Core-delivery ingest, fed by fleet-sim at its maximum rate ($scale scale, median)"
set style fill solid 0.6 border -1; set boxwidth 0.6; set logscale y; set grid ytics
set ylabel "samples/s (log)"; set yrange [1000:*]
plot '$tmp/core.dat' using 0:2:xtic(1) with boxes lc rgb '#4477aa' notitle, \
     '' using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,1 notitle
GP
  plots+=(core_ingest)
fi

# Lines from the rows of $out/$1_$scale.csv (when it exists), titled $2 with the axes $3 and $4;
# $5: what gnuplot plots of the file (the plot command after the file's name).
csv_lines() {
  [[ -f "$out/$1_${scale}.csv" ]] || return 0
  gnuplot << GP
$(png "$1")
set datafile separator ','
set title "$2 ($scale scale)"
set xlabel "$3"; set ylabel "$4"; set grid; set key top left; set yrange [0:*]
plot '$out/$1_${scale}.csv' $5
GP
  plots+=("$1")
}

# Window join: CPU per window.
csv_lines window_join "window join on one core: CPU per 1 s window" window "ms CPU" \
  "every ::1 using 3:6 with linespoints pt 7 title 'emit (all rows of the window)', \
   '' every ::1 using 3:5 with linespoints pt 5 title 'ingest (one second of samples)', \
   40 with lines dt 2 lc rgb '#cc3311' title 'goal: emit median <= 40 ms', \
   50 with lines dt 3 lc rgb '#cc3311' title 'goal: emit max <= 50 ms'"

# Latency: p50 / p99 / max per sink flush_ms, with the goal.
if [[ -f "$out/latency_${scale}.csv" ]]; then
  awk -F, 'NR > 1 { printf "\"sink flush_ms %s\" %.0f %.0f %.0f\n", $2, $6, $7, $8 }' "$out/latency_${scale}.csv" > "$tmp/latency.dat"
  gnuplot << GP
$(png latency)
set title "Event time of a row's oldest sample to the row in PostgreSQL ($scale scale)"
set style data histograms; set style histogram clustered gap 1; set style fill solid 0.6 border -1
set ylabel "ms"; set grid ytics; set yrange [0:*]
plot '$tmp/latency.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'max', \
     1750 with lines dt 2 lc rgb '#cc3311' title 'goal: p99 <= 1750 ms'
GP
  plots+=(latency)
fi

# Memory: peak RSS by fleet size.
csv_lines memory "Engine peak RSS by fleet size" vehicles MiB \
  "every ::1 using 2:6 with linespoints pt 7 title 'peak RSS', \
   '' every ::1 using 2:5 with linespoints pt 5 title 'RSS before the Runtime was built'"
for p in "${plots[@]}"; do echo "plot: $out/${p}_${scale}.png"; done
