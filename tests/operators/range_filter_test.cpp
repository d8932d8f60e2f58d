// range_filter on the test kit; the worked example of docs/writing_operators.md, which quotes it.
#include <gtest/gtest.h>

#include <cmath>

#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

constexpr const char* kSpeedAndSoc =
    R"({"ranges": [{"sensor": "speed", "min": 0, "max": 90},
                   {"sensor": "soc", "min": 0, "max": 100}]})";

TEST(RangeFilterTest, DropsSamplesOutsideTheRangeAndCountsThemBySensor) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  const auto out = h.Feed(Samples("v1", "speed", {{1, 12.5}, {2, 900}, {3, -1}, {4, 90}}));
  EXPECT_EQ(Values(Points(out)), (std::vector<double>{12.5, 90}));
  EXPECT_EQ(h.Counter("samples_out_of_range", {{"sensor", "speed"}}), 2u);
  EXPECT_EQ(h.Counter("samples_out_of_range", {{"sensor", "soc"}}), 0u);
  EXPECT_EQ(h.Counter("samples_out_of_range",
                      {{"node", "op"}, {"operator", "range_filter"}, {"sensor", "speed"}}),
            2u);
}

TEST(RangeFilterTest, PassesAMessageWithNothingToDropAsItIs) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  const Message in = MakeMessage(Samples("v1", "soc", {{1, 0}, {2, 55.5}, {3, 100}}));
  const auto out = h.Feed(in);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], in);  // the same message, not a copy
  EXPECT_EQ(h.Counter("samples_out_of_range"), 0u);
}

TEST(RangeFilterTest, ANotANumberIsOutsideEveryRange) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  const auto out = h.Feed(Samples("v1", "speed", {{1, std::nan("")}, {2, 30}}));
  EXPECT_EQ(Values(Points(out)), (std::vector<double>{30}));
  EXPECT_EQ(h.Counter("samples_out_of_range"), 1u);
}

TEST(RangeFilterTest, TheSamplesPassedOnKeepTheirMessagesAcknowledgementAndPlace) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  int acks = 0;
  SampleBatch in = Samples("v7", "speed", {{1, 10}, {2, 1000}});
  in.ack = MakeAck([&] { ++acks; });
  in.received_ns = 42;
  in.partition = 3;
  const auto passed = OnlyOne<SampleBatch>(h.Feed(std::move(in)));
  ASSERT_NE(passed, nullptr);
  EXPECT_EQ(passed->vehicle, "v7");
  EXPECT_EQ(passed->received_ns, 42);
  EXPECT_EQ(passed->partition, 3u);
  EXPECT_EQ(acks, 0);  // the state operator downstream acknowledges it, once stored
  Acknowledge(h.output().Messages());
  EXPECT_EQ(acks, 1);
}

TEST(RangeFilterTest, AMessageLeftWithoutSamplesIsAcknowledgedHere) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  int acks = 0;
  SampleBatch in = Samples("v1", "soc", {{1, 250}});
  in.ack = MakeAck([&] { ++acks; });
  EXPECT_TRUE(h.Feed(std::move(in)).empty());
  EXPECT_EQ(acks, 1);  // nothing downstream will: the source would deliver it again
  EXPECT_EQ(h.Counter("samples_out_of_range", {{"sensor", "soc"}}), 1u);
}

TEST(RangeFilterTest, OtherSensorsStatusTicksAndPartitionEventsPassUnchanged) {
  OperatorHarness h("range_filter", kSpeedAndSoc);
  EXPECT_EQ(Values(Points(h.Feed(Samples("v1", "torque", {{1, -5000}})))),
            (std::vector<double>{-5000}));
  EXPECT_EQ(Only<StatusEvent>(h.Feed(StatusEvent{"v1", false, 5, 0, nullptr})).size(), 1u);
  EXPECT_EQ(Only<Tick>(h.TickAt(10)).size(), 1u);
  EXPECT_EQ(Only<PartitionEvent>(h.Feed(Assigned(2))).size(), 1u);
  EXPECT_EQ(h.Counter("samples_out_of_range"), 0u);
}

TEST(RangeFilterConfigTest, EachSensorHasOneRangeWithMinAtMostMax) {
  EXPECT_EQ(BuildError("range_filter", kSpeedAndSoc), "");
  EXPECT_NE(BuildError("range_filter", R"({"ranges": [{"sensor": "speed", "min": 5, "max": 1}]})")
                .find("/ranges/0/max"),
            std::string::npos);
  EXPECT_NE(BuildError("range_filter", R"({"ranges": [{"sensor": "soc", "min": 0, "max": 1},
                                                      {"sensor": "soc", "min": 0, "max": 2}]})")
                .find("'soc' has a range already"),
            std::string::npos);
  EXPECT_NE(BuildError("range_filter", "{}").find("ranges"), std::string::npos);
  EXPECT_NE(BuildError("range_filter", R"({"ranges": []})").find("at least 1"), std::string::npos);
}

}  // namespace
}  // namespace fleetflow::testkit
