#pragma once
/// Where the engine's "now" comes from. Live runs use the wall clock; a replay uses a clock that
/// follows the event time of the replayed messages, so windows close as they did live.

#include <chrono>
#include <cstdint>

namespace fleetflow {

class Clock {
 public:
  virtual ~Clock() = default;
  /// Nanoseconds since the Unix epoch. Thread-safe.
  virtual int64_t NowNs() const = 0;
};

class WallClock final : public Clock {
 public:
  int64_t NowNs() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace fleetflow
