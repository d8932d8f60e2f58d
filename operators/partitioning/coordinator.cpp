#include "coordinator.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "thread_name.hpp"

namespace fleetflow {

namespace {

/// The coordinator looks at the membership this often while a partition waits to be taken
/// over, and otherwise every kIdleRoundMs (a member gone silent) or when woken.
constexpr int kRoundMs = 100;
constexpr int kIdleRoundMs = 1000;
/// A previous owner that still runs is waited for this many member timeouts at most for its
/// hand-over record (a worker that heartbeats but never gives the partition up is wedged).
constexpr int64_t kRecordWaitTimeouts = 10;

}  // namespace

std::optional<ChangelogRange> ChangelogTail(CheckpointStore& checkpoints, uint32_t p,
                                            uint64_t delivered) {
  const auto checkpoint = checkpoints.Checkpoint(p);
  // Keepers without a checkpoint start at the partition's (a node new in the pipeline holds
  // nothing before it), or at what was delivered when it has none.
  checkpoints.Begin(p, checkpoint.value_or(delivered));
  if (!checkpoint || delivered <= *checkpoint) return std::nullopt;
  return ChangelogRange{*checkpoint + 1, delivered};
}

/// The hand-overs on their way through the graph. A ticket (the Handover a kRevoked event
/// carries) tells the ledger when its last reference goes, and wakes the coordinator; nothing
/// else happens then: the coordinator stores the record on its own path. Shared with the
/// tickets, which may outlive the coordinator.
class PartitionCoordinator::Ledger {
 public:
  explicit Ledger(std::function<void()> wake) : wake_(std::move(wake)) {}

  std::shared_ptr<Handover> Ticket(uint32_t partition, std::shared_ptr<Ledger> self) {
    std::lock_guard lock(mu_);
    ++on_the_way_;
    return std::make_shared<PassTicket>(partition, std::move(self));
  }

  /// The hand-overs that passed since the last call, and how many are still on their way.
  std::pair<std::vector<std::pair<uint32_t, EmittedWindows>>, size_t> Take() {
    std::lock_guard lock(mu_);
    return {std::exchange(passed_, {}), on_the_way_};
  }

  /// No more wake-ups (the coordinator goes).
  void Close() {
    std::lock_guard lock(mu_);
    wake_ = nullptr;
  }

 private:
  class PassTicket final : public Handover {
   public:
    PassTicket(uint32_t partition, std::shared_ptr<Ledger> ledger)
        : partition_(partition), ledger_(std::move(ledger)) {}
    ~PassTicket() override { ledger_->Passed(partition_, windows()); }

   private:
    const uint32_t partition_;
    const std::shared_ptr<Ledger> ledger_;
  };

  void Passed(uint32_t partition, EmittedWindows windows) {
    std::lock_guard lock(mu_);
    --on_the_way_;
    passed_.emplace_back(partition, std::move(windows));
    if (wake_) wake_();
  }

  std::mutex mu_;
  std::function<void()> wake_;
  std::vector<std::pair<uint32_t, EmittedWindows>> passed_;
  size_t on_the_way_ = 0;
};

PartitionCoordinator::PartitionCoordinator(CoordinatorOptions options, Membership& membership,
                                           PartitionReader& reader, CheckpointStore* checkpoints,
                                           Metrics& metrics, const Labels& labels,
                                           std::function<int64_t()> steady_now)
    : options_(std::move(options)),
      membership_(membership),
      reader_(reader),
      checkpoints_(checkpoints),
      now_(std::move(steady_now)),
      ledger_(std::make_shared<Ledger>([this] { Wake(); })),
      owned_gauge_(metrics.GetGauge("partitions_owned",
                                    "Partitions this worker reads (partitioned sources).", labels)),
      assigned_(metrics.GetCounter(
          "partitions_assigned",
          "Partitions taken over (at start too), with or without a hand-over record.", labels)),
      recovered_(metrics.GetCounter(
          "partitions_recovered",
          "Partitions taken over without a record from a previous owner that held them (it "
          "crashed, or stayed wedged): the windows their restored state computes are written "
          "again.",
          labels)),
      revoked_(metrics.GetCounter("partitions_revoked",
                                  "Partitions given up (stop, or moved to another worker).",
                                  labels)) {
  metrics
      .GetGauge("partitions",
                "The pipeline's partitions (the partitions setting): what the workers' "
                "partitions_owned add up to once settled.",
                labels)
      .Set(static_cast<double>(options_.partitions));
}

PartitionCoordinator::~PartitionCoordinator() {
  Stop();
  Finish();
  ledger_->Close();
}

void PartitionCoordinator::Start() {
  membership_.SetOnChange([this] { Wake(); });
  Step();
  {
    std::lock_guard lock(mu_);
    running_ = true;
  }
  thread_ = std::thread([this] { Run(); });
  NameThread(thread_, "ff-coordinator");
}

void PartitionCoordinator::Wake() {
  {
    std::lock_guard lock(mu_);
    changed_ = true;
  }
  cv_.notify_all();
}

void PartitionCoordinator::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    const int period_ms = gaining_.empty() ? kIdleRoundMs : kRoundMs;
    cv_.wait_for(lock, std::chrono::milliseconds(period_ms),
                 [this] { return stopping_ || changed_; });
    if (stopping_) return;
    changed_ = false;
    ++rounds_begun_;
    lock.unlock();
    try {
      Step();
    } catch (const std::exception& e) {
      spdlog::warn("node '{}': rebalance: {}", options_.node, e.what());
    }
    lock.lock();
    ++rounds_done_;
    cv_.notify_all();  // ConfirmLeases
  }
}

void PartitionCoordinator::ConfirmLeases() {
  size_t lost = 0;
  const int64_t deadline = now_() + options_.member_timeout_ns;
  for (;;) {
    try {
      lost = membership_.CheckLeases();
      break;
    } catch (const std::exception& e) {
      if (now_() >= deadline) {
        spdlog::error(
            "node '{}': after standing still, this worker could not read its partitions' leases "
            "({}): reading on; a partition another worker took meanwhile is given up when the "
            "watch brings its lease",
            options_.node, e.what());
        return;
      }
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(kRoundMs), [this] { return stopping_; })) {
        return;
      }
    }
  }
  if (lost == 0) return;
  std::unique_lock lock(mu_);
  if (!running_) return;  // Step() is the caller's (tests)
  // A round under way may have looked at the lost leases before they were: one begun after.
  const uint64_t round = rounds_begun_ + 1;
  changed_ = true;
  cv_.notify_all();
  cv_.wait_for(lock, std::chrono::nanoseconds(options_.member_timeout_ns),
               [&] { return stopping_ || rounds_done_ >= round; });
}

void PartitionCoordinator::Step() {
  StorePassedHandovers();
  FollowMembers();
  GiveUpLostLeases();
  DeleteStaleRecords();
  const int64_t now = now_();
  // An assignment can take seconds (a partition's state is restored), so a round's assignments
  // can outlast the members it read: a worker that joins meanwhile may take what this round
  // would still assign, as free. Before each assignment the members are read again; a partition
  // that they no longer give this worker is left to the next round, which follows the change.
  // Only a join or a leave changes the generation (a heartbeat does not), and a change that
  // leaves a partition here does not hold it back, so changes however frequent never stall the
  // partitions that stay.
  uint64_t seen = generation_;
  std::vector<bool> mine;  // by partition, under the members of `seen`; empty: those of the round
  for (auto it = gaining_.begin(); it != gaining_.end();) {
    if (auto [members, generation] = membership_.Members(); generation != seen) {
      seen = generation;
      const auto owners = AssignPartitions(members, options_.partitions);
      const size_t self =
          std::find(members.begin(), members.end(), membership_.id()) - members.begin();
      mine.assign(options_.partitions, false);
      for (uint32_t p = 0; p < options_.partitions; ++p) mine[p] = owners[p] == self;
    }
    if (!mine.empty() && !mine[it->first]) {
      spdlog::info(
          "node '{}': partition {} not taken: the members changed during the round and give it "
          "to another worker",
          options_.node, it->first);
      ++it;
      continue;
    }
    if (TryAssign(it->first, it->second, now)) {
      it = gaining_.erase(it);
      --waiting_;  // after the reader holds back for it (Assign)
    } else {
      ++it;
    }
  }
}

void PartitionCoordinator::FollowMembers() {
  const auto [members, generation] = membership_.Members();
  const bool first = !started_;
  started_ = true;
  if (generation == generation_ && !first) return;
  generation_ = generation;
  const auto owners = AssignPartitions(members, options_.partitions);
  const size_t self = std::find(members.begin(), members.end(), membership_.id()) - members.begin();
  std::vector<uint32_t> lost;
  for (uint32_t p = 0; p < options_.partitions; ++p) {
    if (owners[p] != self) {
      if (owned_.count(p) > 0) lost.push_back(p);
      if (gaining_.erase(p) > 0) --waiting_;
      continue;
    }
    if (owned_.count(p) > 0 || gaining_.count(p) > 0) continue;
    // Who had it: at this worker's start, the owner among the others (nobody when alone).
    std::string previous;
    if (!first && previous_owners_.size() == options_.partitions) {
      previous = previous_members_[previous_owners_[p]];
    } else if (first && members.size() > 1) {
      std::vector<std::string> others = members;
      others.erase(others.begin() + static_cast<std::ptrdiff_t>(self));
      previous = others[AssignPartitions(others, options_.partitions)[p]];
    }
    const int64_t now = now_();
    gaining_[p] = Gaining{now, std::move(previous), now, 0, false, std::nullopt, {}, 0, {}};
    ++waiting_;
  }
  Revoke(lost);
  previous_members_ = members;
  previous_owners_ = owners;
}

bool PartitionCoordinator::TryAssign(uint32_t p, Gaining& g, int64_t now) {
  // Given up by this worker a moment ago (a lease another worker took, then handed back at once):
  // its kRevoked event is emitted by the fetch thread once the partition's requests end, and
  // would follow a kAssigned event emitted now, wiping the state the operators begin with.
  if (giving_up_.count(p) > 0) return false;
  if (prepared_.count(p) == 0) {
    // Its consumer first: a failure leaves the partition waiting, its record unclaimed, and the
    // next round tries again.
    reader_.Prepare(p);
    prepared_.insert(p);
  }
  std::optional<EmittedWindows> record;
  if (g.decided) {
    record = g.record;  // decided before reading its changelog failed
  } else {
    record = membership_.ClaimHandover(p);
  }
  // Who reads the partition: usually its previous owner, but while the members of two workers
  // differ for a moment (a join or a leave seen at different times), another one.
  std::string holder = record || g.decided ? std::string() : membership_.HolderOf(p);
  // A worker that kept the lease from this one reads the partition, whatever its heartbeat says.
  if (holder.empty() && !record && !g.decided) holder = g.keeper;
  const bool held = !holder.empty();
  if (held) g.held_ns = now;
  if (!held) holder = g.previous;
  if (!record && !holder.empty() && !g.decided) {
    // A worker that holds the partition records it once it has given it up (however long its
    // graph takes), and its heartbeat drops the partition only then; a previous owner that does
    // not hold it (it had not taken it yet, or gave it up and another worker claimed the record
    // first: that one's heartbeat holds it a moment later), or left cleanly, has nothing to wait
    // for but the watches; one that went silent holding it crashed.
    const auto standing = membership_.StandingOf(holder);
    const int64_t waited = now - g.since_ns;
    const int64_t timeout = options_.member_timeout_ns;
    const bool wait = standing == Membership::Standing::kAlive
                          ? (held ? waited < kRecordWaitTimeouts * timeout
                                  : now - g.held_ns < options_.heartbeat_ns)
                          : standing == Membership::Standing::kLeft && waited < timeout;
    if (wait) return false;
    if (held) {
      // Its messages delivered to the previous owner and never acknowledged come again
      // ack_wait after their delivery, which was before now: read from then on, the partition
      // gets them first (the server redelivers before it sends new messages), not after the
      // windows they belong to closed on the newer messages' event time.
      if (g.recover_at_ns == 0) g.recover_at_ns = now + options_.ack_wait_ns;
      if (now < g.recover_at_ns) return false;
    }
    // The record may be written and its watch behind the heartbeat that dropped the partition.
    record = membership_.ClaimHandover(p, true);
    if (!record && held) g.recovered_from = holder;
  }
  Assignment a;
  a.partition = p;
  a.emitted = record;
  try {
    if (checkpoints_ != nullptr) a.reread = ChangelogTail(*checkpoints_, p, reader_.Delivered(p));
  } catch (const std::exception& e) {
    spdlog::warn("node '{}': partition {}: reading its changelog: {} (trying again)", options_.node,
                 p, e.what());
    g.decided = true;
    g.record = record;
    return false;
  }
  // The lease last: of the workers that judged the partition free at the same moment (their
  // members differed), one reads it; the others wait for it as for any worker that holds it.
  std::string keeper;
  try {
    const bool wedged = !g.keeper.empty() &&
                        now - g.keeper_since_ns >= kRecordWaitTimeouts * options_.member_timeout_ns;
    keeper = membership_.TakeLease(p, wedged ? g.keeper : std::string());
  } catch (const std::exception& e) {
    spdlog::warn("node '{}': partition {}: taking its lease: {} (trying again)", options_.node, p,
                 e.what());
    g.decided = true;
    g.record = record;
    return false;
  }
  if (!keeper.empty()) {
    if (keeper != g.keeper) {
      spdlog::info(
          "node '{}': partition {} not taken: worker {} holds its lease; waiting for it to give "
          "the partition up{}",
          options_.node, p, keeper,
          record ? " (the hand-over record claimed is older than what it reads: dropped)" : "");
      g.keeper = keeper;
      g.keeper_since_ns = now;
    }
    // From the start: its record, or its messages' redelivery if it crashed.
    g.decided = false;
    g.record.reset();
    g.recover_at_ns = 0;
    g.recovered_from.clear();
    return false;
  }
  if (!g.recovered_from.empty()) {
    recovered_.Inc();
    spdlog::warn(
        "node '{}': partition {} taken over without a hand-over record from {}: the windows of "
        "its restored state are written again",
        options_.node, p, g.recovered_from);
  }
  membership_.Hold(p);
  reader_.Assign(a);  // holds back for the partition before waiting_ lets go (Step)
  owned_.insert(p);
  owned_gauge_.Set(static_cast<double>(owned_.size()));
  assigned_.Inc();
  return true;
}

void PartitionCoordinator::GiveUpLostLeases() {
  for (const auto& [p, keeper] : membership_.TakeLostLeases()) {
    if (owned_.count(p) == 0) continue;
    spdlog::error(
        "node '{}': partition {}: worker {} took its lease (it took this worker for gone or "
        "wedged: no heartbeat of it came for the member timeout) and reads it: given up at once, "
        "without a hand-over record; taken again once that worker hands it back, if the members "
        "give it to this worker",
        options_.node, p, keeper);
    fenced_.insert(p);
    Revoke({p});
    const size_t self =
        std::find(previous_members_.begin(), previous_members_.end(), membership_.id()) -
        previous_members_.begin();
    if (previous_owners_.size() != options_.partitions || previous_owners_[p] != self) continue;
    // Waited for as any worker that holds it: its record, or its crash.
    const int64_t now = now_();
    gaining_[p] = Gaining{now, keeper, now, 0, false, std::nullopt, keeper, now, {}};
    ++waiting_;
  }
}

void PartitionCoordinator::DeleteStaleRecords() {
  for (const uint32_t p : owned_) {
    const auto stale = membership_.ClaimHandover(p);
    if (!stale) continue;
    spdlog::warn(
        "node '{}': partition {}: a hand-over record ({}) came while this worker reads the "
        "partition: its writer gave the partition up after this worker had taken it over; "
        "deleted, so that its next owner does not go on from those older windows",
        options_.node, p, FormatEmittedWindows(*stale));
  }
}

void PartitionCoordinator::Revoke(const std::vector<uint32_t>& partitions) {
  for (const uint32_t p : partitions) {
    owned_.erase(p);
    giving_up_.insert(p);
    reader_.Revoke(p, ledger_->Ticket(p, ledger_));
    revoked_.Inc();
  }
  owned_gauge_.Set(static_cast<double>(owned_.size()));
}

void PartitionCoordinator::StorePassedHandovers() {
  for (const auto& [p, windows] : ledger_->Take().first) {
    giving_up_.erase(p);
    if (fenced_.erase(p) > 0) {
      membership_.Drop(p);  // its reader has the state: a record would be older than it
    } else {
      membership_.RecordHandover(p, windows);
    }
  }
}

void PartitionCoordinator::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  membership_.SetOnChange(nullptr);
  Revoke(std::vector<uint32_t>(owned_.begin(), owned_.end()));
}

void PartitionCoordinator::Finish() {
  if (finished_ || !stopped_) return;
  finished_ = true;
  StorePassedHandovers();
  const size_t on_the_way = ledger_->Take().second;
  if (on_the_way > 0) {
    spdlog::error(
        "node '{}': {} hand-over records not written (their partitions' last events had not "
        "passed the graph): their next owners write those windows again",
        options_.node, on_the_way);
  }
}

}  // namespace fleetflow
