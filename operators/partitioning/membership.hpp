#pragma once
/// Who shares a pipeline's partitions, and what they hand over (docs/scaling.md, "Who owns
/// what" and "Hand-over of a partition"). The coordinator (coordinator.hpp) decides with it;
/// KvMembership keeps it in JetStream KV, and the coordinator's unit tests use one in memory.
///
/// Every call is thread-safe.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message.hpp"

namespace fleetflow {

class Membership {
 public:
  virtual ~Membership() = default;

  /// This worker's id among the members.
  virtual const std::string& id() const = 0;
  /// The alive workers, sorted, and a generation that changes whenever they do.
  virtual std::pair<std::vector<std::string>, uint64_t> Members() = 0;

  enum class Standing { kAlive, kLeft, kGone };
  /// A worker's standing: heartbeating, left (it stopped cleanly: its records are written), or
  /// gone (silent for the member timeout, or never seen: it may have crashed).
  virtual Standing StandingOf(const std::string& id) = 0;
  /// This worker holds `partition` (it reads it); its heartbeat says so from now on.
  virtual void Hold(uint32_t partition) = 0;
  /// A worker other than this one whose last heartbeat said it holds `partition`: an alive one
  /// when there is one (its members may differ from this worker's for a moment), else one gone
  /// silent (it may have crashed reading it); empty when none.
  virtual std::string HolderOf(uint32_t partition) = 0;
  /// Records that each windowed node emitted every window of `partition` up to its time in
  /// `windows` (a node absent: none) as this worker gives the partition up, and no longer holds
  /// it. Stored before this worker leaves, after its lease is released; its heartbeat drops the
  /// partition once the record is stored.
  virtual void RecordHandover(uint32_t partition, const EmittedWindows& windows) = 0;
  /// This worker no longer holds `partition` and writes no record of it: another worker took
  /// its lease and reads it (TakeLostLeases).
  virtual void Drop(uint32_t partition) = 0;
  /// Claims the hand-over record of `partition`, if one is there: returns it and deletes it, so
  /// that it is used once, by one worker of those that claim it at once. `ask_server`: when none
  /// has come by the watch, asks the store itself. May throw (the store unreachable).
  virtual std::optional<EmittedWindows> ClaimHandover(uint32_t partition,
                                                      bool ask_server = false) = 0;
  /// Takes the lease of `partition`, the last step before this worker reads it: a
  /// compare-and-set at the revision read, so that of the workers that take it at once (their
  /// members differed for a moment, and each judged it free) one gets it. Taken when nobody holds
  /// it (never taken, or given up with a hand-over record: RecordHandover releases it first),
  /// this worker does, its holder is not alive (gone or left), or its holder is `wedged` (a
  /// worker alive that kept it too long). Returns the worker that keeps it; empty when this
  /// worker holds it now (or there is nowhere to keep leases: no hand-over records). May throw
  /// (the store unreachable).
  virtual std::string TakeLease(uint32_t partition, const std::string& wedged) = 0;
  /// The partitions whose lease another worker took while this one held it, with that worker,
  /// since the last call: it took this one for gone (frozen longer than the member timeout and
  /// the ack wait), and reads them now.
  virtual std::vector<std::pair<uint32_t, std::string>> TakeLostLeases() = 0;
  /// Reads the leases this worker holds from the store itself, after this worker stood still (a
  /// process stopped, a VM paused): those another worker took meanwhile are reported by
  /// TakeLostLeases from now on (and the SetOnChange callback called), before the watch, which
  /// may be behind, brings them. Returns how many were lost. May throw (the store unreachable).
  virtual size_t CheckLeases() = 0;
  /// `notify` is called (from any thread) when a worker joins, leaves, holds other partitions
  /// than it said, or beats again after it was taken for gone, and when a hand-over record
  /// arrives or a lease is lost; none when empty. Once this returns, the previous one is not
  /// running and will not be called again.
  virtual void SetOnChange(std::function<void()> notify) = 0;
};

/// A hand-over record's windows as text: "<node>=<window ns>,…" by node id, "-" when none.
std::string FormatEmittedWindows(const EmittedWindows& windows);
/// The windows of FormatEmittedWindows' text, or of a release's before it: one window for
/// every node ("<window ns>", under the empty id). Empty when `text` is neither.
std::optional<EmittedWindows> ParseEmittedWindows(std::string_view text);

/// A hash that every worker and release computes alike (FNV-1a, 64 bit).
uint64_t MemberHash(std::string_view s);

/// The owner (an index into `members`, sorted) of each of `partitions` partitions: rendezvous
/// hashing where a worker takes at most ceil(partitions / members) of them, so every worker
/// computes the same owners and a worker joining or leaving moves few partitions.
std::vector<size_t> AssignPartitions(const std::vector<std::string>& members, uint32_t partitions);

}  // namespace fleetflow
