#include "jetstream_kv_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "clock.hpp"

namespace fleetflow {

namespace {

constexpr size_t kMaxPendingSamples = 1024;           // per key between two writes, at most
constexpr int64_t kConflictWatchNs = 10'000'000'000;  // watch this long after a conflict

std::string Encode(const std::vector<wire::Point>& samples) {
  const auto bytes = wire::EncodeBatch(samples);
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::vector<wire::Point> Decode(const std::string& value) {
  std::vector<wire::Point> out;
  if (wire::DecodeBatch(value.data(), value.size(), out) != wire::DecodeError::kNone) out.clear();
  std::sort(out.begin(), out.end(),
            [](const wire::Point& a, const wire::Point& b) { return a.ts_ns < b.ts_ns; });
  return out;
}

}  // namespace

JetStreamKvStore::JetStreamKvStore(JetStreamKvOptions options, Metrics& metrics,
                                   const Labels& labels)
    : options_(std::move(options)),
      writes_(metrics.GetCounter("kv_writes", "KV writes acknowledged by the server.", labels)),
      conflicts_(metrics.GetCounter(
          "kv_conflicts", "KV compare-and-set conflicts (another worker wrote the key first).",
          labels)),
      merged_(metrics.GetCounter("kv_updates_merged",
                                 "Values other workers wrote to the bucket, merged into state.",
                                 labels)),
      write_errors_(
          metrics.GetCounter("kv_write_errors", "KV writes that failed and are retried.", labels)),
      pending_keys_(metrics.GetGauge("kv_pending_keys",
                                     "Keys with samples not yet durable in the bucket.", labels)),
      watching_(metrics.GetGauge(
          "kv_watching",
          "1 while the bucket is watched for other workers' writes (0: the only writer).",
          labels)) {
  last_flush_ns_ = SteadyNowNs();
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  kv_ = js_->EnsureBucket(options_.bucket);
  MembershipOptions writers;
  writers.connection = options_.connection;
  writers.bucket = options_.bucket.name + "_writers";
  writers.owners_gauge = false;
  writers_ = std::make_unique<KvMembership>(std::move(writers), metrics, labels);
  watcher_ = kv_->WatchAll();
  SetWatching(true);
  watch_thread_ = std::thread([this] { Watch(); });
}

JetStreamKvStore::~JetStreamKvStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (watcher_) watcher_->Stop();  // only the watch thread destroys it
  }
  stop_cv_.notify_all();
  if (watch_thread_.joinable()) watch_thread_.join();
  kv_->WaitForWrites(2000);
  writers_.reset();  // leaves only once our last writes are answered
}

void JetStreamKvStore::SetWatching(bool on) {
  watching_.Set(on ? 1 : 0);
  alone_ = !on;
}

void JetStreamKvStore::Watch() {
  nats::KvEntry e;
  int64_t alone_since = 0;  // steady ns; 0: another writer is alive
  int64_t next_check = 0;   // of the writers, at most every 100 ms
  bool first_check = true;  // the first after the restore
  while (true) {
    nats::KvWatcher* watcher;
    bool restored;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      watcher = watcher_.get();
      restored = restored_;
    }
    const int64_t now = SteadyNowNs();
    if (restored && now >= next_check) {
      next_check = now + 100'000'000;
      if (writers_->OthersAlive() || now - last_conflict_ns_.load() < kConflictWatchNs) {
        alone_since = 0;
      } else if (alone_since == 0) {
        // Alone from the start: whatever a writer that left before wrote, it was acknowledged
        // before it left, so the restore has it: no grace needed.
        alone_since = first_check ? now - int64_t{options_.alone_ms} * 1'000'000 : now;
      }
      first_check = false;
      const bool alone =
          alone_since != 0 && now - alone_since >= int64_t{options_.alone_ms} * 1'000'000;
      if (watcher != nullptr && alone) {
        std::unique_ptr<nats::KvWatcher> old;
        {
          std::lock_guard lock(mu_);
          old.swap(watcher_);
        }
        old.reset();
        SetWatching(false);
        spdlog::info("bucket {}: the only writer: not watching it until another one joins",
                     options_.bucket.name);
        continue;
      }
      if (watcher == nullptr && alone_since == 0) {
        std::unique_ptr<nats::KvWatcher> fresh;
        try {
          fresh = kv_->WatchAll();  // the current values first: what the other wrote meanwhile
        } catch (const nats::Error& err) {
          spdlog::warn("bucket {}: watch: {}", options_.bucket.name, err.what());
        }
        if (fresh) {
          std::lock_guard lock(mu_);
          if (stopping_) return;
          watcher_ = std::move(fresh);
          SetWatching(true);
          spdlog::info("bucket {}: another writer joined: watching it again", options_.bucket.name);
          continue;
        }
      }
    }
    if (watcher == nullptr) {
      std::unique_lock lock(mu_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; });
      continue;
    }
    nats::KvWatcher::Event ev;
    try {
      ev = watcher->Next(100, e);
    } catch (const nats::Error& err) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      spdlog::warn("bucket {}: watch: {}", options_.bucket.name, err.what());
      continue;
    }
    if (ev == nats::KvWatcher::Event::kTimeout) continue;
    std::lock_guard lock(mu_);
    if (ev == nats::KvWatcher::Event::kInitialDone) {
      restored_ = true;
      restored_cv_.notify_all();
      continue;
    }
    if (e.deleted) continue;
    if (restored_) {
      // Our own write coming back (its acknowledgement usually arrives first): nothing to hand
      // over, so it is not even queued.
      auto it = keys_.find(e.key);
      if (it != keys_.end() && it->second.written == e.revision) continue;
    }
    incoming_.push_back({std::move(e.key), e.revision, std::move(e.value)});
  }
}

void JetStreamKvStore::Restore(const Visit& visit) {
  std::deque<Update> initial;
  {
    std::unique_lock lock(mu_);
    if (!restored_cv_.wait_for(lock, std::chrono::milliseconds(options_.restore_timeout_ms),
                               [this] { return restored_; })) {
      throw std::runtime_error("bucket " + options_.bucket.name + ": state not restored within " +
                               std::to_string(options_.restore_timeout_ms) + " ms");
    }
    initial.swap(incoming_);
  }
  const Retention retention{options_.keep, options_.history_ns};
  for (Update& u : initial) {
    std::vector<wire::Point> samples = Decode(u.value);
    retention.Apply(samples);
    {
      std::lock_guard lock(mu_);
      KeyState& ks = keys_[u.key];
      ks.revision = std::max(ks.revision, u.revision);
      ks.samples = Merge(std::move(ks.samples), samples, kMaxPendingSamples);  // our next base
    }
    visit(u.key, std::move(samples));
  }
}

size_t JetStreamKvStore::Slot(const std::string& key) {
  std::lock_guard lock(mu_);
  auto& node = *keys_.try_emplace(key).first;
  if (node.second.slot == SIZE_MAX) {
    node.second.slot = slots_.size();
    slots_.push_back(&node);
  }
  return node.second.slot;
}

void JetStreamKvStore::Write(size_t slot, const std::vector<wire::Point>& samples, Ack durable) {
  std::lock_guard lock(mu_);
  auto& [key, ks] = *slots_.at(slot);
  // Everything since the last write goes out with the next one, not only the newest `keep`
  // (unless alone, see Prepare): the other workers see every sample through their watch even
  // when a write is delayed.
  // Appended here, sorted and merged once per write (Settle), not once per message.
  ks.fresh.insert(ks.fresh.end(), samples.begin(), samples.end());
  if (ks.fresh.size() > kMaxPendingSamples) Settle(ks);
  if (durable) ks.acks.push_back(std::move(durable));
  written_since_sync_ = true;
  if (!ks.dirty) {
    ks.dirty = true;
    dirty_.push_back(key);
  }
}

void JetStreamKvStore::Settle(KeyState& ks) {
  if (ks.fresh.empty()) return;
  ks.samples = Merge(std::move(ks.samples), ks.fresh, kMaxPendingSamples);
  ks.fresh.clear();
}

JetStreamKvStore::Outgoing JetStreamKvStore::Prepare(const std::string& key, KeyState& ks) {
  Settle(ks);
  ks.dirty = false;
  ks.in_flight = true;
  ++in_flight_;
  ks.in_flight_acks.swap(ks.acks);
  const Retention retention{options_.keep, options_.history_ns};
  // Alone, nobody watches: the write carries only what state retains (what a restore or a
  // joining writer's first read needs), not every sample since the last write.
  if (alone_) retention.Apply(ks.samples);
  Outgoing out{key, ks.samples, ks.revision};
  // What state retains stays as the base of the next write.
  retention.Apply(ks.samples);
  return out;
}

void JetStreamKvStore::Send(std::vector<Outgoing> writes) {
  for (Outgoing& w : writes) {
    const std::string value = Encode(w.samples);
    kv_->UpdateAsync(w.key, value, w.revision,
                     [this, key = w.key, sent = std::move(w.samples)](
                         const nats::KvWriteResult& r) { Done(key, sent, r); });
  }
}

void JetStreamKvStore::Done(const std::string& key, const std::vector<wire::Point>& sent,
                            const nats::KvWriteResult& r) {
  std::vector<Ack> acks;
  {
    std::lock_guard lock(mu_);
    KeyState& ks = keys_[key];
    ks.in_flight = false;
    --in_flight_;
    if (r.ok) {
      writes_.Inc();
      ks.revision = std::max(ks.revision, r.revision);
      ks.written = r.revision;
      acks.swap(ks.in_flight_acks);
    } else {
      (r.conflict ? conflicts_ : write_errors_).Inc();
      if (r.conflict) last_conflict_ns_ = SteadyNowNs();
      ks.conflict = r.conflict;
      ks.samples = Merge(ks.samples, sent, kMaxPendingSamples);
      ks.acks.insert(ks.acks.end(), std::make_move_iterator(ks.in_flight_acks.begin()),
                     std::make_move_iterator(ks.in_flight_acks.end()));
      ks.in_flight_acks.clear();
      if (!ks.dirty) {
        ks.dirty = true;
        dirty_.push_back(key);
      }
      if (!r.conflict) {
        // One line per key would flood the log when a whole flush fails (a lost connection).
        write_errors_log_.Log("write", spdlog::level::warn,
                              "bucket " + options_.bucket.name + ": write " + key + ": " + r.error);
      }
    }
  }
  for (const Ack& ack : acks) ack->Done();
}

void JetStreamKvStore::Flush() {
  kv_->ExpireWrites();  // a write whose acknowledgement was lost is retried, never pinned
  std::vector<std::string> conflicted;
  std::vector<Outgoing> writes;
  {
    std::lock_guard lock(mu_);
    std::vector<std::string> still_dirty;
    for (const std::string& key : dirty_) {
      KeyState& ks = keys_[key];
      if (!ks.dirty) continue;
      if (ks.in_flight) {
        still_dirty.push_back(key);  // one write per key in flight; this one goes next time
      } else if (ks.conflict) {
        conflicted.push_back(key);
      } else {
        writes.push_back(Prepare(key, ks));
      }
    }
    dirty_.swap(still_dirty);
    pending_keys_.Set(static_cast<double>(dirty_.size() + conflicted.size() + in_flight_));
  }
  Send(std::move(writes));
  // Conflicts: read what the other writer stored, merge by event time, write again.
  writes.clear();
  for (const std::string& key : conflicted) {
    std::optional<nats::KvEntry> current;
    try {
      current = kv_->Get(key);
    } catch (const nats::Error& e) {
      spdlog::warn("bucket {}: get {}: {}", options_.bucket.name, key, e.what());
    }
    std::lock_guard lock(mu_);
    KeyState& ks = keys_[key];
    if (current) {
      ks.samples = Merge(ks.samples, Decode(current->value), kMaxPendingSamples);
      ks.revision = current->revision;
    }
    ks.conflict = false;
    if (ks.in_flight) {
      ks.dirty = true;
      dirty_.push_back(key);
    } else {
      writes.push_back(Prepare(key, ks));
    }
  }
  Send(std::move(writes));
}

void JetStreamKvStore::Sync(bool all, const Visit& changed_elsewhere) {
  std::deque<Update> updates;
  {
    std::lock_guard lock(mu_);
    updates.swap(incoming_);
    for (const Update& u : updates) {
      KeyState& ks = keys_[u.key];
      ks.revision = std::max(ks.revision, u.revision);
    }
  }
  for (Update& u : updates) {
    std::vector<wire::Point> samples;
    {
      std::lock_guard lock(mu_);
      KeyState& ks = keys_[u.key];
      if (ks.written == u.revision) continue;  // our own echo is not even decoded
      samples = Decode(u.value);
      merged_.Inc();
      // Our next write goes out at this revision: it must carry what the other writer stored,
      // or it would replace it (the compare-and-set cannot see it any more).
      ks.samples = Merge(std::move(ks.samples), samples, kMaxPendingSamples);
    }
    changed_elsewhere(u.key, std::move(samples));
  }
  const int64_t now = SteadyNowNs();
  bool idle;  // nothing written since the last tick
  {
    std::lock_guard lock(mu_);
    idle = !written_since_sync_;
    written_since_sync_ = false;
  }
  // Alone, writes wait longer (only our acknowledgements wait for them), unless the input
  // paused: then what waits is written after flush_ms, as when others watch.
  const int64_t interval_ms =
      alone_ && !idle ? std::max(options_.flush_ms, options_.alone_flush_ms) : options_.flush_ms;
  if (!all && now - last_flush_ns_ < interval_ms * 1'000'000) return;
  last_flush_ns_ = now;
  Flush();
  if (!all) return;
  // Drain: every write answered (conflicts retried a few times) before acknowledging upstream.
  for (int round = 0; round < 5; ++round) {
    kv_->WaitForWrites(5000);
    {
      std::lock_guard lock(mu_);
      if (dirty_.empty() && in_flight_ == 0) return;
    }
    Flush();
  }
  std::lock_guard lock(mu_);
  spdlog::error("bucket {}: {} keys not written at shutdown; their messages will be redelivered",
                options_.bucket.name, dirty_.size() + static_cast<size_t>(in_flight_));
}

bool JetStreamKvStore::Ready() const {
  std::lock_guard lock(mu_);
  return restored_ && conn_->connected();
}

std::vector<wire::Point> JetStreamKvStore::Merge(std::vector<wire::Point> a,
                                                 const std::vector<wire::Point>& b, size_t keep) {
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end(), [](const wire::Point& x, const wire::Point& y) {
    return x.ts_ns != y.ts_ns ? x.ts_ns < y.ts_ns : x.seq < y.seq;
  });
  a.erase(std::unique(a.begin(), a.end(),
                      [](const wire::Point& x, const wire::Point& y) {
                        return x.ts_ns == y.ts_ns && x.seq == y.seq;
                      }),
          a.end());
  if (a.size() > keep) a.erase(a.begin(), a.end() - static_cast<std::ptrdiff_t>(keep));
  return a;
}

}  // namespace fleetflow
