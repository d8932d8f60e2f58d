#include "cell_merge.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <map>
#include <utility>

#include "fleet_partial.hpp"
#include "logging.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "state/jetstream_kv_snapshots.hpp"

namespace fleetflow {

void MergeStats(SensorStats& into, const SensorStats& from) {
  if (from.count == 0) return;
  if (into.count == 0) {
    into = from;
    return;
  }
  into.min = std::min(into.min, from.min);
  into.max = std::max(into.max, from.max);
  into.sum += from.sum;
  into.count += from.count;
  if (from.first.ts_ns < into.first.ts_ns) into.first = from.first;
  if (from.last.ts_ns > into.last.ts_ns) into.last = from.last;
  if (from.positions > 0) {
    if (into.positions == 0) {
      into.min_lat = from.min_lat;
      into.max_lat = from.max_lat;
      into.min_lon = from.min_lon;
      into.max_lon = from.max_lon;
    } else {
      into.min_lat = std::min(into.min_lat, from.min_lat);
      into.max_lat = std::max(into.max_lat, from.max_lat);
      into.min_lon = std::min(into.min_lon, from.min_lon);
      into.max_lon = std::max(into.max_lon, from.max_lon);
    }
    into.positions += from.positions;
  }
  into.distance_m += from.distance_m;
}

CellMerge::CellMerge(uint32_t origins, std::shared_ptr<const std::vector<std::string>> metrics)
    : metrics_(std::move(metrics)) {
  state_.reached.resize(origins);
}

CellMerge::Taken CellMerge::Add(const Partial& partial) {
  if (partial.origin >= state_.reached.size() || partial.length_ns <= 0 ||
      (state_.length_ns != 0 && partial.length_ns != state_.length_ns)) {
    return Taken::kRefused;
  }
  for (const StatsRow& row : partial.rows) {
    if (row.sensors.size() != metrics_->size()) return Taken::kRefused;
  }
  const int64_t end = partial.start_ns + partial.length_ns;
  std::optional<int64_t>& reached = state_.reached[partial.origin];
  if (reached && end <= *reached) return Taken::kDuplicate;
  reached = end;
  state_.length_ns = partial.length_ns;
  if (partial.rows.empty()) return Taken::kMerged;
  auto& cells = state_.open[partial.start_ns];
  for (const StatsRow& row : partial.rows) {
    std::vector<SensorStats>& merged = cells[row.vehicle];
    if (merged.empty()) merged.resize(metrics_->size());
    for (size_t i = 0; i < merged.size(); ++i) MergeStats(merged[i], row.sensors[i]);
  }
  return Taken::kMerged;
}

std::optional<int64_t> CellMerge::CompleteUpTo() const {
  std::optional<int64_t> upto;
  for (const std::optional<int64_t>& r : state_.reached) {
    if (!r) return std::nullopt;
    upto = upto ? std::min(*upto, *r) : *r;
  }
  return upto;
}

std::vector<StatsBatch> CellMerge::TakeComplete() {
  std::vector<StatsBatch> out;
  const std::optional<int64_t> upto = CompleteUpTo();
  if (!upto) return out;
  for (auto it = state_.open.begin();
       it != state_.open.end() && it->first + state_.length_ns <= *upto;
       it = state_.open.erase(it)) {
    StatsBatch& batch = out.emplace_back();
    batch.start_ns = it->first;
    batch.length_ns = state_.length_ns;
    batch.sensors = metrics_;
    batch.rows.reserve(it->second.size());
    for (auto& [cell, stats] : it->second) batch.rows.push_back({cell, std::move(stats)});
  }
  return out;
}

bool CellMerge::Restore(State restored) {
  if (restored.reached.size() != state_.reached.size()) return false;
  for (const auto& [_, cells] : restored.open) {
    for (const auto& [cell, stats] : cells) {
      if (stats.size() != metrics_->size()) return false;
    }
  }
  state_ = std::move(restored);
  return true;
}

std::string CellMerge::Save() const {
  fleet::MergeState saved;
  saved.origins = static_cast<uint32_t>(state_.reached.size());
  saved.length_ns = state_.length_ns;
  saved.metrics = *metrics_;
  for (uint32_t o = 0; o < state_.reached.size(); ++o) {
    if (state_.reached[o]) saved.reached[o] = *state_.reached[o];
  }
  for (const auto& [start, cells] : state_.open) {
    std::vector<fleet::Row>& rows = saved.windows[start];
    for (const auto& [cell, stats] : cells) {
      fleet::Row& row = rows.emplace_back();
      row.key = cell;
      for (const SensorStats& s : stats) row.stats.push_back({s.count, s.min, s.max, s.sum});
    }
  }
  return fleet::Encode(saved);
}

std::optional<CellMerge> CellMerge::Restored(std::string_view value) {
  fleet::MergeState saved;
  if (!fleet::Decode(value, saved)) return std::nullopt;
  CellMerge merge(saved.origins,
                  std::make_shared<const std::vector<std::string>>(std::move(saved.metrics)));
  if (!merge.Restore(value)) return std::nullopt;
  return merge;
}

bool CellMerge::Restore(std::string_view value) {
  fleet::MergeState saved;
  if (!fleet::Decode(value, saved) || saved.metrics != *metrics_ ||
      saved.origins != state_.reached.size()) {
    return false;
  }
  State restored;
  restored.reached.resize(saved.origins);
  for (const auto& [origin, end] : saved.reached) {
    if (origin >= saved.origins) return false;
    restored.reached[origin] = end;
  }
  restored.length_ns = saved.length_ns;
  for (const auto& [start, rows] : saved.windows) {
    auto& cells = restored.open[start];
    for (const fleet::Row& row : rows) {
      std::vector<SensorStats>& stats = cells[row.key];
      for (const fleet::Stats& s : row.stats) {
        SensorStats& st = stats.emplace_back();
        st.count = s.count;
        st.min = s.min;
        st.max = s.max;
        st.sum = s.sum;
      }
    }
  }
  return Restore(std::move(restored));
}

namespace {

/// The value of a shard's snapshot (SnapshotStore keys), and the size above which it is said to
/// come near a NATS message's limit (max_payload, 1 MB by default).
constexpr char kMergeKey[] = "merge";
constexpr size_t kLargestSnapshot = 768 * 1024;

/// The options of cell_merge (see Spec()).
struct CellMergeOptions {
  enum class Backend { kMemory, kJetStreamKv };
  Backend backend = Backend::kJetStreamKv;
  std::string bucket;
  KvBucketSettings bucket_settings;
  int64_t flush_ms = 0;
  NatsClientOptions nats;
};

/// A shard this worker merges.
struct Shard {
  std::optional<CellMerge> merge;      // from its first partial, or its snapshot
  std::optional<uint64_t> checkpoint;  // of the snapshot restored: partials up to it are in it
  uint64_t taken = 0;                  // the highest stream sequence taken in
  bool changed = false;                // since the last snapshot
};

/// Merges the partials of the shards its fleet_source reads (StatsBatch::partition the shard,
/// ::origin the partition that made it) and emits each window of a shard once every origin has
/// reported it. Each shard's merge is a snapshot (SnapshotStore, one value) saved every
/// flush_ms, and on revocation before the shard moves on.
class CellMergeOperator final : public Operator {
 public:
  CellMergeOperator(const OperatorContext& ctx, const CellMergeOptions& options,
                    std::shared_ptr<SnapshotStore> memory_snapshots = nullptr)
      : node_(ctx.node_id),
        flush_ns_(options.flush_ms * 1'000'000),
        merged_(ctx.metrics.GetCounter("partials_merged", "Partials merged into their windows.",
                                       ctx.labels())),
        duplicates_(ctx.metrics.GetCounter(
            "partials_duplicate",
            "Partials of a window their partition had reported before (sent again after a crash "
            "or a hand-over of the partition): ignored.",
            ctx.labels())),
        refused_(ctx.metrics.GetCounter(
            "partials_refused",
            "Partials that do not fit the shard's merge (another number of partitions, other "
            "metrics or window length, a partition out of range, or rows that are no partial): "
            "ignored.",
            ctx.labels())),
        in_snapshot_(ctx.metrics.GetCounter(
            "partials_in_snapshot",
            "Partials up to the checkpoint of the snapshot a shard was restored from: merged "
            "there already, skipped.",
            ctx.labels())),
        windows_(ctx.metrics.GetCounter("windows_emitted",
                                        "Windows complete (every partition reported) and emitted.",
                                        ctx.labels())),
        rows_(ctx.metrics.GetCounter("rows_emitted", "Rows emitted (one per cell of a window).",
                                     ctx.labels())),
        corrupt_(ctx.metrics.GetCounter(
            "snapshot_values_corrupt",
            "Snapshots that could not be read on taking a shard over: the shard starts afresh.",
            ctx.labels())) {
    snapshots_ = options.backend == CellMergeOptions::Backend::kJetStreamKv
                     ? OpenKvSnapshots(ctx, options.nats, options.bucket, options.bucket_settings)
                     : std::move(memory_snapshots);
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<StatsBatch>(in.get())) {
      if (!b->origin && !b->partition) {
        // A window's whole rows, not a partial: one process read every vehicle (a replay, a
        // test: the stage across workers in one process). Nothing to merge.
        windows_.Inc();
        rows_.Inc(b->rows.size());
        out.Emit(in);
        return;
      }
      Merge(*b, out);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      if (snapshots_) SaveDue(*t);
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e);
      out.Emit(in);
    }
  }

  bool Ready() const override { return !snapshots_ || snapshots_->Ready(); }

 private:
  void Merge(const StatsBatch& b, Emitter& out) {
    if (!b.origin || !b.sensors) {
      Refuse("a partition's rows that are not a partial (cell_merge reads a fleet_source)");
      return;
    }
    const uint32_t id = b.partition.value_or(0);
    Shard& shard = shards_[id];
    if (b.sequence != 0 && shard.checkpoint && b.sequence <= *shard.checkpoint) {
      in_snapshot_.Inc();
      return;
    }
    shard.taken = std::max(shard.taken, b.sequence);
    shard.changed = true;
    if (!shard.merge) shard.merge.emplace(b.origin->partitions, b.sensors);
    CellMerge& merge = *shard.merge;
    if (merge.origins() != b.origin->partitions || *merge.metrics() != *b.sensors) {
      Refuse("a partial of " + std::to_string(b.origin->partitions) +
             " partitions or other metrics, where shard " + std::to_string(id) + " merges " +
             std::to_string(merge.origins()));
      return;
    }
    switch (merge.Add({b.origin->partition, b.start_ns, b.length_ns, b.rows})) {
      case CellMerge::Taken::kMerged:
        merged_.Inc();
        break;
      case CellMerge::Taken::kDuplicate:
        duplicates_.Inc();
        return;
      case CellMerge::Taken::kRefused:
        Refuse("a partial of another window length, or rows without every metric");
        return;
    }
    for (StatsBatch& done : merge.TakeComplete()) {
      windows_.Inc();
      rows_.Inc(done.rows.size());
      out.Emit(MakeMessage(std::move(done)));
    }
  }

  void Refuse(const std::string& what) {
    refused_.Inc();
    refused_log_.Log("refused", spdlog::level::warn, "cell_merge '" + node_ + "': ignored " + what);
  }

  /// A shard revoked stores its final snapshot before the event goes on (its next owner goes on
  /// from there); one assigned restores its snapshot.
  void OnPartitionEvent(const PartitionEvent& e) {
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      const auto it = shards_.find(e.partition);
      if (it != shards_.end() && snapshots_) {
        Save(e.partition, it->second);
        if (!snapshots_->Sync()) {
          spdlog::warn(
              "cell_merge '{}': the final snapshot of shard {} was not stored; its next owner "
              "restores the one before and reads the partials after it",
              node_, e.partition);
        }
        snapshots_->Forget(e.partition);
      }
      shards_.erase(e.partition);
      return;
    }
    Shard& shard = shards_[e.partition];
    shard = Shard{};
    if (!snapshots_) return;
    SnapshotStore::Snapshot snapshot = snapshots_->Restore(e.partition);
    const auto value = snapshot.values.find(kMergeKey);
    if (value != snapshot.values.end()) {
      shard.merge = CellMerge::Restored(value->second);
      if (!shard.merge) {
        corrupt_.Inc();
        spdlog::warn(
            "cell_merge '{}': the snapshot of shard {} is not an FLM1 MergeState: the shard "
            "starts afresh from the partials after its checkpoint",
            node_, e.partition);
      }
    }
    shard.checkpoint = snapshot.checkpoint;
    shard.taken = snapshot.checkpoint.value_or(0);
  }

  /// Every flush_ms, the shards changed since their last snapshot store one; a drain stores
  /// every one and waits for them.
  void SaveDue(const Tick& t) {
    if (!t.drain && t.now_ns < next_save_ns_) return;
    next_save_ns_ = t.now_ns + flush_ns_;
    for (auto& [id, shard] : shards_) {
      if (shard.changed) Save(id, shard);
    }
    if (t.drain && !snapshots_->Sync()) {
      spdlog::warn("cell_merge '{}': snapshots not stored at the drain", node_);
    }
  }

  void Save(uint32_t id, Shard& shard) {
    std::map<std::string, std::string> values;
    if (shard.merge) {
      std::string value = shard.merge->Save();
      // One value, so that a snapshot is stored whole or not at all (the partials after its
      // checkpoint are merged again on it): it must fit a message of the server.
      if (value.size() > kLargestSnapshot) {
        large_log_.Log("large", spdlog::level::err,
                       "cell_merge '" + node_ + "': the snapshot of shard " + std::to_string(id) +
                           " is " + std::to_string(value.size()) +
                           " bytes, near the server's max_payload (1 MB by default): give "
                           "fleet_publish and fleet_source more shards");
      }
      values[kMergeKey] = std::move(value);
    }
    snapshots_->Save(id, std::move(values), shard.taken);
    shard.changed = false;
  }

  const std::string node_;
  const int64_t flush_ns_;
  std::map<uint32_t, Shard> shards_;
  Counter& merged_;
  Counter& duplicates_;
  Counter& refused_;
  Counter& in_snapshot_;
  Counter& windows_;
  Counter& rows_;
  Counter& corrupt_;
  RateLimitedLog refused_log_{1, std::chrono::minutes(1)};
  RateLimitedLog large_log_{1, std::chrono::minutes(10)};
  std::shared_ptr<SnapshotStore> snapshots_;  // null: the memory backend keeps nothing
  int64_t next_save_ns_ = std::numeric_limits<int64_t>::min();
};

const OptionsSpec<CellMergeOptions>& Spec() {
  using O = CellMergeOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Enum("backend",
           "Where each shard's merge is kept: jetstream_kv (a snapshot per shard in a JetStream "
           "Key/Value bucket, keys agg.<node>.<shard>.merge and agg.<node>.<shard>.checkpoint, "
           "restored by the worker that takes the shard over, which re-reads the partials "
           "after the checkpoint) or memory (this process only: a shard taken over starts "
           "afresh, and the windows open then lack the partials merged before; operator tests).",
           &O::backend,
           {{"memory", O::Backend::kMemory}, {"jetstream_kv", O::Backend::kJetStreamKv}})
        .Default("jetstream_kv");
    c.String("bucket",
             "jetstream_kv: the bucket, created when missing: the one its fleet_source names in "
             "state_bucket.",
             &O::bucket)
        .Default("fleet");
    c.Include(&O::bucket_settings, KvBucketSpec());
    c.Integer("flush_ms",
              "jetstream_kv: each shard with new partials stores a snapshot every flush_ms (at a "
              "clock tick); a shard revoked and a drain store theirs at once.",
              &O::flush_ms)
        .Default(int64_t{5000})
        .Min(100)
        .Max(600'000);
    c.Include(&O::nats, NatsClientSpec());
  });
}

/// Its input is a fleet_source's partials; with jetstream_kv, the snapshots are in the bucket
/// the source reads the checkpoints from.
std::vector<UpstreamProblem> CheckUpstream(const Config& self, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  const CellMergeOptions o = Spec().Parse(self);
  std::vector<UpstreamProblem> problems;
  const UpstreamNode* partials = nullptr;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.rows == NodeFacts::Rows::kPartials) partials = &n;
  }
  if (partials == nullptr) {
    problems.push_back({self_id, "",
                        "cell_merge '" + self_id +
                            "' merges the partials a fleet_source reads: give it a fleet_source "
                            "as input"});
  } else if (o.backend == CellMergeOptions::Backend::kJetStreamKv &&
             partials->facts.state_bucket.value_or("") != o.bucket) {
    problems.push_back({partials->id, "/state_bucket",
                        "cell_merge '" + self_id + "' keeps its snapshots in bucket \"" + o.bucket +
                            "\": set \"state_bucket\": \"" + o.bucket +
                            "\" here, so that a shard's next owner re-reads what came after its "
                            "last snapshot"});
  }
  return problems;
}

}  // namespace

void RegisterCellMerge(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots) {
  OperatorInfo info = TypedOperator<CellMergeOperator>(
      "cell_merge",
      "Across workers: merges the partial fleet rows of every partition (fleet_source) into one "
      "row per cell and window, emitted once every partition has reported the window.",
      PortKind::kRows, PortKind::kRows, Spec());
  info.create = [memory_snapshots](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<CellMergeOperator>(ctx, Spec().Parse(ctx.config), memory_snapshots);
  };
  info.facts = [](const Config& config) {
    NodeFacts f;
    f.rows = NodeFacts::Rows::kStatistics;
    if (Spec().Parse(config).backend == CellMergeOptions::Backend::kJetStreamKv) {
      f.checkpoint_key = [](std::string_view node, uint32_t p) {
        return JetStreamKvSnapshots::KeyOf(node, p, JetStreamKvSnapshots::kCheckpointKey);
      };
    }
    return f;
  };
  info.check_upstream = CheckUpstream;
  info.check_connect = [](const Config& config) {
    const CellMergeOptions o = Spec().Parse(config);
    if (o.backend != CellMergeOptions::Backend::kJetStreamKv) return std::vector<ConnectFinding>{};
    return CheckStateBucket(o.nats, o.bucket, o.bucket_settings, "merges of the shards");
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow
