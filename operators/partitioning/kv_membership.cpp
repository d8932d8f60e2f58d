#include "kv_membership.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <utility>

#include "clock.hpp"
#include "thread_name.hpp"

namespace fleetflow {

namespace {

std::string MakeId() {
  char host[128] = {};
  gethostname(host, sizeof(host) - 1);
  std::string id;
  for (const char* p = host; *p != '\0'; ++p) {
    const char c = *p;
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    id += ok ? c : '_';
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return id + "-" + std::to_string(getpid()) + "-" + std::to_string(now % 1'000'000'000);
}

}  // namespace

KvMembership::KvMembership(MembershipOptions options, Metrics& metrics, const Labels& labels)
    : options_(std::move(options)),
      id_(MakeId()),
      members_gauge_(
          metrics.GetGauge("workers", "Workers alive in the pipeline's membership.", labels)) {
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  nats::BucketOptions b;
  b.name = options_.bucket;
  b.ttl_ms = static_cast<int64_t>(options_.timeout_ms) * 10;  // stale keys of crashed workers
  b.replicas = options_.replicas;
  kv_ = js_->EnsureBucket(b);
  if (!options_.handover_bucket.empty()) {
    nats::BucketOptions p;
    p.name = options_.handover_bucket;  // no TTL: a record outlives every worker
    p.replicas = options_.replicas;
    handover_kv_ = js_->EnsureBucket(p);
    records_watcher_ = handover_kv_->WatchAll();  // records and leases
  }
  kv_->Put(id_, HeldValue());
  watcher_ = kv_->WatchAll();
  watch_thread_ = std::thread([this] { Watch(); });
  NameThread(watch_thread_, "ff-members");
  if (records_watcher_) {
    records_thread_ = std::thread([this] { WatchRecords(); });
    NameThread(records_thread_, "ff-records");
  }
  bool read;
  {
    // Ownership is decided from the members and records present, never from half of them.
    std::unique_lock lock(mu_);
    read = snapshot_cv_.wait_for(
        lock, std::chrono::milliseconds(options_.snapshot_timeout_ms),
        [this] { return members_read_ && (records_read_ || !records_watcher_); });
  }
  heartbeat_thread_ = std::thread([this] { Heartbeat(); });
  NameThread(heartbeat_thread_, "ff-heartbeat");
  if (read) {
    // The members read are counted once their heartbeats come (a crashed worker's key stays in
    // the bucket for its TTL); one that does not beat within two periods is not, until it does.
    std::unique_lock lock(mu_);
    snapshot_cv_.wait_for(lock, std::chrono::milliseconds(2 * options_.heartbeat_ms),
                          [this] { return AllConfirmed(); });
  }
  if (!read) {
    Stop();
    throw std::runtime_error("membership bucket " + options_.bucket + " not read within " +
                             std::to_string(options_.snapshot_timeout_ms) + " ms");
  }
  spdlog::info("worker {} joined {}", id_, options_.bucket);
}

KvMembership::~KvMembership() { Stop(); }

void KvMembership::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();  // writes the queued records
  watcher_->Stop();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (records_watcher_) records_watcher_->Stop();
  if (records_thread_.joinable()) records_thread_.join();
  try {
    kv_->Delete(id_);  // the others take over at once, not after the timeout
  } catch (const nats::Error& e) {
    spdlog::warn("worker {}: leave: {}", id_, e.what());
  }
}

void KvMembership::Heartbeat() {
  using SteadyClock = std::chrono::steady_clock;
  const auto period = std::chrono::milliseconds(options_.heartbeat_ms);
  auto next_beat = SteadyClock::now() + period;
  std::vector<Record> failed;  // retried at every wake-up, in order
  std::unique_lock lock(mu_);
  for (;;) {
    stop_cv_.wait_until(lock, next_beat,
                        [this] { return stopping_ || !to_write_.empty() || held_changed_; });
    std::vector<Record> writes = std::move(failed);
    writes.insert(writes.end(), std::make_move_iterator(to_write_.begin()),
                  std::make_move_iterator(to_write_.end()));
    to_write_.clear();
    const bool stop = stopping_;
    // A partition given up leaves the heartbeat only after its record is written: whoever sees
    // it gone finds the record.
    bool beat = SteadyClock::now() >= next_beat || held_changed_;
    held_changed_ = false;
    const std::string value = HeldValue();
    lock.unlock();
    Write(writes);
    failed = std::move(writes);
    if (!failed.empty()) beat = false;  // the records first
    if (stop) {
      if (!failed.empty()) {
        spdlog::error(
            "worker {}: {} hand-over records not written; the next owners of those "
            "partitions emit their recent windows again",
            id_, failed.size());
      }
      return;
    }
    if (beat) {
      next_beat = SteadyClock::now() + period;
      try {
        kv_->Put(id_, value);
      } catch (const nats::Error& e) {
        spdlog::warn("worker {}: heartbeat: {}", id_, e.what());
      }
    }
    lock.lock();
  }
}

void KvMembership::Write(std::vector<Record>& records) {
  size_t done = 0;
  for (; done < records.size(); ++done) {
    const Record& r = records[done];
    try {
      if (!r.if_revision) {
        handover_kv_->Put(r.key, r.value);
      } else if (!handover_kv_->PutIf(r.key, r.value, *r.if_revision)) {
        spdlog::info("worker {}: {} was taken by another worker before this one released it", id_,
                     r.key);
      }
    } catch (const nats::Error& e) {
      spdlog::warn("worker {}: hand-over record {}: {}", id_, r.key, e.what());
      break;
    }
  }
  records.erase(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(done));
}

void KvMembership::WatchLoop(nats::KvWatcher& watcher, bool& read,
                             const std::function<bool(nats::KvEntry&)>& on_entry) {
  nats::KvEntry e;
  for (;;) {
    nats::KvWatcher::Event ev;
    bool changed = false;
    try {
      ev = watcher.Next(kWatchWaitMs, e);
    } catch (const nats::Error&) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (ev == nats::KvWatcher::Event::kInitialDone) {
        read = true;
        snapshot_cv_.notify_all();
      } else if (ev == nats::KvWatcher::Event::kEntry) {
        changed = on_entry(e);
      }
    }
    if (changed) {
      std::lock_guard lock(on_change_mu_);
      if (on_change_) on_change_();
    }
  }
}

void KvMembership::SetOnChange(std::function<void()> notify) {
  std::lock_guard lock(on_change_mu_);
  on_change_ = std::move(notify);
}

void KvMembership::Watch() {
  WatchLoop(*watcher_, members_read_, [this](nats::KvEntry& e) {
    if (e.deleted) {
      members_.erase(e.key);
      if (left_.size() >= 4096) left_.clear();  // bounded: only recent leaves matter
      left_.insert(e.key);
      return true;
    }
    std::set<uint32_t> held;
    const char* p = e.value.c_str();  // "held 3 7 12" (older releases: "alive", "warm")
    if (e.value.starts_with("held")) p += 4;
    for (char* end = nullptr;; p = end) {
      const unsigned long n = std::strtoul(p, &end, 10);
      if (end == p) break;
      held.insert(static_cast<uint32_t>(n));
    }
    const int64_t now = SteadyNowNs();
    const auto [it, joined] = members_.try_emplace(e.key);
    Member& m = it->second;
    // A renewal of a member that holds what it held is no news; a member that joins (or is
    // confirmed: members_read_), holds something else, or comes back after it was taken for gone
    // is.
    const bool confirmed = members_read_ && !m.confirmed;
    const bool changed = joined || confirmed || m.held != held || Silent(m);
    if (confirmed) {
      m.confirmed = true;
      snapshot_cv_.notify_all();
    }
    if (e.key == id_ && !joined &&
        now - m.last_seen_ns > 2 * int64_t{options_.heartbeat_ms} * 1'000'000) {
      resumed_ns_ = now;  // the bucket stored none of them for a while
    }
    m.last_seen_ns = now;
    m.held = std::move(held);
    return changed;
  });
}

void KvMembership::WatchRecords() {
  const auto partition_of = [](const std::string& key,
                               std::string_view prefix) -> std::optional<uint32_t> {
    if (!key.starts_with(prefix)) return std::nullopt;
    char* end = nullptr;
    const unsigned long long partition = std::strtoull(key.c_str() + prefix.size(), &end, 10);
    if (end == key.c_str() + prefix.size() || *end != '\0') return std::nullopt;
    return static_cast<uint32_t>(partition);
  };
  WatchLoop(*records_watcher_, records_read_, [&](nats::KvEntry& e) {
    if (const auto lease = partition_of(e.key, "lease.")) {
      // Another worker's write of a lease this worker holds (its own writes carry its id).
      const auto mine = leases_.find(*lease);
      if (mine == leases_.end() || e.revision <= mine->second || e.value == id_) return false;
      leases_.erase(mine);
      lost_.emplace_back(*lease, e.deleted || e.value.empty() ? "another worker" : e.value);
      return true;
    }
    const auto partition = partition_of(e.key, "partition.");
    if (!partition) return false;
    const uint32_t s = *partition;
    auto it = records_.find(s);
    if (e.deleted) {
      if (it == records_.end() || it->second.revision >= e.revision) return false;
      records_.erase(it);
      return true;
    }
    auto claimed = claimed_.find(s);
    if (claimed != claimed_.end() && claimed->second >= e.revision) return false;  // used already
    auto record = ParseRecord(e.value, e.revision);
    if (!record) return false;
    records_[s] = *record;
    return true;
  });
}

std::string KvMembership::RecordKey(uint32_t partition) {
  return "partition." + std::to_string(partition);
}

std::string KvMembership::LeaseKey(uint32_t partition) {
  return "lease." + std::to_string(partition);
}

std::optional<KvMembership::Recorded> KvMembership::ParseRecord(const std::string& value,
                                                                uint64_t revision) {
  const auto windows = ParseEmittedWindows(std::string_view(value).substr(0, value.find(' ')));
  if (!windows) return std::nullopt;
  return Recorded{*windows, revision};
}

int64_t KvMembership::LivenessNowNs() const {
  const auto own = members_.find(id_);
  return own != members_.end() ? own->second.last_seen_ns : SteadyNowNs();
}

bool KvMembership::Silent(const Member& m) const {
  return LivenessNowNs() - std::max(m.last_seen_ns, resumed_ns_) >
         int64_t{options_.timeout_ms} * 1'000'000;
}

KvMembership::Standing KvMembership::StandingOf(const std::string& id) {
  std::lock_guard lock(mu_);
  const auto it = members_.find(id);
  if (it != members_.end() && !Silent(it->second)) return Standing::kAlive;
  return left_.count(id) > 0 ? Standing::kLeft : Standing::kGone;
}

void KvMembership::Hold(uint32_t partition) {
  {
    std::lock_guard lock(mu_);
    held_.insert(partition);
    held_changed_ = true;
  }
  stop_cv_.notify_all();
}

std::string KvMembership::HolderOf(uint32_t partition) {
  std::lock_guard lock(mu_);
  std::string silent;
  for (const auto& [id, m] : members_) {
    if (id == id_ || m.held.count(partition) == 0) continue;
    if (!Silent(m)) return id;
    silent = id;
  }
  return silent;
}

bool KvMembership::AllConfirmed() const {
  return std::all_of(members_.begin(), members_.end(),
                     [this](const auto& m) { return m.second.confirmed || m.first == id_; });
}

std::string KvMembership::HeldValue() const {
  std::string value = "held";
  for (const uint32_t p : held_) value += " " + std::to_string(p);
  return value;
}

void KvMembership::RecordHandover(uint32_t partition, const EmittedWindows& windows) {
  {
    std::lock_guard lock(mu_);
    if (handover_kv_) {
      // The lease first: whoever claims the record finds the partition free.
      if (const auto lease = leases_.find(partition); lease != leases_.end()) {
        to_write_.push_back({LeaseKey(partition), "", lease->second});
        leases_.erase(lease);
      }
      to_write_.push_back({RecordKey(partition), FormatEmittedWindows(windows) + " " + id_, {}});
    }
    held_.erase(partition);
    held_changed_ = true;
  }
  stop_cv_.notify_all();
}

void KvMembership::Drop(uint32_t partition) {
  {
    std::lock_guard lock(mu_);
    leases_.erase(partition);
    held_.erase(partition);
    held_changed_ = true;
  }
  stop_cv_.notify_all();
}

std::optional<EmittedWindows> KvMembership::ClaimHandover(uint32_t partition, bool ask_server) {
  std::optional<Recorded> record;
  {
    std::lock_guard lock(mu_);
    const auto it = records_.find(partition);
    if (it != records_.end()) record = it->second;
  }
  if (!record && ask_server && handover_kv_) {
    const auto entry = handover_kv_->Get(RecordKey(partition));  // a deleted one is not found
    if (entry) record = ParseRecord(entry->value, entry->revision);
  }
  if (!record) return std::nullopt;
  {
    std::lock_guard lock(mu_);
    if (claimed_[partition] >= record->revision) return std::nullopt;  // used already
  }
  // Deleted at the revision read: another worker that claims it at once finds it gone.
  const bool mine = handover_kv_->DeleteIf(RecordKey(partition), record->revision);
  {
    std::lock_guard lock(mu_);
    const auto it = records_.find(partition);
    if (it != records_.end() && it->second.revision <= record->revision) records_.erase(it);
    uint64_t& claimed = claimed_[partition];
    claimed = std::max(claimed, record->revision);
  }
  if (!mine) {
    spdlog::info("worker {}: the hand-over record of partition {} was claimed by another worker",
                 id_, partition);
    return std::nullopt;
  }
  return record->windows;
}

std::string KvMembership::TakeLease(uint32_t partition, const std::string& wedged) {
  if (!handover_kv_) return {};
  const std::string key = LeaseKey(partition);
  const auto lease = handover_kv_->Last(key);
  const std::string holder = lease && !lease->deleted ? lease->value : std::string();
  const bool force = !holder.empty() && holder == wedged;
  if (!holder.empty() && holder != id_ && !force && StandingOf(holder) == Standing::kAlive) {
    return holder;
  }
  const auto taken = handover_kv_->PutIf(key, id_, lease ? lease->revision : 0);
  if (!taken) {
    // Another worker took it between the read and the write: that one keeps it.
    const auto now = handover_kv_->Get(key);
    return now && !now->value.empty() ? now->value : "another worker";
  }
  if (!holder.empty() && holder != id_) {
    spdlog::info("worker {}: lease of partition {} taken from {}{}", id_, partition, holder,
                 force ? " (taken for wedged)" : " (not alive)");
  }
  std::lock_guard lock(mu_);
  leases_[partition] = *taken;
  return {};
}

std::vector<std::pair<uint32_t, std::string>> KvMembership::TakeLostLeases() {
  std::lock_guard lock(mu_);
  return std::exchange(lost_, {});
}

size_t KvMembership::CheckLeases() {
  if (!handover_kv_) return 0;
  std::map<uint32_t, uint64_t> held;
  {
    std::lock_guard lock(mu_);
    held = leases_;
  }
  size_t lost = 0;
  for (const auto& [partition, revision] : held) {
    const auto lease = handover_kv_->Last(LeaseKey(partition));  // the leader's
    if (!lease || lease->revision <= revision || (!lease->deleted && lease->value == id_)) continue;
    std::lock_guard lock(mu_);
    const auto mine = leases_.find(partition);
    if (mine == leases_.end() || mine->second != revision) continue;  // released meanwhile
    leases_.erase(mine);
    lost_.emplace_back(partition,
                       lease->deleted || lease->value.empty() ? "another worker" : lease->value);
    ++lost;
  }
  if (lost > 0) {
    std::lock_guard lock(on_change_mu_);
    if (on_change_) on_change_();
  }
  return lost;
}

std::pair<std::vector<std::string>, uint64_t> KvMembership::Members() {
  std::lock_guard lock(mu_);
  std::vector<std::string> alive;
  bool self = false;
  for (const auto& [id, m] : members_) {
    if (Silent(m) || !(m.confirmed || id == id_)) continue;
    alive.push_back(id);
    self = self || id == id_;
  }
  if (!self) alive.push_back(id_);  // before our own first heartbeat came back
  std::sort(alive.begin(), alive.end());
  if (alive != members_alive_) {
    members_alive_ = alive;
    ++generation_;
    members_gauge_.Set(static_cast<double>(alive.size()));
    spdlog::info("worker {}: {} workers share the partitions", id_, alive.size());
  }
  return {members_alive_, generation_};
}

}  // namespace fleetflow
