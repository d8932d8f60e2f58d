#include "kv_membership.hpp"

#include <spdlog/spdlog.h>

#include "clock.hpp"
#include <unistd.h>

#include <chrono>

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
      members_gauge_(metrics.GetGauge("workers_owning_shards",
                                      "Workers that currently share the windows.", labels)) {
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  nats::BucketOptions b;
  b.name = options_.bucket;
  b.ttl_ms = static_cast<int64_t>(options_.timeout_ms) * 10;  // stale keys of crashed workers
  kv_ = js_->EnsureBucket(b);
  kv_->Put(id_, options_.warmup_ms > 0 ? "cold" : "warm");
  watcher_ = kv_->WatchAll();
  watch_thread_ = std::thread([this] { Watch(); });
  heartbeat_thread_ = std::thread([this] { Heartbeat(); });
  spdlog::info("worker {} joined {}", id_, options_.bucket);
}

KvMembership::~KvMembership() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  watcher_->Stop();
  if (watch_thread_.joinable()) watch_thread_.join();
  try {
    kv_->Delete(id_);  // the others take over at once, not after the timeout
  } catch (const nats::Error& e) {
    spdlog::warn("worker {}: leave: {}", id_, e.what());
  }
}

void KvMembership::Heartbeat() {
  std::unique_lock lock(mu_);
  while (!stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.heartbeat_ms),
                            [this] { return stopping_; })) {
    const bool warm = SteadyNowNs() - started_ns_ >= int64_t{options_.warmup_ms} * 1'000'000;
    lock.unlock();
    try {
      kv_->Put(id_, warm ? "warm" : "cold");
    } catch (const nats::Error& e) {
      spdlog::warn("worker {}: heartbeat: {}", id_, e.what());
    }
    lock.lock();
  }
}

void KvMembership::Watch() {
  nats::KvEntry e;
  for (;;) {
    nats::KvWatcher::Event ev;
    try {
      ev = watcher_->Next(500, e);
    } catch (const nats::Error&) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      continue;
    }
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (ev != nats::KvWatcher::Event::kEntry) continue;
    if (e.deleted) {
      members_.erase(e.key);
    } else {
      members_[e.key] = Member{SteadyNowNs(), e.value == "warm"};
    }
  }
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
    members_gauge_.Set(static_cast<double>(owners_.size()));
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
