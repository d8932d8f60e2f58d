// DeliveryOrder: after a gap in a consumer's delivery sequence, what came after the lost
// deliveries waits until they come again, then everything is handed on in the stream's order.
#include "partitioning/delivery_order.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace fleetflow {
namespace {

struct Delivery {
  uint64_t consumer_seq, stream_seq, times;
  uint64_t consumer_sequence() const { return consumer_seq; }
  uint64_t stream_sequence() const { return stream_seq; }
  uint64_t delivered() const { return times; }
};

constexpr int64_t kWaitNs = 5'000'000'000;

class DeliveryOrderTest : public ::testing::Test {
 protected:
  /// Takes a delivery at `now_ns`; returns whether it is handed on now (and records it).
  bool Take(uint64_t consumer_seq, uint64_t stream_seq, uint64_t times, int64_t now_ns = 0) {
    auto m = std::make_shared<Delivery>(Delivery{consumer_seq, stream_seq, times});
    const auto taken = order_.Take(m, now_ns);
    lost_ += taken.lost;
    if (taken.now) handed_on_.push_back(stream_seq);
    return taken.now;
  }
  void Due(int64_t now_ns) {
    uint64_t gave_up = 0;
    for (const auto& m : order_.Due(now_ns, kWaitNs, gave_up)) {
      handed_on_.push_back(m->stream_seq);
    }
    gave_up_ += gave_up;
  }

  DeliveryOrder<Delivery> order_;
  std::vector<uint64_t> handed_on_;  // stream sequences
  uint64_t lost_ = 0, gave_up_ = 0;
};

TEST_F(DeliveryOrderTest, WithoutAGapEverythingIsHandedOnAtOnce) {
  for (uint64_t i = 1; i <= 5; ++i) EXPECT_TRUE(Take(i, 10 * i, 1));
  Due(0);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10, 20, 30, 40, 50}));
  EXPECT_FALSE(order_.waiting());
  EXPECT_EQ(lost_, 0u);
}

TEST_F(DeliveryOrderTest, WhatCameAfterLostDeliveriesWaitsUntilTheyComeAgain) {
  EXPECT_TRUE(Take(1, 10, 1));
  // Deliveries 2 and 3 (stream 20 and 30) lost on their way: 4 and 5 wait.
  EXPECT_FALSE(Take(4, 40, 1));
  EXPECT_FALSE(Take(5, 50, 1));
  EXPECT_EQ(lost_, 2u);
  Due(1'000'000'000);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10}));
  EXPECT_TRUE(order_.waiting());
  // Sent again after ack_wait, each older than what waits: handed on at once.
  EXPECT_TRUE(Take(6, 20, 2));
  EXPECT_TRUE(Take(7, 30, 2));
  Due(2'000'000'000);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10, 20, 30, 40, 50}));
  EXPECT_FALSE(order_.waiting());
  EXPECT_EQ(gave_up_, 0u);
  // Back to normal.
  EXPECT_TRUE(Take(8, 60, 1));
}

// A partition given up (its worker stood still and another took it over) hands back what waits,
// whatever was lost: nothing of it is handed on from here.
TEST_F(DeliveryOrderTest, TakeAllEmptiesWhatWaitsAndForgetsTheLostDeliveries) {
  EXPECT_TRUE(Take(1, 10, 1));
  EXPECT_FALSE(Take(4, 40, 1));  // 2 and 3 lost
  EXPECT_FALSE(Take(5, 50, 1));
  std::vector<uint64_t> taken;
  for (const auto& m : order_.TakeAll()) taken.push_back(m->stream_seq);
  EXPECT_EQ(taken, (std::vector<uint64_t>{40, 50}));
  EXPECT_FALSE(order_.waiting());
  Due(10 * kWaitNs);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10}));
  EXPECT_EQ(gave_up_, 0u);
  EXPECT_TRUE(Take(6, 60, 1)) << "nothing is waited for any more";
}

TEST_F(DeliveryOrderTest, NewerMessagesComingWhileOthersWaitAreHandedOnAfterThemInOrder) {
  EXPECT_TRUE(Take(1, 10, 1));
  EXPECT_FALSE(Take(3, 30, 1));  // 2 lost
  EXPECT_FALSE(Take(4, 40, 1));
  EXPECT_TRUE(Take(5, 20, 2));   // 2 again
  EXPECT_FALSE(Take(6, 50, 1));  // still behind the waiting ones until Due
  Due(0);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10, 20, 30, 40, 50}));
}

TEST_F(DeliveryOrderTest, LostDeliveriesThatNeverComeAgainStopWaitingAfterTheWait) {
  EXPECT_TRUE(Take(1, 10, 1, 0));
  EXPECT_FALSE(Take(3, 30, 1, 100));
  Due(100 + kWaitNs - 1);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10}));
  Due(100 + kWaitNs);
  EXPECT_EQ(handed_on_, (std::vector<uint64_t>{10, 30}));
  EXPECT_EQ(gave_up_, 1u);
  EXPECT_TRUE(Take(4, 40, 1));
}

TEST_F(DeliveryOrderTest, AConsumerNumberingAgainIsNoGap) {
  // A consumer's new leader may number deliveries from an older point: no gap, nothing waits.
  EXPECT_TRUE(Take(7, 70, 1));
  EXPECT_TRUE(Take(5, 80, 1));
  EXPECT_TRUE(Take(6, 90, 1));
  EXPECT_EQ(lost_, 0u);
}

}  // namespace
}  // namespace fleetflow
