#pragma once
/// The values of window_aggregate's snapshots (schemas/aggregate_state.fbs): the open windows of
/// some vehicles, or a partition's event-time progress, in one FLA1 State. Engine only.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire.hpp"

namespace fleetflow::aggregate {

/// Consecutive samples of a window (each seq one more than the one before, later in time).
struct Run {
  wire::Point first;
  wire::Point last;
  double distance_m = 0.0;  // along the run's samples
  bool operator==(const Run&) const = default;
};

/// One open window of a sensor: what it counted so far.
struct Window {
  int64_t end_ns = 0;
  uint64_t count = 0;
  double min = 0.0;
  double max = 0.0;
  double sum = 0.0;
  uint64_t positions = 0;
  double min_lat = 0.0;
  double max_lat = 0.0;
  double min_lon = 0.0;
  double max_lon = 0.0;
  std::vector<Run> runs;  // by the time of their first sample
  bool operator==(const Window&) const = default;
};

struct Sensor {
  std::string name;
  std::vector<Window> windows;              // by end
  std::optional<wire::Point> last_emitted;  // the newest sample of the last window emitted
  bool operator==(const Sensor&) const = default;
};

struct Vehicle {
  std::string id;
  std::vector<Sensor> sensors;
  bool operator==(const Vehicle&) const = default;
};

/// A partition's event-time progress (WindowProgress, operators/event_time.hpp).
struct Progress {
  std::optional<int64_t> next;
  int64_t first_window = 0;
  int64_t newest_event_ns = 0;
  std::optional<int64_t> stream_ns;
  bool operator==(const Progress&) const = default;
};

struct State {
  std::vector<Vehicle> vehicles;
  std::optional<Progress> progress;
  bool operator==(const State&) const = default;
};

std::string Encode(const State& state);

/// Decodes into `out` (cleared first). False when `value` is not a well-formed FLA1 State;
/// never throws.
bool Decode(std::string_view value, State& out);

}  // namespace fleetflow::aggregate
