// keyed_last_value on the test kit.
#include <gtest/gtest.h>

#include "fleetflow/testkit/harness.hpp"
#include "state_store.hpp"

namespace fleetflow::testkit {
namespace {

Body Batch(const std::string& sensor, std::vector<std::pair<int64_t, uint32_t>> ts_seq,
           std::function<void()> ack = {}) {
  SampleBatch b{"v1", sensor, {}, ack ? MakeAck(std::move(ack)) : nullptr};
  for (auto [ts, seq] : ts_seq) b.points.push_back(wire::Point{ts, seq, double(ts)});
  return b;
}

/// The event times of the samples passed on in `out`.
std::vector<int64_t> Passed(const std::vector<Message>& out) { return Times(Points(out)); }

TEST(KeyedLastValueTest, PassesNewSamplesOnAndAcknowledges) {
  OperatorHarness h("keyed_last_value", R"({"keep": 2})");
  int acks = 0;
  const auto out = h.Feed(Batch("speed", {{10, 1}, {20, 2}}, [&] { ++acks; }));
  EXPECT_EQ(Passed(out), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(acks, 1);
}

TEST(KeyedLastValueTest, ALateSampleNeverReplacesNewerOnes) {
  OperatorHarness h("keyed_last_value", R"({"keep": 2})");
  h.Feed(Batch("speed", {{10, 1}, {20, 2}}));
  // Older than both kept: passed on for the windows it belongs to, but kept out of the state.
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{5, 0}}))), (std::vector<int64_t>{5}));
  EXPECT_EQ(h.Counter("samples_stale"), 1u);
  EXPECT_TRUE(Passed(h.Feed(Batch("speed", {{10, 1}}))).empty());  // 10 is still kept: duplicate
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{15, 9}}))), (std::vector<int64_t>{15}));  // in between
  EXPECT_TRUE(Passed(h.Feed(Batch("speed", {{20, 2}}))).empty());  // 20 stays kept
  EXPECT_EQ(h.Counter("samples_duplicate"), 2u);
}

TEST(KeyedLastValueTest, DuplicatesAreDroppedAndKeysAreIndependent) {
  OperatorHarness h("keyed_last_value", R"({})");
  h.Feed(Batch("speed", {{10, 1}}));
  EXPECT_TRUE(Passed(h.Feed(Batch("speed", {{10, 1}}))).empty());
  EXPECT_EQ(h.Counter("samples_duplicate"), 1u);
  EXPECT_EQ(Passed(h.Feed(Batch("soc", {{10, 1}}))), (std::vector<int64_t>{10}));
  EXPECT_EQ(h.Gauge("state_keys"), 2.0);
}

TEST(KeyedLastValueTest, SensorFilterAndPassThrough) {
  OperatorHarness h("keyed_last_value", R"({"sensors": ["speed"]})");
  int acks = 0;
  EXPECT_TRUE(h.Feed(Batch("torque", {{10, 1}}, [&] { ++acks; })).empty());
  EXPECT_EQ(acks, 1);  // dropped input is acknowledged too: it will never be wanted
  EXPECT_EQ(h.Counter("samples_unknown_sensor"), 1u);
  EXPECT_EQ(Only<StatusEvent>(h.Feed(StatusEvent{"v1", false, 1})).size(), 1u);
  EXPECT_EQ(Only<Tick>(h.TickAt(5)).size(), 1u);
}

TEST(KeyedLastValueTest, AStatusChangeWithoutASampleInBetweenIsNotADuplicate) {
  OperatorHarness h("keyed_last_value", R"({})");
  h.Feed(Batch("speed", {{10, 1}}));
  const auto off = Only<StatusEvent>(h.Feed(StatusEvent{"v1", false, 99}));
  const auto on = Only<StatusEvent>(h.Feed(StatusEvent{"v1", true, 99}));
  ASSERT_EQ(off.size(), 1u);
  ASSERT_EQ(on.size(), 1u);
  EXPECT_EQ(off[0]->at_ns, 10);  // the time of the vehicle's newest sample
  EXPECT_EQ(on[0]->at_ns, 11);   // just after the off, which it follows
  h.Feed(Batch("speed", {{20, 2}}));
  EXPECT_EQ(Only<StatusEvent>(h.Feed(StatusEvent{"v1", false, 99}))[0]->at_ns, 20);
}

constexpr int64_t kMs = 1'000'000;

std::vector<int64_t> Ms(const std::vector<wire::Point>& points) {
  std::vector<int64_t> t;
  for (const auto& p : points) t.push_back(p.ts_ns / kMs);
  return t;
}

std::vector<wire::Point> PointsAtMs(std::vector<int64_t> ms) {
  std::vector<wire::Point> out;
  for (int64_t t : ms) out.push_back(wire::Point{t * kMs, static_cast<uint32_t>(t), 0});
  return out;
}

TEST(RetentionTest, ByCountAloneKeepsTheNewest) {
  auto p = PointsAtMs({1, 2, 3, 4, 5});
  Retention{2, 0}.Apply(p);
  EXPECT_EQ(Ms(p), (std::vector<int64_t>{4, 5}));
  auto few = PointsAtMs({1});
  Retention{2, 0}.Apply(few);
  EXPECT_EQ(Ms(few), (std::vector<int64_t>{1}));
}

TEST(RetentionTest, ByTimeKeepsTheHistoryAndTheSampleBeforeIt) {
  // History 100 ms before the newest (1000): 900..1000, and 850, the newest sample before 900.
  auto p = PointsAtMs({100, 700, 850, 900, 950, 1000});
  Retention{2, 100 * kMs}.Apply(p);
  EXPECT_EQ(Ms(p), (std::vector<int64_t>{850, 900, 950, 1000}));
  // A sparse key: nothing within the history but the newest; the count still applies.
  auto sparse = PointsAtMs({100, 200, 300, 2000});
  Retention{2, 100 * kMs}.Apply(sparse);
  EXPECT_EQ(Ms(sparse), (std::vector<int64_t>{300, 2000}));
  Retention{1, 100 * kMs}.Apply(sparse);
  EXPECT_EQ(Ms(sparse), (std::vector<int64_t>{300, 2000}));  // 300 is the sample before
}

TEST(KeyedLastValueTest, HistoryKeepsEverySampleOfTheLastHistoryMs) {
  // keep 2, history 100 ms: samples every 20 ms stay for 100 ms (and one more before).
  OperatorHarness h("keyed_last_value", R"({"keep": 2, "history_ms": 100})");
  for (int64_t t = 0; t <= 400; t += 20) h.Feed(Batch("speed", {{t * kMs, uint32_t(t)}}));
  // 280 (the one before 300..400) is still state: a duplicate of it is dropped...
  EXPECT_TRUE(Passed(h.Feed(Batch("speed", {{280 * kMs, 280}}))).empty());
  EXPECT_EQ(h.Counter("samples_duplicate"), 1u);
  // ...and a late sample within the history enters it (passed on, not stale).
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{310 * kMs, 999}}))), (std::vector<int64_t>{310 * kMs}));
  // 260 is older than what is kept: stale, though passed on for its windows.
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{260 * kMs, 260}}))), (std::vector<int64_t>{260 * kMs}));
  EXPECT_EQ(h.Counter("samples_stale"), 1u);
  // 290 is older than the history but newer than 280: it becomes the sample before it.
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{290 * kMs, 290}}))), (std::vector<int64_t>{290 * kMs}));
  EXPECT_EQ(h.Counter("samples_stale"), 1u);
  EXPECT_EQ(Passed(h.Feed(Batch("speed", {{280 * kMs, 280}}))), (std::vector<int64_t>{280 * kMs}));
  EXPECT_EQ(h.Counter("samples_stale"), 2u);  // 280 left the state when 290 came
}

}  // namespace
}  // namespace fleetflow::testkit
