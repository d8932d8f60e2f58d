// KvMembership's hand-over records against a real nats-server: a record is claimed once, also
// when the worker asks the server before its watch brought the record. And its members: nobody is
// taken for gone while no heartbeat comes back at all.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <future>
#include <map>
#include <thread>

#include "nats_fixture.hpp"
#include "partitioning/kv_membership.hpp"
#include "tcp_proxy.hpp"

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

  std::unique_ptr<KvMembership> Join(int heartbeat_ms = 200, const std::string& url = "") {
    MembershipOptions o;
    o.connection.url = url.empty() ? server_.url() : url;
    o.bucket = "test_members";
    o.handover_bucket = kRecords;
    o.heartbeat_ms = heartbeat_ms;
    o.timeout_ms = std::max(4000, 4 * heartbeat_ms);
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
  records_->Put("partition.3", "windows=1700000000000000000,minutes=1699999980000000000 worker-a");
  const auto claimed = worker->ClaimHandover(3, true);
  EXPECT_EQ(claimed, (EmittedWindows{{"windows", 1'700'000'000'000'000'000},
                                     {"minutes", 1'699'999'980'000'000'000}}));
  EXPECT_FALSE(worker->ClaimHandover(3, true).has_value()) << "a record is used once";
  // The claim deletes the record; whatever the watch brings later is not claimed again. A record
  // written after it shows the watch has passed both.
  ASSERT_TRUE(WaitFor([&] { return !OnServer(3); }, 10s));
  records_->Put("partition.4", "- worker-a");
  std::optional<EmittedWindows> later;
  ASSERT_TRUE(WaitFor([&] { return (later = worker->ClaimHandover(4)).has_value(); }, 10s));
  EXPECT_TRUE(later->empty()) << "worker-a had emitted no window of partition 4";
  EXPECT_FALSE(worker->ClaimHandover(3).has_value());
  EXPECT_FALSE(worker->ClaimHandover(3, true).has_value());
}

TEST_F(KvMembershipHandoverTest, ARecordGivenUpIsWrittenBeforeTheHeartbeatDropsThePartition) {
  auto a = Join();
  auto b = Join();
  a->Hold(2);
  ASSERT_TRUE(WaitFor([&] { return b->HolderOf(2) == a->id(); }, 10s));
  a->RecordHandover(2, {{"windows", 1'700'000'005'000'000'000}});
  // Once b sees the partition dropped, the server has the record, whatever b's watch of the
  // records has brought so far.
  ASSERT_TRUE(WaitFor([&] { return b->HolderOf(2) != a->id(); }, 10s));
  EXPECT_EQ(b->ClaimHandover(2, true), (EmittedWindows{{"windows", 1'700'000'005'000'000'000}}));
  EXPECT_TRUE(WaitFor([&] { return !OnServer(2); }, 10s)) << "the claim deletes the record";
}

// The coordinator of a partitioned source sleeps until something changes instead of polling:
// the membership calls it back when a record arrives and when a worker joins or leaves, and never
// again once the callback is taken away. (Worker a heartbeats once a minute: after its join, only
// what the test does brings a call.)
TEST_F(KvMembershipHandoverTest, ItSaysWhenARecordArrivesOrAWorkerJoins) {
  auto a = Join(60'000);
  std::atomic<int> calls{0};
  a->SetOnChange([&] { ++calls; });
  int before = calls.load();  // its join was in the snapshot its constructor read
  records_->Put("partition.5", "- worker-b");
  ASSERT_TRUE(WaitFor([&] { return calls.load() > before; }, 10s)) << "no call for the record";
  EXPECT_TRUE(a->ClaimHandover(5).has_value()) << "called before the record was in";

  before = calls.load();
  auto b = Join();
  ASSERT_TRUE(WaitFor([&] { return calls.load() > before; }, 10s)) << "no call for b's join";
  EXPECT_EQ(a->Members().first.size(), 2u) << "called before b was in";

  a->SetOnChange(nullptr);
  const int after = calls.load();
  records_->Put("partition.6", "- worker-b");
  ASSERT_TRUE(WaitFor([&] { return a->ClaimHandover(6).has_value(); }, 10s));
  EXPECT_EQ(calls.load(), after) << "called after the callback was taken away";
}

// Two workers whose members differ for a moment (a join seen by one before the other) may both
// want a partition when its owner gives it up: the record is theirs to go on from, and only one
// of them may read the partition. The claim deletes the record at the revision its watch brought,
// so the second finds it gone.
TEST_F(KvMembershipHandoverTest, TwoWorkersClaimingOneRecordAtOnceOnlyOneGetsIt) {
  auto a = Join();
  auto b = Join();
  constexpr uint32_t kFirst = 10, kRecords = 40;
  for (uint32_t p = kFirst; p < kFirst + kRecords; ++p) {
    records_->Put("partition." + std::to_string(p), std::to_string(p) + " worker-x");
  }
  // Records written after them show each watch has brought them.
  records_->Put("partition.6", "- worker-x");
  records_->Put("partition.7", "- worker-x");
  ASSERT_TRUE(WaitFor([&] { return a->ClaimHandover(6).has_value(); }, 10s));
  ASSERT_TRUE(WaitFor([&] { return b->ClaimHandover(7).has_value(); }, 10s));
  // Both claim every record at the same time, in the same order.
  std::atomic<int> ready{0};
  const auto claim_all = [&](KvMembership& w) {
    std::vector<uint32_t> got;
    ++ready;
    while (ready.load() < 2) {
    }
    for (uint32_t p = kFirst; p < kFirst + kRecords; ++p) {
      if (w.ClaimHandover(p).has_value()) got.push_back(p);
    }
    return got;
  };
  auto by_b = std::async(std::launch::async, [&] { return claim_all(*b); });
  const std::vector<uint32_t> by_a = claim_all(*a);
  std::map<uint32_t, int> claims;
  for (const uint32_t p : by_a) ++claims[p];
  for (const uint32_t p : by_b.get()) ++claims[p];
  for (uint32_t p = kFirst; p < kFirst + kRecords; ++p) {
    EXPECT_EQ(claims[p], 1) << "record of partition " << p << " claimed " << claims[p] << " times";
    EXPECT_FALSE(OnServer(p));
  }
}

// Two workers whose members differ for a moment both judge the same partitions free and take their
// leases at the same time: each lease goes to one, and the other is told who keeps it.
TEST_F(KvMembershipHandoverTest, TwoWorkersTakingOneLeaseAtOnceOnlyOneGetsIt) {
  auto a = Join();
  auto b = Join();
  ASSERT_TRUE(WaitFor(
      [&] {
        return a->StandingOf(b->id()) == Membership::Standing::kAlive &&
               b->StandingOf(a->id()) == Membership::Standing::kAlive;
      },
      10s));
  constexpr uint32_t kLeases = 40;
  std::atomic<int> ready{0};
  const auto take_all = [&](KvMembership& w) {
    std::vector<std::string> keepers;
    ++ready;
    while (ready.load() < 2) {
    }
    for (uint32_t p = 0; p < kLeases; ++p) keepers.push_back(w.TakeLease(p, ""));
    return keepers;
  };
  auto by_b = std::async(std::launch::async, [&] { return take_all(*b); });
  const std::vector<std::string> by_a = take_all(*a);
  const std::vector<std::string> keepers_b = by_b.get();
  for (uint32_t p = 0; p < kLeases; ++p) {
    const bool a_took = by_a[p].empty(), b_took = keepers_b[p].empty();
    EXPECT_NE(a_took, b_took) << "lease of partition " << p << " taken by both or neither";
    EXPECT_EQ(a_took ? keepers_b[p] : by_a[p], a_took ? a->id() : b->id()) << "partition " << p;
    EXPECT_EQ(records_->Get("lease." + std::to_string(p))->value, a_took ? a->id() : b->id());
    // Its holder takes it again (a retried round); the other, while its holder lives, does not.
    EXPECT_EQ((a_took ? *a : *b).TakeLease(p, ""), "");
    EXPECT_NE((a_took ? *b : *a).TakeLease(p, ""), "");
  }
}

// A worker giving a partition up releases its lease before it writes the record: whoever claims
// the record takes the lease. A lease whose holder is not alive (it crashed, or left), or that a
// wedged worker keeps (force), is taken.
TEST_F(KvMembershipHandoverTest, ALeaseIsReleasedBeforeTheRecordAndTakenFromAWorkerNotAlive) {
  auto a = Join();
  auto b = Join();
  ASSERT_TRUE(WaitFor([&] { return b->StandingOf(a->id()) == Membership::Standing::kAlive; }, 10s));
  ASSERT_EQ(a->TakeLease(5, ""), "");
  a->Hold(5);
  EXPECT_EQ(b->TakeLease(5, ""), a->id());
  a->RecordHandover(5, {{"windows", 1'700'000'005'000'000'000}});
  std::optional<EmittedWindows> record;
  ASSERT_TRUE(WaitFor([&] { return (record = b->ClaimHandover(5)).has_value(); }, 10s));
  EXPECT_EQ(b->TakeLease(5, ""), "") << "the lease was not released before the record";
  EXPECT_EQ(records_->Get("lease.5")->value, b->id());

  records_->Put("lease.8", "crashed-worker");
  EXPECT_EQ(b->TakeLease(8, ""), "") << "a lease of a worker never seen alive kept";
  ASSERT_EQ(a->TakeLease(9, ""), "");
  EXPECT_EQ(b->TakeLease(9, a->id()), "") << "the lease of a worker taken for wedged kept";
  EXPECT_EQ(records_->Get("lease.9")->value, b->id());
  // a gives partition 9 up, late: its release conflicts and leaves b's lease as it is.
  a->RecordHandover(9, {});
  ASSERT_TRUE(WaitFor([&] { return b->ClaimHandover(9).has_value(); }, 10s));
  EXPECT_EQ(records_->Get("lease.9")->value, b->id());
  // A lease key deleted (by hand) is taken at its delete marker's revision.
  records_->Delete("lease.10");
  EXPECT_EQ(a->TakeLease(10, ""), "");
  EXPECT_EQ(b->TakeLease(10, ""), a->id());
  const std::string a_id = a->id();
  a.reset();  // leaves
  ASSERT_TRUE(WaitFor([&] { return b->StandingOf(a_id) == Membership::Standing::kLeft; }, 10s));
  EXPECT_EQ(b->TakeLease(10, ""), "") << "a lease of a worker that left kept";
  EXPECT_EQ(records_->Get("lease.10")->value, b->id());
}

// A worker frozen longer than the member timeout and the ack wait has its partitions taken over,
// their leases with them: once it runs again it learns which, through the watch that brings the
// records. Its own writes, and leases it gave up, are not lost ones.
TEST_F(KvMembershipHandoverTest, ALeaseAnotherWorkerTookIsReportedLost) {
  auto a = Join();
  auto b = Join();
  ASSERT_EQ(a->TakeLease(3, ""), "");
  ASSERT_EQ(a->TakeLease(4, ""), "");
  ASSERT_EQ(a->TakeLease(4, ""), "") << "its own lease, taken again";
  ASSERT_EQ(a->TakeLease(5, ""), "");
  a->RecordHandover(5, {});
  ASSERT_TRUE(WaitFor([&] { return b->ClaimHandover(5).has_value(); }, 10s));
  ASSERT_EQ(b->TakeLease(5, ""), "");
  ASSERT_EQ(b->TakeLease(3, a->id()), "");  // a taken for wedged, or for gone
  std::vector<std::pair<uint32_t, std::string>> lost;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (auto& l : a->TakeLostLeases()) lost.push_back(std::move(l));
        return !lost.empty();
      },
      10s));
  EXPECT_EQ(lost, (std::vector<std::pair<uint32_t, std::string>>{{3, b->id()}}));
  // A write after them shows the watch has passed them all: nothing more is lost.
  records_->Put("partition.9", "- worker-x");
  ASSERT_TRUE(WaitFor([&] { return a->ClaimHandover(9).has_value(); }, 10s));
  EXPECT_TRUE(a->TakeLostLeases().empty());
  EXPECT_TRUE(b->TakeLostLeases().empty());
}

// After standing still a worker asks the store for its leases (CheckLeases) rather than wait for
// the watch, which brings another worker's writes later: everything taken is reported once it
// returns, once in all (the watch does not report again what the check did), and nothing else.
TEST_F(KvMembershipHandoverTest, CheckingTheLeasesReportsAtOnceEveryLeaseTakenAndNothingElse) {
  auto a = Join();
  auto b = Join();
  constexpr uint32_t kTaken = 24;
  for (uint32_t p = 0; p < kTaken + 2; ++p) ASSERT_EQ(a->TakeLease(p, ""), "");
  a->RecordHandover(kTaken + 1, {});  // released: not a lost one when b takes it
  ASSERT_TRUE(WaitFor([&] { return b->ClaimHandover(kTaken + 1).has_value(); }, 10s));
  ASSERT_EQ(b->TakeLease(kTaken + 1, ""), "");
  ASSERT_TRUE(WaitFor([&] { return a->TakeLostLeases().empty(); }, 1s));
  for (uint32_t p = 0; p < kTaken; ++p) records_->Put("lease." + std::to_string(p), b->id());
  const size_t checked = a->CheckLeases();
  std::vector<std::pair<uint32_t, std::string>> lost = a->TakeLostLeases();
  EXPECT_EQ(lost.size(), kTaken) << checked << " found by the check, the rest by the watch";
  // The watch catches up: nothing more, nothing twice.
  records_->Put("partition.99", "- worker-x");
  ASSERT_TRUE(WaitFor([&] { return a->ClaimHandover(99).has_value(); }, 10s));
  for (auto& l : a->TakeLostLeases()) lost.push_back(std::move(l));
  std::sort(lost.begin(), lost.end());
  std::vector<std::pair<uint32_t, std::string>> expected;
  for (uint32_t p = 0; p < kTaken; ++p) expected.emplace_back(p, b->id());
  EXPECT_EQ(lost, expected);
  EXPECT_EQ(a->CheckLeases(), 0u) << "lease " << kTaken << " is still a's";
  EXPECT_EQ(b->CheckLeases(), 0u);
}

// The bucket keeps a worker's key for ten member timeouts after its last heartbeat: a worker that
// starts a moment after another crashed reads it like a live one's. Counted as alive, it would
// share the partitions among other members than the running workers do for a member timeout, and
// take some that they read. It counts only members whose heartbeats come; the crashed one's last
// heartbeat still says what it held.
TEST_F(KvMembershipHandoverTest, AWorkerStartingAfterAnotherCrashedDoesNotCountIt) {
  auto live = Join();
  auto members = js_->OpenBucket("test_members");
  members->Put("crashed-worker", "held 1 2");
  auto fresh = Join();
  std::vector<std::string> expected = {live->id(), fresh->id()};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(fresh->Members().first, expected) << "the crashed worker counted as a member";
  EXPECT_EQ(fresh->HolderOf(1), "crashed-worker");
  EXPECT_EQ(fresh->HolderOf(3), "");
  // A heartbeat of it while the worker watches: it runs after all.
  members->Put("crashed-worker", "held 1 2");
  EXPECT_TRUE(WaitFor([&] { return fresh->Members().first.size() == 3; }, 10s));
}

// A heartbeat that renews what a worker held changes nothing for the others: with N workers
// there are N a second, and none calls back. One that holds something else does.
TEST_F(KvMembershipHandoverTest, AHeartbeatThatChangesNothingCallsNothing) {
  auto a = Join(60'000);
  std::atomic<int> calls{0};
  a->SetOnChange([&] { ++calls; });
  auto b = Join(100);
  ASSERT_TRUE(WaitFor([&] { return a->Members().first.size() == 2; }, 10s));
  ASSERT_TRUE(WaitFor([&] { return calls.load() > 0; }, 10s)) << "no call for b's join";
  const int joined = calls.load();
  // b renews its membership five times (seen at the server), then holds a partition: a's watch
  // brings the five before the change, in the bucket's order.
  auto members = js_->OpenBucket("test_members");
  const uint64_t from = members->Get(b->id())->revision;
  ASSERT_TRUE(WaitFor([&] { return members->Get(b->id())->revision >= from + 5; }, 10s));
  b->Hold(3);
  ASSERT_TRUE(WaitFor([&] { return a->HolderOf(3) == b->id(); }, 10s));
  EXPECT_EQ(calls.load(), joined + 1) << "called for renewals that changed nothing";
}

TEST_F(KvMembershipHandoverTest, ARecordThatIsNoneIsNotClaimed) {
  auto worker = Join();
  records_->Put("partition.1", "not a window");
  EXPECT_FALSE(worker->ClaimHandover(1, true).has_value());
  EXPECT_FALSE(worker->ClaimHandover(7, true).has_value()) << "no record at all";
}

// While the bucket answers nobody (a NATS cluster electing its leader after a node loss; here the
// server stopped with SIGSTOP for three member timeouts), no heartbeat comes back, this worker's
// own neither: the others are not taken for gone (before, each worker took every partition).
// Once the server goes on, a worker that leaves is gone.
TEST_F(KvMembershipHandoverTest, NoHeartbeatComingBackAtAllTakesNobodyForGone) {
  auto a = Join();
  auto b = Join();
  ASSERT_TRUE(WaitFor([&] { return a->Members().first.size() == 2; }, 10s));
  server_.Signal(SIGSTOP);
  const auto until = std::chrono::steady_clock::now() + 12s;  // 3 member timeouts
  size_t fewest = 2;
  while (std::chrono::steady_clock::now() < until) {
    fewest = std::min(fewest, a->Members().first.size());
    std::this_thread::sleep_for(100ms);  // sampling what the worker believes, not a wait
  }
  server_.Signal(SIGCONT);
  EXPECT_EQ(fewest, 2u) << "a worker was taken for gone while nothing answered";
  b.reset();  // leaves: deletes its key
  EXPECT_TRUE(WaitFor([&] { return a->Members().first.size() == 1; }, 15s));
}

TEST_F(KvMembershipHandoverTest, AfterNoHeartbeatCameBackTheOthersHaveATimeoutToComeBackToo) {
  // The bucket stores nothing for a while (its cluster electing a leader); once it does again,
  // this worker's heartbeats come back before another's (whose link is still slow): that one is
  // silent since it last came back, but so was everybody until a moment ago. It is not gone
  // unless it stays silent for the timeout from then.
  TcpProxy proxy(server_.port());
  auto a = Join();
  auto b = Join(200, "nats://127.0.0.1:" + std::to_string(proxy.port()));
  ASSERT_TRUE(WaitFor([&] { return a->Members().first.size() == 2; }, 10s));
  server_.Signal(SIGSTOP);
  proxy.SetStalled(true);
  const auto stopped_until = std::chrono::steady_clock::now() + 6s;  // longer than the timeout
  while (std::chrono::steady_clock::now() < stopped_until) {
    std::this_thread::sleep_for(100ms);  // the outage lasting, not a wait for a condition
  }
  server_.Signal(SIGCONT);
  const auto resumed = std::chrono::steady_clock::now();
  size_t fewest = 2;
  while (std::chrono::steady_clock::now() < resumed + 3s) {  // b's link slow, within the timeout
    fewest = std::min(fewest, a->Members().first.size());
    std::this_thread::sleep_for(50ms);  // sampling what the worker believes, not a wait
  }
  proxy.SetStalled(false);
  EXPECT_EQ(fewest, 2u) << "a worker was taken for gone as soon as the bucket stored again";
  EXPECT_TRUE(WaitFor([&] { return a->Members().first.size() == 2; }, 10s));
}

}  // namespace
}  // namespace fleetflow::testing
