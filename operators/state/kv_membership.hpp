#pragma once
/// Worker membership in a JetStream KV bucket, for sharing windows among the workers of a
/// pipeline. Each worker puts its key every heartbeat (value "cold" during its warm-up, then
/// "warm") and deletes it when it stops; every worker watches the bucket and counts a worker
/// alive while its heartbeats keep arriving (measured on the local clock, so the workers'
/// clocks need not agree). Shards go to warm workers by rendezvous hashing, so a worker joining
/// or leaving moves only its own share. See docs/scaling.md.

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
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
  int timeout_ms = 4000;  // a worker silent this long is gone
  int warmup_ms = 0;      // a new worker owns nothing until it has watched the data this long
};

class KvMembership {
 public:
  /// Connects, joins and starts heartbeating; throws nats::Error.
  KvMembership(MembershipOptions options, Metrics& metrics, const Labels& labels);
  /// Leaves (deletes its key) and stops.
  ~KvMembership();

  const std::string& id() const { return id_; }
  /// The workers that own shards now, sorted, and a generation that changes whenever they do.
  std::pair<std::vector<std::string>, uint64_t> Owners();
  /// A hash that every worker and release computes alike (for shards and owners).
  static uint64_t Hash(std::string_view s);
  /// The owner of `shard` among `owners` (rendezvous hashing).
  static const std::string& OwnerOf(const std::vector<std::string>& owners, uint32_t shard);

 private:
  void Heartbeat();
  void Watch();

  const MembershipOptions options_;
  const std::string id_;
  const int64_t started_ns_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;
  std::unique_ptr<nats::KvWatcher> watcher_;
  std::thread heartbeat_thread_;
  std::thread watch_thread_;

  struct Member {
    int64_t last_seen_ns = 0;  // steady clock
    bool warm = false;
  };
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::map<std::string, Member> members_;
  std::vector<std::string> owners_;
  uint64_t generation_ = 0;
  Gauge& members_gauge_;
};

}  // namespace fleetflow
