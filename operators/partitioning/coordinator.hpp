#pragma once
/// The partition coordinator of a partitioned source (docs/scaling.md, docs/architecture.md).
///
/// It owns the partition protocol; the reader only reads. Three units with explicit calls
/// between them, as Kafka Streams splits assignor, task manager and task:
///  - Membership (membership.hpp) says who is alive and carries the hand-over records;
///  - the coordinator decides which partitions this worker reads (AssignPartitions), waits for a
///    previous owner's record, works out what of a partition's changelog to read again
///    (CheckpointStore), and drives the reader: Assign (with the record and the re-read range)
///    and Revoke (with the ticket that the operators downstream fill in);
///  - the reader (PartitionReader: the JetStream fetch thread) emits a partition's kAssigned
///    event, re-reads its changelog, reads its consumer, and emits its kRevoked event after its
///    last message.
/// The hand-over record of a partition given up is stored by the coordinator, on its own thread
/// or in Finish, once the partition's kRevoked event has passed every node (the ticket says so
/// when its last reference goes; that moment does nothing else).
///
/// Threads: Start() runs a first round on the caller's thread, then rounds run on the
/// coordinator's own thread, woken by the membership, by a hand-over that passed, or by a
/// timer. Unit tests call Step() instead, with an injected clock.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "membership.hpp"
#include "message.hpp"
#include "metrics.hpp"
#include "state_store.hpp"

namespace fleetflow {

/// Stream sequences of a partition's changelog to read again, both included.
struct ChangelogRange {
  uint64_t first = 0;
  uint64_t last = 0;
  bool operator==(const ChangelogRange&) const = default;
};

/// What of partition `p`'s changelog its previous owner acknowledged and may not have stored:
/// after the state's checkpoint, up to the last message its consumer delivered (`delivered`);
/// empty when none. A partition without a checkpoint gets one at `delivered` (it is new, or its
/// state was kept before checkpoints were; from there on the store moves it on). Throws when
/// the store cannot be read or written.
std::optional<ChangelogRange> ChangelogTail(CheckpointStore& checkpoints, uint32_t p,
                                            uint64_t delivered);

/// A partition this worker starts reading.
struct Assignment {
  uint32_t partition = 0;
  /// The previous owner's hand-over record (PartitionEvent::emitted).
  std::optional<EmittedWindows> emitted;
  /// Read again first (after the kAssigned event, before the consumer's messages).
  std::optional<ChangelogRange> reread;
};

/// What the coordinator drives.
class PartitionReader {
 public:
  virtual ~PartitionReader() = default;
  /// Makes partition `p` readable (its durable consumer exists). Throws: the partition waits and
  /// the next round tries again.
  virtual void Prepare(uint32_t p) = 0;
  /// The stream sequence of the last message `p`'s consumer delivered, to any worker (0: none).
  /// Throws when the server does not answer.
  virtual uint64_t Delivered(uint32_t p) = 0;
  /// Emits `a`'s kAssigned event, reads `a.reread` again, then reads the partition's consumer.
  /// On the coordinator's thread; may wait for room in the graph. Never called for a partition
  /// whose kRevoked event (Revoke) has not passed the graph yet.
  virtual void Assign(const Assignment& a) = 0;
  /// Stops reading `p`: its messages fetched ahead are handed back, and its kRevoked event,
  /// carrying `handover`, follows its last message.
  virtual void Revoke(uint32_t p, std::shared_ptr<Handover> handover) = 0;
};

struct CoordinatorOptions {
  std::string node;  // the source's node id, for logs
  uint32_t partitions = 0;
  int64_t member_timeout_ns = 4'000'000'000;
  int64_t heartbeat_ns = 1'000'000'000;
  /// The consumers' ack wait: what a crashed owner had not acknowledged comes again after it.
  int64_t ack_wait_ns = 30'000'000'000;
};

class PartitionCoordinator {
 public:
  /// `checkpoints` may be null (no keyed state stored downstream: nothing to re-read).
  /// `steady_now`: monotonic nanoseconds. The metrics carry `labels`.
  PartitionCoordinator(CoordinatorOptions options, Membership& membership, PartitionReader& reader,
                       CheckpointStore* checkpoints, Metrics& metrics, const Labels& labels,
                       std::function<int64_t()> steady_now = SteadyNowNs);
  /// Stop() and Finish() if they were not called.
  ~PartitionCoordinator();
  PartitionCoordinator(const PartitionCoordinator&) = delete;
  PartitionCoordinator& operator=(const PartitionCoordinator&) = delete;

  /// Takes what the membership gives this worker now, on the calling thread, then follows the
  /// membership on a thread of its own. Throws what the first round throws.
  void Start();
  /// One round: follows a change of the members (revokes what moved away, starts waiting for
  /// what came), deletes the records that came for partitions this worker reads, assigns each
  /// partition gained whose record came or need not be waited for, and stores the hand-overs
  /// that have passed. The members are read again before each assignment: a partition that a
  /// join or a leave during the round gave to another worker is left to the next round. Tests
  /// call it without Start.
  void Step();
  /// Stops the thread and revokes every partition: their kRevoked events follow their last
  /// messages. Idempotent.
  void Stop();
  /// After Stop, once everything the source emitted has passed the graph (Operator::Finish):
  /// stores the hand-over records of the partitions given up; one whose event has not passed is
  /// logged as not written (its next owner recovers it). Idempotent.
  void Finish();

  /// After this worker stood still (a process stopped, a VM paused; the reader's fetch thread
  /// calls it before handing on what it fetched then): asks the membership's store which of its
  /// leases other workers took meanwhile (they took this worker for gone), and returns once a
  /// round has given those partitions up (Revoke), so that none of their messages fetched from
  /// now on is handed on and acknowledged beside their new owner. Returns at once when none was
  /// lost, the coordinator's thread does not run, or it stops; a store that does not answer is
  /// asked again for a member timeout, then taken as having lost nothing. Thread-safe.
  void ConfirmLeases();

  /// True while a partition gained waits to be assigned (for its record, its consumer, or its
  /// changelog). Thread-safe.
  bool Waiting() const { return waiting_.load() > 0; }
  /// The partitions this worker reads (the coordinator's thread, or after Stop).
  const std::set<uint32_t>& owned() const { return owned_; }

 private:
  struct Gaining {
    int64_t since_ns = 0;       // steady clock
    std::string previous;       // the previous owner; empty: nobody had it
    int64_t held_ns = 0;        // steady: when a worker's heartbeat was last seen holding it
    int64_t recover_at_ns = 0;  // steady: taken without a record from then (0: not decided)
    bool decided = false;       // its record claimed (or known absent) in `record`
    std::optional<EmittedWindows> record;
    std::string keeper;           // the worker that last kept its lease from this one
    int64_t keeper_since_ns = 0;  // steady: since when it keeps it (wedged after ten timeouts)
    std::string recovered_from;   // taken without the record of this worker, which held it
  };
  class Ledger;

  void Run();
  void FollowMembers();
  /// True once partition `p` was assigned (it leaves gaining_).
  bool TryAssign(uint32_t p, Gaining& g, int64_t now);
  void Revoke(const std::vector<uint32_t>& partitions);
  /// Claims and drops the records of the partitions this worker reads. Such a record hands
  /// nothing over: this worker took its partition without it (its writer did not hold the
  /// partition yet, or did not give it up in time) and will write a record of its own when it
  /// gives the partition up. Left in the bucket, it would be claimed by the partition's next
  /// owner, which would take it for its hand-over, go on from its older window, and write the
  /// windows after it a second time.
  void DeleteStaleRecords();
  /// Gives up at once the partitions whose lease another worker took (it took this worker for
  /// gone), and waits to take them again as from any worker that holds them.
  void GiveUpLostLeases();
  void StorePassedHandovers();
  void Wake();

  const CoordinatorOptions options_;
  Membership& membership_;
  PartitionReader& reader_;
  CheckpointStore* const checkpoints_;
  const std::function<int64_t()> now_;
  std::shared_ptr<Ledger> ledger_;
  Gauge& owned_gauge_;
  Counter& assigned_;
  Counter& recovered_;
  Counter& revoked_;

  std::set<uint32_t> owned_;
  std::set<uint32_t> prepared_;  // partitions whose consumer exists
  std::map<uint32_t, Gaining> gaining_;
  // Revoked, their kRevoked event not through the graph yet (their ticket on its way): not taken
  // again before it passed, or the reader's kAssigned event would overtake it.
  std::set<uint32_t> giving_up_;
  std::set<uint32_t> fenced_;    // revoked for a lost lease: no record when their revoke passes
  std::atomic<int> waiting_{0};  // gaining_.size()
  bool started_ = false;         // the first round ran
  std::vector<std::string> previous_members_;
  std::vector<size_t> previous_owners_;
  uint64_t generation_ = 0;

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false;  // the thread runs the rounds (Start)
  bool stopping_ = false;
  bool stopped_ = false;
  bool finished_ = false;
  bool changed_ = false;       // the membership changed or a hand-over passed: the thread looks
  uint64_t rounds_begun_ = 0;  // by the thread (ConfirmLeases waits for one begun after it asked)
  uint64_t rounds_done_ = 0;
};

}  // namespace fleetflow
