// The partition coordinator on in-memory fakes of the membership, the reader and the checkpoints,
// with an injected clock: who takes which partition when, what it waits for, what it reads
// again, and when a hand-over record is stored. The real protocol against a nats-server is in
// nats_source_partitions_test and the e2e tests.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>

#include "partitioning/coordinator.hpp"

namespace fleetflow {
namespace {

constexpr uint32_t kPartitions = 4;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kTimeout = 4 * kSecond;
constexpr int64_t kAckWait = 30 * kSecond;

class FakeMembership final : public Membership {
 public:
  std::string self = "w-self";
  std::vector<std::string> members = {"w-self"};
  uint64_t generation = 1;
  std::map<std::string, Standing> standing;
  std::map<std::string, std::set<uint32_t>> holds;
  // One windowed node, "windows": its last window (empty: none).
  std::map<uint32_t, std::optional<int64_t>> records;                 // stored, unclaimed
  std::vector<std::pair<uint32_t, std::optional<int64_t>>> recorded;  // by this worker
  std::set<uint32_t> held;
  std::map<uint32_t, std::string> leases;              // by partition: its holder (absent: nobody)
  std::vector<std::pair<uint32_t, std::string>> lost;  // leases taken by others, not told yet
  std::vector<uint32_t> dropped;
  int claims = 0;

  void SetMembers(std::vector<std::string> m) {
    std::sort(m.begin(), m.end());
    members = std::move(m);
    ++generation;
  }

  const std::string& id() const override { return self; }
  std::pair<std::vector<std::string>, uint64_t> Members() override { return {members, generation}; }
  Standing StandingOf(const std::string& id) override {
    const auto it = standing.find(id);
    return it == standing.end() ? Standing::kAlive : it->second;
  }
  void Hold(uint32_t p) override { held.insert(p); }
  std::string HolderOf(uint32_t p) override {
    std::string silent;
    for (const auto& [id, partitions] : holds) {
      if (id == self || partitions.count(p) == 0) continue;
      if (StandingOf(id) == Standing::kAlive) return id;
      silent = id;
    }
    return silent;
  }
  void RecordHandover(uint32_t p, const EmittedWindows& windows) override {
    recorded.emplace_back(p, EmittedBy(windows, "windows"));
    held.erase(p);
    leases.erase(p);
  }
  void Drop(uint32_t p) override {
    dropped.push_back(p);
    held.erase(p);
  }
  std::vector<std::pair<uint32_t, std::string>> TakeLostLeases() override {
    std::lock_guard lock(lost_mu);
    return std::exchange(lost, {});
  }
  // What the store says of this worker's leases (CheckLeases): those other workers took.
  std::vector<std::pair<uint32_t, std::string>> taken_meanwhile;
  int lease_checks = 0;
  std::mutex lost_mu;  // lost and the two above: CheckLeases runs on another thread
  size_t CheckLeases() override {
    std::lock_guard lock(lost_mu);
    ++lease_checks;
    lost.insert(lost.end(), taken_meanwhile.begin(), taken_meanwhile.end());
    return std::exchange(taken_meanwhile, {}).size();
  }
  std::string TakeLease(uint32_t p, const std::string& wedged) override {
    std::string& holder = leases[p];
    if (!holder.empty() && holder != self && holder != wedged &&
        StandingOf(holder) == Standing::kAlive) {
      return holder;
    }
    holder = self;
    return {};
  }
  std::optional<EmittedWindows> ClaimHandover(uint32_t p, bool) override {
    ++claims;
    const auto it = records.find(p);
    if (it == records.end()) return std::nullopt;
    EmittedWindows record;
    if (it->second) record["windows"] = *it->second;
    records.erase(it);
    return record;
  }
  void SetOnChange(std::function<void()>) override {}
};

class FakeReader final : public PartitionReader {
 public:
  std::set<uint32_t> prepared;
  std::set<uint32_t> refuse_prepare;
  std::map<uint32_t, uint64_t> delivered;
  std::vector<Assignment> assigned;
  std::map<uint32_t, std::shared_ptr<Handover>> revoked;  // held as the graph would
  std::function<void(uint32_t)> on_prepare;  // runs during the round, as a slow assignment

  void Prepare(uint32_t p) override {
    if (on_prepare) on_prepare(p);
    if (refuse_prepare.count(p) > 0) throw std::runtime_error("no consumer");
    prepared.insert(p);
  }
  uint64_t Delivered(uint32_t p) override { return delivered[p]; }
  void Assign(const Assignment& a) override { assigned.push_back(a); }
  void Revoke(uint32_t p, std::shared_ptr<Handover> handover) override {
    revoked[p] = std::move(handover);
  }
  std::set<uint32_t> AssignedPartitions() const {
    std::set<uint32_t> out;
    for (const auto& a : assigned) out.insert(a.partition);
    return out;
  }
};

class FakeCheckpoints final : public CheckpointStore {
 public:
  std::map<uint32_t, uint64_t> at;
  int failures = 0;  // the next reads that throw
  std::optional<uint64_t> Checkpoint(uint32_t p) override {
    if (failures > 0) {
      --failures;
      throw std::runtime_error("bucket unreachable");
    }
    const auto it = at.find(p);
    return it == at.end() ? std::nullopt : std::optional<uint64_t>(it->second);
  }
  void Begin(uint32_t p, uint64_t sequence) override { at.try_emplace(p, sequence); }
};

class PartitionCoordinatorTest : public ::testing::Test {
 protected:
  std::unique_ptr<PartitionCoordinator> Make(CheckpointStore* checkpoints = nullptr) {
    return std::make_unique<PartitionCoordinator>(
        CoordinatorOptions{"src", kPartitions, kTimeout, kSecond, kAckWait}, membership, reader,
        checkpoints, metrics, Labels{{"node", "src"}}, [this] { return now; });
  }
  /// The partitions this worker gets once `others` join it.
  std::set<uint32_t> MineAmong(std::vector<std::string> all) {
    std::sort(all.begin(), all.end());
    const auto owners = AssignPartitions(all, kPartitions);
    const size_t self = std::find(all.begin(), all.end(), membership.self) - all.begin();
    std::set<uint32_t> mine;
    for (uint32_t p = 0; p < kPartitions; ++p) {
      if (owners[p] == self) mine.insert(p);
    }
    return mine;
  }

  int64_t now = 1000 * kSecond;
  FakeMembership membership;
  FakeReader reader;
  Metrics metrics;
};

TEST_F(PartitionCoordinatorTest, AWorkerAloneTakesEveryPartitionAtOnceWithoutARecord) {
  auto c = Make();
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  for (const auto& a : reader.assigned) {
    EXPECT_FALSE(a.emitted.has_value());
    EXPECT_FALSE(a.reread.has_value());
  }
  EXPECT_EQ(reader.prepared, (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(membership.held, (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(c->owned().size(), kPartitions);
  EXPECT_FALSE(c->Waiting());
  EXPECT_EQ(metrics.GetGauge("partitions_owned", "", {{"node", "src"}}).value(), 4);
  EXPECT_EQ(metrics.GetCounter("partitions_assigned", "", {{"node", "src"}}).value(), 4);
}

TEST_F(PartitionCoordinatorTest, AtStartItWaitsForTheRunningOwnersRecordAndGoesOnFromIt) {
  membership.SetMembers({"w-self", "w-other"});
  const auto mine = MineAmong({"w-self", "w-other"});
  ASSERT_FALSE(mine.empty());
  membership.holds["w-other"] = {0, 1, 2, 3};
  auto c = Make();
  c->Step();
  EXPECT_TRUE(reader.assigned.empty());
  EXPECT_TRUE(c->Waiting());
  // The other worker gives them up: its records arrive.
  for (const uint32_t p : mine) membership.records[p] = 77 * kSecond;
  now += kSecond;
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), mine);
  for (const auto& a : reader.assigned)
    EXPECT_EQ(a.emitted, (EmittedWindows{{"windows", 77 * kSecond}}));
  EXPECT_FALSE(c->Waiting());
  EXPECT_EQ(metrics.GetCounter("partitions_recovered", "", {{"node", "src"}}).value(), 0);
}

// While the members of two workers differ (one saw a join the other has not seen yet), a
// partition may be read by another worker than the one this worker takes for its previous owner:
// it is waited for as an owner is, and its record gone on from.
TEST_F(PartitionCoordinatorTest,
       APartitionThatAWorkerOtherThanItsPreviousOwnerReadsWaitsForItsRecord) {
  membership.SetMembers({"w-self", "w-other"});
  const auto mine = MineAmong({"w-self", "w-other"});
  ASSERT_FALSE(mine.empty());
  membership.holds["w-stray"] = {0, 1, 2, 3};
  auto c = Make();
  c->Step();
  now += 3 * kSecond;  // beyond the heartbeat that w-other, holding nothing, is waited for
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken while another worker reads it";
  for (const uint32_t p : mine) membership.records[p] = 55 * kSecond;
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), mine);
  for (const auto& a : reader.assigned)
    EXPECT_EQ(a.emitted, (EmittedWindows{{"windows", 55 * kSecond}}));
  EXPECT_EQ(metrics.GetCounter("partitions_recovered", "", {{"node", "src"}}).value(), 0);
}

// Its owner gives it up, and another worker (whose members differ for a moment) claims the record
// first: its heartbeat holds the partition only a moment later. The partition was held a moment
// ago: it is not free until a heartbeat has had time to say who took it.
TEST_F(PartitionCoordinatorTest, ARecordClaimedByAnotherWorkerLeavesThePartitionToIt) {
  membership.SetMembers({"w-self", "w-other"});
  const auto mine = MineAmong({"w-self", "w-other"});
  ASSERT_FALSE(mine.empty());
  membership.holds["w-other"] = {0, 1, 2, 3};
  auto c = Make();
  c->Step();
  now += 5 * kSecond;  // w-other's graph takes its time to give them up
  c->Step();
  ASSERT_TRUE(reader.assigned.empty());
  membership.holds["w-other"].clear();  // given up; the records were claimed by w-stray
  now += kSecond / 10;
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken while the worker that claimed them takes them";
  membership.holds["w-stray"] = {0, 1, 2, 3};
  now += 2 * kSecond;
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken while another worker reads it";
  EXPECT_TRUE(c->Waiting());
}

// Two workers whose members differ for a moment both judge a partition free (nobody's heartbeat
// holds it yet): the one that takes its lease first reads it; this one waits for it as for any
// worker that holds it, and takes the partition once its record comes.
TEST_F(PartitionCoordinatorTest, APartitionWhoseLeaseAnotherWorkerTookFirstWaitsForItsRecord) {
  for (uint32_t p = 0; p < kPartitions; ++p) membership.leases[p] = "w-stray";
  auto c = Make();
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken while another worker holds its lease";
  EXPECT_TRUE(membership.held.empty());
  membership.holds["w-stray"] = {0, 1, 2, 3};  // its heartbeat comes
  now += 5 * kSecond;
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken while another worker reads it";
  // It gives them up: its leases are released, its records written.
  membership.leases.clear();
  membership.holds["w-stray"].clear();
  for (uint32_t p = 0; p < kPartitions; ++p) membership.records[p] = 66 * kSecond;
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  for (const auto& a : reader.assigned)
    EXPECT_EQ(a.emitted, (EmittedWindows{{"windows", 66 * kSecond}}));
  for (uint32_t p = 0; p < kPartitions; ++p) EXPECT_EQ(membership.leases[p], "w-self");
}

// Its owner crashed; once its ack wait passed, another worker (whose members differ) had taken
// the lease first, and crashes too: its messages delivered and never acknowledged come again
// ack_wait after their delivery, which is waited for again. A record claimed meanwhile is older
// than what that worker read: it is dropped.
TEST_F(PartitionCoordinatorTest, ALeaseHeldByAWorkerThatCrashesIsTakenOnceItsAckWaitHasPassed) {
  membership.holds["w-gone"] = {0};
  membership.standing["w-gone"] = Membership::Standing::kGone;
  membership.leases[0] = "w-stray";
  auto c = Make();
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{1, 2, 3}));
  now += kAckWait;
  c->Step();
  EXPECT_EQ(reader.assigned.size(), 3u) << "taken while another worker holds its lease";
  // w-stray's heartbeat never says it holds the partition: it crashes right after taking it. And
  // w-gone's key has left the bucket (its TTL).
  membership.holds.erase("w-gone");
  membership.records[0] = 10 * kSecond;  // w-gone's, late
  now += kSecond;
  c->Step();
  EXPECT_TRUE(membership.records.empty()) << "the record was claimed";
  membership.standing["w-stray"] = Membership::Standing::kGone;
  now += kSecond;
  c->Step();
  now += kAckWait - kSecond;
  c->Step();
  EXPECT_EQ(reader.assigned.size(), 3u) << "taken before the crashed holder's ack wait passed";
  now += kSecond;
  c->Step();
  ASSERT_EQ(reader.assigned.size(), 4u);
  EXPECT_EQ(reader.assigned.back().partition, 0u);
  EXPECT_FALSE(reader.assigned.back().emitted.has_value()) << "went on from the dropped record";
  EXPECT_EQ(membership.leases[0], "w-self");
  EXPECT_EQ(metrics.GetCounter("partitions_recovered", "", {{"node", "src"}}).value(), 1);
}

// A worker alive that keeps a lease and never gives the partition up is wedged: after the
// longest wait for a record, and the ack wait of what it was delivered, its lease is taken.
TEST_F(PartitionCoordinatorTest, ALeaseKeptByAWedgedWorkerIsTakenAfterTheLongestWait) {
  membership.leases[0] = "w-wedged";
  auto c = Make();
  c->Step();
  now += 10 * kTimeout - kSecond;
  c->Step();
  now += kSecond;
  c->Step();
  now += kAckWait - kSecond;
  c->Step();
  EXPECT_EQ(reader.assigned.size(), 3u);
  now += kSecond;
  c->Step();
  EXPECT_EQ(reader.assigned.size(), 4u);
  EXPECT_EQ(membership.leases[0], "w-self");
}

// This worker froze longer than the member timeout and the ack wait: another worker took one of
// its partitions over, and its lease. Once it runs again it gives the partition up at once,
// writes no record (the other worker's state is newer), and takes it back only once that worker
// hands it over.
TEST_F(PartitionCoordinatorTest, ALeaseTakenByAnotherWorkerGivesThePartitionUpWithoutARecord) {
  auto c = Make();
  c->Step();
  ASSERT_EQ(reader.assigned.size(), 4u);
  membership.leases[2] = "w-other";
  membership.holds["w-other"] = {2};
  membership.lost = {{2, "w-other"}};
  now += kSecond;
  c->Step();
  ASSERT_EQ(reader.revoked.count(2), 1u) << "still read beside the worker that took it";
  EXPECT_EQ(c->owned(), (std::set<uint32_t>{0, 1, 3}));
  EXPECT_TRUE(c->Waiting());
  reader.revoked.clear();  // its kRevoked event has passed the graph
  now += kSecond;
  c->Step();
  EXPECT_TRUE(membership.recorded.empty()) << "a record older than the other worker's state";
  EXPECT_EQ(membership.dropped, (std::vector<uint32_t>{2}));
  EXPECT_EQ(reader.assigned.size(), 4u);
  // The other worker hands it back (the members give it to this one).
  membership.leases.erase(2);
  membership.holds["w-other"].clear();
  membership.records[2] = 88 * kSecond;
  now += kSecond;
  c->Step();
  ASSERT_EQ(reader.assigned.size(), 5u);
  EXPECT_EQ(reader.assigned.back().partition, 2u);
  EXPECT_EQ(reader.assigned.back().emitted, (EmittedWindows{{"windows", 88 * kSecond}}));
  EXPECT_EQ(membership.leases[2], "w-self");
}

// The other worker hands the partition back (its record) before this worker's kRevoked event
// has passed the graph (the fetch thread emits it once the partition's requests end): taken
// again only after it passed, or the reader's kAssigned event would go into the graph before the
// kRevoked one, and the operators would forget at the kRevoked what they had just begun with
// (the record, the restored state): windows emitted again, or not at all.
TEST_F(PartitionCoordinatorTest, APartitionHandedBackBeforeItsRevokePassedIsTakenAgainAfterIt) {
  auto c = Make();
  c->Step();
  ASSERT_EQ(reader.assigned.size(), 4u);
  membership.leases[2] = "w-other";
  membership.lost = {{2, "w-other"}};
  now += kSecond;
  c->Step();
  ASSERT_EQ(reader.revoked.count(2), 1u);
  // Handed back at once, its revoke still on its way.
  membership.leases.erase(2);
  membership.records[2] = 88 * kSecond;
  for (int i = 0; i < 3; ++i) {
    now += kSecond;
    c->Step();
  }
  EXPECT_EQ(reader.assigned.size(), 4u) << "assigned before its kRevoked event passed";
  EXPECT_TRUE(c->Waiting());
  reader.revoked.clear();  // it passes
  now += kSecond;
  c->Step();
  EXPECT_EQ(membership.dropped, (std::vector<uint32_t>{2})) << "dropped as it was given up";
  ASSERT_EQ(reader.assigned.size(), 5u);
  EXPECT_EQ(reader.assigned.back().partition, 2u);
  EXPECT_EQ(reader.assigned.back().emitted, (EmittedWindows{{"windows", 88 * kSecond}}));
  EXPECT_EQ(c->owned(), (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_TRUE(membership.held.count(2) > 0) << "held after the drop of its earlier reading";
}

// A worker that stood still (its fetch thread tells) asks the store which of its leases other
// workers took meanwhile, and fetches on only once those partitions are revoked: the coordinator's
// thread would otherwise give them up at its next round, up to a second later, and what the worker
// fetched and acknowledged of them until then their new owners would never get.
TEST_F(PartitionCoordinatorTest, AfterStandingStillTheLeasesTakenMeanwhileAreGivenUpAtOnce) {
  auto c = Make();
  c->Start();  // the first round takes all four; then rounds every second, when nothing waits
  ASSERT_EQ(reader.assigned.size(), 4u);
  c->ConfirmLeases();
  EXPECT_EQ(membership.lease_checks, 1);
  {
    std::lock_guard lock(membership.lost_mu);
    membership.taken_meanwhile = {{1, "w-other"}, {3, "w-other"}};
  }
  c->ConfirmLeases();
  // Nothing else wakes the coordinator: ConfirmLeases returned after a round that revoked them.
  EXPECT_EQ(reader.revoked.count(1), 1u);
  EXPECT_EQ(reader.revoked.count(3), 1u);
  EXPECT_EQ(reader.revoked.size(), 2u);
  c->Stop();
  EXPECT_EQ(membership.lease_checks, 2);
}

TEST_F(PartitionCoordinatorTest, APartitionOfACrashedOwnerIsRecoveredOnceItsAckWaitHasPassed) {
  membership.SetMembers({"w-self", "w-other"});
  membership.holds["w-other"] = {0, 1, 2, 3};
  auto c = Make();
  c->Step();
  ASSERT_TRUE(reader.assigned.empty());
  // It goes silent: its unacknowledged messages come again ack_wait after their delivery.
  membership.standing["w-other"] = Membership::Standing::kGone;
  membership.SetMembers({"w-self"});
  now += kSecond;
  c->Step();
  EXPECT_TRUE(reader.assigned.empty());
  EXPECT_TRUE(c->Waiting());
  now += kAckWait - kSecond;
  c->Step();
  EXPECT_TRUE(reader.assigned.empty()) << "taken before the ack wait has passed";
  now += kSecond;
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  for (const auto& a : reader.assigned) EXPECT_FALSE(a.emitted.has_value());
  EXPECT_EQ(metrics.GetCounter("partitions_recovered", "", {{"node", "src"}}).value(), 4);
}

TEST_F(PartitionCoordinatorTest, AnOwnerThatLeftCleanlyIsWaitedForOneMemberTimeoutAtMost) {
  membership.SetMembers({"w-self", "w-other"});
  auto c = Make();
  c->Step();  // w-other holds nothing: nothing to wait for but its heartbeat's worth
  membership.standing["w-other"] = Membership::Standing::kLeft;
  membership.SetMembers({"w-self"});
  c->Step();
  const size_t before = reader.assigned.size();
  now += kTimeout;
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_GT(reader.assigned.size(), before);
  EXPECT_EQ(metrics.GetCounter("partitions_recovered", "", {{"node", "src"}}).value(), 0)
      << "an owner that did not hold the partitions had nothing to hand over";
}

TEST_F(PartitionCoordinatorTest, AWorkerJoiningTakesPartitionsAwayWhoseRecordsFollowTheirEvents) {
  auto c = Make();
  c->Step();
  ASSERT_EQ(c->owned().size(), kPartitions);
  membership.SetMembers({"w-self", "w-new"});
  const auto mine = MineAmong({"w-self", "w-new"});
  c->Step();
  std::set<uint32_t> lost;
  for (const auto& [p, _] : reader.revoked) lost.insert(p);
  EXPECT_EQ(lost.size() + mine.size(), kPartitions);
  for (const uint32_t p : lost) EXPECT_EQ(mine.count(p), 0u);
  EXPECT_EQ(c->owned(), mine);
  // Nothing is stored while the events are on their way through the graph.
  c->Step();
  EXPECT_TRUE(membership.recorded.empty());
  // The join fills them in as they pass; once the last reference goes, the next round stores.
  for (auto& [p, handover] : reader.revoked) handover->Emitted("windows", 40 * kSecond + p);
  reader.revoked.clear();
  EXPECT_TRUE(membership.recorded.empty()) << "stored by the coordinator, not by the ticket";
  c->Step();
  ASSERT_EQ(membership.recorded.size(), lost.size());
  for (const auto& [p, window] : membership.recorded) {
    EXPECT_EQ(lost.count(p), 1u);
    EXPECT_EQ(window, 40 * kSecond + p);
  }
  EXPECT_EQ(metrics.GetCounter("partitions_revoked", "", {{"node", "src"}}).value(), lost.size());
}

TEST_F(PartitionCoordinatorTest, ARecordThatComesWhileThisWorkerReadsItsPartitionIsDeleted) {
  // Two workers start together: the other one does not hold this worker's partitions yet, so
  // they are taken after a heartbeat without a record.
  membership.SetMembers({"w-self", "w-other"});
  const auto mine = MineAmong({"w-self", "w-other"});
  ASSERT_FALSE(mine.empty());
  auto c = Make();
  c->Step();
  now += kSecond;
  c->Step();
  ASSERT_EQ(c->owned(), mine);
  const size_t assigned = reader.assigned.size();
  // Its first round, begun before this worker joined, took one of them after all and gives it up
  // now: its record comes while this worker reads the partition. It hands nothing over to this
  // worker, and a later owner that took it for the hand-over to itself would go on from this
  // older window and write the windows after it a second time.
  const uint32_t p = *mine.begin();
  membership.records[p] = 5 * kSecond;
  c->Step();
  EXPECT_EQ(membership.records.count(p), 0u) << "left for the partition's next owner to claim";
  EXPECT_EQ(reader.assigned.size(), assigned);
  EXPECT_EQ(c->owned(), mine);
  // A record of a partition that this worker waits for is still claimed as its hand-over.
  membership.SetMembers({"w-self"});
  c->Step();
  ASSERT_TRUE(c->Waiting());
  std::set<uint32_t> gained;
  for (uint32_t q = 0; q < kPartitions; ++q) {
    if (mine.count(q) == 0) gained.insert(q);
  }
  for (const uint32_t q : gained) membership.records[q] = 9 * kSecond;
  now += kSecond;
  c->Step();
  EXPECT_FALSE(c->Waiting());
  for (size_t i = assigned; i < reader.assigned.size(); ++i) {
    EXPECT_EQ(reader.assigned[i].emitted, (EmittedWindows{{"windows", 9 * kSecond}}));
  }
  EXPECT_EQ(reader.assigned.size(), assigned + gained.size());
}

TEST_F(PartitionCoordinatorTest, AWorkerJoiningDuringTheFirstRoundGetsWhatTheRoundHadNotTaken) {
  // This worker starts alone; its first round assigns the partitions one by one, each slowly,
  // and another worker joins after the first one was assigned.
  const auto mine = MineAmong({"w-self", "w-other"});
  std::set<uint32_t> theirs;
  for (uint32_t p = 1; p < kPartitions; ++p) {
    if (mine.count(p) == 0) theirs.insert(p);
  }
  ASSERT_FALSE(theirs.empty());
  reader.on_prepare = [this](uint32_t p) {
    if (p == 0) membership.SetMembers({"w-self", "w-other"});
  };
  auto c = Make();
  c->Step();
  for (const uint32_t p : theirs) {
    EXPECT_EQ(reader.AssignedPartitions().count(p), 0u)
        << "partition " << p << " taken after the members changed";
    EXPECT_EQ(membership.held.count(p), 0u);
  }
  std::set<uint32_t> expected = mine;
  expected.insert(0);  // assigned before the change
  EXPECT_EQ(reader.AssignedPartitions(), expected);
  // The next round follows the change: it gives partition 0 back if it went to the other worker,
  // and neither waits for nor takes the other worker's partitions.
  c->Step();
  EXPECT_EQ(c->owned(), mine);
  EXPECT_EQ(reader.revoked.count(0), mine.count(0) == 0 ? 1u : 0u);
  EXPECT_FALSE(c->Waiting());
  EXPECT_EQ(reader.AssignedPartitions(), expected);
}

TEST_F(PartitionCoordinatorTest, MembersThatChangeDuringEveryRoundStillLetItsPartitionsBeTaken) {
  // A new generation before each assignment that leaves the partitions here (the same workers,
  // or a worker that joins and leaves again) holds nothing back.
  reader.on_prepare = [this](uint32_t p) {
    if (p % 2 == 0) {
      membership.SetMembers({"w-self"});
    } else {
      membership.SetMembers({"w-self", "w-other"});
      membership.SetMembers({"w-self"});
    }
  };
  auto c = Make();
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_FALSE(c->Waiting());
}

TEST_F(PartitionCoordinatorTest, StopRevokesEveryPartitionAndFinishStoresWhatHasPassed) {
  auto c = Make();
  c->Step();
  c->Stop();
  ASSERT_EQ(reader.revoked.size(), kPartitions);
  EXPECT_TRUE(c->owned().empty());
  reader.revoked.at(0)->Emitted("windows", 5 * kSecond);
  reader.revoked.erase(0);
  reader.revoked.erase(1);  // passed without a window emitted
  c->Finish();
  std::map<uint32_t, std::optional<int64_t>> recorded(membership.recorded.begin(),
                                                      membership.recorded.end());
  EXPECT_EQ(recorded,
            (std::map<uint32_t, std::optional<int64_t>>{{0, 5 * kSecond}, {1, std::nullopt}}));
  // Partitions 2 and 3 had not passed: no record, and none later either.
  reader.revoked.clear();
  c->Finish();
  EXPECT_EQ(membership.recorded.size(), 2u);
}

TEST_F(PartitionCoordinatorTest, ItReadsAgainWhatCameAfterTheCheckpointUpToTheLastDelivered) {
  FakeCheckpoints checkpoints;
  checkpoints.at = {{0, 10}, {1, 20}};
  reader.delivered = {{0, 15}, {1, 20}, {2, 9}};
  auto c = Make(&checkpoints);
  c->Step();
  std::map<uint32_t, std::optional<ChangelogRange>> reread;
  for (const auto& a : reader.assigned) reread[a.partition] = a.reread;
  EXPECT_EQ(reread.at(0), (ChangelogRange{11, 15}));
  EXPECT_FALSE(reread.at(1).has_value()) << "everything delivered is stored";
  EXPECT_FALSE(reread.at(2).has_value()) << "a partition without a checkpoint starts one";
  EXPECT_EQ(checkpoints.at.at(2), 9u);
  EXPECT_EQ(checkpoints.at.at(3), 0u);
}

TEST_F(PartitionCoordinatorTest, AChangelogThatCannotBeReadKeepsTheClaimedRecordForTheNextRound) {
  FakeCheckpoints checkpoints;
  membership.records = {{0, 3 * kSecond}, {1, 3 * kSecond}, {2, 3 * kSecond}, {3, 3 * kSecond}};
  checkpoints.failures = 4;  // every partition, this round
  auto c = Make(&checkpoints);
  c->Step();
  EXPECT_TRUE(reader.assigned.empty());
  EXPECT_TRUE(c->Waiting());
  EXPECT_TRUE(membership.records.empty()) << "claimed";
  const int claims = membership.claims;
  c->Step();
  EXPECT_EQ(membership.claims, claims) << "a decided record is not claimed again";
  ASSERT_EQ(reader.assigned.size(), kPartitions);
  for (const auto& a : reader.assigned)
    EXPECT_EQ(a.emitted, (EmittedWindows{{"windows", 3 * kSecond}}));
}

TEST_F(PartitionCoordinatorTest, APartitionWhoseConsumerCannotBeMadeWaitsForTheNextRound) {
  reader.refuse_prepare = {2};
  auto c = Make();
  EXPECT_THROW(c->Step(), std::runtime_error);
  EXPECT_TRUE(c->Waiting());
  EXPECT_EQ(reader.AssignedPartitions().count(2), 0u);
  reader.refuse_prepare.clear();
  c->Step();
  EXPECT_EQ(reader.AssignedPartitions(), (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_FALSE(c->Waiting());
}

TEST_F(PartitionCoordinatorTest, AWorkerGivenUpWhileWaitingNoLongerWaits) {
  membership.SetMembers({"w-self", "w-other"});
  membership.holds["w-other"] = {0, 1, 2, 3};
  auto c = Make();
  c->Step();
  ASSERT_TRUE(c->Waiting());
  // A third worker joins and the partitions this one waited for go elsewhere.
  std::vector<std::string> all = {"w-self", "w-other"};
  for (int i = 0; i < 8 && !MineAmong(all).empty(); ++i) all.push_back("w-" + std::to_string(i));
  ASSERT_TRUE(MineAmong(all).empty()) << "eight more workers leave this one none of four";
  membership.SetMembers(all);
  c->Step();
  EXPECT_FALSE(c->Waiting());
  EXPECT_TRUE(reader.assigned.empty());
}

}  // namespace
}  // namespace fleetflow
