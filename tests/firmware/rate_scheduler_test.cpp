#include "rate_scheduler.hpp"

#include <gtest/gtest.h>

#include <map>

namespace fleetflow::firmware {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000 * kMs;

// Drives the scheduler as a sampler would, waking at next_due(), and counts ticks per sensor.
std::map<int, int> Drive(RateScheduler& s, int64_t from, int64_t to) {
  std::map<int, int> ticks;
  std::vector<int> due;
  for (int64_t now = s.next_due(); now < to; now = s.next_due()) {
    due.clear();
    s.PopDue(std::max(now, from), due);
    for (int i : due) ++ticks[i];
  }
  return ticks;
}

TEST(RateScheduler, TicksEachSensorAtItsOwnRate) {
  RateScheduler s({10, 30, 5, 20}, 0);
  const auto ticks = Drive(s, 0, 10 * kSec - kMs);  // 30 Hz tick 300 falls at 9.9999999 s
  EXPECT_EQ(ticks.at(0), 100);
  EXPECT_EQ(ticks.at(1), 300);
  EXPECT_EQ(ticks.at(2), 50);
  EXPECT_EQ(ticks.at(3), 200);
  EXPECT_EQ(s.skipped(), 0u);
}

TEST(RateScheduler, LateWakeUpsDoNotDrift) {
  RateScheduler s({30}, 0);
  std::vector<int> due;
  int ticks = 0;
  // Wake 3 ms after each tick: still 30 ticks per second, no skips.
  for (int64_t now = 3 * kMs; now < 10 * kSec; now = s.next_due() + 3 * kMs) {
    due.clear();
    s.PopDue(now, due);
    ticks += static_cast<int>(due.size());
  }
  EXPECT_EQ(ticks, 300);
  EXPECT_EQ(s.skipped(), 0u);
}

TEST(RateScheduler, AStallSkipsMissedTicksInsteadOfBursting) {
  RateScheduler s({10}, 0);
  std::vector<int> due;
  s.PopDue(0, due);
  due.clear();
  s.PopDue(1050 * kMs, due);  // woke 1.05 s later: one sample, 9 ticks skipped
  EXPECT_EQ(due, std::vector<int>{0});
  EXPECT_EQ(s.skipped(), 9u);
  EXPECT_EQ(s.next_due(), 1100 * kMs);
}

TEST(RateScheduler, SetRateTakesEffectFromNow) {
  RateScheduler s({1, 10}, 0);
  std::vector<int> due;
  s.PopDue(0, due);
  s.SetRate(0, 50, 100 * kMs);
  EXPECT_EQ(s.hz(0), 50);
  EXPECT_EQ(s.period_ns(0), 20 * kMs);
  EXPECT_EQ(s.next_due(), 100 * kMs);  // sensor 1's tick; sensor 0 is due at 120 ms
  const auto ticks = Drive(s, 100 * kMs, 1110 * kMs);
  EXPECT_EQ(ticks.at(0), 50);  // 120, 140, ..., 1100 ms
  EXPECT_EQ(ticks.at(1), 11);  // 100, 200, ..., 1100 ms
}

TEST(RateScheduler, RestartMakesEverySensorDueNow) {
  RateScheduler s({5, 7}, 0);
  std::vector<int> due;
  s.PopDue(0, due);
  s.Restart(42 * kSec);
  EXPECT_EQ(s.next_due(), 42 * kSec);
  due.clear();
  s.PopDue(42 * kSec, due);
  EXPECT_EQ(due, (std::vector<int>{0, 1}));
  EXPECT_EQ(s.skipped(), 0u);
}

TEST(RateScheduler, RejectsNonPositiveRates) {
  EXPECT_THROW(RateScheduler({0}, 0), std::invalid_argument);
  EXPECT_THROW(RateScheduler({-1}, 0), std::invalid_argument);
}

}  // namespace
}  // namespace fleetflow::firmware
