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

/// Samples of `vehicle` in `partition` every 100 ms of [from_ms, to_ms] (value = ms).
Body PartitionSamples(const std::string& vehicle, uint32_t partition, int64_t from_ms,
                      int64_t to_ms, bool restored = false) {
  std::vector<std::pair<int64_t, double>> points;
  for (int64_t t = from_ms; t <= to_ms; t += 100) points.emplace_back(t * kMs, double(t));
  Body b = Samples(vehicle, "speed", points);
  std::get<SampleBatch>(b).partition = partition;
  std::get<SampleBatch>(b).restored = restored;
  return b;
}

PartitionEvent Assigned(uint32_t partition, std::optional<int64_t> emitted_until_ms = {}) {
  PartitionEvent e;
  e.partition = partition;
  if (emitted_until_ms) e.emitted_until_ns = kBase + *emitted_until_ms * kMs;
  return e;
}

/// Window times (ms after kBase) of `vehicle`'s rows in `out`.
std::vector<int64_t> RowTimes(const std::vector<Message>& out, const std::string& vehicle) {
  std::vector<int64_t> times;
  for (const auto& b : Only<WindowBatch>(out)) {
    for (const auto& row : b->rows) {
      if (row.vehicle == vehicle) times.push_back((b->window_ns - kBase) / kMs);
    }
  }
  return times;
}

class WindowJoinPartitionTest : public ::testing::Test {
 protected:
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 1, "sensors": ["speed", "soc"]})"};
};

TEST_F(WindowJoinPartitionTest, ARevokedPartitionRecordsItsLastWindowAndIsForgotten) {
  h.Feed(Assigned(1));
  h.Feed(Assigned(2));
  h.Feed(PartitionSamples("a", 1, 0, 3000));
  h.Feed(PartitionSamples("b", 2, 0, 3000));
  const auto out = h.TickAt(kBase + 2600 * kMs);  // windows 0..2 s close
  EXPECT_EQ(RowTimes(out, "a"), (std::vector<int64_t>{0, 1000, 2000}));
  PartitionEvent revoked;
  revoked.kind = PartitionEvent::Kind::kRevoked;
  revoked.partition = 1;
  revoked.handover = std::make_shared<Handover>();
  EXPECT_EQ(Only<PartitionEvent>(h.Feed(revoked)).size(), 1u);  // passed on
  ASSERT_TRUE(revoked.handover->last_window_ns.has_value());
  EXPECT_EQ(*revoked.handover->last_window_ns, kBase + 2000 * kMs);
  EXPECT_EQ(h.metrics.GaugeSum("tracked_vehicles"), 1);
  const auto later = h.TickAt(kBase + 3600 * kMs);
  EXPECT_TRUE(RowTimes(later, "a").empty());  // no longer ours
  EXPECT_EQ(RowTimes(later, "b"), (std::vector<int64_t>{3000}));
}

TEST_F(WindowJoinPartitionTest, ATakenOverPartitionGoesOnAfterTheRecordWithItsClosedWindows) {
  // A running worker (partition 1) takes partition 4 over, whose previous owner emitted up to
  // 1 s. The restored history (0.5..3.5 s) comes with the event; the windows 2 s and 3 s have
  // closed already and come out at the next Tick, once, and 1 s never.
  h.Feed(Assigned(1));
  h.Feed(PartitionSamples("b", 1, 0, 4000));
  EXPECT_EQ(RowTimes(h.TickAt(kBase + 3600 * kMs), "b"),
            (std::vector<int64_t>{0, 1000, 2000, 3000}));
  h.Feed(Assigned(4, /*emitted_until_ms=*/1000));
  h.Feed(PartitionSamples("a", 4, 500, 3500, /*restored=*/true));
  EXPECT_EQ(RowTimes(h.TickAt(kBase + 3700 * kMs), "a"), (std::vector<int64_t>{2000, 3000}));
  EXPECT_EQ(h.Counter("late_samples"), 0u);  // restored samples are history, not late
  h.Feed(PartitionSamples("a", 4, 3600, 4500));
  EXPECT_EQ(RowTimes(h.TickAt(kBase + 5000 * kMs), "a"), (std::vector<int64_t>{4000}));
}

TEST(WindowJoinPartitionProgressTest, APartitionReadBehindTheOthersKeepsItsOwnProgress) {
  // A backlog caught up partition by partition, while samples keep arriving (idle_ms not
  // reached): partition 1 is 20 s ahead of partition 2, whose samples are not late for it.
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 60000, "sensors": ["speed", "soc"]})"};
  h.clock.now_ns = kBase + 20100 * kMs;
  h.Feed(PartitionSamples("fast", 1, 0, 20000));
  h.Feed(PartitionSamples("slow", 2, 0, 2000));
  h.TickAt(kBase + 20100 * kMs);
  h.Feed(PartitionSamples("slow", 2, 2100, 5000));
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  const auto out = h.TickAt(kBase + 20200 * kMs);
  EXPECT_EQ(RowTimes(out, "slow"), (std::vector<int64_t>{2000, 3000, 4000}));
}

TEST_F(WindowJoinPartitionTest, WithoutARecordTheWindowsTheRestoredStateComputesExactlyComeAgain) {
  // The previous owner of partition 0 crashed. Its restored state: speed from 2.2 s, soc from
  // 3.4 s: the windows from 4 s on have all of their samples, 3 s would miss soc's.
  h.Feed(Assigned(0));
  h.Feed(PartitionSamples("a", 0, 2200, 5500, /*restored=*/true));
  Body soc = Samples("a", "soc", {{3400 * kMs, 50.0}, {5400 * kMs, 49.0}});
  std::get<SampleBatch>(soc).restored = true;
  h.Feed(std::move(soc));
  EXPECT_EQ(RowTimes(h.TickAt(kBase + 5600 * kMs), "a"), (std::vector<int64_t>{4000, 5000}));
}

TEST_F(WindowJoinPartitionTest, ALateSampleNeverChangesAnEmittedWindow) {
  h.Feed(Assigned(0));
  h.Feed(PartitionSamples("a", 0, 0, 1000));
  const auto first = h.TickAt(kBase + 1600 * kMs);
  EXPECT_EQ(RowTimes(first, "a"), (std::vector<int64_t>{0, 1000}));
  h.Feed(PartitionSamples("a", 0, 950, 950));  // belongs to window 1 s, which is closed
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  EXPECT_TRUE(RowTimes(h.TickAt(kBase + 1700 * kMs), "a").empty());
}

TEST(WindowJoinCorrectionTest, WithAHorizonALateSampleEmitsTheRecentWindowsItBelongsToAgain) {
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 1, "sensors": ["speed", "soc"],
                        "correction_horizon_ms": 5000})"};
  h.Feed(PartitionSamples("a", 0, 0, 1000));
  EXPECT_EQ(RowTimes(h.TickAt(kBase + 1600 * kMs), "a"), (std::vector<int64_t>{0, 1000}));
  // soc at 0.95 s arrives late: the after-sample of window 0 s and the before-sample of 1 s.
  h.Feed(Samples("a", "soc", {{950 * kMs, 80.0}}));
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  const auto out = h.TickAt(kBase + 1700 * kMs);
  EXPECT_EQ(RowTimes(out, "a"), (std::vector<int64_t>{0, 1000}));
  const auto again = BatchAt(out, 1000);
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->rows[0].slots[1].before.has_value());
  EXPECT_EQ(again->rows[0].slots[1].before->value, 80.0);
  EXPECT_EQ(h.Counter("rows_corrected"), 2u);
}

TEST(WindowJoinConfigTest, RejectsDuplicateSensors) {
  // Validation rejects them before the operator is built (the harness validates first).
  EXPECT_THROW(OperatorHarness("window_join", R"({"sensors": ["speed", "speed"]})"),
               std::invalid_argument);
}

}  // namespace
}  // namespace fleetflow::testing
