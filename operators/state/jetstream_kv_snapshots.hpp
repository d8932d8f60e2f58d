#pragma once
/// SnapshotStore on a JetStream Key/Value bucket: window_aggregate's partitions (docs/scaling.md,
/// "State").
///
/// Partition p's snapshot of node `node` is the keys `agg.<node>.<p>.<key>` (one per value) and
/// `agg.<node>.<p>.checkpoint` (a decimal stream sequence). They never start with `<p>.`: the
/// keys keyed_last_value restores from the same bucket. A background thread writes the saves,
/// partition by partition: the values that changed since the last one stored (many writes in
/// flight), delete markers for the keys dropped, and only once all of them were answered, the
/// checkpoint. A save that fails leaves the checkpoint where it was; what it did not store is
/// written again by the partition's next save. A Save that comes while the one before still waits
/// for the writer replaces it (kv_saves_coalesced): only the newest is written.
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "jetstream.hpp"
#include "jetstream_kv_store.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "nats_config.hpp"
#include "operator.hpp"
#include "state_store.hpp"

namespace fleetflow {

struct JetStreamKvSnapshotsOptions {
  nats::ConnectOptions connection;
  nats::BucketOptions bucket;
  std::string node;  // the operator's node id: its keys are agg.<node>.<partition>.<key>
  int restore_timeout_ms = 30'000;
  int write_timeout_ms = 10'000;  // a save not answered within this failed
  int sync_timeout_ms = 60'000;
};

class JetStreamKvSnapshots final : public SnapshotStore {
 public:
  /// Connects and opens (creating when missing) the bucket; throws nats::Error.
  JetStreamKvSnapshots(JetStreamKvSnapshotsOptions options, Metrics& metrics, const Labels& labels);
  /// Stops the writer: a save it has not begun is dropped (a drain Syncs before).
  ~JetStreamKvSnapshots() override;

  Snapshot Restore(uint32_t p) override;
  void Save(uint32_t p, std::map<std::string, std::string> values, uint64_t sequence) override;
  bool Sync() override;
  void Forget(uint32_t p) override;
  bool Ready() const override;

  /// The KV key of value `key` of partition `p`'s snapshot of node `node`.
  static std::string KeyOf(std::string_view node, uint32_t p, std::string_view key);
  static constexpr std::string_view kCheckpointKey = "checkpoint";

 private:
  struct PendingSave {
    std::map<std::string, std::string> values;
    uint64_t sequence = 0;
  };
  struct Partition {
    std::optional<PendingSave> pending;         // the newest save the writer has not begun
    std::map<std::string, std::string> stored;  // the values known to be in the bucket
    bool writing = false;
  };

  void Writer();
  /// Writes `save` of `p` over `stored` (updated to what is in the bucket after it); true when
  /// every value and the checkpoint were stored.
  bool Write(uint32_t p, const PendingSave& save, std::map<std::string, std::string>& stored);
  bool Idle() const;  // mu_ held

  const JetStreamKvSnapshotsOptions options_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;

  KvMetrics kv_metrics_;
  Counter& bytes_;
  Counter& coalesced_;
  RateLimitedLog errors_log_;

  mutable std::mutex mu_;
  std::condition_variable changed_;  // a save came, or one was written
  std::map<uint32_t, Partition> partitions_;
  size_t failed_ = 0;  // saves failed since the last Sync
  bool stop_ = false;
  std::thread writer_;  // last member: started once the rest is there
};

/// The snapshots of operator `ctx.node_id` in bucket `bucket` on the server of `nats`, the bucket
/// created with `settings` when missing (a windowed operator's jetstream_kv backend).
std::shared_ptr<SnapshotStore> OpenKvSnapshots(const OperatorContext& ctx,
                                               const NatsClientOptions& nats,
                                               const std::string& bucket,
                                               const KvBucketSettings& settings);

}  // namespace fleetflow
