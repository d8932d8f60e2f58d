// window_join on the in-memory harness: the worked examples of docs/semantics.md.
#include "harness.hpp"

namespace fleetflow::testing {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'700'000'000 * kS;  // a window boundary

Body Samples(const std::string& vehicle, const std::string& sensor,
             std::vector<std::pair<int64_t, double>> points) {
  SampleBatch b{vehicle, sensor, {}, {}};
  uint32_t seq = 0;
  for (auto [ts, v] : points) b.points.push_back(wire::Point{kBase + ts, seq++, v});
  return b;
}

/// The batch of window time kBase + t_ms in `out` (null if none), kept alive on its own.
std::shared_ptr<const WindowBatch> BatchAt(const std::vector<Message>& out, int64_t t_ms) {
  for (const auto& m : out) {
    const auto* b = std::get_if<WindowBatch>(m.get());
    if (b != nullptr && b->window_ns == kBase + t_ms * kMs) {
      return std::shared_ptr<const WindowBatch>(m, b);
    }
  }
  return nullptr;
}

/// The one WindowBatch of `out` (null if not exactly one), kept alive on its own.
std::shared_ptr<const WindowBatch> OnlyBatch(const std::vector<Message>& out) {
  std::shared_ptr<const WindowBatch> found;
  int n = 0;
  for (const auto& m : out) {
    if (const auto* b = std::get_if<WindowBatch>(m.get())) {
      found = std::shared_ptr<const WindowBatch>(m, b);
      ++n;
    }
  }
  return n == 1 ? found : nullptr;
}

class WindowJoinTest : public ::testing::Test {
 protected:
  // every 1 s, lateness 500 ms, max gap 2 s, sensors speed and soc. idle_ms 1: windows close on
  // the clock, as in a live run where samples keep coming (event-time progress is tested below).
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 1, "sensors": ["speed", "soc"]})"};
  void SetUp() override { h.TickAt(kBase + 600 * kMs); }  // window T=1s opens
};

TEST_F(WindowJoinTest, Example1_BracketingSamplesOfTheWindowTime) {
  h.Feed(Samples("v1", "speed", {{800 * kMs, 10.0}, {1300 * kMs, 20.0}, {1400 * kMs, 30.0}}));
  EXPECT_TRUE(Only<WindowBatch>(h.TickAt(kBase + 1499 * kMs)).empty());  // lateness not over
  const auto b = OnlyBatch(h.TickAt(kBase + 1500 * kMs));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->window_ns, kBase + kS);
  ASSERT_EQ(b->rows.size(), 1u);
  const WindowRow& row = b->rows[0];
  EXPECT_EQ(row.vehicle, "v1");
  ASSERT_EQ(row.slots.size(), 2u);
  ASSERT_TRUE(row.slots[0].before && row.slots[0].after);
  EXPECT_EQ(row.slots[0].before->ts_ns, kBase + 800 * kMs);
  EXPECT_EQ(row.slots[0].after->ts_ns, kBase + 1300 * kMs);  // the oldest after T, not 1.4 s
  EXPECT_FALSE(row.slots[1].before || row.slots[1].after);   // soc: nothing, NULL in the row
}

TEST_F(WindowJoinTest, Example2_SampleExactlyAtTheWindowTimeIsBefore) {
  h.Feed(Samples("v1", "speed", {{1000 * kMs, 7.0}}));
  const auto b = OnlyBatch(h.TickAt(kBase + 1500 * kMs));
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->rows[0].slots[0].before);
  EXPECT_EQ(b->rows[0].slots[0].before->value, 7.0);
  EXPECT_FALSE(b->rows[0].slots[0].after);
}

TEST_F(WindowJoinTest, Example3_SamplesBeyondMaxGapAreNotUsedAndGiveNoRow) {
  h.Feed(Samples("v1", "speed", {{-1100 * kMs, 5.0}}));  // 2.1 s before T=1s
  h.Feed(Samples("v2", "speed", {{-1000 * kMs, 6.0}}));  // exactly 2 s before: still used
  const auto b = BatchAt(h.TickAt(kBase + 1500 * kMs), 1000);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->rows.size(), 1u);
  EXPECT_EQ(b->rows[0].vehicle, "v2");
}

TEST_F(WindowJoinTest, Example3b_OnlyASampleAfterTheWindowTimeGivesNoRow) {
  h.Feed(Samples("v1", "speed", {{1010 * kMs, 5.0}}));
  EXPECT_TRUE(Only<WindowBatch>(h.TickAt(kBase + 1500 * kMs)).empty());
  const auto b = OnlyBatch(h.TickAt(kBase + 2500 * kMs));  // T=2s: before = 1.01 s
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->rows[0].slots[0].before->value, 5.0);
}

TEST_F(WindowJoinTest, Example4_LateSampleMissesItsWindowAndIsCounted) {
  h.Feed(Samples("v1", "speed", {{500 * kMs, 1.0}}));
  h.TickAt(kBase + 1500 * kMs);                        // T=1s emitted with before = 0.5 s
  h.Feed(Samples("v1", "speed", {{950 * kMs, 2.0}}));  // arrives too late for T=1s
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  const auto b = OnlyBatch(h.TickAt(kBase + 2500 * kMs));
  ASSERT_NE(b, nullptr);  // but it is still the newest sample before T=2s
  EXPECT_EQ(b->rows[0].slots[0].before->value, 2.0);
}

TEST_F(WindowJoinTest, Example5_OffEndsTheRowsAfterTheLastSample) {
  h.Feed(Samples("v1", "speed", {{900 * kMs, 1.0}, {2200 * kMs, 2.0}}));
  h.Feed(StatusEvent{"v1", false, kBase + 2300 * kMs});
  std::vector<int64_t> windows;
  for (int64_t t = 1500; t <= 5500; t += 1000) {
    for (const auto& b : Only<WindowBatch>(h.TickAt(kBase + t * kMs))) {
      windows.push_back((b->window_ns - kBase) / kMs);
    }
  }
  EXPECT_EQ(windows, (std::vector<int64_t>{1000, 2000}));  // not 3000, though within max gap
  // Samples after the off time mean the vehicle runs again.
  h.Feed(Samples("v1", "speed", {{5800 * kMs, 3.0}}));
  const auto b = OnlyBatch(h.TickAt(kBase + 6500 * kMs));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->window_ns, kBase + 6 * kS);
}

TEST_F(WindowJoinTest, Example5b_ATailSampleArrivingAfterOffMovesTheOffTime) {
  h.Feed(Samples("v1", "speed", {{900 * kMs, 1.0}, {2200 * kMs, 2.0}}));
  h.Feed(StatusEvent{"v1", false, kBase + 2200 * kMs});
  h.Feed(Samples("v1", "soc", {{3100 * kMs, 50.0}}));  // sent before off, arrived after it
  std::vector<int64_t> windows;
  for (int64_t t = 1500; t <= 5500; t += 1000) {
    for (const auto& b : Only<WindowBatch>(h.TickAt(kBase + t * kMs))) {
      windows.push_back((b->window_ns - kBase) / kMs);
    }
  }
  EXPECT_EQ(windows, (std::vector<int64_t>{1000, 2000, 3000}));
}

TEST_F(WindowJoinTest, DrainEmitsWindowsUpToNowWithoutWaitingForLateness) {
  h.Feed(Samples("v1", "speed", {{900 * kMs, 1.0}, {1900 * kMs, 2.0}}));
  const auto out = h.TickAt(kBase + 2100 * kMs, /*drain=*/true);
  const auto batches = Only<WindowBatch>(out);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1]->window_ns, kBase + 2 * kS);
  ASSERT_FALSE(Only<Tick>(out).empty());  // the tick is forwarded after the windows
  EXPECT_TRUE(std::holds_alternative<Tick>(*out.back()));
}

TEST_F(WindowJoinTest, SensorsOutsideTheJoinAreIgnoredAndStateIsForgotten) {
  h.Feed(Samples("v1", "torque", {{900 * kMs, 1.0}}));
  EXPECT_EQ(h.Counter("samples_ignored"), 1u);
  h.Feed(Samples("v1", "speed", {{900 * kMs, 1.0}}));
  h.TickAt(kBase + 1500 * kMs);
  EXPECT_EQ(h.metrics.GaugeSum("tracked_vehicles"), 1.0);
  h.TickAt(kBase + 4500 * kMs);  // 0.9 s is more than max gap before T=4s
  EXPECT_EQ(h.metrics.GaugeSum("tracked_vehicles"), 0.0);
}

TEST(WindowJoinEventTimeTest, ABacklogIsWindowedAsItWasLive) {
  // A worker catching up on a stream: samples of the last 10 s arrive at once, long after their
  // event time. Windows close as event time progresses, none of the samples is late.
  OperatorHarness h("window_join", R"({"sensors": ["speed"]})");
  h.clock.now_ns = kBase + 100 * kS;
  std::vector<int64_t> windows;
  for (int64_t ms = 0; ms <= 10'000; ms += 100) {
    h.Feed(Samples("v1", "speed", {{ms * kMs, double(ms)}}));
    if (ms % 500 == 0) {
      for (const auto& b : Only<WindowBatch>(h.Feed(Tick{h.clock.now_ns, false}))) {
        windows.push_back((b->window_ns - kBase) / kMs);
      }
    }
  }
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  std::vector<int64_t> expected;
  for (int64_t t = 0; t <= 9000; t += 1000) expected.push_back(t);
  EXPECT_EQ(windows, expected);
  // Nothing more arrives: after idle_ms the clock closes the rest.
  h.clock.now_ns += 3 * kS;
  const auto rest = Only<WindowBatch>(h.Feed(Tick{h.clock.now_ns, false}));
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front()->window_ns, kBase + 10 * kS);
}

TEST(WindowJoinEventTimeTest, TicksWhileInputIsHeldBackDoNotCloseWindowsOnTheClock) {
  // A source waits for room in the graph (the sink is blocked): Ticks keep coming but carry
  // held_back, so however long it lasts the clock does not close windows the held-back samples
  // belong to; once they enter, they are windowed as live, none late.
  OperatorHarness h("window_join", R"({"sensors": ["speed"], "idle_ms": 2000})");
  h.clock.now_ns = kBase + 2 * kS;
  h.Feed(Samples("v1", "speed", {{1000 * kMs, 1.0}}));
  for (int i = 1; i <= 30; ++i) {
    EXPECT_TRUE(Only<WindowBatch>(h.Feed(Tick{kBase + (2 + i) * kS, false, true})).empty());
  }
  h.Feed(Samples("v1", "speed", {{1900 * kMs, 2.0}, {3000 * kMs, 3.0}}));
  const auto b = Only<WindowBatch>(h.Feed(Tick{kBase + 33 * kS, false, true}));
  ASSERT_EQ(b.size(), 2u);  // windows 1 s and 2 s: 3 s needs the lateness to pass
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  // A Tick without held_back after idle_ms: the clock closes the rest.
  EXPECT_FALSE(Only<WindowBatch>(h.Feed(Tick{kBase + 36 * kS, false, false})).empty());
}

TEST(WindowJoinConfigTest, RejectsDuplicateSensors) {
  EXPECT_THROW(OperatorHarness("window_join", R"({"sensors": ["speed", "speed"]})"),
               std::runtime_error);
}

}  // namespace
}  // namespace fleetflow::testing
