// keyed_last_value on the in-memory harness.
#include "harness.hpp"

namespace fleetflow::testing {
namespace {

Body Batch(const std::string& sensor, std::vector<std::pair<int64_t, uint32_t>> ts_seq,
           std::function<void()> ack = {}) {
  SampleBatch b{"v1", sensor, {}, std::move(ack)};
  for (auto [ts, seq] : ts_seq) b.points.push_back(wire::Point{ts, seq, double(ts)});
  return b;
}

std::vector<int64_t> Times(const std::vector<Message>& out) {
  std::vector<int64_t> t;
  for (const auto& b : Only<SampleBatch>(out)) {
    for (const auto& p : b->points) t.push_back(p.ts_ns);
  }
  return t;
}

TEST(KeyedLastValueTest, PassesNewSamplesOnAndAcknowledges) {
  OperatorHarness h("keyed_last_value", R"({"keep": 2})");
  int acks = 0;
  const auto out = h.Feed(Batch("speed", {{10, 1}, {20, 2}}, [&] { ++acks; }));
  EXPECT_EQ(Times(out), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(acks, 1);
  EXPECT_FALSE(Only<SampleBatch>(out)[0]->ack);  // acknowledged here, not again downstream
}

TEST(KeyedLastValueTest, ALateSampleNeverReplacesNewerOnes) {
  OperatorHarness h("keyed_last_value", R"({"keep": 2})");
  h.Feed(Batch("speed", {{10, 1}, {20, 2}}));
  // Older than both kept: passed on for the windows it belongs to, but kept out of the state.
  EXPECT_EQ(Times(h.Feed(Batch("speed", {{5, 0}}))), (std::vector<int64_t>{5}));
  EXPECT_EQ(h.Counter("samples_stale"), 1u);
  EXPECT_TRUE(Times(h.Feed(Batch("speed", {{10, 1}}))).empty());  // 10 is still kept: duplicate
  EXPECT_EQ(Times(h.Feed(Batch("speed", {{15, 9}}))), (std::vector<int64_t>{15}));  // in between
  EXPECT_TRUE(Times(h.Feed(Batch("speed", {{20, 2}}))).empty());  // 20 stays kept
  EXPECT_EQ(h.Counter("samples_duplicate"), 2u);
}

TEST(KeyedLastValueTest, DuplicatesAreDroppedAndKeysAreIndependent) {
  OperatorHarness h("keyed_last_value", R"({})");
  h.Feed(Batch("speed", {{10, 1}}));
  EXPECT_TRUE(Times(h.Feed(Batch("speed", {{10, 1}}))).empty());
  EXPECT_EQ(h.Counter("samples_duplicate"), 1u);
  EXPECT_EQ(Times(h.Feed(Batch("soc", {{10, 1}}))), (std::vector<int64_t>{10}));
  EXPECT_EQ(h.metrics.GaugeSum("state_keys"), 2.0);
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

}  // namespace
}  // namespace fleetflow::testing
