#include "keyed_last_value.hpp"

#include <algorithm>
#include <unordered_map>

namespace fleetflow {

namespace {

class KeyedLastValue final : public Operator {
 public:
  explicit KeyedLastValue(const OperatorContext& ctx)
      : keep_(static_cast<size_t>(ctx.config.Integer("keep"))),
        accepted_(ctx.metrics.GetCounter("samples_accepted",
                                         "Samples taken into keyed state.", ctx.labels())),
        stale_(ctx.metrics.GetCounter(
            "samples_stale", "Samples older than every kept sample of their key, dropped.",
            ctx.labels())),
        duplicates_(ctx.metrics.GetCounter(
            "samples_duplicate", "Samples already in state (same ts and seq), dropped.",
            ctx.labels())),
        unknown_(ctx.metrics.GetCounter("samples_unknown_sensor",
                                        "Samples of sensors not in the sensors list, dropped.",
                                        ctx.labels())),
        keys_(ctx.metrics.GetGauge("state_keys", "Keys held in keyed state.", ctx.labels())) {
    for (const auto& s : ctx.config.StringArray("sensors")) sensors_.push_back(s);
  }

  void Process(const Message& in, Emitter& out) override {
    const auto* batch = std::get_if<SampleBatch>(in.get());
    if (batch == nullptr) {
      out.Emit(in);  // status events and ticks pass through
      return;
    }
    if (!sensors_.empty() &&
        std::find(sensors_.begin(), sensors_.end(), batch->sensor) == sensors_.end()) {
      unknown_.Inc(batch->points.size());
      if (batch->ack) batch->ack();
      return;
    }
    key_.assign(batch->vehicle).append(".").append(batch->sensor);
    auto [it, inserted] = state_.try_emplace(key_);
    if (inserted) keys_.Set(static_cast<double>(state_.size()));
    std::vector<wire::Point>& kept = it->second;

    std::vector<wire::Point> accepted;
    accepted.reserve(batch->points.size());
    for (const wire::Point& p : batch->points) {
      auto pos = std::lower_bound(kept.begin(), kept.end(), p.ts_ns,
                                  [](const wire::Point& k, int64_t ts) { return k.ts_ns < ts; });
      if (pos != kept.end() && pos->ts_ns == p.ts_ns && pos->seq == p.seq) {
        duplicates_.Inc();
        continue;
      }
      if (kept.size() >= keep_ && pos == kept.begin()) {
        stale_.Inc();
        continue;
      }
      kept.insert(pos, p);
      if (kept.size() > keep_) kept.erase(kept.begin());
      accepted.push_back(p);
    }
    accepted_.Inc(accepted.size());
    // The memory backend: state is safe once it is in this map.
    if (batch->ack) batch->ack();
    if (accepted.empty()) return;
    if (accepted.size() == batch->points.size() && !batch->ack) {
      out.Emit(in);  // nothing dropped: pass the message on as it is
      return;
    }
    out.Emit(MakeMessage(SampleBatch{batch->vehicle, batch->sensor, std::move(accepted), {}}));
  }

 private:
  const size_t keep_;
  std::vector<std::string> sensors_;
  std::unordered_map<std::string, std::vector<wire::Point>> state_;  // ascending ts
  std::string key_;
  Counter& accepted_;
  Counter& stale_;
  Counter& duplicates_;
  Counter& unknown_;
  Gauge& keys_;
};

}  // namespace

void RegisterKeyedLastValue(Registry& registry) {
  OperatorInfo info;
  info.name = "keyed_last_value";
  info.summary =
      "Keeps the newest samples per <vehicle>.<sensor> by event time and passes on the samples "
      "it accepted; late or duplicate samples never replace newer ones.";
  info.input = PortKind::kSamples;
  info.output = PortKind::kSamples;
  info.config.String("backend", "Where the state lives: memory (this process only).")
      .Default("memory")
      .OneOf({"memory"});
  info.config
      .Integer("keep",
               "Newest samples kept per key. A sample older than all of them is dropped as stale.")
      .Default(int64_t{4})
      .Min(1)
      .Max(64);
  info.config
      .StringArray("sensors",
                   "Sensors accepted; samples of any other sensor are counted and dropped. "
                   "Empty: every sensor.")
      .DefaultJson("[]")
      .Example(R"(["gps", "speed", "soc", "torque"])");
  info.create = [](const OperatorContext& ctx) { return std::make_unique<KeyedLastValue>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow
