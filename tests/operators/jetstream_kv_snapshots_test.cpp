// JetStreamKvSnapshots (window_aggregate's partition state) against a real nats-server with
// JetStream, and window_aggregate handing a partition over through it.
#include "state/jetstream_kv_snapshots.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fleetflow/testkit/harness.hpp"
#include "log_capture.hpp"
#include "nats_fixture.hpp"
#include "partitioning/coordinator.hpp"
#include "servers.hpp"
#include "state/jetstream_kv_store.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using Values = std::map<std::string, std::string>;

/// The value of `key` in `kv`, "(none)" when it has none (never written, or deleted).
std::string ValueOf(nats::KeyValue& kv, const std::string& key) {
  const auto e = kv.Get(key);
  return e ? e->value : "(none)";
}

class JetStreamKvSnapshotsTest : public NatsServerTest {
 protected:
  /// A worker's store of node "agg" (a store each, as two workers have).
  std::unique_ptr<JetStreamKvSnapshots> Store(int write_timeout_ms = 10'000) {
    JetStreamKvSnapshotsOptions o;
    o.connection.url = server_.url();
    o.node = "agg";
    o.write_timeout_ms = write_timeout_ms;
    return std::make_unique<JetStreamKvSnapshots>(std::move(o), metrics_, Labels{});
  }
  uint64_t Count(const std::string& name) {
    double sum = 0;
    for (const auto& [_, value] : metrics_.Values(name)) sum += value;
    return static_cast<uint64_t>(sum);
  }
  std::unique_ptr<nats::KeyValue> Bucket() { return js_->EnsureBucket({}); }

  Metrics metrics_;
};

TEST_F(JetStreamKvSnapshotsTest, ASavedSnapshotIsRestoredReplacedWholeAndOutlivesForget) {
  auto a = Store();
  a->Save(3, {{"progress", "p1"}, {"r1", "one"}, {"r2", "two"}}, 10);
  ASSERT_TRUE(a->Sync());
  auto kv = Bucket();
  EXPECT_EQ(ValueOf(*kv, "agg.agg.3.r1"), "one");
  EXPECT_EQ(ValueOf(*kv, "agg.agg.3.checkpoint"), "10");

  auto b = Store();  // another worker
  auto s = b->Restore(3);
  EXPECT_EQ(s.values, (Values{{"progress", "p1"}, {"r1", "one"}, {"r2", "two"}}));
  EXPECT_EQ(s.checkpoint, 10u);
  EXPECT_FALSE(b->Restore(4).checkpoint);
  EXPECT_TRUE(b->Restore(4).values.empty());

  b->Save(3, {{"progress", "p2"}, {"r1", "one"}}, 12);  // r2 gone, r1 unchanged
  ASSERT_TRUE(b->Sync());
  b->Forget(3);
  s = Store()->Restore(3);
  EXPECT_EQ(s.values, (Values{{"progress", "p2"}, {"r1", "one"}}));
  EXPECT_EQ(s.checkpoint, 12u);
  EXPECT_FALSE(kv->Get("agg.agg.3.r2").has_value()) << "a delete marker: not found";
  // Values written: 3, then the changed progress alone (r1 is stored as it is); checkpoints 2.
  EXPECT_EQ(Count("kv_writes"), 4u);
  EXPECT_EQ(Count("kv_checkpoints"), 2u);
  EXPECT_GT(Count("kv_bytes_written"), 0u);
}

TEST_F(JetStreamKvSnapshotsTest, SavesOfAPartitionWaitingForTheWriterAreCoalescedIntoTheNewest) {
  auto a = Store();
  for (uint64_t i = 1; i <= 200; ++i) a->Save(0, {{"r0", std::to_string(i)}}, i);
  ASSERT_TRUE(a->Sync());
  EXPECT_GT(Count("kv_saves_coalesced"), 0u);
  EXPECT_LT(Count("kv_checkpoints"), 200u);
  const auto s = Store()->Restore(0);
  EXPECT_EQ(s.values, (Values{{"r0", "200"}}));
  EXPECT_EQ(s.checkpoint, 200u);
}

// A value the server refuses (larger than its max_payload) fails the save: the checkpoint stays
// at the last snapshot stored, and the failure is counted, logged and reported by Sync.
TEST_F(JetStreamKvSnapshotsTest, TheCheckpointMovesOnlyOnceEveryValueIsStored) {
  LogCapture log;
  auto a = Store();
  a->Save(5, {{"r0", "small"}}, 7);
  ASSERT_TRUE(a->Sync());
  a->Save(5, {{"r0", "small"}, {"r1", std::string(2 << 20, 'x')}}, 9);
  EXPECT_FALSE(a->Sync());
  EXPECT_GT(Count("kv_write_errors"), 0u);
  EXPECT_THAT(log.text(), ::testing::HasSubstr("checkpoint stays"));
  EXPECT_EQ(Store()->Restore(5).checkpoint, 7u);
  a->Save(5, {{"r0", "small"}, {"r1", "fits"}}, 11);  // the next save writes what failed
  ASSERT_TRUE(a->Sync());
  const auto s = Store()->Restore(5);
  EXPECT_EQ(s.values, (Values{{"r0", "small"}, {"r1", "fits"}}));
  EXPECT_EQ(s.checkpoint, 11u);
}

// keyed_last_value restores every key starting with "<p>." of the same bucket, and keeps its
// checkpoint under "<p>.checkpoint": the snapshots' keys never meet them.
TEST_F(JetStreamKvSnapshotsTest, KeyedLastValuesKeysOfThePartitionAreUntouched) {
  auto a = Store();
  a->Save(2, {{"r0", "windows"}, {"progress", "p"}}, 40);
  ASSERT_TRUE(a->Sync());
  JetStreamKvOptions o;
  o.connection.url = server_.url();
  Metrics other;
  JetStreamKvStore keyed(o, other, {});
  int visited = 0;
  EXPECT_FALSE(keyed.Restore("2.", [&](const std::string&, std::vector<wire::Point>) {
    ++visited;
  })) << "keyed_last_value's checkpoint is not the aggregate's";
  EXPECT_EQ(visited, 0);
  EXPECT_EQ(a->Restore(2).checkpoint, 40u);
}

// The source re-reads a partition's changelog from the oldest checkpoint of the nodes after it
// (keyed_last_value's and each aggregate's); a node without one (new in the pipeline) is given
// the partition's, and a partition without any begins at what was delivered, for every node.
TEST_F(JetStreamKvSnapshotsTest, TheChangelogIsReadFromTheOldestCheckpointOfTheNodes) {
  auto kv = Bucket();
  kv->Put("3.checkpoint", "50");
  kv->Put("agg.minutes.3.checkpoint", "40");
  kv->Put("agg.hours.3.checkpoint", "45");
  const auto aggregate = [](std::string node) {
    return [node](uint32_t p) {
      return JetStreamKvSnapshots::KeyOf(node, p, JetStreamKvSnapshots::kCheckpointKey);
    };
  };
  JetStreamKvCheckpoints checkpoints(
      Bucket(), {JetStreamKvStore::CheckpointKey, aggregate("minutes"), aggregate("hours"),
                 aggregate("new")});
  EXPECT_EQ(checkpoints.Checkpoint(3), 40u);
  EXPECT_EQ(ChangelogTail(checkpoints, 3, 60), (ChangelogRange{41, 60}));
  EXPECT_EQ(ValueOf(*kv, "agg.new.3.checkpoint"), "40");
  EXPECT_EQ(ValueOf(*kv, "3.checkpoint"), "50") << "a checkpoint there is left as it is";
  EXPECT_EQ(ValueOf(*kv, "agg.hours.3.checkpoint"), "45");

  EXPECT_EQ(ChangelogTail(checkpoints, 4, 70), std::nullopt);
  for (const char* key : {"4.checkpoint", "agg.minutes.4.checkpoint", "agg.new.4.checkpoint"}) {
    EXPECT_EQ(ValueOf(*kv, key), "70") << key;
  }
  kv->Put("agg.hours.3.checkpoint", "not a number");
  EXPECT_EQ(checkpoints.Checkpoint(3), 40u) << "a damaged one counts as none";
  EXPECT_EQ(JetStreamKvCheckpoints(Bucket(), {}).Checkpoint(3), std::nullopt)
      << "no node keeps one";
}

// window_aggregate with backend jetstream_kv: a partition revoked mid-window stores its open
// window; its next owner restores it and skips the messages up to the checkpoint.
TEST_F(JetStreamKvSnapshotsTest, WindowAggregateHandsAnOpenWindowOverThroughTheBucket) {
  constexpr int64_t kS = 1'000'000'000;
  constexpr int64_t kBase = 1'700'000'040 * kS;
  const std::string config = R"({"every_ms": 10000, "allowed_lateness_ms": 500,
      "idle_ms": 3600000, "sensors": ["speed"], "backend": "jetstream_kv", "url": ")" +
                             server_.url() + R"("})";
  const auto message = [&](int64_t s, uint64_t sequence) {
    SampleBatch b;
    b.vehicle = "v1";
    b.sensor = "speed";
    b.points = {wire::Point{kBase + s * kS, static_cast<uint32_t>(sequence), double(s)}};
    b.partition = 1;
    b.sequence = sequence;
    b.stream_ns = b.received_ns = kBase + s * kS;
    return b;
  };
  testkit::HarnessOptions o;
  o.node_id = "stats";
  auto a = std::make_unique<testkit::OperatorHarness>("window_aggregate", config, o);
  a->TickAt(kBase + kS);
  a->Feed(testkit::Assigned(1));
  a->Feed(message(1, 1));
  a->Feed(message(2, 2));
  PartitionEvent revoked = testkit::Revoked(1);
  EXPECT_TRUE(testkit::Only<StatsBatch>(a->Feed(revoked)).empty());  // [0, 10 s) still open
  EXPECT_EQ(ValueOf(*Bucket(), JetStreamKvStore::CheckpointKey(1)), "(none)")
      << "keyed_last_value's checkpoint is not the aggregate's";
  EXPECT_EQ(ValueOf(*Bucket(), "agg.stats.1.checkpoint"), "2");
  a.reset();

  auto b = std::make_unique<testkit::OperatorHarness>("window_aggregate", config, o);
  b->TickAt(kBase + 2 * kS);
  b->Feed(testkit::Assigned(1, revoked.handover->windows()));
  b->Feed(message(2, 2));  // read again: in the snapshot
  b->Feed(message(3, 3));
  EXPECT_EQ(b->Counter("samples_in_snapshot"), 1u);
  const auto batches = testkit::Only<StatsBatch>(b->TickAt(kBase + 20 * kS, /*drain=*/true));
  // [0, 10 s), and [10 s, 20 s) without a row: the partition reports it (its progress).
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_TRUE(batches[1]->rows.empty());
  const auto& out = batches[0];
  ASSERT_EQ(out->rows.size(), 1u);
  EXPECT_EQ(out->rows[0].sensors[0].count, 3u);
  EXPECT_EQ(out->rows[0].sensors[0].sum, 6.0);
}

}  // namespace
}  // namespace fleetflow::testing
