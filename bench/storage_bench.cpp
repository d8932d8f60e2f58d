// Database bytes per vehicle-day of each table of pipelines/tiers.json (issue 41): the shipped
// pipeline's three timescale_sink nodes, built from the file as the engine builds them, write
// generated rows (seeded random walks: speed, state of charge, torque, positions around a city)
// into a throwaway PostgreSQL; then the tables' size on disk (heap, indexes, TOAST, every
// partition) per row, times the rows a vehicle gives a day: 86 400 seconds, 1 440 minutes, 24
// hours. The projection to a fleet is that figure times the vehicles and the days kept.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "build_paths.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "servers.hpp"

namespace fleetflow::bench {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

struct Settings {
  int vehicles = 100;
  double second_hours = 1;  // of 1 s rows
  double minute_days = 2;   // of 1 min rows
  double hour_days = 60;    // of 1 h rows
  int fleet = 100'000;      // projection
  Output out;
};

class NoEmit final : public Emitter {
 public:
  void Emit(Message) override {}
};

/// A vehicle's signals, walking at random from a seeded start.
struct Walk {
  std::mt19937_64 rng;
  double lat, lon, speed = 10, soc = 80, torque = 50;
  explicit Walk(uint64_t seed) : rng(seed) {
    std::uniform_real_distribution<double> d(-0.05, 0.05);
    lat = 48.137 + d(rng);
    lon = 11.575 + d(rng);
  }
  wire::Point Step(int64_t ts, uint32_t seq, bool position) {
    std::normal_distribution<double> n(0, 1);
    speed = std::clamp(speed + n(rng), 0.0, 40.0);
    soc = std::max(5.0, soc - 0.0005 * speed);
    torque = std::clamp(torque + 5 * n(rng), -100.0, 300.0);
    lat += 1e-5 * speed * n(rng);
    lon += 1e-5 * speed * n(rng);
    wire::Point p;
    p.ts_ns = ts;
    p.seq = seq;
    p.value = speed;
    if (position) {
      p.lat = lat;
      p.lon = lon;
      p.has_position = true;
    }
    return p;
  }
};

/// Statistics of one window of `walk` (a sample per second of it).
StatsRow StatsOf(const std::string& vehicle, Walk& walk, int64_t start, int64_t length,
                 const std::vector<std::string>& sensors) {
  StatsRow row{vehicle, {}};
  for (size_t s = 0; s < sensors.size(); ++s) {
    SensorStats st;
    const bool gps = sensors[s] == "gps";
    wire::Point previous;
    for (int64_t t = start; t < start + length; t += kSecondNs) {
      wire::Point p = walk.Step(t, static_cast<uint32_t>(t / kSecondNs), gps);
      if (sensors[s] == "soc") p.value = walk.soc;
      if (sensors[s] == "torque") p.value = walk.torque;
      if (st.count == 0) {
        st.first = p;
        st.min = st.max = p.value;
        st.min_lat = st.max_lat = p.lat;
        st.min_lon = st.max_lon = p.lon;
      }
      st.min = std::min(st.min, p.value);
      st.max = std::max(st.max, p.value);
      st.sum += p.value;
      st.min_lat = std::min(st.min_lat, p.lat);
      st.max_lat = std::max(st.max_lat, p.lat);
      st.min_lon = std::min(st.min_lon, p.lon);
      st.max_lon = std::max(st.max_lon, p.lon);
      if (gps && st.count > 0)
        st.distance_m += std::hypot(p.lat - previous.lat, p.lon - previous.lon) * 111'000;
      st.last = p;
      previous = p;
      ++st.count;
      if (gps) ++st.positions;
    }
    row.sensors.push_back(st);
  }
  return row;
}

struct Table {
  std::string node, table;
  int64_t step_ns;      // a row's period
  double rows_per_day;  // per vehicle
  double span_days;     // generated
  std::string retention;
};

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Database bytes per vehicle-day of the tables of pipelines/tiers.json: its sinks write "
      "generated rows into a throwaway PostgreSQL; size on disk per row times rows per day."};
  app.add_option("--vehicles", s.vehicles, "Vehicles generated")->capture_default_str();
  app.add_option("--second-hours", s.second_hours, "Hours of 1 s rows")->capture_default_str();
  app.add_option("--minute-days", s.minute_days, "Days of 1 min rows")->capture_default_str();
  app.add_option("--hour-days", s.hour_days, "Days of 1 h rows")->capture_default_str();
  app.add_option("--fleet", s.fleet, "Vehicles of the projection")->capture_default_str();
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!ServersInstalled(/*nats=*/false, /*postgres=*/true)) return 1;
  testing::PostgresServer server;
  server.Start();
  std::printf("postgres %s (%s)\n", server.conninfo().c_str(),
              server.Psql("SHOW server_version").c_str());

  Registry registry;
  RegisterBuiltinOperators(registry);
  const std::string conninfo = server.conninfo();
  const EnvLookup env = [&](const std::string& name) -> std::optional<std::string> {
    if (name == "FLEETFLOW_PG") return conninfo;
    return std::nullopt;
  };
  LoadResult loaded =
      LoadPipelineFile(testing::SourceDir() + "/pipelines/tiers.json", registry, env);
  if (!loaded.ok()) throw std::runtime_error(loaded.errors.front().Format());

  const std::vector<Table> tables = {
      {"database", "vehicle_telemetry", kSecondNs, 86'400, s.second_hours / 24, "7 days"},
      {"minutes_table", "vehicle_stats_1m", 60 * kSecondNs, 1'440, s.minute_days, "90 days"},
      {"hours_table", "vehicle_stats_1h", 3600 * kSecondNs, 24, s.hour_days, "kept"}};
  const std::vector<std::string> sensors = {"gps", "speed", "soc", "torque"};
  const auto names = std::make_shared<const std::vector<std::string>>(sensors);
  Metrics metrics;
  WallClock clock;
  NoEmit out;
  Csv csv(s.out.csv, {"table", "rows", "bytes", "bytes_per_row", "bytes_per_vehicle_day",
                      "fleet_gb_per_day", "retention", "fleet_gb_kept"});
  std::printf(
      "\n| table | rows written | bytes on disk | bytes/row | bytes per vehicle-day | "
      "%d vehicles: GB/day | retention | GB kept |\n|---|---|---|---|---|---|---|---|\n",
      s.fleet);
  const int64_t end = clock.NowNs() / (3600 * kSecondNs) * (3600 * kSecondNs);
  for (const Table& t : tables) {
    const NodeDecl* node = nullptr;
    for (const auto& n : loaded.pipeline->nodes) {
      if (n.id == t.node) node = &n;
    }
    if (node == nullptr) throw std::runtime_error("no node " + t.node + " in tiers.json");
    auto sink =
        node->info->create(OperatorContext{node->id, node->type, node->config, metrics, clock});
    const int64_t span = static_cast<int64_t>(t.span_days * 86'400) * kSecondNs;
    std::vector<Walk> walks;
    for (int v = 0; v < s.vehicles; ++v) walks.emplace_back(20261127 + v);
    for (int64_t time = end - span; time < end; time += t.step_ns) {
      if (t.step_ns == kSecondNs) {
        WindowBatch b;
        b.window_ns = time;
        b.sensors = names;
        for (int v = 0; v < s.vehicles; ++v) {
          WindowRow row{"v" + std::to_string(100000 + v), {}};
          for (const auto& sensor : sensors) {
            wire::Point p = walks[v].Step(time - 100'000'000, 0, sensor == "gps");
            if (sensor == "soc") p.value = walks[v].soc;
            if (sensor == "torque") p.value = walks[v].torque;
            row.slots.push_back(Slot{p, std::nullopt});
          }
          b.rows.push_back(std::move(row));
        }
        sink->Process(MakeMessage(std::move(b)), out);
      } else {
        StatsBatch b;
        b.start_ns = time;
        b.length_ns = t.step_ns;
        b.sensors = names;
        for (int v = 0; v < s.vehicles; ++v) {
          b.rows.push_back(StatsOf("v" + std::to_string(100000 + v), walks[v], time,
                                   std::min<int64_t>(t.step_ns, 60 * kSecondNs), sensors));
        }
        sink->Process(MakeMessage(std::move(b)), out);
      }
    }
    sink->Process(MakeMessage(Tick{clock.NowNs(), true}), out);
    sink.reset();
    server.Psql("VACUUM ANALYZE " + t.table);
    const double rows = std::stod(server.Psql("SELECT count(*) FROM " + t.table));
    const double bytes = std::stod(server.Psql(
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('" +
        t.table + "')), pg_total_relation_size('" + t.table + "'))"));
    const double per_row = bytes / rows;
    const double per_vehicle_day = per_row * t.rows_per_day;
    const double fleet_day_gb = per_vehicle_day * s.fleet / 1e9;
    double kept_days = 365;
    if (t.retention == "7 days") kept_days = 7;
    if (t.retention == "90 days") kept_days = 90;
    const std::string kept_label = t.retention == "kept" ? "1 year (kept)" : t.retention;
    std::printf("| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %s | %.0f |\n", t.table.c_str(), rows,
                bytes, per_row, per_vehicle_day, fleet_day_gb, kept_label.c_str(),
                fleet_day_gb * kept_days);
    csv.Row(t.table, rows, bytes, per_row, per_vehicle_day, fleet_day_gb, kept_label,
            fleet_day_gb * kept_days);
  }
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-storage", fleetflow::bench::Main, argc, argv);
}
