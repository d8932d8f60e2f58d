// keyed_last_value with the jetstream_kv backend against a real nats-server with JetStream.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <numeric>
#include <thread>

#include "fleetflow/testkit/harness.hpp"
#include "jetstream.hpp"
#include "log_capture.hpp"
#include "nats_fixture.hpp"
#include "servers.hpp"
#include "state/jetstream_kv_store.hpp"
#include "state_record.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kBase = 1'700'000'000 * kS;

Body Batch(const std::string& vehicle, const std::string& sensor, std::vector<int64_t> ts,
           std::function<void()> ack = {}) {
  SampleBatch b{vehicle, sensor, {}, ack ? MakeAck(std::move(ack)) : nullptr};
  for (int64_t t : ts)
    b.points.push_back(wire::Point{kBase + t, static_cast<uint32_t>(t), double(t)});
  return b;
}

/// `body` (a SampleBatch or StatusEvent) as the message of stream sequence `sequence`, of
/// partition `partition`.
Body Sequenced(Body body, uint64_t sequence, uint32_t partition = 0) {
  std::visit(
      [&](auto& m) {
        if constexpr (requires { m.sequence; }) {
          m.sequence = sequence;
          m.partition = partition;
        }
      },
      body);
  return body;
}

/// The event times of `points`, after kBase.
std::vector<int64_t> SinceBase(const std::vector<wire::Point>& points) {
  std::vector<int64_t> out;
  for (const auto& p : points) out.push_back(p.ts_ns - kBase);
  return out;
}

class KeyedLastValueKvTest : public NatsServerTest {
 protected:
  static constexpr int kRecords = 64;  // records_per_partition's default

  std::unique_ptr<OperatorHarness> Worker(int flush_ms = 50, int flush_messages = 20'000,
                                          int records = kRecords) {
    return std::make_unique<OperatorHarness>(
        "keyed_last_value", R"({"backend": "jetstream_kv", "url": ")" + server_.url() +
                                R"(", "keep": 3, "flush_ms": )" + std::to_string(flush_ms) +
                                R"(, "flush_messages": )" + std::to_string(flush_messages) +
                                R"(, "records_per_partition": )" + std::to_string(records) + "}");
  }

  /// The samples stored of a state key `<partition>.<vehicle>.<sensor>`: the series
  /// `<vehicle>.<sensor>` of the record `<partition>.r<k>` of the vehicle.
  std::vector<wire::Point> StoredPoints(const std::string& key, int records = kRecords) {
    auto kv = js_->EnsureBucket({});
    const auto [record_key, name] = JetStreamKvStore::RecordOf(key, records);
    auto e = kv->Get(record_key);
    std::vector<state::Series> record;
    if (!e || !state::DecodeRecord(e->value, record)) return {};
    for (const auto& s : record) {
      if (s.name == name) return s.samples;
    }
    return {};
  }
  std::vector<int64_t> Stored(const std::string& key, int records = kRecords) {
    return SinceBase(StoredPoints(key, records));
  }
  /// Partition `p`'s checkpoint in the bucket (nullopt: none).
  std::optional<uint64_t> Checkpoint(uint32_t p) {
    return JetStreamKvCheckpoints(js_->EnsureBucket({}), {JetStreamKvStore::CheckpointKey})
        .Checkpoint(p);
  }
};

// A message is acknowledged once its samples are in the worker's state: the stream keeps it as
// the partition's changelog, and the checkpoint passes it only once the bucket stores them.
TEST_F(KeyedLastValueKvTest, AcknowledgesOnceInStateAndTheCheckpointPassesOnlyWhatIsStored) {
  auto h = Worker(/*flush_ms=*/60'000);  // nothing is due before the drain tick
  std::atomic<int> acks{0};
  h->Feed(Sequenced(Batch("v1", "speed", {1, 2}, [&] { ++acks; }), 5));
  EXPECT_EQ(acks, 1);
  h->TickAt(1);
  EXPECT_TRUE(Stored("0.v1.speed").empty());
  EXPECT_LT(Checkpoint(0).value_or(0), 5u);  // a next owner re-reads message 5 from the stream
  h->TickAt(2, /*drain=*/true);              // writes everything, then the checkpoint
  EXPECT_EQ(Stored("0.v1.speed"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Checkpoint(0), 5u);
}

TEST_F(KeyedLastValueKvTest, AStatusMovesTheCheckpointOnceItIsInTheBucket) {
  auto h = Worker(/*flush_ms=*/60'000);
  std::atomic<int> acks{0};
  StatusEvent off{"v1", false, kBase};
  off.ack = MakeAck([&] { ++acks; });
  h->Feed(Sequenced(std::move(off), 9, 2));
  EXPECT_EQ(acks, 1);
  h->TickAt(1);
  EXPECT_LT(Checkpoint(2).value_or(0), 9u);
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(Stored("2.v1.status").size(), 1u);
  EXPECT_EQ(Checkpoint(2), 9u);
}

TEST_F(KeyedLastValueKvTest, WhatWaitsIsWrittenAtTheFirstTickWithoutNewSamples) {
  auto h = Worker(/*flush_ms=*/60'000);  // never due by time in this test
  h->Feed(Sequenced(Batch("v1", "speed", {1}), 1));
  h->TickAt(1);  // samples came since the previous tick: coalescing goes on
  h->Feed(Sequenced(Batch("v1", "speed", {2}), 2));
  h->TickAt(2);
  EXPECT_EQ(h->Counter("kv_writes"), 0u);
  h->TickAt(3);  // none since tick 2: the input paused, nothing more to coalesce
  EXPECT_TRUE(WaitFor([&] { return h->Counter("kv_writes") == 1; }, 10s));
  EXPECT_EQ(Stored("0.v1.speed"), (std::vector<int64_t>{1, 2}));
  h->TickAt(4);  // the write was answered: the next tick stores the checkpoint
  EXPECT_TRUE(WaitFor([&] { return Checkpoint(0) == 2u; }, 10s)) << Checkpoint(0).value_or(0);
  h->TickAt(5);  // quiet again, but nothing waits: no write
  h->TickAt(6);
  EXPECT_EQ(h->Counter("kv_writes"), 1u);
}

// flush_messages bounds what each partition's next owner re-reads: it counts per partition, so
// a worker that owns many partitions does not flush more often for owning them.
TEST_F(KeyedLastValueKvTest, ManyMessagesOfOnePartitionBringTheFlushForward) {
  auto h = Worker(/*flush_ms=*/60'000, /*flush_messages=*/10);
  uint64_t seq = 0;
  for (int64_t t = 1; t <= 9; ++t) h->Feed(Sequenced(Batch("v1", "speed", {t}), ++seq, 0));
  for (int64_t t = 1; t <= 9; ++t) h->Feed(Sequenced(Batch("v3", "speed", {t}), ++seq, 1));
  h->TickAt(1);  // 18 taken in, 9 of each partition: not yet
  EXPECT_EQ(h->Counter("kv_writes"), 0u);
  h->Feed(Sequenced(Batch("v2", "speed", {10}), ++seq, 0));
  h->TickAt(2);  // partition 0 has 10 (samples came since tick 1, so not a quiet tick)
  EXPECT_TRUE(WaitFor([&] { return h->Counter("kv_writes") == 3; }, 10s));  // one per vehicle
  h->Feed(Sequenced(Batch("v1", "speed", {11}), ++seq, 0));
  h->TickAt(3);  // the counts start again
  EXPECT_EQ(h->Counter("kv_writes"), 3u);
}

TEST_F(KeyedLastValueKvTest, WritesAreCoalescedPerKeyAndCarryWhatStateRetains) {
  auto h = Worker(/*flush_ms=*/60'000);
  std::atomic<int> acks{0};
  for (int64_t t = 1; t <= 100; ++t) h->Feed(Batch("v1", "speed", {t}, [&] { ++acks; }));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(acks, 100);
  EXPECT_EQ(h->Counter("kv_writes"), 1u);                        // one write for 100 messages
  EXPECT_EQ(h->metrics.HistogramCount("kv_write_seconds"), 1u);  // in one write batch
  EXPECT_EQ(Stored("0.v1.speed"), (std::vector<int64_t>{98, 99, 100}));  // keep 3
  h->Feed(Batch("v1", "speed", {101}, [&] { ++acks; }));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(Stored("0.v1.speed"), (std::vector<int64_t>{99, 100, 101}));
  EXPECT_EQ(acks, 101);
  EXPECT_EQ(h->metrics.HistogramCount("kv_write_seconds"), 2u);
}

TEST_F(KeyedLastValueKvTest, AVehicleCostsOneWritePerFlushWhateverItsSensors) {
  auto h = Worker(/*flush_ms=*/60'000);
  std::atomic<int> acks{0};
  for (const std::string sensor : {"gps", "speed", "soc", "torque"}) {
    for (int64_t t = 1; t <= 10; ++t) h->Feed(Batch("v1", sensor, {t}, [&] { ++acks; }));
  }
  h->Feed(StatusEvent{"v1", true, kBase});
  h->Feed(Batch("v2", "speed", {1}, [&] { ++acks; }));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(acks, 41);
  ASSERT_NE(JetStreamKvStore::RecordOf("0.v1.gps", kRecords).first,
            JetStreamKvStore::RecordOf("0.v2.gps", kRecords).first);
  EXPECT_EQ(h->Counter("kv_writes"), 2u);  // one per vehicle: each in a record of its own
  for (const std::string sensor : {"gps", "speed", "soc", "torque"}) {
    EXPECT_EQ(Stored("0.v1." + sensor), (std::vector<int64_t>{8, 9, 10})) << sensor;  // keep 3
  }
  EXPECT_EQ(Stored("0.v1.status").size(), 1u);
  EXPECT_EQ(Stored("0.v2.speed"), (std::vector<int64_t>{1}));
}

TEST_F(KeyedLastValueKvTest, AFlushCostsOneWritePerRecordWhateverItsVehicles) {
  constexpr int kRecordsHere = 4;
  auto h = Worker(/*flush_ms=*/60'000, 20'000, kRecordsHere);
  std::map<std::string, int> per_record;
  for (int v = 0; v < 40; ++v) {
    const std::string vehicle = "v" + std::to_string(v);
    for (const std::string sensor : {"gps", "speed"}) h->Feed(Batch(vehicle, sensor, {v + 1}));
    ++per_record[JetStreamKvStore::RecordOf("0." + vehicle + ".gps", kRecordsHere).first];
  }
  h->TickAt(1, /*drain=*/true);
  // The hash spreads the vehicles over every record (40 vehicles, 4 records), not by partition.
  ASSERT_EQ(per_record.size(), 4u) << ::testing::PrintToString(per_record);
  for (const auto& [key, n] : per_record) EXPECT_GE(n, 4) << key;
  EXPECT_EQ(h->Counter("kv_writes"), 4u);
  for (int v = 0; v < 40; ++v) {
    for (const std::string sensor : {"gps", "speed"}) {
      EXPECT_EQ(Stored("0.v" + std::to_string(v) + "." + sensor, kRecordsHere),
                (std::vector<int64_t>{v + 1}));
    }
  }
  // A second flush writes only the records whose vehicles have new samples.
  h->Feed(Batch("v7", "speed", {100}));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(h->Counter("kv_writes"), 5u);
  EXPECT_EQ(Stored("0.v7.speed", kRecordsHere), (std::vector<int64_t>{8, 100}));
}

// A record larger than the server's max_payload cannot be written: the failure is counted and
// logged with what to change, and the partition's checkpoint stays before its messages (a next
// owner re-reads them); another partition's checkpoint goes on.
TEST_F(KeyedLastValueKvTest, ARecordTooLargeForTheServerIsReportedAndTheCheckpointStaysBeforeIt) {
  LogCapture log;
  auto h = std::make_unique<OperatorHarness>(
      "keyed_last_value", R"({"backend": "jetstream_kv", "url": ")" + server_.url() +
                              R"(", "keep": 64, "flush_ms": 60000, "records_per_partition": 1})");
  h->Feed(Sequenced(Batch("v0", "speed", {1}), 1));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(Checkpoint(0), 1u);
  std::vector<int64_t> ts(64);
  std::iota(ts.begin(), ts.end(), 2);
  for (int v = 0; v < 800; ++v) {  // 800 × 64 samples: more than 1 MB in one record
    h->Feed(Sequenced(Batch("v" + std::to_string(v), "speed", ts), 2 + v));
  }
  h->Feed(Sequenced(Batch("w1", "speed", {1}), 900, 1));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(h->Counter("kv_writes"), 2u);  // partition 0's first record, partition 1's
  EXPECT_GT(h->Counter("kv_write_errors"), 0u);
  EXPECT_THAT(log.text(), ::testing::HasSubstr("raise records_per_partition"));
  EXPECT_EQ(Checkpoint(0), 1u);
  EXPECT_EQ(Checkpoint(1), 900u);
}

// A bucket written with one record per vehicle (key <partition>.<vehicle>, series named by
// sensor), before records held many vehicles: a worker taking the partition over restores it,
// merged by event time with what the record of this layout holds of the same vehicle.
TEST_F(KeyedLastValueKvTest, ARecordPerVehicleIsRestoredAndMergedWithTheNewLayout) {
  auto kv = js_->EnsureBucket({});
  const auto points = [](std::vector<int64_t> ts) {
    std::vector<wire::Point> out;
    for (int64_t t : ts) out.push_back(wire::Point{kBase + t, static_cast<uint32_t>(t), 1.0});
    return out;
  };
  kv->Put("0.v8", state::EncodeRecord({{"speed", points({1, 2, 3})}, {"soc", points({2})}}));
  const auto [record_key, name] = JetStreamKvStore::RecordOf("0.v8.speed", kRecords);
  kv->Put(record_key, state::EncodeRecord({{name, points({3, 4})}}));
  auto h = Worker(/*flush_ms=*/60'000);
  std::map<std::string, std::vector<int64_t>> restored;
  for (const auto& b : Only<SampleBatch>(h->Feed(Assigned(0)))) {
    EXPECT_EQ(b->vehicle, "v8");
    restored[b->sensor] = SinceBase(b->points);
  }
  EXPECT_EQ(restored,
            (std::map<std::string, std::vector<int64_t>>{{"soc", {2}}, {"speed", {2, 3, 4}}}));
  h->Feed(Batch("v8", "speed", {5}));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(Stored("0.v8.speed"), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(Stored("0.v8.soc"), (std::vector<int64_t>{2}));  // written on in this layout
}

// A bucket written per state key (a FLT1 Batch under <partition>.<vehicle>.<sensor>), before
// a vehicle's keys shared one record: a worker taking the partition over restores those too.
TEST_F(KeyedLastValueKvTest, AValueStoredPerStateKeyIsRestoredAsThatSeries) {
  auto kv = js_->EnsureBucket({});
  std::vector<wire::Point> points;
  for (int64_t t : {4, 5, 6})
    points.push_back(wire::Point{kBase + t, static_cast<uint32_t>(t), 1.0});
  const auto bytes = wire::EncodeBatch(points);
  kv->Put("0.v9.speed", {reinterpret_cast<const char*>(bytes.data()), bytes.size()});
  auto h = Worker(/*flush_ms=*/60'000);
  const auto restored = Only<SampleBatch>(h->Feed(Assigned(0)));
  ASSERT_EQ(restored.size(), 1u);
  EXPECT_EQ(restored[0]->vehicle, "v9");
  EXPECT_EQ(restored[0]->sensor, "speed");
  EXPECT_EQ(SinceBase(restored[0]->points), (std::vector<int64_t>{4, 5, 6}));
  // Written on as the vehicle's record, merged with what was restored.
  h->Feed(Batch("v9", "speed", {7}));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(Stored("0.v9.speed"), (std::vector<int64_t>{5, 6, 7}));
}

TEST_F(KeyedLastValueKvTest, TwoWorkersWritingOneKeyNeverLoseTheNewestSample) {
  // Two workers that both think they own a partition (one was taken for dead while it still
  // ran), in fixed interleavings on one key: whoever writes last, the bucket ends with the
  // newest samples by event time of both.
  auto a = Worker(/*flush_ms=*/60'000);
  auto b = Worker(/*flush_ms=*/60'000);
  for (int round = 0; round < 20; ++round) {
    const int64_t t = 10 + round * 10;
    a->Feed(Batch("v1", "soc", {t + (round % 2 == 0 ? 5 : 1)}));
    b->Feed(Batch("v1", "soc", {t + (round % 2 == 0 ? 1 : 5)}));
    // b writes first on even rounds, a first on odd ones; the second write conflicts.
    auto& first = round % 2 == 0 ? *b : *a;
    auto& second = round % 2 == 0 ? *a : *b;
    first.TickAt(round * 10 + 1, /*drain=*/true);
    second.TickAt(round * 10 + 2, /*drain=*/true);
    const auto stored = Stored("0.v1.soc");
    ASSERT_FALSE(stored.empty());
    EXPECT_EQ(stored.back(), t + 5)
        << "round " << round << ": " << ::testing::PrintToString(stored);
  }
  EXPECT_GT(a->Counter("kv_conflicts") + b->Counter("kv_conflicts"), 0u);
}

TEST_F(KeyedLastValueKvTest, TakingAPartitionOverRestoresItsStateAndPassesItOnAfterTheEvent) {
  {
    auto h = Worker();
    h->Feed(Batch("v1", "speed", {1, 2, 3, 4}));
    h->Feed(Batch("v2", "gps", {7}));
    h->TickAt(1, /*drain=*/true);
  }
  auto h = Worker();
  EXPECT_TRUE(h->op().Ready());
  const auto out = h->Feed(Assigned(0));
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(std::holds_alternative<PartitionEvent>(*out.front()));  // the news goes first
  std::map<std::string, std::vector<int64_t>> restored;
  for (const auto& b : Only<SampleBatch>(out)) {
    EXPECT_TRUE(b->restored);
    EXPECT_EQ(b->partition, 0u);
    restored[b->vehicle + "." + b->sensor] = SinceBase(b->points);
  }
  EXPECT_EQ(restored["v1.speed"], (std::vector<int64_t>{2, 3, 4}));  // keep = 3
  EXPECT_EQ(restored["v2.gps"], (std::vector<int64_t>{7}));
  // Restored samples are state: an older sample is now stale.
  h->Feed(Batch("v1", "speed", {1}));
  EXPECT_EQ(h->Counter("samples_stale"), 1u);
}

// A record holds several keys; the store keeps no copy of what the state holds, and what the
// state has not written since a take-over (restored, untouched) is still written with its record:
// after the next owner writes one key of a record, the bucket has that key's restored samples
// with its new ones, and the other key's restored samples as they were.
TEST_F(KeyedLastValueKvTest, ARestoredKeyNotWrittenSinceKeepsItsSamplesInItsRecord) {
  constexpr int kOne = 1;  // every vehicle of the partition in one record
  {
    auto h = Worker(/*flush_ms=*/50, /*flush_messages=*/20'000, kOne);
    h->Feed(Batch("v1", "speed", {1, 2, 3}));
    h->Feed(Batch("v2", "gps", {7, 8}));
    h->TickAt(1, /*drain=*/true);
  }
  auto h = Worker(/*flush_ms=*/50, /*flush_messages=*/20'000, kOne);
  h->Feed(Assigned(0));
  h->Feed(Batch("v1", "speed", {4}));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(Stored("0.v1.speed", kOne), (std::vector<int64_t>{2, 3, 4}));  // keep = 3
  EXPECT_EQ(Stored("0.v2.gps", kOne), (std::vector<int64_t>{7, 8}));
  // And once the untouched key is written too, it carries its restored samples with the new.
  h->Feed(Batch("v2", "gps", {9, 10}));
  h->TickAt(3, /*drain=*/true);
  EXPECT_EQ(Stored("0.v2.gps", kOne), (std::vector<int64_t>{8, 9, 10}));
  EXPECT_EQ(Stored("0.v1.speed", kOne), (std::vector<int64_t>{2, 3, 4}));
}

// A previous owner that still runs writes a key this worker restored and has not written since:
// its samples come back in the conflict, and stay in the bucket once this worker writes the key
// (its state never saw them).
TEST_F(KeyedLastValueKvTest, AnotherWritersSamplesOfARestoredKeyOutliveThisWorkersFirstWriteOfIt) {
  constexpr int kOne = 1;  // every vehicle of the partition in one record
  auto old_owner = Worker(/*flush_ms=*/50, /*flush_messages=*/20'000, kOne);
  old_owner->Feed(Batch("v1", "speed", {1, 2, 3}));
  old_owner->Feed(Batch("v2", "gps", {7}));
  old_owner->TickAt(1, /*drain=*/true);
  auto h = Worker(/*flush_ms=*/50, /*flush_messages=*/20'000, kOne);
  h->Feed(Assigned(0));
  old_owner->Feed(Batch("v1", "speed", {10}));
  old_owner->TickAt(2, /*drain=*/true);
  h->Feed(Batch("v2", "gps", {8}));  // its write conflicts, and merges the old owner's
  h->TickAt(3, /*drain=*/true);
  EXPECT_GT(h->Counter("kv_conflicts"), 0u);
  EXPECT_EQ(Stored("0.v1.speed", kOne), (std::vector<int64_t>{2, 3, 10}));
  h->Feed(Batch("v1", "speed", {11}));
  h->TickAt(4, /*drain=*/true);
  EXPECT_EQ(Stored("0.v1.speed", kOne), (std::vector<int64_t>{3, 10, 11}));
  EXPECT_EQ(Stored("0.v2.gps", kOne), (std::vector<int64_t>{7, 8}));
}

// The source re-reads a partition's changelog from the oldest checkpoint of the nodes after it,
// which may be older than this state's: what the restored state holds (up to its checkpoint) is
// not passed on again, and acknowledged when it is a redelivery.
TEST_F(KeyedLastValueKvTest, MessagesUpToTheRestoredCheckpointAreNotPassedOnAgain) {
  {
    auto h = Worker();
    h->Feed(Assigned(2));
    h->Feed(Sequenced(Batch("v1", "speed", {1, 2}), 5, 2));
    h->Feed(Sequenced(Batch("v1", "speed", {3}), 6, 2));
    h->TickAt(1, /*drain=*/true);
  }
  ASSERT_EQ(Checkpoint(2), 6u);
  auto h = Worker();
  h->Feed(Assigned(2));
  std::atomic<int> acks{0};
  EXPECT_TRUE(h->Feed(Sequenced(Batch("v1", "speed", {0}), 4, 2)).empty());
  StatusEvent off{"v1", false, kBase};
  EXPECT_TRUE(h->Feed(Sequenced(std::move(off), 5, 2)).empty());
  EXPECT_TRUE(h->Feed(Sequenced(Batch("v1", "speed", {3}, [&] { ++acks; }), 6, 2)).empty());
  EXPECT_EQ(acks, 1) << "a redelivery is acknowledged";
  EXPECT_EQ(h->Counter("changelog_in_state"), 3u);
  EXPECT_EQ(h->Counter("samples_stale"), 0u);
  const auto after = Only<SampleBatch>(h->Feed(Sequenced(Batch("v1", "speed", {4}), 7, 2)));
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(SinceBase(after[0]->points), (std::vector<int64_t>{4}));
  // Another partition's messages are not measured by this one's checkpoint.
  EXPECT_EQ(Only<SampleBatch>(h->Feed(Sequenced(Batch("v9", "soc", {1}), 3, 5))).size(), 1u);
}

TEST_F(KeyedLastValueKvTest, AWorkerReadsOnlyThePartitionsItTakesOver) {
  {
    auto h = Worker();
    for (uint32_t p = 0; p < 4; ++p) {
      for (int v = 0; v < 5; ++v) {
        Body b = Batch("v" + std::to_string(p) + "_" + std::to_string(v), "soc", {1, 2});
        std::get<SampleBatch>(b).partition = p;
        h->Feed(std::move(b));
      }
    }
    h->TickAt(1, /*drain=*/true);
  }
  auto h = Worker();
  const auto out = h->Feed(Assigned(2));
  const auto restored = Only<SampleBatch>(out);
  ASSERT_EQ(restored.size(), 5u);
  for (const auto& b : restored) EXPECT_EQ(b->vehicle.substr(0, 3), "v2_");
  EXPECT_EQ(h->Counter("kv_keys_restored"), 5u);
}

TEST_F(KeyedLastValueKvTest, ARevokedPartitionIsStoredAndForgotten) {
  auto h = Worker(/*flush_ms=*/60'000);
  h->Feed(Assigned(3));
  h->Feed(Sequenced(Batch("v1", "speed", {1, 2}), 41, 3));
  EXPECT_EQ(h->Gauge("state_keys"), 1);
  const auto out = h->Feed(Revoked(3));
  EXPECT_EQ(Only<PartitionEvent>(out).size(), 1u);  // passed on
  // Stored, and the checkpoint with it, before the event goes on (its hand-over record after).
  EXPECT_EQ(Stored("3.v1.speed"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Checkpoint(3), 41u);
  EXPECT_EQ(h->Gauge("state_keys"), 0);
  // Taken again later: restored from the bucket, not from what this worker held.
  const auto again = Only<SampleBatch>(h->Feed(Assigned(3)));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(SinceBase(again[0]->points), (std::vector<int64_t>{1, 2}));
}

TEST_F(KeyedLastValueKvTest, TheLastStatusChangeIsStoredEvenWithoutASampleInBetween) {
  {
    auto h = Worker();
    h->Feed(Batch("v1", "speed", {5}));
    h->Feed(StatusEvent{"v1", false, kBase});
    h->Feed(StatusEvent{"v1", true, kBase});  // on again before any new sample
    h->TickAt(1, /*drain=*/true);
  }
  const auto points = StoredPoints("0.v1.status");
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points.back().value, 1.0);  // on, the last change
  auto h = Worker();
  const auto restored = Only<StatusEvent>(h->Feed(Assigned(0)));
  ASSERT_EQ(restored.size(), 1u);
  EXPECT_TRUE(restored[0]->on);
}

TEST_F(KeyedLastValueKvTest, TheBucketKeepsTheHistoryByTimeAndANewWorkerRestoresIt) {
  constexpr int64_t kMs = 1'000'000;
  const auto worker = [&] {
    return std::make_unique<OperatorHarness>(
        "keyed_last_value", R"({"backend": "jetstream_kv", "url": ")" + server_.url() +
                                R"(", "keep": 3, "history_ms": 100, "flush_ms": 60000})");
  };
  const auto every_10ms = [](int64_t from_ms, int64_t to_ms) {
    std::vector<int64_t> ts;
    for (int64_t t = from_ms; t <= to_ms; t += 10) ts.push_back(t * kMs);
    return ts;
  };
  {
    auto h = worker();
    for (int64_t t : every_10ms(0, 500)) h->Feed(Batch("v1", "speed", {t}));
    h->TickAt(1, /*drain=*/true);
    // What state retains: 400..500 ms (within 100 ms of the newest) and 390 before them; not
    // merely the newest 3.
    EXPECT_EQ(Stored("0.v1.speed"), every_10ms(390, 500));
    h->Feed(Batch("v1", "speed", {510 * kMs}));
    h->TickAt(2, /*drain=*/true);
    EXPECT_EQ(Stored("0.v1.speed"), every_10ms(400, 510));
  }
  auto h = worker();
  std::vector<int64_t> restored;
  for (const auto& b : Only<SampleBatch>(h->Feed(Assigned(0)))) restored = SinceBase(b->points);
  EXPECT_EQ(restored, every_10ms(400, 510));  // within 100 ms of 510, and 400 before them
}

TEST(JetStreamKvMergeTest, KeepsTheNewestByEventTimeWithoutDuplicates) {
  auto p = [](int64_t t, uint32_t seq = 0) { return wire::Point{t, seq, 0}; };
  const auto merged = JetStreamKvStore::Merge({p(1), p(5), p(3)}, {p(4), p(5), p(2)}, 3);
  std::vector<int64_t> ts;
  for (const auto& x : merged) ts.push_back(x.ts_ns);
  EXPECT_EQ(ts, (std::vector<int64_t>{3, 4, 5}));
}

}  // namespace
}  // namespace fleetflow::testing
