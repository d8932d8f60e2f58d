#include "jetstream_kv_snapshots.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "clock.hpp"
#include "thread_name.hpp"

namespace fleetflow {

JetStreamKvSnapshots::JetStreamKvSnapshots(JetStreamKvSnapshotsOptions options, Metrics& metrics,
                                           const Labels& labels)
    : options_(std::move(options)),
      kv_metrics_(metrics, labels),
      bytes_(metrics.GetCounter("kv_bytes_written",
                                "Bytes of the KV values written and acknowledged.", labels)),
      coalesced_(metrics.GetCounter(
          "kv_saves_coalesced",
          "Snapshots replaced by a newer one of their partition before they were written.",
          labels)) {
  conn_ = nats::Connection::Connect(options_.connection);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  kv_ = js_->EnsureBucket(options_.bucket);
  kv_->set_write_timeout_ms(options_.write_timeout_ms);
  writer_ = std::thread([this] { Writer(); });
  NameThread(writer_, "ff-snapshots");
}

JetStreamKvSnapshots::~JetStreamKvSnapshots() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  writer_.join();
  kv_->WaitForWrites(2000);
}

std::string JetStreamKvSnapshots::KeyOf(std::string_view node, uint32_t p, std::string_view key) {
  std::string out = "agg.";
  out.append(node).append(".").append(std::to_string(p)).append(".").append(key);
  return out;
}

SnapshotStore::Snapshot JetStreamKvSnapshots::Restore(uint32_t p) {
  const std::string prefix = KeyOf(options_.node, p, "");
  Snapshot snapshot;
  const int again =
      kv_->ReadCurrent(prefix + ">", options_.restore_timeout_ms, [&](nats::KvEntry& e) {
        kv_metrics_.restored_keys.Inc();
        std::string key = e.key.substr(prefix.size());
        if (key != kCheckpointKey) {
          snapshot.values[std::move(key)] = std::move(e.value);
          return;
        }
        snapshot.checkpoint = ParseCheckpoint(e.value);
        if (!snapshot.checkpoint) {
          spdlog::warn("{} in bucket {} is not a sequence ({}); taken as none", e.key,
                       options_.bucket.name, e.value);
        }
      });
  if (again > 0) {
    spdlog::info("bucket {}: {} read {} more times: the replica read was behind the leader",
                 options_.bucket.name, prefix, again);
  }
  std::lock_guard lock(mu_);
  partitions_[p].stored = snapshot.values;  // the next save writes only what differs
  return snapshot;
}

void JetStreamKvSnapshots::Save(uint32_t p, std::map<std::string, std::string> values,
                                uint64_t sequence) {
  if (values.contains(std::string(kCheckpointKey))) {
    throw std::invalid_argument("snapshot value key 'checkpoint' is the store's own");
  }
  {
    std::lock_guard lock(mu_);
    Partition& part = partitions_[p];
    if (part.pending) coalesced_.Inc();
    part.pending = PendingSave{std::move(values), sequence};
  }
  changed_.notify_all();
}

bool JetStreamKvSnapshots::Idle() const {
  return std::none_of(partitions_.begin(), partitions_.end(), [](const auto& entry) {
    return entry.second.pending || entry.second.writing;
  });
}

bool JetStreamKvSnapshots::Sync() {
  std::unique_lock lock(mu_);
  const bool done = changed_.wait_for(lock, std::chrono::milliseconds(options_.sync_timeout_ms),
                                      [&] { return Idle(); });
  const bool ok = done && failed_ == 0;
  failed_ = 0;
  return ok;
}

void JetStreamKvSnapshots::Forget(uint32_t p) {
  std::lock_guard lock(mu_);
  partitions_.erase(p);
}

bool JetStreamKvSnapshots::Ready() const { return conn_->connected(); }

void JetStreamKvSnapshots::Writer() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto next = partitions_.end();
    changed_.wait(lock, [&] {
      next = std::find_if(partitions_.begin(), partitions_.end(),
                          [](const auto& e) { return e.second.pending && !e.second.writing; });
      return stop_ || next != partitions_.end();
    });
    if (stop_) return;
    const uint32_t p = next->first;
    const PendingSave save = std::move(*next->second.pending);
    next->second.pending.reset();
    next->second.writing = true;
    std::map<std::string, std::string> stored = next->second.stored;
    lock.unlock();
    const bool ok = Write(p, save, stored);
    lock.lock();
    if (const auto it = partitions_.find(p); it != partitions_.end()) {  // else forgotten
      it->second.writing = false;
      it->second.stored = std::move(stored);
    }
    if (!ok) ++failed_;
    changed_.notify_all();
  }
}

bool JetStreamKvSnapshots::Write(uint32_t p, const PendingSave& save,
                                 std::map<std::string, std::string>& stored) {
  // The answers come on nats.c's thread, possibly after a timeout gave up on them here.
  struct Answers {
    std::mutex mu;
    std::map<std::string, bool> ok;  // by value key
    std::string error;
  };
  const auto answers = std::make_shared<Answers>();
  const auto fail = [&](const std::string& what, const std::string& error, size_t writes) {
    kv_metrics_.write_errors.Inc(writes);
    errors_log_.Log("write", spdlog::level::warn,
                    "bucket " + options_.bucket.name + ": " + what + ": " + error +
                        " (the snapshot's checkpoint stays where it was)");
    return false;
  };
  size_t sent = 0;
  for (const auto& [key, value] : save.values) {
    if (const auto it = stored.find(key); it != stored.end() && it->second == value) continue;
    stored.erase(key);  // unknown until answered
    ++sent;
    kv_->PutAsync(KeyOf(options_.node, p, key), value,
                  // The counters, not `this`: an answer may come while the store goes.
                  [answers, &writes = kv_metrics_.writes, &bytes = bytes_, key = key,
                   size = value.size()](const nats::KvWriteResult& r) {
                    std::lock_guard lock(answers->mu);
                    answers->ok[key] = r.ok;
                    if (r.ok) {
                      writes.Inc();
                      bytes.Inc(size);
                    } else if (answers->error.empty()) {
                      answers->error = r.error;
                    }
                  });
  }
  const bool answered = sent == 0 || kv_->WaitForWrites(options_.write_timeout_ms + 1000);
  size_t written = 0;
  std::string error;
  {
    std::lock_guard lock(answers->mu);
    for (const auto& [key, ok] : answers->ok) {
      if (!ok) continue;
      stored[key] = save.values.at(key);
      ++written;
    }
    error = answers->error;
  }
  if (!answered || written != sent) {
    return fail("snapshot of partition " + std::to_string(p),
                error.empty() ? "not answered in time" : error, sent - written);
  }
  for (auto it = stored.begin(); it != stored.end();) {
    if (save.values.contains(it->first)) {
      ++it;
      continue;
    }
    try {
      kv_->Delete(KeyOf(options_.node, p, it->first));
      it = stored.erase(it);
    } catch (const nats::Error& e) {
      return fail("delete " + KeyOf(options_.node, p, it->first), e.what(), 1);
    }
  }
  const auto checkpoint = std::make_shared<std::optional<nats::KvWriteResult>>();
  kv_->PutAsync(KeyOf(options_.node, p, kCheckpointKey), std::to_string(save.sequence),
                [checkpoint, answers](const nats::KvWriteResult& r) {
                  std::lock_guard lock(answers->mu);
                  *checkpoint = r;
                });
  kv_->WaitForWrites(options_.write_timeout_ms + 1000);
  std::lock_guard lock(answers->mu);
  if (!*checkpoint || !(*checkpoint)->ok) {
    return fail(KeyOf(options_.node, p, kCheckpointKey),
                *checkpoint ? (*checkpoint)->error : "not answered in time", 1);
  }
  kv_metrics_.checkpoints.Inc();
  return true;
}

std::shared_ptr<SnapshotStore> OpenKvSnapshots(const OperatorContext& ctx,
                                               const NatsClientOptions& nats,
                                               const std::string& bucket,
                                               const KvBucketSettings& settings) {
  JetStreamKvSnapshotsOptions o;
  o.connection = NatsConnectOptions(nats, "fleetflow:" + ctx.node_id);
  o.bucket.name = bucket;
  o.bucket.storage = settings.storage;
  o.bucket.replicas = settings.replicas;
  o.node = ctx.node_id;
  return std::make_shared<JetStreamKvSnapshots>(std::move(o), ctx.metrics, ctx.labels());
}

}  // namespace fleetflow
