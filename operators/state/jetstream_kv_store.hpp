#pragma once
/// StateStore on one JetStream Key/Value bucket: the changelog of the pipeline's partitions.
///
/// A partition's state keys `<partition>.<vehicle>.<sensor>` (and `.status`) are spread over
/// `records_per_partition` KV keys `<partition>.r<k>`, k a hash of the vehicle: each value is an
/// FLS1 Record (schemas/state.fbs) with one series per state key of its vehicles, named
/// `<vehicle>.<sensor>`, holding what state retains of it. A flush costs one write per record
/// that changed, not one per vehicle. Writes are coalesced (at most one per KV key per flush
/// interval) and sent asynchronously as compare-and-set updates on the key's revision; a write
/// carries what keyed state holds of each key of the record then (JetStreamKvOptions::current),
/// so a message costs the store no copy of its samples, only a note of its key. A worker
/// writes only the keys of the partitions it owns, so a conflict means that another worker wrote
/// the key meanwhile (a previous owner taken for dead that still ran): the stored samples are
/// merged with ours by event time and written again, so neither loses the newer samples. Nobody
/// watches the bucket while it runs: a worker that takes a partition over reads its keys once
/// (Restore). Values of the layouts before are read on restore too: a Record per vehicle under
/// `<partition>.<vehicle>` (series named by sensor) and a FLT1 Batch per state key.
///
/// The stream is each partition's changelog and the bucket its checkpoint (docs/scaling.md,
/// "State"): a message is acknowledged once its samples are in the worker's memory, and the key
/// `<partition>.checkpoint` holds the stream sequence C up to which every message written into
/// the partition's state is stored in the bucket (written after the writes that make it true
/// were answered). A worker that takes the partition over restores the records and re-reads the
/// partition's messages after C from the stream (nats_source, state_bucket) before it pulls new
/// ones, so what was acknowledged and not yet stored is not lost.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "jetstream.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "state_record.hpp"
#include "state_store.hpp"

namespace fleetflow {

struct JetStreamKvOptions {
  nats::ConnectOptions connection;
  nats::BucketOptions bucket;
  int64_t flush_ms = 200;
  int64_t flush_messages = 100'000;   // or sooner, once a partition has this many not stored
  size_t records_per_partition = 64;  // KV keys a partition's vehicles are spread over
  size_t keep = 4;                    // samples per key kept after a merge
  int64_t history_ns = 0;             // and every sample this close to the key's newest (Retention)
  int restore_timeout_ms = 30'000;
  /// What keyed state holds of each key (StateStore::Current): what a write stores.
  StateStore::Current current;
};

/// The counters of the stores on a KV bucket (this one and JetStreamKvSnapshots), per node.
struct KvMetrics {
  KvMetrics(Metrics& metrics, const Labels& labels);
  Counter& writes;
  Counter& write_errors;
  Counter& checkpoints;
  Counter& restored_keys;
};

/// A checkpoint's value (a decimal stream sequence); empty when it is not one.
std::optional<uint64_t> ParseCheckpoint(std::string_view value);

class JetStreamKvStore final : public StateStore {
 public:
  /// Connects and opens (creating when missing) the bucket; throws nats::Error.
  JetStreamKvStore(JetStreamKvOptions options, Metrics& metrics, const Labels& labels);
  ~JetStreamKvStore() override;

  std::optional<uint64_t> Restore(const std::string& prefix, const Visit& visit) override;
  size_t Slot(const std::string& key) override;
  void Write(size_t slot, uint64_t sequence) override;
  void Sync(bool all) override;
  void Forget(const std::string& prefix) override;
  bool Ready() const override;

  /// The KV key of partition `p`'s checkpoint: a decimal stream sequence.
  static std::string CheckpointKey(uint32_t p) { return std::to_string(p) + ".checkpoint"; }

  /// The KV key of a state key `<partition>.<vehicle>.<sensor>` and its series' name there:
  /// {`<partition>.r<k>`, `<vehicle>.<sensor>`}, k in [0, records) a hash of the vehicle that
  /// does not follow its partition (the partition is the same hash modulo the partition count).
  static std::pair<std::string, std::string> RecordOf(std::string_view state_key, size_t records);

  /// Merges two sample lists by event time (ts, seq unique), keeping the newest `keep`.
  static std::vector<wire::Point> Merge(std::vector<wire::Point> a,
                                        const std::vector<wire::Point>& b, size_t keep);

 private:
  /// The samples of one state key (a sensor of the vehicle, or its status). Those of a key
  /// with a slot are keyed state's (options_.current); `held` keeps what the state does not
  /// hold: a key restored and not written since, the samples of a key's other writer (a
  /// conflict), a forgotten key's last samples while its write is on its way.
  struct Series {
    std::string name;               // `<vehicle>.<sensor>`
    std::vector<wire::Point> held;  // retained, ascending
    bool foreign = false;           // held has another writer's samples (a conflict)
    size_t slot = SIZE_MAX;         // its number in slots_
  };
  /// One KV key: the series of some vehicles of one partition.
  struct Record {
    uint32_t partition = 0;
    uint64_t revision = 0;  // newest revision known for the key
    std::vector<Series> series;
    bool dirty = false;
    bool in_flight = false;
    bool conflict = false;
    uint64_t pending_seq = 0;    // lowest sequence of the samples not yet sent (0: none)
    uint64_t in_flight_seq = 0;  // lowest sequence of those in the write in flight (0: none)
  };
  /// What the checkpoint of a partition this worker owns stands on.
  struct Changelog {
    uint64_t applied = 0;     // highest sequence written into the state (Write)
    uint64_t stored = 0;      // the checkpoint last stored
    bool writing = false;     // a checkpoint write is in flight
    int64_t since_flush = 0;  // messages written into the state since the last flush
  };
  using RecordNode = std::pair<const std::string, Record>;
  struct SlotRef {
    RecordNode* record = nullptr;  // nullptr: a free number
    size_t series = 0;             // index in record->second.series
  };
  struct Outgoing {
    std::string key;
    std::vector<state::Series> series;
    uint64_t revision;
  };
  struct WriteBatch {  // the writes of one Send, for kv_write_seconds
    int64_t sent_ns;
    size_t unanswered;  // mu_
  };

  void Flush();
  /// Stores the checkpoint of each partition whose stored sequence moved on (mu_ not held).
  void Checkpoint();
  RecordNode& RecordAt(const std::string& key);  // made when new; mu_ held
  /// Merges `samples` (read from the bucket: restored, or `foreign`, another writer's after a
  /// conflict) into the series `name` of the record, held.
  static void MergeInto(Record& record, const std::string& name,
                        const std::vector<wire::Point>& samples, bool foreign);
  /// What a write of `s` stores: the state's samples of the key, merged with `held`.
  std::vector<wire::Point> SamplesOf(Series& s) const;  // mu_ held
  Outgoing Prepare(const std::string& key, Record& r);  // mu_ held
  void Send(std::vector<Outgoing> writes);              // mu_ not held
  void Done(const std::string& key, const nats::KvWriteResult& r, WriteBatch& batch);
  /// Decodes a stored value into series named by their state key: a Record (of this layout or
  /// of one per vehicle), or a Batch stored under a state key before records.
  static std::vector<state::Series> Decode(std::string_view key, const std::string& value);

  const JetStreamKvOptions options_;
  const Retention retention_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Record> records_;     // by KV key <partition>.<vehicle>
  std::vector<SlotRef> slots_;                          // by Slot's number (map nodes stay)
  std::vector<size_t> free_slots_;                      // numbers of forgotten series
  std::vector<std::string> dirty_;                      // KV keys
  std::unordered_map<uint32_t, Changelog> changelogs_;  // by partition
  int64_t last_flush_ns_ = 0;
  int64_t in_flight_ = 0;
  bool wrote_since_sync_ = false;   // a Write since the last tick
  bool wrote_since_flush_ = false;  // a Write since the last flush
  bool reread_due_ = false;         // a partition reached flush_messages since the last flush
  bool checkpoint_due_ = false;     // a write answered, or a sequence applied, since Checkpoint

  KvMetrics kv_metrics_;
  Counter& writes_;
  Counter& conflicts_;
  Counter& restored_keys_;
  Counter& write_errors_;
  Counter& checkpoints_;
  RateLimitedLog write_errors_log_;  // a few lines per 10 s; the next line counts those left out
  Gauge& pending_keys_;
  Histogram& write_seconds_;
};

/// The partitions' checkpoints that the nodes after a source keep in its state bucket
/// (JetStreamKvStore's `<partition>.checkpoint`, JetStreamKvSnapshots' per node), for the source
/// that re-reads the changelog: a partition's is the oldest of them (what came after it is not
/// in every node's state yet).
class JetStreamKvCheckpoints final : public CheckpointStore {
 public:
  /// `bucket`: the state bucket, opened on the caller's connection; `keys`: partition p's
  /// checkpoint key of each node (OperatorContext::checkpoint_keys).
  JetStreamKvCheckpoints(std::unique_ptr<nats::KeyValue> bucket,
                         std::vector<std::function<std::string(uint32_t)>> keys);
  /// The oldest of the nodes' checkpoints; nodes without one do not count (a node new in the
  /// pipeline). A value that is not a sequence is logged and taken as none.
  std::optional<uint64_t> Checkpoint(uint32_t p) override;
  /// Gives each node without a checkpoint one at `sequence`.
  void Begin(uint32_t p, uint64_t sequence) override;

 private:
  std::optional<uint64_t> Read(const std::string& key);

  std::unique_ptr<nats::KeyValue> kv_;
  const std::vector<std::function<std::string(uint32_t)>> keys_;
};

}  // namespace fleetflow
