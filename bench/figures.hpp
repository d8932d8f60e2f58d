#pragma once
/// The measured storage figures the benchmarks leave for `fleetflow estimate` (apps/estimate.hpp):
/// a JSON file, docs/bench/storage_figures.json, committed, compiled into the estimate. Each
/// figure has its name, value, unit, and the benchmark, date and commit that measured it:
///
///   {"version": 1, "figures": [
///     {"name": "archive.gps.bytes_per_sample", "value": 7.1, "unit": "bytes/sample",
///      "bench": "ff-bench-archive", "date": "2026-11-28", "commit": "7295d9c", "note": "..."}]}
///
/// A benchmark replaces the figures it measured (by name) and keeps the others.

#include <string>
#include <vector>

namespace fleetflow::bench {

struct Figure {
  std::string name;   ///< e.g. "archive.gps.bytes_per_sample", "db.vehicle_telemetry.bytes_per_row"
  double value = 0;   ///< rounded to 4 significant digits when written
  std::string unit;   ///< e.g. "bytes/sample"
  std::string bench;  ///< the program that measured it, e.g. "ff-bench-archive"
  std::string date;   ///< UTC, YYYY-MM-DD
  std::string commit;  ///< short hash of the checkout it ran on ("" when unknown)
  std::string note;    ///< how it was measured, one phrase
};

/// Today's date, UTC, YYYY-MM-DD.
std::string TodayUtc();
/// `git rev-parse --short HEAD` of the current directory's checkout; "" when there is none.
std::string ShortCommit();

/// Replaces in `path` (created when missing) the figures named in `figures`, keeps the others,
/// sorted by name. Throws std::runtime_error when `path` holds something else than such a file.
void MergeFigures(const std::string& path, const std::vector<Figure>& figures);

}  // namespace fleetflow::bench
