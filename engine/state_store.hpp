#pragma once
/// Where keyed state (the newest samples per key) is kept durably. keyed_last_value holds the
/// working copy in memory and writes it through a StateStore; the memory store keeps nothing
/// beyond the process, the JetStream KV store (operators/state/) is the checkpoint of each
/// partition's changelog (the stream): a worker that takes a partition over restores its keys
/// from there and re-reads the messages after the checkpoint.
///
/// Calls come from the owning operator's thread, one at a time.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
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

  virtual ~StateStore() = default;
  /// Hands over every stored key whose name starts with `prefix` (keys are
  /// `<partition>.<vehicle>.<sensor>`: "3." is partition 3), as it is now. Called once per
  /// partition this worker takes over, before the partition's first Write.
  virtual void Restore(const std::string& prefix, const Visit& visit) = 0;
  /// The store's number for `key` (made when new), for Write: a key is looked up by name once,
  /// not on every write.
  virtual size_t Slot(const std::string& key) = 0;
  /// Adds `samples` (new samples of the key numbered `slot` that entered its state, in any
  /// order) to what is stored for the key. `sequence` is the stream sequence of the message they
  /// came in (0: none): the partition's checkpoint passes it once they are stored. Writes of
  /// one key are coalesced: the store keeps the key's retained samples itself (from Restore and
  /// its own writes) and stores what state retains of them with the samples added since.
  virtual void Write(size_t slot, const std::vector<wire::Point>& samples, uint64_t sequence) = 0;
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
  /// Partition `p`'s checkpoint; empty when it has none (a new partition, or state kept before
  /// checkpoints were). Throws when the store cannot be read (the caller tries again).
  virtual std::optional<uint64_t> Checkpoint(uint32_t p) = 0;
  /// Gives partition `p`, which has no checkpoint, one at `sequence`: what came up to it is
  /// taken as stored. Throws when the store cannot be written.
  virtual void Begin(uint32_t p, uint64_t sequence) = 0;
};

/// State that lives only in this process.
class MemoryStateStore final : public StateStore {
 public:
  void Restore(const std::string&, const Visit&) override {}
  size_t Slot(const std::string&) override { return 0; }
  void Write(size_t, const std::vector<wire::Point>&, uint64_t) override {}
  void Sync(bool) override {}
  void Forget(const std::string&) override {}
};

}  // namespace fleetflow
