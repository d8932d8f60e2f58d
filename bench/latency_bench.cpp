// End-to-end latency: from a sample's event time to its row being in PostgreSQL, at a fixed load.
//
// fleet-sim (child process) publishes in real time at --rate samples/s (its default sensors,
// scaled by --target-rate, batched every 100 ms) to a nats-server started here; one fleetflow
// worker runs the default pipeline's shape (nats_source core -> keyed_last_value memory ->
// window_join 1 s windows, allowed lateness 500 ms -> timescale_sink) into a throwaway
// PostgreSQL started here, for each --flush-ms value of the sink (the sink's default is 0).
//
// Commit time: once the sink has created its table, the bench adds a column
// `committed_at timestamptz DEFAULT clock_timestamp()`; the sink's upsert names its columns, so
// every inserted row gets the server's clock at the moment the INSERT wrote it (within the
// transaction that commits right after; the commit itself is not included, a few ms at most on
// this local, fsync=off server). fleet-sim, the engine and PostgreSQL share one machine clock.
//
// A row for window time T holds samples from (T - 1 s, T] (and brackets T with the next one), so
// its oldest sample's event time is T - every: latency = committed_at - (T - every) is the
// latency of the row's oldest sample, the figure the goal bounds (p99 <= every + allowed
// lateness + 250 ms). committed_at - T is reported too. Only windows in the steady part of the
// run count (from 2 s after fleet-sim's start to 2 s before its end).
//
// Window close to commit, and its stages: the engine's own histograms (docs/metrics.md),
// row_close_latency_seconds and row_stage_seconds{stage}, read from the worker's metrics after
// each run; percentiles interpolated within their buckets (as Prometheus' histogram_quantile),
// and the share of rows at or below the goal exact (the goal is a bucket bound). They count the
// rows committed from 3 s after fleet-sim's start to the lateness + 300 ms after its end: the
// live windows, not the first (a new table's first writes) nor those the clock closes after it.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"
#include "prom_text.hpp"
#include "runtime.hpp"
#include "servers.hpp"

namespace fleetflow::bench {
namespace {

constexpr int64_t kEveryMs = 1000;
constexpr int64_t kLatenessMs = 500;

struct Settings {
  FleetSimLoad load{.vehicles = 1000, .duration_s = 20, .program = {}};
  double rate = 50'000;
  std::vector<int> flush_ms = {1000, 100};
  bool per_window = false;
  Output out;  // --scale, --csv, --summary
};

std::string PipelineJson(const std::string& url, const std::string& conninfo, int flush_ms) {
  return R"({"name": "bench-latency", "nodes": [
  {"id": "telemetry", "type": "nats_source", "config": {"url": ")" +
         url + R"(", "subject": "vehicle.*.*", "queue_group": "fleetflow"}},
  {"id": "last_values", "type": "keyed_last_value", "inputs": ["telemetry"], "config": {"keep": 4}},
  {"id": "windows", "type": "window_join", "inputs": ["last_values"], "config": {
    "every_ms": )" +
         std::to_string(kEveryMs) + R"(, "allowed_lateness_ms": )" + std::to_string(kLatenessMs) +
         R"(, "max_gap_ms": 2000, "sensors": ["gps", "speed", "soc", "torque"]}},
  {"id": "database", "type": "timescale_sink", "inputs": ["windows"], "config": {
    "conninfo": ")" +
         conninfo + R"(", "table": "vehicle_telemetry", "flush_ms": )" + std::to_string(flush_ms) +
         R"(, "columns": [
      {"name": "lat", "sensor": "gps", "field": "lat", "interpolation": "linear"},
      {"name": "lon", "sensor": "gps", "field": "lon", "interpolation": "linear"},
      {"name": "speed", "sensor": "speed", "interpolation": "linear"},
      {"name": "soc", "sensor": "soc", "interpolation": "previous"},
      {"name": "torque", "sensor": "torque", "interpolation": "linear"}]}}]})";
}

/// A histogram of the worker's metrics: cumulative counts by upper bound (+Inf last).
struct Buckets {
  std::vector<std::pair<double, double>> le;

  double Count() const { return le.empty() ? 0 : le.back().second; }

  /// The q-quantile (0..1), interpolated linearly within its bucket; NaN when empty.
  double Quantile(double q) const {
    const double rank = q * Count();
    double lower = 0, below = 0;
    for (const auto& [bound, count] : le) {
      if (count >= rank && count > 0) {
        if (std::isinf(bound)) return lower;  // beyond the last bound: that bound
        return lower + (bound - lower) * (rank - below) / std::max(1e-9, count - below);
      }
      lower = bound;
      below = count;
    }
    return std::nan("");
  }

  /// The share of observations at or below `bound`, which must be one of the bounds.
  double ShareAtMost(double bound) const {
    for (const auto& [b, count] : le) {
      if (std::abs(b - bound) < 1e-12) return count / std::max(1.0, Count());
    }
    return std::nan("");
  }
};

/// The buckets of histogram `name` (fleetflow_ prefix included), of the series whose labels
/// include `label` = `value` (any series when `label` is empty), summed over the others, as
/// observed between the expositions `from` and `to`.
Buckets HistogramOf(const std::string& from, const std::string& to, const std::string& name,
                    const std::string& label = "", const std::string& value = "") {
  std::map<double, double> by_bound;
  const auto add = [&](const std::string& text, double sign) {
    for (const prom::Sample& s : prom::ParseText(text).samples) {
      if (s.name != name + "_bucket") continue;
      if (!label.empty() && s.Label(label) != value) continue;
      const auto le = prom::ParseValue(s.Label("le").value_or(""));
      if (le) by_bound[*le] += sign * s.value;
    }
  };
  add(to, 1);
  add(from, -1);
  Buckets b;
  b.le.assign(by_bound.begin(), by_bound.end());
  return b;
}

std::vector<double> Column(const std::string& text) {
  std::vector<double> v;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) v.push_back(std::stod(line));
  }
  return v;
}

/// One line per window of `where`: its rows, the first and last row's insert time after the
/// window's due time (T + allowed lateness), and the spread between them (the upsert).
void PrintPerWindow(testing::PostgresServer& pg, const std::string& where) {
  const std::string due = "(time + interval '" + std::to_string(kLatenessMs) + " milliseconds')";
  std::printf("    %-12s %6s %12s %12s %9s\n", "window", "rows", "first ms", "last ms",
              "spread ms");
  const std::string lines = pg.Psql(
      "SELECT format('%-12s %6s %12s %12s %9s', to_char(time, 'HH24:MI:SS'), count(*), "
      "round(1000 * extract(epoch FROM min(committed_at) - " +
      due +
      "), 1), "
      "round(1000 * extract(epoch FROM max(committed_at) - " +
      due +
      "), 1), "
      "round(1000 * extract(epoch FROM max(committed_at) - min(committed_at)), 1))" +
      where + " GROUP BY time ORDER BY time");
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);) std::printf("    %s\n", line.c_str());
}

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{"End-to-end latency (event time to row in PostgreSQL) at a fixed load"};
  AddFleetSimOptions(app, s.load, "Seconds of each run");
  app.add_option("--rate", s.rate, "Samples/s fleet-sim sends in real time")->capture_default_str();
  app.add_option("--flush-ms", s.flush_ms, "timescale_sink flush_ms values, one run each")
      ->delimiter(',')
      ->capture_default_str();
  app.add_flag("--per-window", s.per_window,
               "Print each steady window's insert times after its due time (T + lateness), "
               "to see whether slow writes are always the same windows");
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (s.load.program.empty() || !testing::NatsServer::Available() ||
      !testing::PostgresServer::Available()) {
    std::cerr << "needs fleet-sim (this build), nats-server and PostgreSQL (scripts/deps.sh)\n";
    return 1;
  }
  testing::NatsServer nats;
  nats.Start();
  testing::PostgresServer pg;
  pg.Start();
  testing::TempDir dir("ff-bench-latency");
  std::printf("load: fleet-sim %d vehicles, %.0f samples/s in real time, %.0f s per run\n",
              s.load.vehicles, s.rate, s.load.duration_s);

  Csv csv(s.out.csv, {"scale", "flush_ms", "rate", "rows", "expected_rows", "p50_ms", "p99_ms",
                      "max_ms", "p50_after_T_ms", "p99_after_T_ms", "close_p50_ms", "close_p99_ms",
                      "close_within_goal", "machine_busy"});
  // Window close to commit: the goal by load (issue 45).
  const double close_goal_ms = s.rate >= 500'000 ? 100 : 50;
  for (const int flush_ms : s.flush_ms) {
    pg.Psql("DROP TABLE IF EXISTS vehicle_telemetry");
    Registry registry;
    RegisterBuiltinOperators(registry);
    const Pipeline pipeline =
        ParsePipelineOrThrow(PipelineJson(nats.url(), pg.conninfo(), flush_ms), registry);
    Metrics metrics;
    WallClock clock;
    Runtime runtime(pipeline, metrics, clock);  // the sink creates the table here
    pg.Psql(
        "ALTER TABLE vehicle_telemetry ADD COLUMN committed_at timestamptz DEFAULT "
        "clock_timestamp()");
    runtime.Start();
    const auto m0 = MachineJiffies();
    testing::Process sim({s.load.program, "--nats-url", nats.url(), "--vehicles",
                          std::to_string(s.load.vehicles), "--target-rate", std::to_string(s.rate),
                          "--duration", std::to_string(s.load.duration_s), "--quiet"},
                         dir.File("fleet-sim-" + std::to_string(flush_ms) + ".log"));
    // A measurement's start, past the first windows (not a synchronisation).
    std::this_thread::sleep_for(std::chrono::seconds(3));
    const std::string steady_from = metrics.Exposition();
    const auto status = sim.Wait(std::chrono::seconds(static_cast<int>(s.load.duration_s) + 60));
    if (!status || *status != 0) throw std::runtime_error("fleet-sim failed: " + sim.ReadLog());
    FleetSimSummary sum;
    if (!ParseFleetSimSummary(sim.ReadLog(), sum)) throw std::runtime_error("no fleet-sim summary");
    // Let the last steady windows close and flush (lateness + flush + a tick), then drain.
    std::this_thread::sleep_for(std::chrono::milliseconds(kLatenessMs + 300));
    const std::string steady_to = metrics.Exposition();  // the live windows' rows are in
    std::this_thread::sleep_for(std::chrono::milliseconds(flush_ms + 700));
    const auto m1 = MachineJiffies();
    runtime.Stop();
    const double busy = (m1.first - m0.first) / std::max(1.0, m1.second - m0.second);

    const int64_t from_ns = sum.start_ns + 2'000'000'000;
    const int64_t to_ns = sum.end_ns - 2'000'000'000;
    const std::string where = " FROM vehicle_telemetry WHERE time >= to_timestamp(" +
                              std::to_string(from_ns / 1e9) + ") AND time <= to_timestamp(" +
                              std::to_string(to_ns / 1e9) + ")";
    const auto lat =
        Column(pg.Psql("SELECT 1000 * extract(epoch FROM committed_at - (time - interval '" +
                       std::to_string(kEveryMs) + " milliseconds'))" + where));
    const auto after_t =
        Column(pg.Psql("SELECT 1000 * extract(epoch FROM committed_at - time)" + where));
    if (s.per_window) PrintPerWindow(pg, where);
    const uint64_t windows = std::stoull(pg.Psql("SELECT count(DISTINCT time)" + where));
    const uint64_t expected = windows * static_cast<uint64_t>(s.load.vehicles);
    const double p50 = Percentile(lat, 50), p99 = Percentile(lat, 99), mx = Percentile(lat, 100);
    std::printf(
        "  sink flush_ms %4d: %zu rows in %llu steady windows (expected %llu), latency from the "
        "oldest sample p50 %.0f ms, p99 %.0f ms, max %.0f ms; after T p50 %.0f ms, p99 %.0f ms; "
        "fleet-sim sent %.0f samples/s; machine busy %.0f%%\n",
        flush_ms, lat.size(), static_cast<unsigned long long>(windows),
        static_cast<unsigned long long>(expected), p50, p99, mx, Percentile(after_t, 50),
        Percentile(after_t, 99), static_cast<double>(sum.samples) / s.load.duration_s, 100 * busy);
    std::fflush(stdout);
    const double goal = kEveryMs + kLatenessMs + 250;
    AppendSummary(s.out.summary, {"latency", "p99 ms flush_ms " + std::to_string(flush_ms), p99, 0,
                                  "<= " + std::to_string(static_cast<int>(goal)) + " ms",
                                  p99 <= goal ? "yes" : "no",
                                  "event time of a row's oldest sample to row in PostgreSQL at " +
                                      std::to_string(static_cast<int>(s.rate)) +
                                      " samples/s; p50 " + std::to_string(static_cast<int>(p50)) +
                                      " ms, max " + std::to_string(static_cast<int>(mx)) + " ms"});
    // The engine's view: window close to commit, and where the time goes.
    const Buckets close =
        HistogramOf(steady_from, steady_to, "fleetflow_row_close_latency_seconds");
    const double close_p50 = 1000 * close.Quantile(0.5), close_p99 = 1000 * close.Quantile(0.99);
    const double within = close.ShareAtMost(close_goal_ms / 1000);
    std::printf(
        "    window close -> commit (engine histogram, %.0f rows): p50 %.1f ms, p99 %.1f ms; "
        "%.2f%% of rows within %.0f ms\n",
        close.Count(), close_p50, close_p99, 100 * within, close_goal_ms);
    std::printf("    %-8s %9s %9s   (row_stage_seconds, from the window's due time T + %lld ms)\n",
                "stage", "p50 ms", "p99 ms", static_cast<long long>(kLatenessMs));
    for (const char* stage :
         {"arrival", "graph", "join", "queue", "encode", "buffer", "copy", "upsert", "commit"}) {
      const Buckets b =
          HistogramOf(steady_from, steady_to, "fleetflow_row_stage_seconds", "stage", stage);
      std::printf("    %-8s %9.2f %9.2f\n", stage, 1000 * b.Quantile(0.5), 1000 * b.Quantile(0.99));
    }
    std::fflush(stdout);
    // The goal is the default sink's (flush_ms 0: written as soon as a live window closes).
    if (flush_ms == 0) {
      AppendSummary(s.out.summary,
                    {"latency", "close p99 ms flush_ms " + std::to_string(flush_ms), close_p99, 0,
                     "<= " + std::to_string(static_cast<int>(close_goal_ms)) + " ms",
                     within >= 0.99 ? "yes" : "no",
                     "window close to row committed (engine histogram) at " +
                         std::to_string(static_cast<int>(s.rate)) + " samples/s; p50 " +
                         std::to_string(static_cast<int>(close_p50)) + " ms"});
    }
    csv.Row(s.out.scale, flush_ms, s.rate, lat.size(), expected, p50, p99, mx,
            Percentile(after_t, 50), Percentile(after_t, 99), close_p50, close_p99, within, busy);
    if (lat.size() != expected) {
      std::printf("  WARNING: %zu rows, expected %llu (vehicles x steady windows)\n", lat.size(),
                  static_cast<unsigned long long>(expected));
    }
  }
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-latency", fleetflow::bench::Main, argc, argv);
}
