#pragma once
/// When each sensor of a vehicle is due: sensor i ticks at anchor_i + k * period_i on a
/// monotonic clock, so rates do not drift however late the caller wakes up. A sensor found more
/// than one period late (the process was stopped, the machine suspended) skips the ticks it
/// missed instead of sampling in a burst; they are counted.
///
/// Pure logic on caller-supplied times (ns of any monotonic clock); not thread-safe.

#include <cstdint>
#include <vector>

namespace fleetflow::firmware {

class RateScheduler {
 public:
  /// Every sensor is first due at `now`. Throws std::invalid_argument on a rate that is not
  /// a positive finite number.
  RateScheduler(const std::vector<double>& hz, int64_t now);

  /// The earliest time a sensor is due.
  int64_t next_due() const;
  /// Appends to `due` the sensors due at or before `now`, each once, and moves each to its next
  /// tick after `now`.
  void PopDue(int64_t now, std::vector<int>& due);
  /// Changes a sensor's rate; its next tick is one new period after `now`.
  void SetRate(int sensor, double hz, int64_t now);
  /// Makes every sensor due at `now` (after a pause), keeping the rates.
  void Restart(int64_t now);

  int sensors() const { return static_cast<int>(slots_.size()); }
  double hz(int sensor) const { return slots_.at(sensor).hz; }
  int64_t period_ns(int sensor) const { return slots_.at(sensor).period; }
  /// Ticks skipped because the caller woke up more than a period late, over all sensors.
  uint64_t skipped() const { return skipped_; }

 private:
  struct Slot {
    double hz;
    int64_t period;
    int64_t next;
  };
  std::vector<Slot> slots_;
  uint64_t skipped_ = 0;
};

}  // namespace fleetflow::firmware
