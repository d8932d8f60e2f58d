#include "jetstream_kv_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "clock.hpp"

namespace fleetflow {

namespace {

constexpr size_t kMaxPendingSamples = 1024;  // per key between two writes, at most
/// kv_write_seconds' buckets (docs/metrics.md): 0.5 ms to the 5 s write timeout and beyond.
const std::vector<double> kWriteBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5,     10};

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
      retention_{options_.keep, options_.history_ns},
      writes_(metrics.GetCounter("kv_writes", "KV writes acknowledged by the server.", labels)),
      conflicts_(metrics.GetCounter(
          "kv_conflicts",
          "KV compare-and-set conflicts (another worker wrote the key since our last write).",
          labels)),
      restored_keys_(metrics.GetCounter(
          "kv_keys_restored", "Keys read from the bucket on taking a partition over.", labels)),
      write_errors_(
          metrics.GetCounter("kv_write_errors", "KV writes that failed and are retried.", labels)),
      pending_keys_(metrics.GetGauge("kv_pending_keys",
                                     "Keys with samples not yet durable in the bucket.", labels)),
      write_seconds_(metrics.GetHistogram(
          "kv_write_seconds",
          "KV write batches (the keys of one flush): from sending to the last answer, in seconds.",
          kWriteBuckets, labels)) {
  last_flush_ns_ = SteadyNowNs();
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  kv_ = js_->EnsureBucket(options_.bucket);
}

JetStreamKvStore::~JetStreamKvStore() { kv_->WaitForWrites(2000); }

void JetStreamKvStore::Restore(const std::string& prefix, const Visit& visit) {
  const auto watcher = prefix.empty() ? kv_->WatchAll() : kv_->Watch(prefix + ">");
  const int64_t deadline = SteadyNowNs() + int64_t{options_.restore_timeout_ms} * 1'000'000;
  nats::KvEntry e;
  for (;;) {
    const int64_t left_ms = (deadline - SteadyNowNs()) / 1'000'000;
    if (left_ms <= 0) {
      throw std::runtime_error("bucket " + options_.bucket.name + ": keys " + prefix +
                               "> not read within " + std::to_string(options_.restore_timeout_ms) +
                               " ms");
    }
    const auto ev = watcher->Next(static_cast<int>(std::min<int64_t>(left_ms, 500)), e);
    if (ev == nats::KvWatcher::Event::kInitialDone) return;
    if (ev != nats::KvWatcher::Event::kEntry || e.deleted) continue;
    std::vector<wire::Point> samples = Decode(e.value);
    retention_.Apply(samples);
    {
      std::lock_guard lock(mu_);
      KeyState& ks = keys_[e.key];
      ks.revision = std::max(ks.revision, e.revision);
      ks.samples = Merge(std::move(ks.samples), samples, kMaxPendingSamples);  // our next base
    }
    restored_keys_.Inc();
    visit(e.key, std::move(samples));
  }
}

void JetStreamKvStore::Forget(const std::string& prefix) {
  std::lock_guard lock(mu_);
  for (auto it = keys_.begin(); it != keys_.end();) {
    if (!it->first.starts_with(prefix) || it->second.in_flight || it->second.dirty) {
      ++it;  // a write still on its way keeps its key (Sync(true) normally waited for it)
      continue;
    }
    if (it->second.slot != SIZE_MAX) {
      slots_[it->second.slot] = nullptr;
      free_slots_.push_back(it->second.slot);
    }
    it = keys_.erase(it);
  }
}

size_t JetStreamKvStore::Slot(const std::string& key) {
  std::lock_guard lock(mu_);
  auto& node = *keys_.try_emplace(key).first;
  if (node.second.slot == SIZE_MAX) {
    if (free_slots_.empty()) {
      node.second.slot = slots_.size();
      slots_.push_back(&node);
    } else {
      node.second.slot = free_slots_.back();
      free_slots_.pop_back();
      slots_[node.second.slot] = &node;
    }
  }
  return node.second.slot;
}

void JetStreamKvStore::Write(size_t slot, const std::vector<wire::Point>& samples, Ack durable) {
  std::lock_guard lock(mu_);
  auto& [key, ks] = *slots_.at(slot);
  // Appended here, sorted and merged once per write (Settle), not once per message.
  ks.fresh.insert(ks.fresh.end(), samples.begin(), samples.end());
  if (ks.fresh.size() > kMaxPendingSamples) Settle(ks);
  if (durable) ks.acks.push_back(std::move(durable));
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
  retention_.Apply(ks.samples);  // what a restore needs, and the base of the next write
  return Outgoing{key, ks.samples, ks.revision};
}

void JetStreamKvStore::Send(std::vector<Outgoing> writes) {
  if (writes.empty()) return;
  auto batch = std::make_shared<WriteBatch>(WriteBatch{SteadyNowNs(), writes.size()});
  for (Outgoing& w : writes) {
    const std::string value = Encode(w.samples);
    kv_->UpdateAsync(w.key, value, w.revision,
                     [this, key = w.key, sent = std::move(w.samples),
                      batch](const nats::KvWriteResult& r) { Done(key, sent, r, *batch); });
  }
}

void JetStreamKvStore::Done(const std::string& key, const std::vector<wire::Point>& sent,
                            const nats::KvWriteResult& r, WriteBatch& batch) {
  std::vector<Ack> acks;
  {
    std::lock_guard lock(mu_);
    if (--batch.unanswered == 0) {
      write_seconds_.Observe(static_cast<double>(SteadyNowNs() - batch.sent_ns) * 1e-9);
    }
    KeyState& ks = keys_[key];
    ks.in_flight = false;
    --in_flight_;
    if (r.ok) {
      writes_.Inc();
      ks.revision = std::max(ks.revision, r.revision);
      acks.swap(ks.in_flight_acks);
    } else {
      (r.conflict ? conflicts_ : write_errors_).Inc();
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

void JetStreamKvStore::Sync(bool all) {
  const int64_t now = SteadyNowNs();
  if (!all && now - last_flush_ns_ < options_.flush_ms * 1'000'000) return;
  last_flush_ns_ = now;
  Flush();
  if (!all) return;
  // Drain, or a partition handed over: every write answered (conflicts retried a few times).
  for (int round = 0; round < 5; ++round) {
    kv_->WaitForWrites(5000);
    {
      std::lock_guard lock(mu_);
      if (dirty_.empty() && in_flight_ == 0) return;
    }
    Flush();
  }
  std::lock_guard lock(mu_);
  spdlog::error("bucket {}: {} keys not written; their messages will be redelivered",
                options_.bucket.name, dirty_.size() + static_cast<size_t>(in_flight_));
}

bool JetStreamKvStore::Ready() const { return conn_->connected(); }

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
