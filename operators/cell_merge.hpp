#pragma once
/// cell_merge: the merge of fleet rows across workers (docs/semantics.md, "Across vehicles"),
/// after a fleet_source. Behind a partitioned source each partition of the vehicles' stream (an
/// "origin") closes its windows on its own and fleet_aggregate makes one partial row per cell of
/// each: the rows of a cell and window are the sum of every origin's partials. CellMerge keeps, for
/// the cells of one shard, the partials merged so far and each origin's progress, and gives a
/// window's rows once every origin has reported that window or a later one:
///  - an origin's partials come in window order (a partition closes its windows in order, and
///    reports every window it closes, an empty one too), so a partial of a window at or before
///    the origin's last one is one it sent again (after a crash or a hand-over of the origin):
///    a duplicate, not merged again;
///  - a window is complete when every origin's last window reaches it; its rows (one per cell
///    with a vehicle, the metrics of fleet_aggregate merged: counts and sums added, the smallest
///    and largest kept) are given once, oldest window first.
/// Its whole state is what `Save` returns, so that the shard's next owner goes on from a snapshot
/// and the partials after it.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "message.hpp"
#include "registry.hpp"
#include "state_store.hpp"

namespace fleetflow {

/// `from` merged into `into`, both statistics of the same sensor or metric: counts, sums and
/// distances added, the smallest and largest values, positions and boxes kept, the first and
/// last sample the oldest and newest by event time.
void MergeStats(SensorStats& into, const SensorStats& from);

class CellMerge {
 public:
  /// A window's partial rows from one origin: one row per cell (StatsRow::vehicle is the cell),
  /// the statistics in the order of `metrics`.
  struct Partial {
    uint32_t origin = 0;
    int64_t start_ns = 0;
    int64_t length_ns = 0;
    std::vector<StatsRow> rows;
  };

  enum class Taken {
    kMerged,     // counted into its window
    kDuplicate,  // the origin had reported this window or a later one: ignored
    kRefused,    // an origin out of range, or windows of another length or metrics
  };

  /// The merge of `origins` partitions' partials, their statistics the metrics `metrics`.
  CellMerge(uint32_t origins, std::shared_ptr<const std::vector<std::string>> metrics);

  Taken Add(const Partial& partial);

  /// The windows every origin has reached, not given before, oldest first (one StatsBatch each,
  /// none for a window without a cell).
  std::vector<StatsBatch> TakeComplete();

  /// The windows up to which every origin has reported (empty until each has).
  std::optional<int64_t> CompleteUpTo() const;

  /// The state, for a snapshot, and back.
  struct State {
    std::vector<std::optional<int64_t>> reached;  // by origin: the end of its last window
    int64_t length_ns = 0;                        // of every window (0: none seen yet)
    // Open windows by start: cell -> merged statistics.
    std::map<int64_t, std::map<std::string, std::vector<SensorStats>>> open;
  };
  const State& state() const { return state_; }
  /// Replaces the state by `restored`; false (and the state unchanged) when it has another
  /// number of origins.
  bool Restore(State restored);

  /// The state as a snapshot value (an FLM1 MergeState, schemas/fleet_partial.fbs), and back:
  /// false (the state unchanged) when `value` is not one, or one of other origins or metrics.
  std::string Save() const;
  bool Restore(std::string_view value);
  /// The merge a snapshot value holds (of its origins and metrics); empty when it is not one.
  static std::optional<CellMerge> Restored(std::string_view value);

  uint32_t origins() const { return static_cast<uint32_t>(state_.reached.size()); }
  const std::shared_ptr<const std::vector<std::string>>& metrics() const { return metrics_; }

 private:
  std::shared_ptr<const std::vector<std::string>> metrics_;
  State state_;
};

/// Registers cell_merge; `memory_snapshots`: the store of its memory backend (operator tests:
/// workers sharing one hand shards over through it; none: nothing is kept).
void RegisterCellMerge(Registry& registry,
                       std::shared_ptr<SnapshotStore> memory_snapshots = nullptr);

}  // namespace fleetflow
