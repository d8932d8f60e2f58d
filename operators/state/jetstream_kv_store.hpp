#pragma once
/// StateStore on one JetStream Key/Value bucket, shared by every worker of a pipeline.
///
/// Values are FLT1 Batch payloads (schemas/telemetry.fbs) holding a key's newest samples.
/// Writes are coalesced (at most one per key per flush interval) and sent asynchronously as
/// compare-and-set updates on the key's revision; on a conflict the stored samples are merged
/// with ours by event time and written again, so two workers never lose each other's newer
/// samples. A long-lived watch on the bucket restores the state at start and hands over what
/// other workers write.
///
/// The watch also brings back every write of our own, which costs the server and us as much as
/// the write itself. So every store heartbeats in a writers' bucket (`<bucket>_writers`, a
/// KvMembership), and a store that has been the only writer for `alone_ms` after its restore
/// stops watching; it watches again as soon as another writer joins (the new watch delivers the
/// bucket's current values first). Nothing is lost meanwhile: writes are compare-and-set, so
/// every value in the bucket holds what the writes before it held. A writer that does not
/// heartbeat (an older release during a rolling upgrade) shows itself by compare-and-set
/// conflicts: after one, the store watches for at least 10 s. While alone, writes are
/// also coalesced over a longer interval (alone_flush_ms): only our own acknowledgements wait
/// for them; and they carry only what state retains, since nobody watches for the others.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "jetstream.hpp"
#include "kv_membership.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "state_store.hpp"

namespace fleetflow {

struct JetStreamKvOptions {
  nats::ConnectOptions connection;
  nats::BucketOptions bucket;
  int64_t flush_ms = 200;
  size_t keep = 4;         // samples per key kept after a merge
  int64_t history_ns = 0;  // and every sample this close to the key's newest (Retention)
  int restore_timeout_ms = 30'000;
  int alone_ms = 1000;  // the only writer this long after the restore: stop watching
  // While alone, no one waits for our writes but the acknowledgements upstream: the key is
  // written at most once per max(flush_ms, alone_flush_ms) instead.
  int64_t alone_flush_ms = 1000;
};

class JetStreamKvStore final : public StateStore {
 public:
  /// Connects and opens (creating when missing) the bucket; throws nats::Error.
  JetStreamKvStore(JetStreamKvOptions options, Metrics& metrics, const Labels& labels);
  ~JetStreamKvStore() override;

  void Restore(const Visit& visit) override;
  size_t Slot(const std::string& key) override;
  void Write(size_t slot, const std::vector<wire::Point>& samples, Ack durable) override;
  void Sync(bool all, const Visit& changed_elsewhere) override;
  bool Ready() const override;

  /// Merges two sample lists by event time (ts, seq unique), keeping the newest `keep`.
  static std::vector<wire::Point> Merge(std::vector<wire::Point> a,
                                        const std::vector<wire::Point>& b, size_t keep);

 private:
  struct KeyState {
    uint64_t revision = 0;             // newest revision known for the key
    uint64_t written = 0;              // revision of our own last write (to skip its echo)
    std::vector<wire::Point> samples;  // retained and merged samples, ascending (see Settle)
    std::vector<wire::Point> fresh;    // added by Write since, in any order; merged by Settle
    bool dirty = false;
    bool in_flight = false;
    bool conflict = false;
    size_t slot = SIZE_MAX;           // its number in slots_, once Slot gave it one
    std::vector<Ack> acks;            // durable once `samples` are stored
    std::vector<Ack> in_flight_acks;  // durable once the write in flight is
  };
  struct Update {
    std::string key;
    uint64_t revision;
    std::string value;  // FLT1 batch, decoded only when it is not our own write
  };

  struct Outgoing {
    std::string key;
    std::vector<wire::Point> samples;
    uint64_t revision;
  };

  void Watch();
  void SetWatching(bool on);
  void Flush();
  static void Settle(KeyState& ks);                        // mu_ held
  Outgoing Prepare(const std::string& key, KeyState& ks);  // mu_ held
  void Send(std::vector<Outgoing> writes);                 // mu_ not held
  void Done(const std::string& key, const std::vector<wire::Point>& sent,
            const nats::KvWriteResult& r);

  const JetStreamKvOptions options_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;
  std::unique_ptr<KvMembership> writers_;
  std::unique_ptr<nats::KvWatcher> watcher_;  // null while alone; replaced by the watch thread
  std::thread watch_thread_;

  mutable std::mutex mu_;
  std::condition_variable restored_cv_;
  std::condition_variable stop_cv_;
  bool restored_ = false;
  bool stopping_ = false;
  std::unordered_map<std::string, KeyState> keys_;
  std::vector<std::pair<const std::string, KeyState>*> slots_;  // by Slot's number (nodes stay)
  std::vector<std::string> dirty_;
  std::deque<Update> incoming_;
  int64_t last_flush_ns_ = 0;
  bool written_since_sync_ = false;  // a Write since the last Sync: input is not idle
  int64_t in_flight_ = 0;

  Counter& writes_;
  Counter& conflicts_;
  Counter& merged_;
  Counter& write_errors_;
  RateLimitedLog write_errors_log_;  // a few lines per 10 s; the next line counts those left out
  Gauge& pending_keys_;
  Gauge& watching_;
  std::atomic<bool> alone_{false};  // not watching: the only writer
  // Steady time of the last conflict: a writer that does not heartbeat shows itself so.
  std::atomic<int64_t> last_conflict_ns_{std::numeric_limits<int64_t>::min() / 2};
};

}  // namespace fleetflow
