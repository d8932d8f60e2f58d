#include "keyed_last_value.hpp"

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <string_view>
#include <unordered_map>

#include "nats_config.hpp"
#include "state/jetstream_kv_store.hpp"
#include "state_store.hpp"

namespace fleetflow {

namespace {

/// The options of keyed_last_value (see Spec()).
struct KeyedLastValueOptions {
  enum class Backend { kMemory, kJetStreamKv };
  Backend backend = Backend::kMemory;
  std::string bucket;
  KvBucketSettings bucket_settings;
  int64_t flush_ms = 0;
  int64_t flush_messages = 0;
  size_t records_per_partition = 0;
  NatsClientOptions nats;
  size_t keep = 0;
  int64_t history_ms = 0;
  std::vector<std::string> sensors;  ///< empty: every sensor
};

class KeyedLastValue final : public Operator {
 public:
  KeyedLastValue(const OperatorContext& ctx, const KeyedLastValueOptions& options)
      : retention_{options.keep, options.history_ms * 1'000'000},
        sensors_(options.sensors),
        accepted_(ctx.metrics.GetCounter(
            "samples_accepted",
            "Samples passed on: every sample but duplicates and unknown sensors; all enter keyed "
            "state but the stale ones.",
            ctx.labels())),
        stale_(ctx.metrics.GetCounter("samples_stale",
                                      "Samples older than every kept sample of their key: kept "
                                      "out of the state, still passed on.",
                                      ctx.labels())),
        duplicates_(ctx.metrics.GetCounter("samples_duplicate",
                                           "Samples already in state (same ts and seq), dropped.",
                                           ctx.labels())),
        unknown_(ctx.metrics.GetCounter("samples_unknown_sensor",
                                        "Samples of sensors not in the sensors list, dropped.",
                                        ctx.labels())),
        in_state_(ctx.metrics.GetCounter(
            "changelog_in_state",
            "Messages of a partition's changelog read again on taking it over that its restored "
            "state already held (up to its checkpoint; the changelog is read from the oldest "
            "checkpoint of the nodes after the source), dropped.",
            ctx.labels())),
        keys_(ctx.metrics.GetGauge("state_keys", "Keys held in keyed state.", ctx.labels())) {
    if (options.backend == KeyedLastValueOptions::Backend::kJetStreamKv) {
      JetStreamKvOptions o;
      o.connection = NatsConnectOptions(options.nats, "fleetflow:" + ctx.node_id);
      o.bucket.name = options.bucket;
      o.bucket.storage = options.bucket_settings.storage;
      o.bucket.replicas = options.bucket_settings.replicas;
      o.flush_ms = options.flush_ms;
      o.flush_messages = options.flush_messages;
      o.records_per_partition = options.records_per_partition;
      o.keep = retention_.keep;
      o.history_ns = retention_.history_ns;
      o.current = [this](size_t slot) { return Current(slot); };
      store_ = std::make_unique<JetStreamKvStore>(std::move(o), ctx.metrics, ctx.labels());
    } else {
      store_ = std::make_unique<MemoryStateStore>();
    }
    keys_.Set(0);
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* event = std::get_if<PartitionEvent>(in.get())) {
      out.Emit(in);  // the partition's news goes before its restored samples
      if (event->kind == PartitionEvent::Kind::kAssigned) {
        Restore(event->partition, out);
      } else {
        Revoke(event->partition);
      }
      return;
    }
    if (const auto* tick = std::get_if<Tick>(in.get())) {
      store_->Sync(tick->drain);
      out.Emit(in);
      return;
    }
    if (const auto* status = std::get_if<StatusEvent>(in.get())) {
      Restore(status->partition, out);
      if (InState(status->partition, status->sequence)) {
        if (status->ack) status->ack->Done();
        return;
      }
      // Stored like a sample (value 1 on, 0 off), at the time of the vehicle's newest sample; a
      // change after the last stored status without a sample in between goes 1 ns after it, or
      // it would be dropped as that status' duplicate.
      auto newest = newest_.find(status->vehicle);
      int64_t at = newest != newest_.end() ? newest->second : status->at_ns;
      MakeKey(key_, status->partition, status->vehicle, wire::kStatusToken);
      if (const auto last = state_.find(key_); last != state_.end() && !last->second.kept.empty()) {
        at = std::max(at, last->second.kept.back().ts_ns + 1);
      }
      const Accepted a = Accept(key_, {wire::Point{at, 0, status->on ? 1.0 : 0.0}}, false);
      if (a.entered) store_->Write(Slot(a.entry, key_), status->sequence);
      if (status->ack) status->ack->Done();  // in state: the stream is its changelog
      out.Emit(MakeMessage(StatusEvent{status->vehicle, status->on, at, status->partition}));
      return;
    }
    const auto* batch = std::get_if<SampleBatch>(in.get());
    if (batch == nullptr) {
      out.Emit(in);
      return;
    }
    Restore(batch->partition, out);
    if (InState(batch->partition, batch->sequence)) {
      if (batch->ack) batch->ack->Done();
      return;
    }
    if (!sensors_.empty() &&
        std::find(sensors_.begin(), sensors_.end(), batch->sensor) == sensors_.end()) {
      unknown_.Inc(batch->points.size());
      if (batch->ack) batch->ack->Done();
      return;
    }
    MakeKey(key_, batch->partition, batch->vehicle, batch->sensor);
    const Accepted a = Accept(key_, batch->points, true);
    accepted_.Inc(a.passed);
    if (a.entered) store_->Write(Slot(a.entry, key_), batch->sequence);
    // In state: acknowledged. The stream is the partition's changelog; the store's checkpoint
    // says from where a next owner re-reads it (docs/scaling.md, "State").
    if (batch->ack) batch->ack->Done();
    if (a.passed == 0) return;
    if (a.passed == batch->points.size()) {
      // Nothing dropped: the message goes on as it is.
      out.Emit(in);
      return;
    }
    SampleBatch passed{batch->vehicle, batch->sensor, passed_, {}, batch->received_ns};
    passed.partition = batch->partition;
    passed.stream_ns = batch->stream_ns;
    out.Emit(MakeMessage(std::move(passed)));
  }

  void Prefetch(const Message& soon) override {
    if (const auto* b = std::get_if<SampleBatch>(soon.get())) {
      MakeKey(soon_key_, b->partition, b->vehicle, b->sensor);
      state_.prefetch(soon_key_);
    }
  }

  bool Ready() const override { return store_->Ready(); }

 private:
  /// key_ = `<partition>.<vehicle>.<sensor>` (or `.status`): the state's and the store's key.
  static void MakeKey(std::string& key, uint32_t partition, std::string_view vehicle,
                      std::string_view sensor) {
    key.assign(std::to_string(partition)).append(".").append(vehicle).append(".").append(sensor);
  }

  /// Takes partition `p`'s stored state in (once) and passes it on, so the windows after a
  /// restart or a take-over have the values from before it.
  void Restore(uint32_t p, Emitter& out) {
    if (p < restored_.size() && restored_[p]) return;  // once per partition: a lookup per message
    if (p >= restored_.size()) {
      restored_.resize(p + 1, false);
      checkpoints_.resize(p + 1, 0);
    }
    restored_[p] = true;
    const std::string prefix = std::to_string(p) + ".";
    const auto visit = [&](const std::string& key, std::vector<wire::Point> samples) {
      const size_t dot = key.find('.', prefix.size());
      if (dot == std::string::npos || samples.empty()) return;  // not a state key
      const std::string vehicle = key.substr(prefix.size(), dot - prefix.size());
      const std::string sensor = key.substr(dot + 1);
      retention_.Apply(samples);
      KeyEntry& entry = state_[key];
      entry.kept = samples;
      if (sensor == wire::kStatusToken) {
        const wire::Point& last = samples.back();
        out.Emit(MakeMessage(StatusEvent{vehicle, last.value != 0, last.ts_ns, p}));
        return;
      }
      int64_t& newest = newest_.try_emplace(vehicle, samples.back().ts_ns).first->second;
      newest = std::max(newest, samples.back().ts_ns);
      SampleBatch batch{vehicle, sensor, std::move(samples), {}, 0};
      batch.partition = p;
      batch.restored = true;
      out.Emit(MakeMessage(std::move(batch)));
    };
    checkpoints_[p] = store_->Restore(prefix, visit).value_or(0);
    keys_.Set(static_cast<double>(state_.size()));
  }

  /// Whether the message of stream sequence `sequence` (0: none) of partition `p` is in the
  /// restored state already: the changelog is read again from the oldest checkpoint of the
  /// nodes after the source, which may be older than this state's. Counted when it is.
  bool InState(uint32_t p, uint64_t sequence) {
    if (sequence == 0 || p >= checkpoints_.size() || sequence > checkpoints_[p]) return false;
    in_state_.Inc();
    return true;
  }

  /// Partition `p` moved to another worker: its state is made durable (the next owner restores
  /// it), then forgotten here.
  void Revoke(uint32_t p) {
    store_->Sync(true);
    const std::string prefix = std::to_string(p) + ".";
    store_->Forget(prefix);
    for (auto it = state_.begin(); it != state_.end();) {
      if (!it->first.starts_with(prefix)) {
        ++it;
        continue;
      }
      const size_t dot = it->first.find('.', prefix.size());
      const auto newest =
          newest_.find(std::string_view(it->first).substr(prefix.size(), dot - prefix.size()));
      if (newest != newest_.end()) newest_.erase(newest);
      state_.erase(it++);
    }
    if (p < restored_.size()) restored_[p] = false;
    keys_.Set(static_cast<double>(state_.size()));
  }

  struct KeyEntry;
  struct Accepted {
    KeyEntry& entry;  // the key's state
    size_t passed;    // samples to pass on; when fewer than were given, they are in passed_
    bool entered;     // a sample entered the state
  };
  /// Takes `points` into the key's state. The samples to pass on are every one that is not a
  /// duplicate of a kept one (stale ones included, though they stay out of the state); they
  /// are copied into passed_ only when one is dropped.
  Accepted Accept(const std::string& key, const std::vector<wire::Point>& points, bool count) {
    passed_.clear();
    size_t dropped = 0;
    bool entered = false;
    // Once a sample is dropped, passed_ holds those before it that went on, and each after.
    const auto pass = [&](const wire::Point& p) {
      if (dropped > 0) passed_.push_back(p);
    };
    const auto drop = [&](const wire::Point& p) {
      if (dropped++ == 0) passed_.assign(points.data(), &p);
    };
    auto [it, inserted] = state_.try_emplace(key);
    if (inserted) keys_.Set(static_cast<double>(state_.size()));
    KeyEntry& entry = it->second;
    std::vector<wire::Point>& kept = entry.kept;
    // Samples newer than every kept one (in order, as a vehicle sends them) are appended and
    // the retention applied once they are all in: it keeps the same samples as when applied
    // after each (the newest `keep`, and the history before the newest). Before any other
    // sample it is applied, as that sample's checks read what is kept.
    bool retained = true;
    for (const wire::Point& p : points) {
      if (kept.empty() || p.ts_ns > kept.back().ts_ns) {
        kept.push_back(p);
        pass(p);
        entered = true;
        retained = false;
        continue;
      }
      if (!retained) {
        retention_.Apply(kept);
        retained = true;
      }
      auto pos = std::lower_bound(kept.begin(), kept.end(), p.ts_ns,
                                  [](const wire::Point& k, int64_t ts) { return k.ts_ns < ts; });
      if (pos != kept.end() && pos->ts_ns == p.ts_ns && pos->seq == p.seq) {
        if (count) duplicates_.Inc();
        drop(p);
        continue;
      }
      pass(p);
      if (pos == kept.begin() && !kept.empty() && !KeepsAnOlderSample(kept)) {
        // Older than the whole state and beyond what it retains: it does not enter it, but the
        // windows it belongs to may still want it (it arrived late through another worker, or
        // out of order).
        if (count) stale_.Inc();
        continue;
      }
      kept.insert(pos, p);
      retention_.Apply(kept);
      entered = true;
    }
    if (!retained) retention_.Apply(kept);
    const size_t passed = points.size() - dropped;
    if (passed > 0 && !key.ends_with(wire::kStatusToken)) {
      if (entry.newest == nullptr) {
        const size_t first = key.find('.') + 1;
        const std::string_view vehicle =
            std::string_view(key).substr(first, key.find('.', first) - first);
        auto newest = newest_.find(vehicle);
        if (newest == newest_.end()) newest = newest_.emplace(vehicle, kept.back().ts_ns).first;
        entry.newest = &newest->second;  // map nodes stay where they are
      }
      *entry.newest = std::max(*entry.newest, kept.back().ts_ns);
    }
    return {entry, passed, entered};
  }

  /// The store's number for `key`, whose state is `entry` (asked of the store once per key).
  size_t Slot(KeyEntry& entry, const std::string& key) {
    if (entry.slot == SIZE_MAX) {
      entry.slot = store_->Slot(key);
      if (entry.slot >= key_of_slot_.size()) key_of_slot_.resize(entry.slot + 1);
      key_of_slot_[entry.slot] = key;
    }
    return entry.slot;
  }

  /// What the state holds of the key the store numbered `slot` (StateStore::Current).
  const std::vector<wire::Point>* Current(size_t slot) const {
    if (slot >= key_of_slot_.size()) return nullptr;
    const auto it = state_.find(key_of_slot_[slot]);
    return it == state_.end() || it->second.slot != slot ? nullptr : &it->second.kept;
  }

  /// Whether a sample older than every sample of `kept` would stay in the state once added.
  bool KeepsAnOlderSample(const std::vector<wire::Point>& kept) const {
    if (kept.size() < retention_.keep) return true;
    if (retention_.history_ns <= 0) return false;
    // It would be the oldest: it stays only while the oldest kept sample is within the history
    // (then it is the newest sample before the history, or within it too).
    return kept.front().ts_ns - kept.back().ts_ns >= -retention_.history_ns;
  }

  const Retention retention_;
  const std::vector<std::string> sensors_;
  struct KeyEntry {
    std::vector<wire::Point> kept;  // ascending ts
    int64_t* newest = nullptr;      // the vehicle's entry in newest_, once it has one
    size_t slot = SIZE_MAX;         // the key's number in the store, once asked
  };
  absl::flat_hash_map<std::string, KeyEntry> state_;
  std::string key_;
  std::string soon_key_;  // Prefetch's
  std::unique_ptr<StateStore> store_;
  std::vector<bool> restored_;  // by partition: taken in from the store
  /// By partition: the restored state's checkpoint (0: none), what InState skips up to.
  std::vector<uint64_t> checkpoints_;
  /// Newest sample time per vehicle (looked up once per key, by a view of it; then through
  /// KeyEntry::newest).
  struct Hash : std::hash<std::string_view> {
    using is_transparent = void;
  };
  std::unordered_map<std::string, int64_t, Hash, std::equal_to<>> newest_;
  std::vector<std::string> key_of_slot_;  // by the store's number: the state's key
  std::vector<wire::Point> passed_;       // scratch of Accept: samples to pass on
  Counter& accepted_;
  Counter& stale_;
  Counter& duplicates_;
  Counter& unknown_;
  Counter& in_state_;
  Gauge& keys_;
};

const OptionsSpec<KeyedLastValueOptions>& Spec() {
  using O = KeyedLastValueOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Enum("backend",
           "Where the state lives: memory (this process only) or jetstream_kv (one JetStream "
           "Key/Value bucket, each partition's vehicles spread over records_per_partition keys "
           "<partition>.r<k>: each partition's state is restored by the worker that takes it "
           "over, which re-reads from the stream what came after the partition's checkpoint "
           "<partition>.checkpoint; a JetStream source before it names the bucket in "
           "state_bucket).",
           &O::backend,
           {{"memory", O::Backend::kMemory}, {"jetstream_kv", O::Backend::kJetStreamKv}})
        .Default("memory");
    c.String("bucket",
             "jetstream_kv: the bucket, created when missing. Nobody watches it while it runs: "
             "a worker reads a partition's keys once, when it takes the partition over.",
             &O::bucket)
        .Default("telemetry");
    c.Include(&O::bucket_settings, KvBucketSpec());
    c.Integer("flush_ms",
              "jetstream_kv: writes are coalesced to at most one per key per flush_ms, sent "
              "asynchronously; after a clock tick without new samples (the input paused), what "
              "waits is written at once.",
              &O::flush_ms)
        .Default(int64_t{200})
        .Min(10)
        .Max(60'000);
    c.Integer("flush_messages",
              "jetstream_kv: a flush comes before flush_ms is up, at the next clock tick, once "
              "one partition took this many messages into state since the last one: it bounds "
              "what a partition's next owner re-reads from the stream after a crash when a "
              "backlog is read faster than flush_ms would flush it.",
              &O::flush_messages)
        .Default(int64_t{100'000})
        .Min(1)
        .Max(10'000'000);
    c.Integer("records_per_partition",
              "jetstream_kv: KV keys a partition's vehicles are spread over (a hash of the "
              "vehicle picks its key). A flush writes each key whose vehicles have new samples, "
              "with all of its vehicles: more keys, more and smaller writes. A key's value must "
              "stay under the server's max_payload (1 MB by default): at about 5.7 kB per "
              "vehicle (keep 16, history_ms 2000, four sensors up to 30 Hz), up to 170 vehicles "
              "per key.",
              &O::records_per_partition)
        .Default(int64_t{64})
        .Min(1)
        .Max(65'536);
    c.Include(&O::nats, NatsClientSpec());
    c.Integer("keep",
              "Newest samples kept per key, at least. A sample older than everything kept stays "
              "out of the state (stale) and is still passed on: the window join decides whether "
              "it is late.",
              &O::keep)
        .Default(int64_t{4})
        .Min(1)
        .Max(64);
    c.Integer("history_ms",
              "Also keeps every sample less than this much older than the key's newest (and the "
              "one before them), in memory and in the bucket. A worker that takes a partition "
              "over restores its windows from this history: behind a partitioned source, it "
              "must be at least the allowed_lateness_ms of the window_join after it (checked "
              "when the pipeline is loaded). 0: keep counts alone.",
              &O::history_ms)
        .Default(int64_t{0})
        .Min(0)
        .Max(600'000);
    c.StringArray("sensors",
                  "Sensors accepted; samples of any other sensor are counted and dropped. "
                  "Empty: every sensor.",
                  &O::sensors)
        .DefaultJson("[]")
        .Example(R"(["gps", "speed", "soc", "torque"])");
  });
}

/// `fleetflow validate --connect`: the jetstream_kv backend's server and bucket.
std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const KeyedLastValueOptions o = Spec().Parse(config);
  if (o.backend != KeyedLastValueOptions::Backend::kJetStreamKv) return {};
  return CheckStateBucket(o.nats, o.bucket, o.bucket_settings, "state");
}

/// An at-least-once source acknowledges a message once its samples are in this state: what the
/// bucket has not stored yet is re-read from the stream by a partition's next owner, from the
/// checkpoint in the bucket the source names (docs/scaling.md, "State").
std::vector<UpstreamProblem> CheckSourceKnowsTheBucket(const Config& self,
                                                       const std::string& self_id,
                                                       const std::vector<UpstreamNode>& upstream) {
  const KeyedLastValueOptions o = Spec().Parse(self);
  std::vector<UpstreamProblem> problems;
  const bool stored = o.backend == KeyedLastValueOptions::Backend::kJetStreamKv;
  for (const UpstreamNode& n : upstream) {
    if (!n.facts.at_least_once) continue;
    const std::string named = n.facts.state_bucket.value_or("");
    if (stored && named != o.bucket) {
      problems.push_back(
          {n.id, "/state_bucket",
           "keyed_last_value '" + self_id + "' keeps its state in bucket \"" + o.bucket +
               "\": set \"state_bucket\": \"" + o.bucket +
               "\" here, so that a partition's next owner re-reads what was acknowledged and "
               "not yet stored there (docs/scaling.md)" +
               (named.empty() ? "" : " (it names \"" + named + "\")")});
    } else if (!stored && !named.empty()) {
      problems.push_back({n.id, "/state_bucket",
                          "keyed_last_value '" + self_id +
                              "' keeps its state in memory: remove state_bucket, or set its "
                              "backend to jetstream_kv"});
    }
  }
  return problems;
}

/// What the nodes after it may rely on: the history a partition's next owner restores, and the
/// key of the checkpoint of its state in the bucket.
NodeFacts Facts(const Config& config) {
  NodeFacts facts;
  const KeyedLastValueOptions o = Spec().Parse(config);
  facts.state_history_ms = o.history_ms;
  if (!o.sensors.empty()) facts.sensors = o.sensors;
  if (o.backend == KeyedLastValueOptions::Backend::kJetStreamKv) {
    facts.checkpoint_key = [](std::string_view, uint32_t p) {
      return JetStreamKvStore::CheckpointKey(p);
    };
  }
  return facts;
}

}  // namespace

void RegisterKeyedLastValue(Registry& registry) {
  OperatorInfo info = TypedOperator<KeyedLastValue>(
      "keyed_last_value",
      "Keeps the newest samples per <vehicle>.<sensor> by event time and passes on the samples "
      "it accepted; late or duplicate samples never replace newer ones.",
      PortKind::kSamples, PortKind::kSamples, Spec());
  info.check_connect = CheckConnect;
  info.facts = Facts;
  info.check_upstream = CheckSourceKnowsTheBucket;
  registry.Add(std::move(info));
}

}  // namespace fleetflow
