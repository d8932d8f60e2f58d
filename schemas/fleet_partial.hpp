#pragma once
/// Rows across vehicles between the workers (schemas/fleet_partial.fbs): a Partial (FLP1), one
/// partition's rows of a window for the cells of one shard, and a MergeState (FLM1), what the
/// worker merging a shard holds of it. Engine only.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow::fleet {

/// A metric over the vehicles of a cell (a statistics row's count, sum, min and max).
struct Stats {
  uint64_t count = 0;
  double min = 0.0;
  double max = 0.0;
  double sum = 0.0;
  bool operator==(const Stats&) const = default;
};

struct Row {
  std::string key;           // the cell, or "fleet"
  std::vector<Stats> stats;  // in the order of the metrics
  bool operator==(const Row&) const = default;
};

struct Partial {
  std::string node;      // the fleet_aggregate node that made it
  uint32_t origin = 0;   // its partition of the vehicles' stream
  uint32_t origins = 0;  // of how many
  int64_t start_ns = 0;  // the window [start_ns, start_ns + length_ns)
  int64_t length_ns = 0;
  std::vector<std::string> metrics;
  std::vector<Row> rows;  // none: the window closed without a vehicle in these cells
  bool operator==(const Partial&) const = default;
};

struct MergeState {
  uint32_t origins = 0;
  int64_t length_ns = 0;  // 0: no window yet
  std::vector<std::string> metrics;
  std::map<uint32_t, int64_t> reached;          // by origin: the end of its last window
  std::map<int64_t, std::vector<Row>> windows;  // open, by start
  bool operator==(const MergeState&) const = default;
};

std::string Encode(const Partial& partial);
std::string Encode(const MergeState& state);

/// Decode into `out` (replaced). False when `value` is not a well-formed FLP1 Partial (FLM1
/// MergeState), or a row has not one statistic per metric; never throws.
bool Decode(std::string_view value, Partial& out);
bool Decode(std::string_view value, MergeState& out);

}  // namespace fleetflow::fleet
