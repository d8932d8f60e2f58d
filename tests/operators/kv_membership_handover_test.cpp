// KvMembership's hand-over records against a real nats-server: a record is claimed once, also
// when the worker asks the server before its watch brought the record.
#include <gtest/gtest.h>

#include "nats_fixture.hpp"
#include "state/kv_membership.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kRecords[] = "test_handover";

class KvMembershipHandoverTest : public NatsServerTest {
 protected:
  void SetUp() override {
    NatsServerTest::SetUp();
    nats::BucketOptions b;
    b.name = kRecords;
    records_ = js_->EnsureBucket(b);
  }

  std::unique_ptr<KvMembership> Join() {
    MembershipOptions o;
    o.connection.url = server_.url();
    o.bucket = "test_members";
    o.handover_bucket = kRecords;
    o.heartbeat_ms = 200;
    return std::make_unique<KvMembership>(o, metrics_, Labels{});
  }

  bool OnServer(uint32_t partition) {
    return records_->Get("partition." + std::to_string(partition)).has_value();
  }

  Metrics metrics_;
  std::unique_ptr<nats::KeyValue> records_;
};

TEST_F(KvMembershipHandoverTest, AWorkerAskingTheServerClaimsARecordItsWatchHasNotBroughtYet) {
  auto worker = Join();
  // Written as another worker writes it, and claimed at once: the watch may not have it yet.
  records_->Put("partition.3", "1700000000000000000 worker-a");
  const auto claimed = worker->ClaimHandover(3, true);
  ASSERT_TRUE(claimed.has_value());
  EXPECT_EQ(*claimed, std::optional<int64_t>(1'700'000'000'000'000'000));
  EXPECT_FALSE(worker->ClaimHandover(3, true).has_value()) << "a record is used once";
  // The claim deletes the record; whatever the watch brings later is not claimed again. A record
  // written after it shows the watch has passed both.
  ASSERT_TRUE(WaitFor([&] { return !OnServer(3); }, 10s));
  records_->Put("partition.4", "- worker-a");
  std::optional<std::optional<int64_t>> later;
  ASSERT_TRUE(WaitFor([&] { return (later = worker->ClaimHandover(4)).has_value(); }, 10s));
  EXPECT_FALSE(later->has_value()) << "worker-a had emitted no window of partition 4";
  EXPECT_FALSE(worker->ClaimHandover(3).has_value());
  EXPECT_FALSE(worker->ClaimHandover(3, true).has_value());
}

TEST_F(KvMembershipHandoverTest, ARecordGivenUpIsWrittenBeforeTheHeartbeatDropsThePartition) {
  auto a = Join();
  auto b = Join();
  a->Hold(2);
  ASSERT_TRUE(WaitFor([&] { return b->Holds(a->id(), 2); }, 10s));
  a->RecordHandover(2, 1'700'000'005'000'000'000);
  // Once b sees the partition dropped, the server has the record, whatever b's watch of the
  // records has brought so far.
  ASSERT_TRUE(WaitFor([&] { return !b->Holds(a->id(), 2); }, 10s));
  const auto claimed = b->ClaimHandover(2, true);
  ASSERT_TRUE(claimed.has_value());
  EXPECT_EQ(*claimed, std::optional<int64_t>(1'700'000'005'000'000'000));
  EXPECT_TRUE(WaitFor([&] { return !OnServer(2); }, 10s)) << "the claim deletes the record";
}

TEST_F(KvMembershipHandoverTest, ARecordThatIsNoneIsNotClaimed) {
  auto worker = Join();
  records_->Put("partition.1", "not a window");
  EXPECT_FALSE(worker->ClaimHandover(1, true).has_value());
  EXPECT_FALSE(worker->ClaimHandover(7, true).has_value()) << "no record at all";
}

}  // namespace
}  // namespace fleetflow::testing
