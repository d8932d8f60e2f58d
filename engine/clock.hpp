#pragma once
/// Where the engine's "now" comes from. Live runs use the wall clock; a replay uses a clock that
/// follows the event time of the replayed messages, so windows close as they did live.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace fleetflow {

class Clock {
 public:
  virtual ~Clock() = default;
  /// Nanoseconds since the Unix epoch. Thread-safe.
  virtual int64_t NowNs() const = 0;
};

/// Monotonic nanoseconds, for measuring intervals (never for event or window times).
inline int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class WallClock final : public Clock {
 public:
  int64_t NowNs() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

/// What moves a clock that follows the input instead of the wall: the runtime hands it to its
/// sources (OperatorContext::clock_driver) when it runs on such a clock, and to nobody otherwise.
class ClockDriver {
 public:
  virtual ~ClockDriver() = default;
  /// Moves the clock to `ns` if that is later (never backwards). Thread-safe.
  virtual void AdvanceTo(int64_t ns) = 0;
};

/// The clock of a replay: it reads the receive time of the record being replayed. The replay
/// source advances it (never backwards) before it emits each record and each Tick; the Runtime
/// then runs without its wall-clock ticker (RuntimeOptions::tick_ms = 0), since the replay
/// source puts the Ticks into the stream itself.
class ReplayClock final : public Clock, public ClockDriver {
 public:
  explicit ReplayClock(int64_t start_ns = 0) : now_(start_ns) {}
  int64_t NowNs() const override { return now_.load(std::memory_order_acquire); }
  void AdvanceTo(int64_t ns) override {
    int64_t cur = now_.load(std::memory_order_relaxed);
    while (ns > cur && !now_.compare_exchange_weak(cur, ns, std::memory_order_release)) {
    }
  }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace fleetflow
