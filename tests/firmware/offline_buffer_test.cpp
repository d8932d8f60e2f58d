#include "offline_buffer.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
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

// --- one acknowledgement per record (fleet-sensor --ack jetstream) ---

// Hands out every unsent record, returning their ids.
std::vector<uint64_t> HandOut(OfflineBuffer& b) {
  std::vector<uint64_t> ids;
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  while (b.NextUnsent(r, payload)) ids.push_back(r.id);
  return ids;
}

TEST(OfflineBufferAcks, IdsAreConsecutiveInPushOrderAndStableAcrossRewinds) {
  OfflineBuffer b(1024);
  for (uint8_t i = 1; i <= 3; ++i) b.Push({0, 1}, Bytes(8, i));
  EXPECT_EQ(HandOut(b), (std::vector<uint64_t>{0, 1, 2}));
  EXPECT_EQ(b.Rewind(), 3u);
  EXPECT_EQ(HandOut(b), (std::vector<uint64_t>{0, 1, 2}));  // a resend keeps its id
  b.Commit();  // empty: the ring starts over at its front, the ids do not
  b.Push({0, 1}, Bytes(8, 4));
  EXPECT_EQ(HandOut(b), (std::vector<uint64_t>{3}));
}

TEST(OfflineBufferAcks, ReleasesTheAcknowledgedFrontOnly) {
  OfflineBuffer b(1024);
  b.Push({0, 2}, Bytes(8, 1));
  b.Push({0, 3}, Bytes(8, 2));
  b.Push({0, 4}, Bytes(8, 3));
  HandOut(b);
  EXPECT_EQ(b.in_flight_records(), 3u);
  auto done = b.Ack(1);  // out of order: 0 still waits, so nothing leaves
  EXPECT_EQ(done.records, 0u);
  EXPECT_TRUE(done.behind);
  EXPECT_EQ(b.records(), 3u);
  done = b.Ack(0);  // releases 0 and the already acknowledged 1
  EXPECT_EQ(done.records, 2u);
  EXPECT_FALSE(done.behind);
  EXPECT_EQ(done.samples, 5u);
  EXPECT_EQ(b.records(), 1u);
  EXPECT_EQ(b.in_flight_records(), 1u);
  done = b.Ack(2);
  EXPECT_EQ(done.records, 1u);
  EXPECT_EQ(done.samples, 4u);
  EXPECT_EQ(b.bytes(), 0u);
  EXPECT_FALSE(b.has_in_flight());
}

TEST(OfflineBufferAcks, AnAckForARecordNotInFlightChangesNothing) {
  OfflineBuffer b(1024);
  EXPECT_EQ(b.Ack(0).records, 0u);  // nothing at all
  b.Push({0, 1}, Bytes(8, 1));
  b.Push({0, 1}, Bytes(8, 2));
  EXPECT_EQ(b.Ack(0).records, 0u);  // stored but not handed out
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(b.NextUnsent(r, payload));
  EXPECT_EQ(b.Ack(1).records, 0u);  // not handed out yet
  EXPECT_EQ(b.Ack(7).records, 0u);  // never existed
  EXPECT_FALSE(b.Ack(7).behind);
  EXPECT_EQ(b.Ack(0).records, 1u);
  EXPECT_EQ(b.Ack(0).records, 0u);  // a second ack of a released record
  EXPECT_FALSE(b.Ack(0).behind);
  EXPECT_EQ(b.records(), 1u);
  EXPECT_EQ(Drain(b), (std::vector<int>{2}));
}

TEST(OfflineBufferAcks, ARewoundRecordNeedsANewAckEvenIfTheOldOneCame) {
  OfflineBuffer b(1024);
  b.Push({0, 1}, Bytes(8, 1));
  b.Push({0, 1}, Bytes(8, 2));
  HandOut(b);
  EXPECT_EQ(b.Ack(1).records, 0u);  // 1 acknowledged, waiting behind 0
  EXPECT_EQ(b.Rewind(), 2u);        // e.g. 0's ack timed out: both go out again
  EXPECT_EQ(b.Ack(0).records, 0u);  // a late ack for a record no longer in flight
  EXPECT_EQ(HandOut(b), (std::vector<uint64_t>{0, 1}));
  EXPECT_EQ(b.Ack(0).records, 1u);  // 1's earlier ack belonged to the earlier hand-out
  EXPECT_EQ(b.records(), 1u);
  EXPECT_EQ(b.Ack(1).records, 1u);
  EXPECT_EQ(b.records(), 0u);
}

TEST(OfflineBufferAcks, DroppingARecordInFlightKeepsTheOthersIds) {
  const size_t record = kOverhead + 10;
  OfflineBuffer b(record * 3);
  b.Push({0, 1}, Bytes(10, 1));  // id 0
  b.Push({0, 1}, Bytes(10, 2));  // id 1
  HandOut(b);
  b.Push({0, 1}, Bytes(10, 3));  // id 2
  b.Push({0, 1}, Bytes(10, 4));  // id 3 evicts id 0, in flight
  EXPECT_EQ(b.counters().dropped_records, 1u);
  EXPECT_EQ(b.Ack(0).records, 0u);  // gone: its ack is ignored
  EXPECT_EQ(b.Ack(1).records, 1u);
  OfflineBuffer::Record r;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(b.NextUnsent(r, payload));
  EXPECT_EQ(r.id, 2u);
  EXPECT_EQ(payload[0], 3);
}

// Random pushes (overflowing the ring), hand-outs, acks in any order, rewinds and flush commits,
// fixed seed: every hand-out names its record by the id written into its payload, and every
// record pushed is released, dropped or still held, once.
TEST(OfflineBufferAcks, RandomOperationsKeepIdsAndCountsConsistent) {
  std::mt19937 rng(42);
  OfflineBuffer b(600);
  uint64_t next = 0, released = 0;
  std::vector<uint64_t> in_flight;
  for (int step = 0; step < 50'000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 4) {
      std::vector<uint8_t> payload(8 + rng() % 40);
      std::memcpy(payload.data(), &next, 8);
      ASSERT_TRUE(b.Push({0, 1}, payload));
      ++next;
    } else if (op < 7) {
      OfflineBuffer::Record r;
      std::vector<uint8_t> payload;
      if (b.NextUnsent(r, payload)) {
        uint64_t written = 0;
        std::memcpy(&written, payload.data(), 8);
        ASSERT_EQ(r.id, written) << "step " << step;
        in_flight.push_back(r.id);
      }
    } else if (op < 9) {
      if (!in_flight.empty()) {
        const size_t i = rng() % in_flight.size();
        released += b.Ack(in_flight[i]).records;
        in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(i));
      }
    } else if (rng() % 4 == 0) {
      released += b.Commit().records;
      in_flight.clear();
    } else {
      b.Rewind();
      in_flight.clear();
    }
    ASSERT_LE(b.bytes(), b.capacity());
    ASSERT_LE(b.in_flight_records(), b.records());
  }
  EXPECT_GT(released, 1000u);
  EXPECT_GT(b.counters().dropped_records, 100u);
  EXPECT_EQ(released + b.counters().dropped_records + b.records(), next);
}

}  // namespace
}  // namespace fleetflow::firmware
