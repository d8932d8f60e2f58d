// Database bytes per vehicle-day of each table of pipelines/tiers.json (issue 41): the shipped
// pipeline's three timescale_sink nodes, built from the file as the engine builds them, write
// generated rows (seeded random walks: speed, state of charge, torque, positions around a city)
// into a throwaway PostgreSQL; then the tables' size on disk (heap, indexes, TOAST, every
// partition) per row, times the rows a vehicle gives a day: 86 400 seconds, 1 440 minutes, 24
// hours. The projection to a fleet is that figure times the vehicles and the days kept. The rows
// across vehicles (fleet_cells_1m: one per geohash cell and minute, and one for the whole fleet)
// grow with the cells the fleet occupies, not its vehicles: bytes per cell-day, projected for
// --cells occupied cells.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "clock.hpp"
#include "figures.hpp"
#include "servers.hpp"
#include "tier_history.hpp"

namespace fleetflow::bench {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

struct Settings {
  int vehicles = 100;
  double second_hours = 1;  // of 1 s rows
  double minute_days = 2;   // of 1 min rows
  double hour_days = 60;    // of 1 h rows
  int fleet = 100'000;      // projection
  int cells = 10'000;       // occupied cells of the projection
  std::string figures;      // --figures: bytes per row into this JSON file (fleetflow estimate)
  Output out;
};

struct Table {
  std::string node, table;
  int64_t step_ns;      // a row's period
  double rows_per_day;  // per vehicle (per cell: per_cell)
  double span_days;     // generated
  std::string retention;
  bool per_cell = false;  // a row per cell and window, whatever the vehicles
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
  app.add_option("--cells", s.cells,
                 "Occupied geohash cells (about 5 km) of the projection for fleet_cells_1m")
      ->capture_default_str();
  app.add_option("--figures", s.figures,
                 "Write each table's bytes per row into this JSON file "
                 "(docs/bench/storage_figures.json, read by `fleetflow estimate`), keeping its "
                 "other figures");
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!ServersInstalled(/*nats=*/false, /*postgres=*/true)) return 1;
  testing::PostgresServer server;
  server.Start();
  std::printf("postgres %s (%s)\n", server.conninfo().c_str(),
              server.Psql("SHOW server_version").c_str());

  TierSinks sinks(server.conninfo());

  const std::vector<Table> tables = {
      {"database", "vehicle_telemetry", kSecondNs, 86'400, s.second_hours / 24, "7 days"},
      {"minutes_table", "vehicle_stats_1m", 60 * kSecondNs, 1'440, s.minute_days, "90 days"},
      {"hours_table", "vehicle_stats_1h", 3600 * kSecondNs, 24, s.hour_days, "kept"},
      {"fleet_table", "fleet_cells_1m", 60 * kSecondNs, 1'440, s.minute_days, "90 days", true}};
  WallClock clock;
  Csv csv(s.out.csv, {"table", "rows", "bytes", "bytes_per_row", "bytes_per_vehicle_day",
                      "fleet_gb_per_day", "retention", "fleet_gb_kept"});
  std::printf(
      "\n| table | rows written | bytes on disk | bytes/row | bytes per vehicle-day (cell-day) | "
      "%d vehicles (%d cells): GB/day | retention | GB kept |\n|---|---|---|---|---|---|---|---|\n",
      s.fleet, s.cells);
  const int64_t end = clock.NowNs() / (3600 * kSecondNs) * (3600 * kSecondNs);
  std::vector<Figure> figures;
  const std::string date = TodayUtc(), commit = ShortCommit();
  for (const Table& t : tables) {
    sinks.Write(TierSpan{t.node, t.table, t.step_ns,
                         static_cast<int64_t>(t.span_days * 86'400) * kSecondNs, kSecondNs},
                s.vehicles, end);
    server.Psql("VACUUM ANALYZE " + t.table);
    const double rows = std::stod(server.Psql("SELECT count(*) FROM " + t.table));
    const double bytes = std::stod(server.Psql(
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('" +
        t.table + "')), pg_total_relation_size('" + t.table + "'))"));
    const double per_row = bytes / rows;
    const double per_vehicle_day = per_row * t.rows_per_day;
    const double fleet_day_gb = per_vehicle_day * (t.per_cell ? s.cells : s.fleet) / 1e9;
    double kept_days = 365;
    if (t.retention == "7 days") kept_days = 7;
    if (t.retention == "90 days") kept_days = 90;
    const std::string kept_label = t.retention == "kept" ? "1 year (kept)" : t.retention;
    std::printf("| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %s | %.0f |\n", t.table.c_str(), rows,
                bytes, per_row, per_vehicle_day, fleet_day_gb, kept_label.c_str(),
                fleet_day_gb * kept_days);
    csv.Row(t.table, rows, bytes, per_row, per_vehicle_day, fleet_day_gb, kept_label,
            fleet_day_gb * kept_days);
    figures.push_back(
        {"db." + t.table + ".bytes_per_row", per_row, "bytes/row", "ff-bench-storage", date, commit,
         "pipelines/tiers.json's sink, plain PostgreSQL " + server.Psql("SHOW server_version") +
             ", heap + indexes + TOAST of every partition, " +
             std::to_string(static_cast<int64_t>(rows)) + " generated rows"});
  }
  if (!s.figures.empty()) {
    MergeFigures(s.figures, figures);
    std::printf("figures: %s\n", s.figures.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-storage", fleetflow::bench::Main, argc, argv);
}
