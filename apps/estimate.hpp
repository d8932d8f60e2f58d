#pragma once
/// `fleetflow estimate` (docs/cli.md): a cost projection from measured figures. For a fleet (its
/// vehicles, sensor rates, driving hours a day), what the archive keeps and the retention of each
/// tier, it prints the storage per vehicle-day, per day and in total at steady state of the 1 s
/// rows, the 1 min and 1 h statistics, the fleet's rows per cell and the archive, and the database
/// and archive write rates. The figures are the bytes per row and per sample the benchmarks
/// measured (ff-bench-storage, ff-bench-archive), from docs/bench/storage_figures.json compiled
/// in, or from --figures FILE; each one used is named in the output with its benchmark and date.

#include <cstdint>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace fleetflow {

struct EstimateArgs {
  int64_t vehicles = 1000;
  std::string rate = "gps=10,speed=30,soc=5,torque=20";  // sensor=Hz, comma-separated
  std::string archive = "gps,speed,soc,torque";          // sensors archived; "none": none
  // Retentions: a whole number of days (d), weeks (w) or years (y, 365.25 days, rounded to whole
  // days: 7y = 2557 days). The defaults are pipelines/jetstream-tiers.json's.
  std::string archive_retention = "7y";  // archive retention_days 2557
  std::string row_archive = "7y";        // row_archive retention_days 2557; "none": not archived
  std::string hot_retention = "7d";      // vehicle_telemetry: "7 days"
  std::string minute_retention = "90d";  // vehicle_stats_1m: "90 days"
  std::string hour_retention = "7y";     // vehicle_stats_1h: none (kept); counted as the archive's
  std::string cell_retention = "90d";    // fleet_cells_1m: "90 days"
  double cells = 100;                    // geohash cells (about 5 km) the fleet occupies
  double hours_per_day = 24;             // driving hours per vehicle a day (24: always on)
  int64_t partitions = 16;               // of the stream: the archive's chunks per flush
  int64_t flush_ms = 600'000;            // the archive's flush_ms
  std::string figures;                   // a figures file; "" = the one compiled in
  std::string format = "table";          // table or json
};

/// Adds the `estimate` subcommand and its options to `app`.
CLI::App* AddEstimateCommand(CLI::App& app, EstimateArgs& args);

/// Computes and prints the projection to `out`; a problem to `err`. Returns the exit status: 0,
/// or 2 for a bad input (an unknown sensor, a negative number, a bad duration, a figures file
/// that cannot be read or lacks a figure).
int Estimate(const EstimateArgs& args, std::ostream& out, std::ostream& err);

}  // namespace fleetflow
