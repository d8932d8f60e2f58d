#pragma once
/// Worker membership in a JetStream KV bucket, for sharing a pipeline's partitions among its
/// workers. Each worker puts its key every heartbeat and deletes it when it stops; every worker
/// watches the bucket and counts a worker alive while its heartbeats keep arriving (measured on
/// the local clock, so the workers' clocks need not agree). Partitions go to the alive workers
/// by rendezvous hashing with bounded load (AssignPartitions): every worker computes the same
/// owners, each owns at most ceil(partitions / workers), and a worker joining or leaving moves few
/// of them. See docs/scaling.md.
///
/// Hand-over records: a worker that gives a partition up (it stops, or the partition moves to a
/// worker that joined) records the last window it emitted of it, key `partition.<n>` in
/// `handover_bucket` (a bucket without TTL, so a record outlives every worker); the worker that
/// takes the partition over claims the record (deletes it) and goes on from the next window.
/// Records are written in the background, always before the worker's leave is visible. A claim
/// deletes the record at the revision it read: of the workers that claim it at once (their
/// members differed for a moment), one gets it.
///
/// Leases: a worker takes a partition's lease (key `lease.<n>` in `handover_bucket`, its id as
/// the value) at the revision it read before it reads the partition, and releases it (an empty
/// value, at the revision it took) before it writes the partition's hand-over record. Of two
/// workers that judge one partition free at the same moment, one gets it. A lease of this
/// worker's that another worker writes (it took this one for gone) is reported lost.
///
/// A worker that starts counts a member read from the bucket once a heartbeat of it comes (it
/// waits up to two heartbeat periods for them): the bucket still holds the key of a worker that
/// crashed a moment before, which would otherwise count as alive for a member timeout, and the
/// partitions this worker takes at its start would follow other members than the others do.

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
#include "membership.hpp"
#include "metrics.hpp"

namespace fleetflow {

/// The connection, the buckets, then the timings, as the nats_source settings that fill most of
/// them are ordered.
struct MembershipOptions {
  nats::ConnectOptions connection;
  std::string bucket = "fleetflow_members";
  std::string handover_bucket;  // hand-over records; empty: none
  int heartbeat_ms = 1000;
  int timeout_ms = 4000;  // a worker silent this long is gone
  int snapshot_timeout_ms = 30'000;
  int replicas = 1;  // of both buckets when created (a NATS cluster: 3)
};

class KvMembership final : public Membership {
 public:
  /// Connects, joins, reads the members and hand-over records present and starts heartbeating;
  /// throws nats::Error (std::runtime_error when the bucket cannot be read in time).
  KvMembership(MembershipOptions options, Metrics& metrics, const Labels& labels);
  /// Writes the hand-over records still queued, leaves (deletes its key) and stops.
  ~KvMembership() override;

  Standing StandingOf(const std::string& id) override;
  void Hold(uint32_t partition) override;
  std::string HolderOf(uint32_t partition) override;
  /// Written in the background, before this worker leaves.
  void RecordHandover(uint32_t partition, const EmittedWindows& windows) override;
  void Drop(uint32_t partition) override;
  /// `ask_server` reads the bucket (throws nats::Error): records and heartbeats come through two
  /// watches, so a heartbeat that no longer holds the partition can arrive before the record its
  /// worker wrote first, and whoever is about to go on without a record asks the server.
  std::optional<EmittedWindows> ClaimHandover(uint32_t partition, bool ask_server = false) override;
  std::string TakeLease(uint32_t partition, const std::string& wedged) override;
  /// Seen through the watch of the hand-over bucket, which brings leases with the records.
  std::vector<std::pair<uint32_t, std::string>> TakeLostLeases() override;
  /// Asks the bucket's leader for each lease (a round trip each).
  size_t CheckLeases() override;
  const std::string& id() const override { return id_; }
  /// A heartbeat that changes nothing calls nothing (with N workers, N per second).
  void SetOnChange(std::function<void()> notify) override;
  std::pair<std::vector<std::string>, uint64_t> Members() override;

 private:
  /// The time against which a member's last heartbeat is judged (mu_ held): when this worker's
  /// own heartbeat last came back, or the clock before it first did. A member is gone when its
  /// heartbeats stopped while this worker's own still came back; while none comes back (the
  /// bucket has no leader: a NATS cluster electing one after a node loss, for seconds), nobody
  /// is taken for gone. Once they come back after such a gap, every member's silence counts from
  /// then (resumed_ns_): the others' heartbeats may come back a little later than this worker's.
  int64_t LivenessNowNs() const;

  struct Record {
    std::string key;
    std::string value;
    /// Written only at this revision (a lease released): a conflict drops it (another worker
    /// took the lease since), not retried.
    std::optional<uint64_t> if_revision;
  };
  void Stop();
  void Heartbeat();
  /// Reads `watcher` until stopping: `read` once its initial values are in, `on_entry` (mu_
  /// held) for every entry; calls the SetOnChange callback when on_entry says it changed
  /// something.
  void WatchLoop(nats::KvWatcher& watcher, bool& read,
                 const std::function<bool(nats::KvEntry&)>& on_entry);
  /// A watcher's wait for the next entry; Stop interrupts it.
  static constexpr int kWatchWaitMs = 5000;
  void Watch();
  void WatchRecords();
  void Write(std::vector<Record>& records);  // mu_ not held; leaves what failed in `records`
  static std::string RecordKey(uint32_t partition);
  static std::string LeaseKey(uint32_t partition);
  struct Recorded {
    EmittedWindows windows;
    uint64_t revision;
  };
  /// A record's value: "<windows> <worker>" (FormatEmittedWindows); empty when it is not one.
  static std::optional<Recorded> ParseRecord(const std::string& value, uint64_t revision);

  const MembershipOptions options_;
  const std::string id_;
  std::unique_ptr<nats::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::KeyValue> kv_;
  std::unique_ptr<nats::KvWatcher> watcher_;
  std::unique_ptr<nats::KeyValue> handover_kv_;
  std::unique_ptr<nats::KvWatcher> records_watcher_;
  std::thread heartbeat_thread_;
  std::thread watch_thread_;
  std::thread records_thread_;

  struct Member {
    int64_t last_seen_ns = 0;  // steady clock
    std::set<uint32_t> held;   // partitions its last heartbeat held
    /// A heartbeat of it came while this worker watched: not only the copy the bucket kept when
    /// this worker started, which may be a crashed worker's (the bucket keeps a key for its TTL,
    /// ten member timeouts). Only confirmed members share the partitions (Members).
    bool confirmed = false;
  };
  /// Whether every member read at the start other than this worker is confirmed (mu_ held).
  bool AllConfirmed() const;
  /// Whether `m` has been silent longer than timeout_ms (mu_ held).
  bool Silent(const Member& m) const;
  std::string HeldValue() const;  // mu_ held: this worker's heartbeat value
  std::set<uint32_t> held_;       // partitions this worker holds
  bool held_changed_ = false;     // a heartbeat is due at once
  std::mutex mu_;
  std::mutex on_change_mu_;  // held while on_change_ runs (not mu_: it may call Members)
  std::function<void()> on_change_;
  std::condition_variable stop_cv_;
  std::condition_variable snapshot_cv_;
  bool stopping_ = false;
  bool members_read_ = false;
  bool records_read_ = false;
  std::map<std::string, Member> members_;
  int64_t resumed_ns_ = 0;                // steady: this worker's heartbeats came back after a gap
  std::set<std::string> left_;            // workers seen deleting their key
  std::map<uint32_t, Recorded> records_;  // unclaimed hand-over records, by partition
  std::map<uint32_t, uint64_t> claimed_;  // by partition: the revision of the record claimed last
  std::map<uint32_t, uint64_t> leases_;   // by partition: the revision of this worker's lease
  std::vector<std::pair<uint32_t, std::string>> lost_;  // leases taken by others (TakeLostLeases)
  std::vector<Record> to_write_;
  std::vector<std::string> members_alive_;
  uint64_t generation_ = 0;
  Gauge& members_gauge_;
};

}  // namespace fleetflow
