#pragma once
/// Worker membership in a JetStream KV bucket, for sharing windows among the workers of a
/// pipeline. Each worker puts its key every heartbeat (value "cold" during its warm-up, then
/// "warm") and deletes it when it stops; every worker watches the bucket and counts a worker
/// alive while its heartbeats keep arriving (measured on the local clock, so the workers'
/// clocks need not agree). Shards go to warm workers by rendezvous hashing, so a worker joining
/// or leaving moves only its own share. See docs/scaling.md.
///
/// Hand-over records: a worker that gives a shard up (it stops, or the shard moves to a worker
/// that joined) records the last window it emitted of the shard, key
/// `<membership bucket>.shard.<n>` in `progress_bucket` (a bucket without TTL, so a record
/// outlives every worker); the worker that takes the shard over claims the record (deletes it)
/// and goes on from the next window. Records are written in the background, always before the
/// worker's leave is visible.

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

#include "jetstream.hpp"
#include "metrics.hpp"

namespace fleetflow {

struct MembershipOptions {
  nats::ConnectOptions connection;
  std::string bucket = "fleetflow_members";
  int heartbeat_ms = 1000;
  int timeout_ms = 4000;        // a worker silent this long is gone
  int warmup_ms = 0;            // a new worker owns nothing until it has watched the data this long
  std::string progress_bucket;  // hand-over records; empty: none
  int snapshot_timeout_ms = 30'000;
  bool owners_gauge = true;  // keep the workers_owning_shards gauge (Owners)
};

class KvMembership {
 public:
  /// Connects, joins, reads the members and hand-over records present and starts heartbeating;
  /// throws nats::Error (std::runtime_error when the bucket cannot be read in time).
  KvMembership(MembershipOptions options, Metrics& metrics, const Labels& labels);
  /// Writes the hand-over records still queued, leaves (deletes its key) and stops.
  ~KvMembership();

  enum class Standing { kAlive, kLeft, kGone };
  /// A worker's standing: heartbeating, left (deleted its key when it stopped: its records are
  /// written), or gone (silent for timeout_ms, or never seen: it may have crashed).
  Standing StandingOf(const std::string& id);
  /// Records that every window of `shard` up to `window_ns` was emitted (this worker gives the
  /// shard up). Written in the background, before this worker leaves.
  void RecordHandover(uint32_t shard, int64_t window_ns);
  /// Claims the hand-over record of `shard`, if one is there: returns its window and deletes it,
  /// so that it is used once.
  std::optional<int64_t> ClaimHandover(uint32_t shard);

  const std::string& id() const { return id_; }
  /// Whether another worker is alive (heartbeating, not left).
  bool OthersAlive();
  /// The workers that own shards now, sorted, and a generation that changes whenever they do.
  std::pair<std::vector<std::string>, uint64_t> Owners();
  /// A hash that every worker and release computes alike (for shards and owners).
  static uint64_t Hash(std::string_view s);
  /// The owner of `shard` among `owners` (rendezvous hashing).
  static const std::string& OwnerOf(const std::vector<std::string>& owners, uint32_t shard);

 private:
  struct Record {
    std::string key;
    std::optional<int64_t> window_ns;  // empty: delete
  };
  void Stop();
  void Heartbeat();
  /// Reads `watcher` until stopping: `read` once its initial values are in, `on_entry` (mu_
  /// held) for every entry.
  void WatchLoop(nats::KvWatcher& watcher, bool& read,
                 const std::function<void(nats::KvEntry&)>& on_entry);
  void Watch();
  void WatchRecords();
  void Write(std::vector<Record>& records);  // mu_ not held; leaves what failed in `records`
  std::string RecordKey(uint32_t shard) const;

  const MembershipOptions options_;
  const std::string id_;
  const int64_t started_ns_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;
  std::unique_ptr<nats::KvWatcher> watcher_;
  std::unique_ptr<nats::KeyValue> progress_kv_;
  std::unique_ptr<nats::KvWatcher> records_watcher_;
  std::thread heartbeat_thread_;
  std::thread watch_thread_;
  std::thread records_thread_;

  struct Member {
    int64_t last_seen_ns = 0;  // steady clock
    bool warm = false;
  };
  std::mutex mu_;
  std::condition_variable stop_cv_;
  std::condition_variable snapshot_cv_;
  bool stopping_ = false;
  bool members_read_ = false;
  bool records_read_ = false;
  std::map<std::string, Member> members_;
  std::set<std::string> left_;  // workers seen deleting their key
  struct Recorded {
    int64_t window_ns;
    uint64_t revision;
  };
  std::map<uint32_t, Recorded> records_;  // unclaimed hand-over records, by shard
  std::map<uint32_t, uint64_t> claimed_;  // by shard: the revision of the record claimed last
  std::vector<Record> to_write_;
  std::vector<std::string> owners_;
  uint64_t generation_ = 0;
  Gauge* members_gauge_;  // null without owners_gauge
};

}  // namespace fleetflow
