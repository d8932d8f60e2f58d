#pragma once
/// JetStream through the one NATS wrapper: streams, durable pull consumers and Key/Value buckets.
///
/// Thread-safety: a JetStream, its consumers and buckets may be used from several threads;
/// JsMessage acknowledgements and KeyValue::UpdateAsync callbacks are thread-safe, and callbacks
/// run on a nats.c thread (never block in them).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nats_client.hpp"

struct __jsCtx;
struct __kvStore;
struct __kvWatcher;
struct jsPubAck;
struct jsPubAckErr;

namespace fleetflow::nats {

struct StreamOptions {
  std::string name = "TELEMETRY";
  std::vector<std::string> subjects = {"vehicle.*.*"};
  std::string retention = "limits";  // limits | workqueue | interest
  int64_t max_age_ms = 0;            // 0: unlimited
  std::string storage = "file";      // file | memory
  int replicas = 1;
};

struct ConsumerOptions {
  std::string stream = "TELEMETRY";
  std::string durable = "fleetflow";
  std::string filter_subject = "vehicle.*.*";
  int64_t ack_wait_ms = 30'000;
  int64_t max_ack_pending = 20'000;
};

/// A message from a pull consumer. Ack/Nak/Term are idempotent: only the first one counts.
class JsMessage {
 public:
  explicit JsMessage(__natsMsg* m);
  ~JsMessage();
  JsMessage(const JsMessage&) = delete;
  JsMessage& operator=(const JsMessage&) = delete;

  std::string_view subject() const;
  const void* data() const;
  size_t size() const;
  /// How often the server has delivered it (1 on first delivery).
  uint64_t delivered() const;

  void Ack();
  /// Asks for redelivery, after `delay_ms` (0: at once).
  void Nak(int64_t delay_ms = 0);
  /// Never redeliver (bad input).
  void Term();

 private:
  __natsMsg* msg_;
  std::atomic<bool> done_{false};
};

class PullConsumer {
 public:
  explicit PullConsumer(__natsSubscription* sub) : sub_(sub) {}
  ~PullConsumer();
  PullConsumer(const PullConsumer&) = delete;
  PullConsumer& operator=(const PullConsumer&) = delete;

  /// Up to `batch` messages, waiting at most timeout_ms; empty when none arrived in time.
  /// Throws Error on a connection problem (the caller retries).
  std::vector<std::shared_ptr<JsMessage>> Fetch(int batch, int timeout_ms);

 private:
  __natsSubscription* sub_;
};

struct KvEntry {
  std::string key;
  std::string value;
  uint64_t revision = 0;
  bool deleted = false;
};

/// The outcome of an asynchronous compare-and-set write.
struct KvWriteResult {
  bool ok = false;
  bool conflict = false;  // the key's revision was not the expected one
  uint64_t revision = 0;  // the new revision when ok
  std::string error;
};

class KvWatcher {
 public:
  explicit KvWatcher(__kvWatcher* w) : w_(w) {}
  ~KvWatcher();
  KvWatcher(const KvWatcher&) = delete;
  KvWatcher& operator=(const KvWatcher&) = delete;

  enum class Event { kEntry, kInitialDone, kTimeout };
  /// The next update. kInitialDone once, after the values present at the start.
  Event Next(int timeout_ms, KvEntry& entry);
  /// Wakes a blocked Next(); later calls fail.
  void Stop();

 private:
  __kvWatcher* w_;
};

class KeyValue {
 public:
  /// Takes ownership of `kv`; writes go through a JetStream context of its own.
  KeyValue(__natsConnection* nc, __kvStore* kv, std::string bucket);
  ~KeyValue();
  KeyValue(const KeyValue&) = delete;
  KeyValue& operator=(const KeyValue&) = delete;

  const std::string& bucket() const { return bucket_; }
  std::optional<KvEntry> Get(const std::string& key);
  /// Stores `value` unconditionally; returns the new revision.
  uint64_t Put(const std::string& key, std::string_view value);
  /// Leaves a delete marker for the key.
  void Delete(const std::string& key);
  /// Writes `value` if the key's current revision is `expected_revision` (0: the key must not
  /// exist), without waiting; `done` runs once the server answered. At most one write per key
  /// may be in flight.
  void UpdateAsync(const std::string& key, std::string_view value, uint64_t expected_revision,
                   std::function<void(const KvWriteResult&)> done);
  /// Waits until every asynchronous write was answered, at most timeout_ms.
  bool WaitForWrites(int timeout_ms);
  std::unique_ptr<KvWatcher> WatchAll();
  /// Watches the keys matching `keys` (a subject filter, e.g. "shard.*").
  std::unique_ptr<KvWatcher> Watch(const std::string& keys);

 private:
  static void OnAck(__jsCtx*, __natsMsg* msg, ::jsPubAck* pa, ::jsPubAckErr* pae, void* closure);

  __kvStore* kv_;
  __jsCtx* async_js_;
  std::string bucket_;
  std::string subject_prefix_;  // $KV.<bucket>.
  std::mutex mu_;
  std::map<std::string, std::function<void(const KvWriteResult&)>, std::less<>> pending_;
};

struct BucketOptions {
  std::string name = "telemetry";
  int history = 1;
  int64_t ttl_ms = 0;
  std::string storage = "file";
  int replicas = 1;
};

class JetStream {
 public:
  explicit JetStream(Connection& connection);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  /// Creates the stream when it does not exist; an existing stream is left as it is.
  void EnsureStream(const StreamOptions& options);
  /// Binds (creating when missing) the durable pull consumer; every worker that binds the same
  /// durable shares its messages.
  std::unique_ptr<PullConsumer> PullSubscribe(const ConsumerOptions& options);
  /// Opens the bucket, creating it when missing.
  std::unique_ptr<KeyValue> EnsureBucket(const BucketOptions& options);
  /// Publishes to a subject some stream captures and waits for the stream's acknowledgement;
  /// returns the stream sequence. Throws Error when no stream took it within timeout_ms.
  uint64_t Publish(std::string_view subject, const void* data, size_t size,
                   const Headers& headers, int timeout_ms);
  /// Messages not yet delivered plus delivered but unacknowledged, of a durable consumer.
  std::pair<uint64_t, uint64_t> ConsumerPending(const std::string& stream,
                                                const std::string& durable);

 private:
  Connection& conn_;
  __jsCtx* js_ = nullptr;
};

}  // namespace fleetflow::nats
