// window_aggregate on the test kit: the worked examples of docs/semantics.md ("Statistics per
// window"), and statistics compared with an independent computation from the samples.
#include "window_aggregate.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'700'000'040 * kS;  // a multiple of 60 s

wire::Point At(int64_t ms, uint32_t seq, double value) {
  wire::Point p;
  p.ts_ns = kBase + ms * kMs;
  p.seq = seq;
  p.value = value;
  return p;
}

wire::Point Position(int64_t ms, uint32_t seq, double lat, double lon) {
  wire::Point p = At(ms, seq, 0.0);
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  return p;
}

SampleBatch Batch(const std::string& vehicle, const std::string& sensor,
                  std::vector<wire::Point> points) {
  SampleBatch b;
  b.vehicle = vehicle;
  b.sensor = sensor;
  b.points = std::move(points);
  return b;
}

/// The statistics of `sensor` of `vehicle` in the batches of `out`, by window start (ms after
/// kBase).
std::map<int64_t, SensorStats> StatsOf(const std::vector<Message>& out, const std::string& vehicle,
                                       const std::string& sensor) {
  std::map<int64_t, SensorStats> got;
  for (const auto& b : Only<StatsBatch>(out)) {
    const auto& names = *b->sensors;
    const size_t i =
        static_cast<size_t>(std::find(names.begin(), names.end(), sensor) - names.begin());
    for (const StatsRow& row : b->rows) {
      if (row.vehicle != vehicle || i >= row.sensors.size()) continue;
      EXPECT_EQ(got.count((b->start_ns - kBase) / kMs), 0u) << "a window emitted twice";
      got[(b->start_ns - kBase) / kMs] = row.sensors[i];
    }
  }
  return got;
}

// 10 s windows, lateness 500 ms, idle 1 ms (windows close on the clock, as in a live run where
// samples keep coming), max gap 2 s.
constexpr char kConfig[] = R"({"every_ms": 10000, "allowed_lateness_ms": 500, "idle_ms": 1,
    "max_gap_ms": 2000, "sensors": ["speed", "gps"]})";

class WindowAggregateTest : public ::testing::Test {
 protected:
  OperatorHarness h{"window_aggregate", kConfig};
  void SetUp() override { h.TickAt(kBase); }
};

TEST_F(WindowAggregateTest, Example1_CountMinMaxMeanFirstLastOfTheWindow) {
  h.Feed(Batch("v1", "speed", {At(0, 1, 10.0), At(4000, 2, 30.0), At(9999, 3, 20.0)}));
  h.Feed(Batch("v1", "speed", {At(10'000, 4, 99.0)}));  // the next window: [10 s, 20 s)
  EXPECT_TRUE(Only<StatsBatch>(h.TickAt(kBase + 10'499 * kMs)).empty());  // lateness not over
  const auto out = h.TickAt(kBase + 10'500 * kMs);
  const auto b = OnlyOne<StatsBatch>(out);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->start_ns, kBase);
  EXPECT_EQ(b->length_ns, 10 * kS);
  ASSERT_EQ(b->rows.size(), 1u);
  ASSERT_EQ(b->rows[0].sensors.size(), 2u);
  const SensorStats& s = b->rows[0].sensors[0];
  EXPECT_EQ(s.count, 3u);
  EXPECT_EQ(s.min, 10.0);
  EXPECT_EQ(s.max, 30.0);
  EXPECT_DOUBLE_EQ(s.sum / static_cast<double>(s.count), 20.0);
  EXPECT_EQ(s.first, At(0, 1, 10.0));
  EXPECT_EQ(s.last, At(9999, 3, 20.0));
  EXPECT_EQ(b->rows[0].sensors[1].count, 0u);  // no gps sample: NULL columns
  EXPECT_EQ(h.Counter("rows_emitted"), 1u);
}

TEST_F(WindowAggregateTest, Example2_ASampleDeliveredAgainCountsOnce) {
  h.Feed(Batch("v1", "speed", {At(1000, 7, 1.0), At(2000, 8, 2.0)}));
  h.Feed(Batch("v1", "speed", {At(2000, 8, 2.0), At(1000, 7, 1.0), At(3000, 9, 3.0)}));
  const auto got = StatsOf(h.TickAt(kBase + 10'500 * kMs), "v1", "speed");
  ASSERT_EQ(got.count(0), 1u);
  EXPECT_EQ(got.at(0).count, 3u);
  EXPECT_EQ(got.at(0).sum, 6.0);
  EXPECT_EQ(h.Counter("samples_duplicate"), 2u);
}

TEST_F(WindowAggregateTest, Example3_ALateSampleIsInNoWindowAndCounted) {
  h.Feed(Batch("v1", "speed", {At(5000, 1, 5.0)}));
  h.TickAt(kBase + 10'500 * kMs);  // [0, 10 s) emitted
  h.Feed(Batch("v1", "speed", {At(9000, 2, 9.0), At(11'000, 3, 11.0)}));
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  const auto got = StatsOf(h.TickAt(kBase + 20'500 * kMs), "v1", "speed");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.at(10'000).count, 1u);
  EXPECT_EQ(got.at(10'000).first.value, 11.0);
}

TEST_F(WindowAggregateTest, Example4_PositionsBoundingBoxAndDistanceAcrossWindows) {
  // Northwards along a meridian, 0.001° (about 111 m) per second, over two windows.
  std::vector<wire::Point> path;
  for (uint32_t i = 0; i < 20; ++i) path.push_back(Position(i * 1000, i, 48.0 + 0.001 * i, 11.0));
  h.Feed(Batch("v1", "gps", path));
  const auto got = StatsOf(h.TickAt(kBase + 20'500 * kMs), "v1", "gps");
  ASSERT_EQ(got.size(), 2u);
  const double hop = DistanceMetres(48.0, 11.0, 48.001, 11.0);
  EXPECT_NEAR(hop, 111.2, 0.1);
  EXPECT_EQ(got.at(0).positions, 10u);
  EXPECT_DOUBLE_EQ(got.at(0).min_lat, 48.0);
  EXPECT_DOUBLE_EQ(got.at(0).max_lat, 48.009);
  EXPECT_DOUBLE_EQ(got.at(0).min_lon, 11.0);
  EXPECT_DOUBLE_EQ(got.at(0).max_lon, 11.0);
  EXPECT_NEAR(got.at(0).distance_m, 9 * hop, 1e-6);
  // The second window includes the hop from the first window's last sample: the distances of
  // consecutive windows add up to the whole trip.
  EXPECT_NEAR(got.at(10'000).distance_m, 10 * hop, 1e-6);
}

TEST_F(WindowAggregateTest, Example5_AVehicleBackAfterLongerThanMaxGapStartsAfresh) {
  h.Feed(Batch("v1", "gps", {Position(9000, 1, 48.0, 11.0)}));
  h.Feed(Batch("v1", "gps", {Position(12'000, 2, 48.1, 11.0)}));  // 3 s later: beyond 2 s
  const auto got = StatsOf(h.TickAt(kBase + 20'500 * kMs), "v1", "gps");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.at(10'000).distance_m, 0.0);
}

TEST_F(WindowAggregateTest, SamplesOfOtherSensorsAreCountedAndLeftOut) {
  h.Feed(Batch("v1", "soc", {At(1000, 1, 80.0)}));
  EXPECT_EQ(h.Counter("samples_ignored"), 1u);
  EXPECT_TRUE(Only<StatsBatch>(h.TickAt(kBase + 10'500 * kMs)).empty());
}

TEST(WindowAggregateEventTime, ABacklogClosesItsWindowsOnEventTimeNotOnTheClock) {
  // idle 2 s: while samples flow, windows close on their event time, whatever the clock says.
  OperatorHarness h("window_aggregate", R"({"every_ms": 10000, "allowed_lateness_ms": 500,
      "idle_ms": 2000, "sensors": ["speed"]})");
  const int64_t now = kBase + 3600 * kS;  // an hour behind
  h.TickAt(now);
  std::vector<Message> out;  // windows close as the samples that move progress past them enter
  for (uint32_t i = 0; i < 30; ++i) {
    SampleBatch b = Batch("v1", "speed", {At(i * 1000, i, static_cast<double>(i))});
    b.received_ns = now;
    b.stream_ns = kBase + i * kS;  // stored as it was sent
    for (Message& m : h.Feed(std::move(b))) out.push_back(std::move(m));
  }
  for (Message& m : h.TickAt(now)) out.push_back(std::move(m));
  // The newest sample is at 29 s: [0, 10 s) and [10 s, 20 s) are closed, [20 s, 30 s) is not.
  const auto got = StatsOf(out, "v1", "speed");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.at(0).count, 10u);
  EXPECT_EQ(got.at(10'000).count, 10u);
}

// A partition given up records the last window it emitted under the node's id; its next owner
// goes on after it, as window_join's do (docs/scaling.md, "Hand-over of a partition").
TEST_F(WindowAggregateTest, AHandOverRecordsTheLastWindowAndTheNextOwnerGoesOnAfterIt) {
  SampleBatch first = Batch("v1", "speed", {At(1000, 1, 1.0), At(12'000, 2, 2.0)});
  first.partition = 3;
  h.Feed(Assigned(3));
  h.Feed(std::move(first));
  h.TickAt(kBase + 10'500 * kMs);  // [0, 10 s) emitted, [10 s, 20 s) open
  PartitionEvent revoked = Revoked(3);
  const auto out = h.Feed(revoked);
  EXPECT_TRUE(Only<StatsBatch>(out).empty()) << "its event time has not closed [10 s, 20 s)";
  EXPECT_EQ(revoked.handover->windows(), (EmittedWindows{{"op", kBase + 10 * kS}}));

  // The next owner restores nothing (its state is not partition state yet) and reads the
  // samples again: [0, 10 s) was emitted, [10 s, 20 s) is its own.
  OperatorHarness next("window_aggregate", kConfig);
  next.TickAt(kBase + 11 * kS);
  next.Feed(Assigned(3, EmittedWindows{{"op", kBase + 10 * kS}, {"other", kBase + 90 * kS}}));
  SampleBatch again = Batch("v1", "speed", {At(1000, 1, 1.0), At(12'000, 2, 2.0)});
  again.partition = 3;
  next.Feed(std::move(again));
  const auto got = StatsOf(next.TickAt(kBase + 20'500 * kMs), "v1", "speed");
  EXPECT_EQ(got.count(0), 0u) << "emitted by the previous owner";
  ASSERT_EQ(got.count(10'000), 1u);
  EXPECT_EQ(got.at(10'000).count, 1u);
}

// Behind a partitioned source each partition reports every window it closes, with the partition
// (a stage across workers waits for each partition's windows): a window without a row as an empty
// batch, and a partition without any sample closes its windows on the clock from idle_ms after it
// was assigned. Unpartitioned, a window without a row gives nothing, as before.
TEST_F(WindowAggregateTest, APartitionReportsEveryWindowItClosesOneWithoutAVehicleToo) {
  h.Feed(Assigned(3));
  h.Feed(Assigned(5));  // never gets a sample
  SampleBatch samples = Batch("v1", "speed", {At(1000, 1, 1.0), At(12'000, 2, 2.0)});
  samples.partition = 3;
  h.Feed(std::move(samples));
  std::vector<std::string> got;  // partition@window start (s): rows
  for (int64_t t : {10'500, 20'500, 30'500}) {
    for (const auto& b : Only<StatsBatch>(h.TickAt(kBase + t * kMs))) {
      ASSERT_TRUE(b->partition.has_value());
      got.push_back(std::to_string(*b->partition) + "@" +
                    std::to_string((b->start_ns - kBase) / kS) + ": " +
                    std::to_string(b->rows.size()));
    }
  }
  std::sort(got.begin(), got.end());
  // Partition 3's windows start at the one its first sample arrived in (the clock at kBase, the
  // end of [-10 s, 0)), as ever: that one is reported too.
  EXPECT_EQ(got, (std::vector<std::string>{"3@-10: 0", "3@0: 1", "3@10: 1", "3@20: 0", "5@0: 0",
                                           "5@10: 0", "5@20: 0"}));

  OperatorHarness unpartitioned("window_aggregate", kConfig);
  unpartitioned.TickAt(kBase);
  unpartitioned.Feed(Batch("v1", "speed", {At(1000, 1, 1.0)}));
  std::vector<std::shared_ptr<const StatsBatch>> batches;
  for (int64_t t : {10'500, 20'500, 30'500}) {
    for (const auto& b : Only<StatsBatch>(unpartitioned.TickAt(kBase + t * kMs))) {
      batches.push_back(b);
    }
  }
  ASSERT_EQ(batches.size(), 1u) << "a window without a row";
  EXPECT_FALSE(batches[0]->partition.has_value());
}

// A partition taken over with its windows started (the previous owner's record) reports only
// windows after them; one held back (a backlog on its way) does not start on the clock.
TEST_F(WindowAggregateTest, APartitionWithoutSamplesHeldBackOrHandedOverStartsOnlyWhenDue) {
  h.Feed(Assigned(4, EmittedWindows{{"op", kBase + 20 * kS}}));
  Tick held{kBase + 10'500 * kMs};
  held.held_back = true;
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(held)).empty()) << "started while held back";
  std::vector<int64_t> starts;
  for (int64_t t : {20'500, 30'500, 40'500}) {
    for (const auto& b : Only<StatsBatch>(h.TickAt(kBase + t * kMs))) {
      starts.push_back((b->start_ns - kBase) / kS);
      EXPECT_TRUE(b->rows.empty());
    }
  }
  EXPECT_EQ(starts, (std::vector<int64_t>{20, 30}))
      << "windows up to 20 s were the previous owner's";
}

// A partition started on the clock takes the clock's progress as its event time: a tick while
// input is held back, or its revocation, closes no window beyond it (with no event time at all
// the arithmetic ran past the end of int64 and closed windows without end).
TEST_F(WindowAggregateTest, APartitionStartedOnTheClockGoesNoFurtherThanTheClock) {
  h.Feed(Assigned(6));
  const auto started = Only<StatsBatch>(h.TickAt(kBase + 10'500 * kMs));
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]->start_ns, kBase);  // [0, 10 s): closed at 10.5 s
  Tick held{kBase + 30'500 * kMs};
  held.held_back = true;
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(held)).empty());
  PartitionEvent revoked = Revoked(6);
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(revoked)).empty());
  EXPECT_EQ(revoked.handover->windows(), (EmittedWindows{{"op", kBase + 10 * kS}}));
}

/// The independent computation: from the distinct samples (by time and sequence number) that
/// arrived before their window closed, sorted by time.
struct Expected {
  uint64_t count = 0;
  double min = 0, max = 0, sum = 0, distance = 0;
  wire::Point first, last;
};

TEST(WindowAggregateProperty,
     OutOfOrderDuplicatedAndGappySamplesGiveTheStatisticsOfTheDistinctOnes) {
  std::mt19937 rng(20261127);
  OperatorHarness h("window_aggregate", R"({"every_ms": 10000, "allowed_lateness_ms": 30000,
      "idle_ms": 1, "max_gap_ms": 5000, "sensors": ["gps"]})");
  h.TickAt(kBase);
  // A drive of 60 s at 10 Hz; some samples never sent (gaps), some sent twice, batches of up to
  // 8 shuffled among the next 3 batches.
  std::vector<wire::Point> all;
  double lat = 48.137, lon = 11.575;
  std::uniform_real_distribution<double> step(-0.0002, 0.0003);
  std::bernoulli_distribution dropped(0.05);
  for (uint32_t i = 0; i < 600; ++i) {
    lat += step(rng);
    lon += step(rng);
    if (dropped(rng)) continue;
    wire::Point p = Position(i * 100, i, lat, lon);
    p.value = static_cast<double>(i % 37);
    all.push_back(p);
  }
  std::vector<wire::Point> sent = all;
  std::bernoulli_distribution twice(0.1);
  for (const auto& p : all) {
    if (twice(rng)) sent.push_back(p);
  }
  std::shuffle(sent.begin(), sent.end(), rng);
  for (size_t i = 0; i < sent.size(); i += 8) {
    std::vector<wire::Point> chunk(
        sent.begin() + static_cast<std::ptrdiff_t>(i),
        sent.begin() + static_cast<std::ptrdiff_t>(std::min(sent.size(), i + 8)));
    h.Feed(Batch("v1", "gps", chunk));
  }
  const auto got = StatsOf(h.TickAt(kBase + 100 * kS), "v1", "gps");

  std::map<int64_t, Expected> want;
  std::optional<wire::Point> before;
  for (const auto& p : all) {  // all is sorted by time and distinct
    Expected& e = want[(p.ts_ns - kBase) / kMs / 10'000 * 10'000];
    if (e.count == 0) {
      e.first = p;
      e.min = e.max = p.value;
    }
    e.min = std::min(e.min, p.value);
    e.max = std::max(e.max, p.value);
    e.sum += p.value;
    e.last = p;
    ++e.count;
    if (before && p.ts_ns - before->ts_ns <= 5 * kS) {
      e.distance += DistanceMetres(before->lat, before->lon, p.lat, p.lon);
    }
    before = p;
  }
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [start, e] : want) {
    SCOPED_TRACE(start);
    ASSERT_EQ(got.count(start), 1u);
    const SensorStats& s = got.at(start);
    EXPECT_EQ(s.count, e.count);
    EXPECT_EQ(s.min, e.min);
    EXPECT_EQ(s.max, e.max);
    EXPECT_DOUBLE_EQ(s.sum, e.sum);
    EXPECT_EQ(s.first, e.first);
    EXPECT_EQ(s.last, e.last);
    EXPECT_NEAR(s.distance_m, e.distance, 1e-6 * e.distance + 1e-9);
  }
  EXPECT_EQ(h.Counter("samples_duplicate"), sent.size() - all.size());
}

}  // namespace
}  // namespace fleetflow::testkit
