#include "kv_membership.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>

#include "clock.hpp"

namespace fleetflow {

namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

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
      started_ns_(SteadyNowNs()),
      members_gauge_(options_.owners_gauge
                         ? &metrics.GetGauge("workers_owning_shards",
                                             "Workers that currently share the windows.", labels)
                         : nullptr) {
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  nats::BucketOptions b;
  b.name = options_.bucket;
  b.ttl_ms = static_cast<int64_t>(options_.timeout_ms) * 10;  // stale keys of crashed workers
  kv_ = js_->EnsureBucket(b);
  if (!options_.progress_bucket.empty()) {
    nats::BucketOptions p;
    p.name = options_.progress_bucket;  // no TTL: a record outlives every worker
    progress_kv_ = js_->EnsureBucket(p);
    records_watcher_ = progress_kv_->Watch(options_.bucket + ".shard.*");
  }
  kv_->Put(id_, options_.warmup_ms > 0 ? "cold" : "warm");
  watcher_ = kv_->WatchAll();
  watch_thread_ = std::thread([this] { Watch(); });
  if (records_watcher_) records_thread_ = std::thread([this] { WatchRecords(); });
  bool read;
  {
    // Ownership is decided from the members and records present, never from half of them.
    std::unique_lock lock(mu_);
    read = snapshot_cv_.wait_for(
        lock, std::chrono::milliseconds(options_.snapshot_timeout_ms),
        [this] { return members_read_ && (records_read_ || !records_watcher_); });
  }
  heartbeat_thread_ = std::thread([this] { Heartbeat(); });
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
    stop_cv_.wait_until(lock, next_beat, [this] { return stopping_ || !to_write_.empty(); });
    std::vector<Record> writes = std::move(failed);
    writes.insert(writes.end(), std::make_move_iterator(to_write_.begin()),
                  std::make_move_iterator(to_write_.end()));
    to_write_.clear();
    const bool stop = stopping_;
    const bool beat = SteadyClock::now() >= next_beat;
    lock.unlock();
    Write(writes);
    failed = std::move(writes);
    if (stop) {
      if (!failed.empty()) {
        spdlog::error(
            "worker {}: {} hand-over records not written; the next owners of those "
            "shards emit their recent windows again",
            id_, failed.size());
      }
      return;
    }
    if (beat) {
      next_beat = SteadyClock::now() + period;
      const bool warm = SteadyNowNs() - started_ns_ >= int64_t{options_.warmup_ms} * 1'000'000;
      try {
        kv_->Put(id_, warm ? "warm" : "cold");
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
      if (r.window_ns) {
        progress_kv_->Put(r.key, std::to_string(*r.window_ns) + " " + id_);
      } else {
        progress_kv_->Delete(r.key);
      }
    } catch (const nats::Error& e) {
      spdlog::warn("worker {}: hand-over record {}: {}", id_, r.key, e.what());
      break;
    }
  }
  records.erase(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(done));
}

void KvMembership::WatchLoop(nats::KvWatcher& watcher, bool& read,
                             const std::function<void(nats::KvEntry&)>& on_entry) {
  nats::KvEntry e;
  for (;;) {
    nats::KvWatcher::Event ev;
    try {
      ev = watcher.Next(500, e);
    } catch (const nats::Error&) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      continue;
    }
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (ev == nats::KvWatcher::Event::kInitialDone) {
      read = true;
      snapshot_cv_.notify_all();
    } else if (ev == nats::KvWatcher::Event::kEntry) {
      on_entry(e);
    }
  }
}

void KvMembership::Watch() {
  WatchLoop(*watcher_, members_read_, [this](nats::KvEntry& e) {
    if (e.deleted) {
      members_.erase(e.key);
      if (left_.size() >= 4096) left_.clear();  // bounded: only recent leaves matter
      left_.insert(e.key);
    } else {
      members_[e.key] = Member{SteadyNowNs(), e.value == "warm"};
    }
  });
}

void KvMembership::WatchRecords() {
  const std::string prefix = options_.bucket + ".shard.";
  WatchLoop(*records_watcher_, records_read_, [&](nats::KvEntry& e) {
    if (!e.key.starts_with(prefix)) return;
    char* end = nullptr;
    const unsigned long long shard = std::strtoull(e.key.c_str() + prefix.size(), &end, 10);
    if (end == e.key.c_str() + prefix.size() || *end != '\0') return;
    const auto s = static_cast<uint32_t>(shard);
    auto it = records_.find(s);
    if (e.deleted) {
      if (it != records_.end() && it->second.revision < e.revision) records_.erase(it);
      return;
    }
    auto claimed = claimed_.find(s);
    if (claimed != claimed_.end() && claimed->second >= e.revision) return;  // used already
    const int64_t window = std::strtoll(e.value.c_str(), &end, 10);
    if (end == e.value.c_str()) return;
    records_[s] = Recorded{window, e.revision};
  });
}

std::string KvMembership::RecordKey(uint32_t shard) const {
  return options_.bucket + ".shard." + std::to_string(shard);
}

KvMembership::Standing KvMembership::StandingOf(const std::string& id) {
  std::lock_guard lock(mu_);
  const auto it = members_.find(id);
  if (it != members_.end() &&
      SteadyNowNs() - it->second.last_seen_ns <= int64_t{options_.timeout_ms} * 1'000'000) {
    return Standing::kAlive;
  }
  return left_.count(id) > 0 ? Standing::kLeft : Standing::kGone;
}

void KvMembership::RecordHandover(uint32_t shard, int64_t window_ns) {
  if (!progress_kv_) return;
  {
    std::lock_guard lock(mu_);
    to_write_.push_back({RecordKey(shard), window_ns});
  }
  stop_cv_.notify_all();
}

std::optional<int64_t> KvMembership::ClaimHandover(uint32_t shard) {
  std::optional<int64_t> window;
  {
    std::lock_guard lock(mu_);
    const auto it = records_.find(shard);
    if (it == records_.end()) return std::nullopt;
    window = it->second.window_ns;
    claimed_[shard] = it->second.revision;
    records_.erase(it);
    to_write_.push_back({RecordKey(shard), std::nullopt});
  }
  stop_cv_.notify_all();
  return window;
}

bool KvMembership::OthersAlive() {
  std::lock_guard lock(mu_);
  const int64_t now = SteadyNowNs();
  const int64_t timeout = int64_t{options_.timeout_ms} * 1'000'000;
  return std::any_of(members_.begin(), members_.end(), [&](const auto& m) {
    return m.first != id_ && now - m.second.last_seen_ns <= timeout;
  });
}

std::pair<std::vector<std::string>, uint64_t> KvMembership::Owners() {
  std::lock_guard lock(mu_);
  const int64_t now = SteadyNowNs();
  const int64_t timeout = int64_t{options_.timeout_ms} * 1'000'000;
  std::vector<std::string> alive, warm;
  bool self = false;
  for (const auto& [id, m] : members_) {
    if (now - m.last_seen_ns > timeout) continue;
    alive.push_back(id);
    if (m.warm) warm.push_back(id);
    self = self || id == id_;
  }
  if (!self) alive.push_back(id_);  // before our own first heartbeat came back
  std::vector<std::string> owners = warm.empty() ? alive : warm;
  std::sort(owners.begin(), owners.end());
  if (owners != owners_) {
    owners_ = owners;
    ++generation_;
    if (members_gauge_) members_gauge_->Set(static_cast<double>(owners_.size()));
    spdlog::info("worker {}: {} workers share the windows", id_, owners_.size());
  }
  return {owners_, generation_};
}

uint64_t KvMembership::Hash(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across workers and releases
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

const std::string& KvMembership::OwnerOf(const std::vector<std::string>& owners, uint32_t shard) {
  size_t best = 0;
  uint64_t best_score = 0;
  for (size_t i = 0; i < owners.size(); ++i) {
    const uint64_t score = Mix(Hash(owners[i]) ^ Mix(shard));
    if (i == 0 || score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return owners[best];
}

}  // namespace fleetflow
