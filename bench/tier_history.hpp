#pragma once
/// Generated history for the tables of pipelines/tiers.json, written by the pipeline's own
/// timescale_sink nodes (built from the file as the engine builds them) into a throwaway
/// PostgreSQL: seeded random walks of speed, state of charge, torque and positions around a city,
/// as 1 s rows or as the statistics of minutes and hours. The storage and query benchmarks use it.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "operator.hpp"
#include "pipeline.hpp"

namespace fleetflow::bench {

/// One sink of pipelines/tiers.json and the rows it gets.
struct TierSpan {
  std::string node;         // "database", "minutes_table", "hours_table" or "fleet_table"
  std::string table;        // what it writes to
  int64_t step_ns;          // a row's period: 1 s, 1 min or 1 h
  int64_t span_ns;          // history generated, ending at `end_ns`
  int64_t sample_every_ns;  // statistics rows: the walk's samples in each (1 s: every second)
};

/// The sinks of pipelines/tiers.json, loaded with its database at `conninfo`. The rows across
/// vehicles (fleet_table) are made by the pipeline's fleet_aggregate nodes from the statistics
/// of the vehicles' windows.
class TierSinks {
 public:
  explicit TierSinks(const std::string& conninfo);
  /// Writes `span`'s rows for `vehicles` vehicles ("v100000", …; walks seeded by their number),
  /// ending at `end_ns` (a whole hour), then drains the sink. Throws when the node is missing.
  void Write(const TierSpan& span, int vehicles, int64_t end_ns);

 private:
  LoadResult loaded_;
};

}  // namespace fleetflow::bench
