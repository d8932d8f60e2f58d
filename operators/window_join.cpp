#include "window_join.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>

namespace fleetflow {

namespace {

constexpr int64_t kMs = 1'000'000;

/// Samples of one sensor, reduced to what any open window can still use: for each interval
/// (T - every, T] (keyed by T), its oldest and newest sample.
struct SensorBuckets {
  struct Bucket {
    wire::Point oldest;
    wire::Point newest;
  };
  std::map<int64_t, Bucket> buckets;

  void Add(int64_t key, const wire::Point& p) {
    auto [it, inserted] = buckets.try_emplace(key, Bucket{p, p});
    if (inserted) return;
    if (p.ts_ns < it->second.oldest.ts_ns) it->second.oldest = p;
    if (p.ts_ns >= it->second.newest.ts_ns) it->second.newest = p;
  }

  Slot At(int64_t t, int64_t max_gap) const {
    Slot slot;
    auto after = buckets.upper_bound(t);  // first interval ending after t: samples > t
    if (after != buckets.end() && after->second.oldest.ts_ns - t <= max_gap) {
      slot.after = after->second.oldest;
    }
    if (after != buckets.begin()) {
      const wire::Point& p = std::prev(after)->second.newest;  // newest sample <= t
      if (t - p.ts_ns <= max_gap) slot.before = p;
    }
    return slot;
  }

  /// Forgets intervals no window from `next` on can use: all before the newest interval <= next.
  void Prune(int64_t next) {
    auto keep = buckets.upper_bound(next);
    if (keep == buckets.begin()) return;
    buckets.erase(buckets.begin(), std::prev(keep));
  }

  int64_t Newest() const {
    return buckets.empty() ? std::numeric_limits<int64_t>::min()
                           : buckets.rbegin()->second.newest.ts_ns;
  }
};

struct VehicleState {
  std::vector<SensorBuckets> sensors;
  int64_t newest_ns = std::numeric_limits<int64_t>::min();
  std::optional<int64_t> off_at_ns;  // said off; no rows for windows after this
};

class WindowJoin final : public Operator {
 public:
  explicit WindowJoin(const OperatorContext& ctx)
      : every_(ctx.config.Integer("every_ms") * kMs),
        lateness_(ctx.config.Integer("allowed_lateness_ms") * kMs),
        max_gap_(ctx.config.Integer("max_gap_ms") * kMs),
        idle_(ctx.config.Integer("idle_ms") * kMs),
        clock_(ctx.clock),
        sensors_(std::make_shared<const std::vector<std::string>>(
            ctx.config.StringArray("sensors"))),
        windows_(ctx.metrics.GetCounter("windows_emitted", "Windows closed and emitted.",
                                        ctx.labels())),
        rows_(ctx.metrics.GetCounter("rows_emitted", "Rows emitted (one per vehicle and window).",
                                     ctx.labels())),
        late_(ctx.metrics.GetCounter(
            "late_samples", "Samples that arrived after a window they belonged to had closed.",
            ctx.labels())),
        ignored_(ctx.metrics.GetCounter("samples_ignored",
                                        "Samples of sensors that are not a column of the join.",
                                        ctx.labels())),
        active_(ctx.metrics.GetGauge("active_vehicles", "Vehicles with a row in the last window.",
                                     ctx.labels())),
        tracked_(ctx.metrics.GetGauge("tracked_vehicles", "Vehicles the join holds state for.",
                                      ctx.labels())) {
    if (sensors_->empty()) throw std::runtime_error("sensors: list at least one sensor");
    for (size_t i = 0; i < sensors_->size(); ++i) index_[(*sensors_)[i]] = i;
    if (index_.size() != sensors_->size()) {
      throw std::runtime_error("sensors: a sensor is listed twice; list each once");
    }
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      Add(*b);
    } else if (const auto* s = std::get_if<StatusEvent>(in.get())) {
      Status(*s);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      Advance(*t, out);
      out.Emit(in);
    }
  }

 private:
  int64_t WindowOf(int64_t ts) const {  // the smallest window time >= ts
    const int64_t q = ts / every_;
    const int64_t t = q * every_;
    return t >= ts ? t : t + every_;
  }

  VehicleState& Vehicle(const std::string& id) {
    auto [it, inserted] = vehicles_.try_emplace(id);
    if (inserted) {
      it->second.sensors.resize(sensors_->size());
      tracked_.Set(static_cast<double>(vehicles_.size()));
    }
    return it->second;
  }

  void Add(const SampleBatch& b) {
    auto idx = index_.find(b.sensor);
    if (idx == index_.end()) {
      ignored_.Inc(b.points.size());
      return;
    }
    VehicleState& v = Vehicle(b.vehicle);
    SensorBuckets& s = v.sensors[idx->second];
    last_arrival_ns_ = clock_.NowNs();
    for (const wire::Point& p : b.points) {
      newest_event_ns_ = std::max(newest_event_ns_, p.ts_ns);
      if (!next_) next_ = WindowOf(std::min(p.ts_ns, last_arrival_ns_));
      const int64_t w = WindowOf(p.ts_ns);
      if (next_ && w < *next_) late_.Inc();
      s.Add(w, p);
      v.newest_ns = std::max(v.newest_ns, p.ts_ns);
      if (v.off_at_ns && p.ts_ns > *v.off_at_ns) v.off_at_ns.reset();  // running again
    }
  }

  void Status(const StatusEvent& e) {
    VehicleState& v = Vehicle(e.vehicle);
    if (e.on) {
      v.off_at_ns.reset();
    } else {
      // Off after its newest sample: the vehicle's own clock, not ours, decides which windows
      // it still has.
      v.off_at_ns = v.newest_ns != std::numeric_limits<int64_t>::min() ? v.newest_ns
                                                                         : e.received_ns;
    }
  }

  /// Event-time progress: while samples flow, the newest event time seen (never ahead of the
  /// clock), so a backlog (JetStream catch-up, replay) closes its windows as they were live;
  /// when nothing arrived for idle_ms, the clock.
  void Advance(const Tick& tick, Emitter& out) {
    if (!next_) return;  // no sample yet: no window can have a row
    int64_t progress = tick.now_ns;
    if (tick.now_ns - last_arrival_ns_ <= idle_) progress = std::min(progress, newest_event_ns_);
    const int64_t horizon = tick.drain ? tick.now_ns : progress - lateness_;
    if (horizon - *next_ > 2 * every_) SkipEmptyWindows();
    while (*next_ <= horizon) {
      Emit(*next_, out);
      *next_ += every_;
    }
  }

  /// Jumps over windows before the oldest sample held (a gap in the data, a restored state).
  void SkipEmptyWindows() {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const auto& [_, v] : vehicles_) {
      for (const SensorBuckets& s : v.sensors) {
        if (!s.buckets.empty()) oldest = std::min(oldest, s.buckets.begin()->second.oldest.ts_ns);
      }
    }
    if (oldest != std::numeric_limits<int64_t>::max()) next_ = std::max(*next_, WindowOf(oldest));
  }

  void Emit(int64_t t, Emitter& out) {
    WindowBatch batch;
    batch.window_ns = t;
    batch.sensors = sensors_;
    for (auto it = vehicles_.begin(); it != vehicles_.end();) {
      VehicleState& v = it->second;
      const bool off = v.off_at_ns && t > *v.off_at_ns;
      if (!off) {
        WindowRow row;
        row.slots.reserve(v.sensors.size());
        bool active = false;
        for (const SensorBuckets& s : v.sensors) {
          row.slots.push_back(s.At(t, max_gap_));
          active = active || row.slots.back().before.has_value();
        }
        if (active) {
          row.vehicle = it->first;
          batch.rows.push_back(std::move(row));
        }
      }
      for (SensorBuckets& s : v.sensors) s.Prune(t + every_);
      // Nothing of this vehicle can reach a later window any more: forget it.
      if (v.newest_ns < t + every_ - max_gap_ || (off && v.newest_ns <= *v.off_at_ns)) {
        it = vehicles_.erase(it);
      } else {
        ++it;
      }
    }
    tracked_.Set(static_cast<double>(vehicles_.size()));
    active_.Set(static_cast<double>(batch.rows.size()));
    windows_.Inc();
    if (batch.rows.empty()) return;
    rows_.Inc(batch.rows.size());
    out.Emit(MakeMessage(std::move(batch)));
  }

  const int64_t every_;
  const int64_t lateness_;
  const int64_t max_gap_;
  const int64_t idle_;
  const Clock& clock_;
  int64_t newest_event_ns_ = std::numeric_limits<int64_t>::min();
  int64_t last_arrival_ns_ = std::numeric_limits<int64_t>::min();
  const std::shared_ptr<const std::vector<std::string>> sensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, VehicleState> vehicles_;
  std::optional<int64_t> next_;  // the next window to emit
  Counter& windows_;
  Counter& rows_;
  Counter& late_;
  Counter& ignored_;
  Gauge& active_;
  Gauge& tracked_;
};

}  // namespace

void RegisterWindowJoin(Registry& registry) {
  OperatorInfo info;
  info.name = "window_join";
  info.summary =
      "Every every_ms, after allowed_lateness_ms, emits one row per active vehicle with the "
      "samples bracketing the window time for each sensor.";
  info.input = PortKind::kSamples;
  info.output = PortKind::kRows;
  info.config
      .Integer("every_ms",
               "Window period. Window times are the multiples of every_ms since the Unix epoch.")
      .Default(int64_t{1000})
      .Min(100)
      .Max(3'600'000);
  info.config
      .Integer("allowed_lateness_ms",
               "How long after a window time T the join waits for samples before emitting T. "
               "A sample arriving later is counted as late and misses that window.")
      .Default(int64_t{500})
      .Min(0)
      .Max(600'000);
  info.config
      .Integer("max_gap_ms",
               "Samples farther than this from T are not used for T; a vehicle with no sample "
               "in [T - max_gap_ms, T] gets no row for T.")
      .Default(int64_t{2000})
      .Min(1)
      .Max(3'600'000);
  info.config
      .Integer("idle_ms",
               "Windows close on event time while samples flow (a backlog is windowed as it was "
               "live); after this long without any sample they close on the clock.")
      .Default(int64_t{2000})
      .Min(1)
      .Max(3'600'000);
  info.config
      .StringArray("sensors", "The sensors joined into each row, one slot each, in this order.")
      .DefaultJson(R"(["gps", "speed", "soc", "torque"])");
  info.create = [](const OperatorContext& ctx) { return std::make_unique<WindowJoin>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow
