#pragma once
/// Where keyed state (the newest samples per key) is kept durably. keyed_last_value holds the
/// working copy in memory and writes it through a StateStore, which reads that copy when it
/// writes a key (StateStore::Current) and keeps none of its own; the memory store keeps nothing
/// beyond the process, the JetStream KV store (operators/state/) is the checkpoint of each
/// partition's changelog (the stream): a worker that takes a partition over restores its keys
/// from there and re-reads the messages after the checkpoint. Windowed operators keep theirs
/// (window_aggregate's open windows) as a snapshot per partition through a SnapshotStore.
///
/// Calls come from the owning operator's thread, one at a time.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "message.hpp"
#include "wire.hpp"

namespace fleetflow {

/// Which samples of a key (ascending by event time) state keeps: the newest `keep`, every sample
/// less than `history_ns` older than the newest, and the newest sample older than that (the
/// *before* sample of a window at the edge of the history). What is kept is always the newest
/// part of the key's samples, so a window at or after the oldest kept sample can be computed
/// from the kept samples alone, exactly as from all of them.
struct Retention {
  size_t keep = 4;
  int64_t history_ns = 0;  // 0: by count only

  /// Index of the oldest sample to keep in `samples` (ascending by event time).
  size_t FirstKept(const std::vector<wire::Point>& samples) const {
    const size_t n = samples.size();
    size_t first = n > keep ? n - keep : 0;
    if (history_ns <= 0 || first == 0) return first;
    const int64_t newest = samples.back().ts_ns;
    const int64_t cutoff = newest < std::numeric_limits<int64_t>::min() + history_ns
                               ? std::numeric_limits<int64_t>::min()
                               : newest - history_ns;
    const auto in_history =
        std::lower_bound(samples.begin(), samples.end(), cutoff,
                         [](const wire::Point& p, int64_t ts) { return p.ts_ns < ts; });
    size_t by_time = static_cast<size_t>(in_history - samples.begin());
    if (by_time > 0) --by_time;  // the newest sample before the history
    return std::min(first, by_time);
  }
  /// Drops what is not kept.
  void Apply(std::vector<wire::Point>& samples) const {
    samples.erase(samples.begin(),
                  samples.begin() + static_cast<std::ptrdiff_t>(FirstKept(samples)));
  }
};

class StateStore {
 public:
  using Visit = std::function<void(const std::string& key, std::vector<wire::Point> samples)>;
  /// What keyed state holds now of the key the store numbered `slot` (Slot): its retained
  /// samples, ascending by event time; nullptr when the state has no such key. The store reads
  /// it when it writes the key, on the operator's thread (Sync, Forget), and keeps no copy of
  /// its own of what the state holds.
  using Current = std::function<const std::vector<wire::Point>*(size_t slot)>;

  virtual ~StateStore() = default;
  /// Hands over every stored key whose name starts with `prefix` (keys are
  /// `<partition>.<vehicle>.<sensor>`: "3." is partition 3), as it is now. Called once per
  /// partition this worker takes over, before the partition's first Write. Returns the
  /// partition's checkpoint as stored with it (the stream sequence up to which the state holds
  /// every message of the partition: the changelog re-read before it is in the state already);
  /// empty when it has none.
  virtual std::optional<uint64_t> Restore(const std::string& prefix, const Visit& visit) = 0;
  /// The store's number for `key` (made when new), for Write: a key is looked up by name once,
  /// not on every write.
  virtual size_t Slot(const std::string& key) = 0;
  /// New samples of the key numbered `slot` entered its state, from the message of stream
  /// sequence `sequence` (0: none): the partition's checkpoint passes it once they are stored.
  /// Writes of one key are coalesced: the store stores what the state holds of the key (its
  /// Current) when it next writes it.
  virtual void Write(size_t slot, uint64_t sequence) = 0;
  /// Called on every clock tick: sends the writes that are due (`all`: every pending write,
  /// waiting for them: a drain, or a partition handed over).
  virtual void Sync(bool all) = 0;
  /// Drops the keys starting with `prefix` (after Sync(true)): their partition moved away.
  /// Their slot numbers may be given to other keys.
  virtual void Forget(const std::string& prefix) = 0;
  /// False while the store cannot take writes (e.g. disconnected).
  virtual bool Ready() const { return true; }
};

/// The checkpoints of the partitions' changelogs, as the source that re-reads them sees them: the
/// stream sequence up to which a partition's state is stored (docs/scaling.md, "State"). The
/// store that keeps the state writes them (StateStore::Write's `sequence`); where and under
/// which key is the store's business. Calls come from one thread at a time.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  /// Partition `p`'s checkpoint (where several nodes keep one, the oldest); empty when it has
  /// none (a new partition, or state kept before checkpoints were). Throws when the store cannot
  /// be read (the caller tries again).
  virtual std::optional<uint64_t> Checkpoint(uint32_t p) = 0;
  /// Gives partition `p` a checkpoint at `sequence` where it has none (every keeper of one
  /// that lacks it: a new partition, a node new in the pipeline): what came up to it is taken
  /// as stored. Throws when the store cannot be written.
  virtual void Begin(uint32_t p, uint64_t sequence) = 0;
};

/// The record of a partition's state a vehicle is kept in, among `records`: FNV-1a of its id
/// (as PartitionOf) mixed with MurmurHash3's finalizer, whose low bits alone would be the
/// partition (all vehicles of a partition in one record when `records` divides the partitions).
inline size_t RecordOfVehicle(std::string_view vehicle, size_t records) {
  uint32_t h = Fnv1a(vehicle);
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return records == 0 ? 0 : h % records;
}

/// The state of a windowed operator's partitions (window_aggregate's open windows), kept as one
/// snapshot per partition: opaque values under keys of the operator's choosing, and the stream
/// sequence up to which they hold every message of the partition (the snapshot's checkpoint: a
/// next owner skips what came up to it, docs/scaling.md "State"). Unlike StateStore, which
/// coalesces writes of samples, a snapshot replaces the one before as a whole.
///
/// Calls come from the owning operator's thread, one at a time; saves are stored in the
/// background.
class SnapshotStore {
 public:
  struct Snapshot {
    std::map<std::string, std::string> values;  // by key
    std::optional<uint64_t> checkpoint;         // empty: none (nothing stored)
  };

  virtual ~SnapshotStore() = default;
  /// Partition `p`'s stored snapshot, as it is now. Called when this worker takes `p` over,
  /// before its first Save. Throws when the store cannot be read.
  virtual Snapshot Restore(uint32_t p) = 0;
  /// Replaces `p`'s snapshot by `values` (keys absent from it are deleted) holding the messages
  /// up to `sequence`, without waiting: stored in the background, the checkpoint only after
  /// every value of it was stored; a failed save never moves the checkpoint. A newer Save of `p`
  /// before the previous one was stored may replace it (only the newest is written). The key
  /// "checkpoint" is the store's own.
  virtual void Save(uint32_t p, std::map<std::string, std::string> values, uint64_t sequence) = 0;
  /// Waits until every Save so far is stored or failed (a drain, or a partition handed over);
  /// false when one failed or did not finish in time.
  virtual bool Sync() = 0;
  /// Drops what the store keeps in this process of `p` (after Sync): it moved away. The stored
  /// snapshot stays for its next owner.
  virtual void Forget(uint32_t p) = 0;
  /// False while the store cannot take saves (e.g. disconnected).
  virtual bool Ready() const { return true; }
};

/// Snapshots kept in this process, stored at once: the operators' unit tests (workers sharing
/// one store hand partitions over through it). Thread-safe.
class MemorySnapshotStore final : public SnapshotStore {
 public:
  Snapshot Restore(uint32_t p) override {
    std::lock_guard lock(mu_);
    const auto it = snapshots_.find(p);
    return it == snapshots_.end() ? Snapshot{} : it->second;
  }
  void Save(uint32_t p, std::map<std::string, std::string> values, uint64_t sequence) override {
    std::lock_guard lock(mu_);
    ++saves_;
    snapshots_[p] = Snapshot{std::move(values), sequence};
  }
  bool Sync() override { return true; }
  void Forget(uint32_t) override {}
  /// Saves so far.
  size_t saves() const {
    std::lock_guard lock(mu_);
    return saves_;
  }

 private:
  mutable std::mutex mu_;
  std::map<uint32_t, Snapshot> snapshots_;
  size_t saves_ = 0;
};

/// State that lives only in this process.
class MemoryStateStore final : public StateStore {
 public:
  std::optional<uint64_t> Restore(const std::string&, const Visit&) override {
    return std::nullopt;
  }
  size_t Slot(const std::string&) override { return 0; }
  void Write(size_t, uint64_t) override {}
  void Sync(bool) override {}
  void Forget(const std::string&) override {}
};

}  // namespace fleetflow
