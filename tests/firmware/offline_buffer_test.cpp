#include "offline_buffer.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <string>

namespace fleetflow::firmware {
namespace {

constexpr size_t kOverhead = OfflineBuffer::kRecordOverhead;

std::vector<uint8_t> Bytes(size_t n, uint8_t first) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Pops every unsent record, returning their first payload bytes (records are Bytes(n, id)).
std::vector<int> Drain(OfflineBuffer& b) {
  std::vector<int> ids;
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  while (b.NextUnsent(r, payload)) ids.push_back(payload.empty() ? -1 : payload[0]);
  b.Commit();
  return ids;
}

TEST(OfflineBuffer, HandsOutRecordsInOrderWithTagAndSamples) {
  OfflineBuffer b(1024);
  EXPECT_TRUE(b.Push({3, 7}, Bytes(10, 1)));
  EXPECT_TRUE(b.Push({4, 1}, Bytes(5, 2)));
  EXPECT_EQ(b.records(), 2u);
  EXPECT_EQ(b.bytes(), 2 * kOverhead + 15);
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(b.NextUnsent(r, payload));
  EXPECT_EQ(r.tag, 3);
  EXPECT_EQ(r.samples, 7u);
  EXPECT_EQ(payload, Bytes(10, 1));
  ASSERT_TRUE(b.NextUnsent(r, payload));
  EXPECT_EQ(r.tag, 4);
  EXPECT_EQ(payload, Bytes(5, 2));
  EXPECT_FALSE(b.NextUnsent(r, payload));
  EXPECT_TRUE(b.has_in_flight());
  const auto done = b.Commit();
  EXPECT_EQ(done.records, 2u);
  EXPECT_EQ(done.samples, 8u);
  EXPECT_EQ(b.bytes(), 0u);
  EXPECT_EQ(b.records(), 0u);
}

TEST(OfflineBuffer, RewindHandsInFlightRecordsOutAgain) {
  OfflineBuffer b(1024);
  b.Push({0, 1}, Bytes(8, 1));
  b.Push({0, 1}, Bytes(8, 2));
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(b.NextUnsent(r, payload));
  b.Rewind();
  b.Push({0, 1}, Bytes(8, 3));
  EXPECT_EQ(Drain(b), (std::vector<int>{1, 2, 3}));
}

TEST(OfflineBuffer, FullBufferDropsOldestAndCountsThem) {
  const size_t record = kOverhead + 20;
  OfflineBuffer b(record * 4 + 5);  // room for 4 records
  for (uint8_t id = 1; id <= 10; ++id) EXPECT_TRUE(b.Push({0, 3}, Bytes(20, id)));
  EXPECT_EQ(b.records(), 4u);
  EXPECT_LE(b.bytes(), b.capacity());
  EXPECT_EQ(b.counters().dropped_records, 6u);
  EXPECT_EQ(b.counters().dropped_samples, 18u);
  EXPECT_EQ(b.counters().dropped_bytes, 120u);
  EXPECT_EQ(Drain(b), (std::vector<int>{7, 8, 9, 10}));
}

TEST(OfflineBuffer, WrapsAroundTheRingKeepingPayloadsIntact) {
  OfflineBuffer b(100);
  uint8_t id = 0;
  for (int round = 0; round < 50; ++round) {
    const size_t n = 5 + round % 17;  // sizes that do not divide the capacity
    ASSERT_TRUE(b.Push({static_cast<uint16_t>(round), 1}, Bytes(n, ++id)));
    OfflineBuffer::Record r;
    std::vector<uint8_t> payload;
    ASSERT_TRUE(b.NextUnsent(r, payload));
    EXPECT_EQ(r.tag, round);
    EXPECT_EQ(payload, Bytes(n, id));
    b.Commit();
  }
  EXPECT_EQ(b.counters().dropped_records, 0u);
}

TEST(OfflineBuffer, DroppingRecordsInFlightKeepsTheRestConsistent) {
  const size_t record = kOverhead + 10;
  OfflineBuffer b(record * 3);
  b.Push({0, 1}, Bytes(10, 1));
  b.Push({0, 1}, Bytes(10, 2));
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(b.NextUnsent(r, payload));  // 1 in flight
  b.Push({0, 1}, Bytes(10, 3));
  b.Push({0, 1}, Bytes(10, 4));  // evicts 1, which was in flight
  EXPECT_EQ(b.counters().dropped_records, 1u);
  const auto done = b.Commit();  // nothing of 1 is left to release
  EXPECT_EQ(done.records, 0u);
  EXPECT_EQ(Drain(b), (std::vector<int>{2, 3, 4}));
}

TEST(OfflineBuffer, RecordLargerThanTheRingIsDroppedAndCounted) {
  OfflineBuffer b(64);
  b.Push({0, 1}, Bytes(8, 1));
  EXPECT_FALSE(b.Push({0, 9}, Bytes(64, 2)));
  EXPECT_EQ(b.counters().dropped_records, 1u);
  EXPECT_EQ(b.counters().dropped_samples, 9u);
  EXPECT_EQ(Drain(b), (std::vector<int>{1}));  // the older record survives
}

TEST(OfflineBuffer, MemoryNeverExceedsCapacity) {
  OfflineBuffer b(1000);
  for (int i = 0; i < 10'000; ++i) {
    b.Push({0, 1}, Bytes(static_cast<size_t>(i % 97), 0));
    ASSERT_LE(b.bytes(), b.capacity());
  }
  EXPECT_GT(b.counters().dropped_records, 9'000u);
}

}  // namespace
}  // namespace fleetflow::firmware
