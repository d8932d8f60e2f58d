#include "window_join.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "event_time.hpp"
#include "options.hpp"

namespace fleetflow {

namespace {

/// A duration as the int64 ns the join computes in.
constexpr int64_t Ns(std::chrono::nanoseconds d) { return d.count(); }

/// Samples of one sensor, reduced to what any open window can still use: for each interval
/// (T - every, T] (keyed by T), its oldest and newest sample. A sorted vector: the intervals kept
/// are few (the retained windows), new ones come at the end and old ones leave at the front, so
/// a steady stream of samples allocates nothing.
struct SensorBuckets {
  struct Bucket {
    int64_t key;
    wire::Point oldest;
    wire::Point newest;
  };
  std::vector<Bucket> buckets;

  static bool KeyLess(const Bucket& b, int64_t key) { return b.key < key; }
  static bool LessKey(int64_t key, const Bucket& b) { return key < b.key; }

  /// Returns true when `p` is now the oldest sample of its interval.
  bool Add(int64_t key, const wire::Point& p) {
    auto it = !buckets.empty() && buckets.back().key < key
                  ? buckets.end()
                  : std::lower_bound(buckets.begin(), buckets.end(), key, KeyLess);
    if (it == buckets.end() || it->key != key) {
      buckets.insert(it, Bucket{key, p, p});
      return true;
    }
    if (p.ts_ns >= it->newest.ts_ns) it->newest = p;
    if (p.ts_ns >= it->oldest.ts_ns) return false;
    it->oldest = p;
    return true;
  }

  Slot At(int64_t t, int64_t max_gap) const {
    Slot slot;
    // The first interval ending after t holds the oldest sample > t.
    const auto after = std::upper_bound(buckets.begin(), buckets.end(), t, LessKey);
    if (after != buckets.end() && after->oldest.ts_ns - t <= max_gap) slot.after = after->oldest;
    if (after != buckets.begin()) {
      const wire::Point& p = std::prev(after)->newest;  // newest sample <= t
      if (t - p.ts_ns <= max_gap) slot.before = p;
    }
    return slot;
  }

  /// Forgets intervals no window from `next` on can use: all before the newest interval <= next.
  void Prune(int64_t next) {
    const auto keep = std::upper_bound(buckets.begin(), buckets.end(), next, LessKey);
    if (keep == buckets.begin()) return;
    buckets.erase(buckets.begin(), std::prev(keep));
  }

  int64_t Newest() const {
    return buckets.empty() ? std::numeric_limits<int64_t>::min() : buckets.back().newest.ts_ns;
  }
  int64_t Oldest() const {
    return buckets.empty() ? std::numeric_limits<int64_t>::max() : buckets.front().oldest.ts_ns;
  }
};

struct VehicleState {
  std::vector<SensorBuckets> sensors;
  int64_t newest_ns = std::numeric_limits<int64_t>::min();
  // Windows before it would miss samples: restored state is the newest part of each key's
  // samples, so a window is computed exactly once every sensor's restored samples reach it.
  int64_t exact_from_ns = std::numeric_limits<int64_t>::min();
  std::optional<int64_t> off_at_ns;  // said off; no rows for windows after this
};

/// One partition's windowing: its vehicles, and its own event-time progress (event_time.hpp).
/// An unpartitioned source is partition 0.
struct Partition : WindowProgress {
  uint32_t id = 0;
  std::unordered_map<std::string, VehicleState> vehicles;
  std::map<int64_t, std::set<std::string>> corrections;  // window -> vehicles to emit again
};

/// The options of window_join (see Spec()).
struct WindowJoinOptions {
  std::chrono::milliseconds every{0};
  std::chrono::milliseconds allowed_lateness{0};
  std::chrono::milliseconds max_gap{0};
  std::chrono::milliseconds idle{0};
  std::chrono::milliseconds correction_horizon{0};
  std::vector<std::string> sensors;
};

class WindowJoin final : public Operator {
 public:
  WindowJoin(const OperatorContext& ctx, const WindowJoinOptions& options)
      : node_(ctx.node_id),
        every_(Ns(options.every)),
        max_gap_(Ns(options.max_gap)),
        horizon_(Ns(options.correction_horizon)),
        time_(every_, Ns(options.allowed_lateness), Ns(options.idle), ctx.clock),
        sensors_(std::make_shared<const std::vector<std::string>>(options.sensors)),
        windows_(
            ctx.metrics.GetCounter("windows_emitted", "Windows closed and emitted.", ctx.labels())),
        rows_(ctx.metrics.GetCounter("rows_emitted", "Rows emitted (one per vehicle and window).",
                                     ctx.labels())),
        late_(ctx.metrics.GetCounter(
            "late_samples",
            "Samples that arrived after a window they belonged to had closed (they serve later "
            "windows only, unless correction_horizon_ms).",
            ctx.labels())),
        ignored_(ctx.metrics.GetCounter("samples_ignored",
                                        "Samples of sensors that are not a column of the join.",
                                        ctx.labels())),
        active_(ctx.metrics.GetGauge("active_vehicles",
                                     "Vehicles with a row in the last window of their partition.",
                                     ctx.labels())),
        tracked_(ctx.metrics.GetGauge("tracked_vehicles", "Vehicles the join holds state for.",
                                      ctx.labels())),
        corrected_(ctx.metrics.GetCounter(
            "rows_corrected",
            "Rows of recent windows emitted again with a late sample (correction_horizon_ms).",
            ctx.labels())) {
    for (size_t i = 0; i < sensors_->size(); ++i) index_[(*sensors_)[i]] = i;
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      Add(*b, out);
    } else if (const auto* s = std::get_if<StatusEvent>(in.get())) {
      Status(*s);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      for (auto& [_, p] : partitions_) {
        if (t->cut_off) time_.CutOff(p, t->now_ns);
        if (const auto horizon = time_.OnTick(p, *t)) CloseUpTo(p, *horizon, out);
      }
      tracked_.Set(static_cast<double>(tracked_count_));
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e, out);
      out.Emit(in);
    }
  }

 private:
  Partition& At(uint32_t id) {
    Partition& p = partitions_[id];
    p.id = id;
    return p;
  }

  VehicleState& Vehicle(Partition& p, const std::string& id) {
    auto [it, inserted] = p.vehicles.try_emplace(id);
    if (inserted) {
      it->second.sensors.resize(sensors_->size());
      ++tracked_count_;
    }
    return it->second;
  }

  void Add(const SampleBatch& b, Emitter& out) {
    auto idx = index_.find(b.sensor);
    if (idx == index_.end()) {
      ignored_.Inc(b.points.size());
      return;
    }
    Partition& part = At(b.partition);
    const bool restored = b.restored && !b.points.empty();
    if (!restored) {
      // Before the vehicle is looked up: the windows it closes may forget vehicles.
      if (const auto horizon = time_.Arrived(part, b.received_ns, b.stream_ns)) {
        CloseUpTo(part, *horizon, out);
      }
    }
    VehicleState& v = Vehicle(part, b.vehicle);
    SensorBuckets& s = v.sensors[idx->second];
    if (restored) v.exact_from_ns = std::max(v.exact_from_ns, b.points.front().ts_ns);
    for (const wire::Point& p : b.points) {
      time_.Saw(part, p.ts_ns, b.restored);
      const int64_t w = time_.WindowOf(p.ts_ns);
      const bool oldest = s.Add(w, p);
      if (w < *part.next && !b.restored) {
        late_.Inc();
        ScheduleCorrection(part, b.vehicle, w);
      } else if (oldest && w == *part.next && *part.next > part.first_window && !b.restored) {
        // Out of order: it may be the after-sample of the window emitted last.
        ScheduleCorrection(part, b.vehicle, w);
      }
      v.newest_ns = std::max(v.newest_ns, p.ts_ns);
      if (v.off_at_ns && p.ts_ns > *v.off_at_ns) {
        // A sample from shortly after the off time is the tail of the run that arrived late:
        // it moves the off time. A later one means it runs again.
        if (p.ts_ns - *v.off_at_ns <= max_gap_) {
          v.off_at_ns = p.ts_ns;
        } else {
          v.off_at_ns.reset();
        }
      }
    }
  }

  void Status(const StatusEvent& e) {
    VehicleState& v = Vehicle(At(e.partition), e.vehicle);
    if (e.on) {
      v.off_at_ns.reset();
    } else {
      // Off after its newest sample: the vehicle's own clock, not ours, decides which windows
      // it still has.
      v.off_at_ns = std::max(v.newest_ns, e.at_ns);
    }
  }

  /// With a correction horizon, the recent windows a late sample may bracket are emitted again
  /// for its vehicle at the next Tick (docs/semantics.md, *Late samples*).
  void ScheduleCorrection(Partition& p, const std::string& vehicle, int64_t w) const {
    if (horizon_ == 0) return;
    const int64_t oldest = std::max(p.first_window, *p.next - horizon_);
    for (int64_t t = std::max(w - every_, oldest); t < *p.next && t <= w + max_gap_; t += every_) {
      if (EventTime::Emits(p, t)) p.corrections[t].insert(vehicle);
    }
  }

  /// Hand-over (docs/scaling.md). An assigned partition starts afresh; its windows up to the
  /// previous owner's record are not emitted again, the later ones are emitted from the
  /// restored state and the stream as they close (at once those already closed). Without a
  /// record, every window the restored state computes exactly is emitted (again). A revoked
  /// partition first closes the windows its event time has closed (a worker stopping while it
  /// reads a backlog takes samples in after its last Tick: its state may run further ahead of
  /// its windows than the history a next owner restores), then records the last window emitted
  /// and is forgotten.
  void OnPartitionEvent(const PartitionEvent& e, Emitter& out) {
    Partition& p = At(e.partition);
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      if (const auto horizon = time_.OnRevoke(p)) CloseUpTo(p, *horizon, out);
      if (e.handover) e.handover->Emitted(node_, time_.LastEmitted(p));
    }
    tracked_count_ -= p.vehicles.size();
    tracked_.Set(static_cast<double>(tracked_count_));
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      partitions_.erase(e.partition);
      return;
    }
    p = Partition{};
    p.id = e.partition;
    if (e.emitted) p.done = EmittedBy(*e.emitted, node_);
  }

  /// Emits the pending corrections and every window of the partition up to `horizon`.
  void CloseUpTo(Partition& p, int64_t horizon, Emitter& out) {
    if (!p.corrections.empty()) EmitCorrections(p, out);
    if (horizon - *p.next > 2 * every_) SkipEmptyWindows(p);
    while (*p.next <= horizon) {
      Emit(p, *p.next, out);
      *p.next += every_;
    }
  }

  /// Jumps over windows before the oldest sample held (a gap in the data, a restored state).
  void SkipEmptyWindows(Partition& p) const {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const auto& [_, v] : p.vehicles) {
      for (const SensorBuckets& s : v.sensors) oldest = std::min(oldest, s.Oldest());
    }
    if (oldest != std::numeric_limits<int64_t>::max()) {
      p.next = std::max(*p.next, time_.WindowOf(oldest));
    }
  }

  void Emit(Partition& p, int64_t t, Emitter& out) {
    if (EventTime::Emits(p, t)) {
      active_.Set(static_cast<double>(EmitRows(
          p, t, out, p.vehicles.size(), [](const std::string&) { return true; }, true)));
    }
    windows_.Inc();
    Forget(p, t);
  }

  /// Emits window t's rows of the partition's vehicles that `take` accepts; returns how many.
  /// `expected_rows` sizes the batch up front; `closing`: the window closes now, emitted without
  /// rows too (WindowBatch::every_ns).
  template <typename Take>
  size_t EmitRows(Partition& p, int64_t t, Emitter& out, size_t expected_rows, const Take& take,
                  bool closing = false) {
    WindowBatch batch;
    batch.rows.reserve(expected_rows);
    batch.window_ns = t;
    batch.partition = p.id;
    batch.every_ns = every_;
    batch.sensors = sensors_;
    for (auto& [id, v] : p.vehicles) {
      if ((v.off_at_ns && t > *v.off_at_ns) || t < v.exact_from_ns || !take(id)) continue;
      WindowRow row;
      row.slots.reserve(v.sensors.size());
      bool active = false;
      for (const SensorBuckets& s : v.sensors) {
        row.slots.push_back(s.At(t, max_gap_));
        active = active || row.slots.back().before.has_value();
      }
      if (active) {
        row.vehicle = id;
        batch.rows.push_back(std::move(row));
      }
    }
    const size_t n = batch.rows.size();
    rows_.Inc(n);
    if (n > 0 || closing) out.Emit(MakeMessage(std::move(batch)));
    return n;
  }

  /// Drops what no later window (nor a correction) can use.
  void Forget(Partition& p, int64_t t) {
    const int64_t keep_from = t + every_ - horizon_;
    for (auto it = p.vehicles.begin(); it != p.vehicles.end();) {
      VehicleState& v = it->second;
      for (SensorBuckets& s : v.sensors) s.Prune(keep_from);
      const bool gone = v.newest_ns < keep_from - max_gap_ ||
                        (v.off_at_ns && v.newest_ns <= *v.off_at_ns && keep_from > *v.off_at_ns);
      if (gone) {
        it = p.vehicles.erase(it);
        --tracked_count_;
      } else {
        ++it;
      }
    }
  }

  void EmitCorrections(Partition& p, Emitter& out) {
    for (const auto& [t, ids] : p.corrections) {
      const auto& vehicles = ids;  // clang 14 cannot capture a structured binding
      corrected_.Inc(EmitRows(p, t, out, vehicles.size(),
                              [&](const std::string& id) { return vehicles.count(id) > 0; }));
    }
    p.corrections.clear();
  }

  const std::string node_;  // its hand-over record's name
  const int64_t every_;
  const int64_t max_gap_;
  const int64_t horizon_;  // correction_horizon_ms; 0: a late sample changes no emitted window
  const EventTime time_;
  const std::shared_ptr<const std::vector<std::string>> sensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<uint32_t, Partition> partitions_;  // nodes stay where they are
  size_t tracked_count_ = 0;
  Counter& windows_;
  Counter& rows_;
  Counter& late_;
  Counter& ignored_;
  Gauge& active_;
  Gauge& tracked_;
  Counter& corrected_;
};

const OptionsSpec<WindowJoinOptions>& Spec() {
  using O = WindowJoinOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Integer("every_ms",
              "Window period. Window times are the multiples of every_ms since the Unix epoch.",
              &O::every)
        .Default(int64_t{1000})
        .Min(100)
        .Max(3'600'000);
    c.Integer("allowed_lateness_ms",
              "How long after a window time T the join waits for samples before emitting T. "
              "A sample arriving later is counted as late and misses that window: an emitted "
              "window never changes.",
              &O::allowed_lateness)
        .Default(int64_t{500})
        .Min(0)
        .Max(600'000);
    c.Integer("max_gap_ms",
              "Samples farther than this from T are not used for T; a vehicle with no sample "
              "in [T - max_gap_ms, T] gets no row for T.",
              &O::max_gap)
        .Default(int64_t{2000})
        .Min(1)
        .Max(3'600'000);
    c.Integer("idle_ms",
              "Windows close on event time while samples flow (a backlog is windowed as it was "
              "live); after this long without any sample they close on the clock, unless a "
              "source holds input back (a backlog, a partition moving: docs/semantics.md). A "
              "backlog's gaps this long, on the time the stream stored its messages, close them "
              "the same way. After the stream could not be read (a NATS cluster electing its "
              "leader), this long again from when it could: vehicles send what they kept.",
              &O::idle)
        .Default(int64_t{2000})
        .Min(1)
        .Max(3'600'000);
    c.Integer("correction_horizon_ms",
              "0: a late sample never changes an emitted window (it serves later windows only). "
              "N > 0: the windows of the last N ms that a late sample belongs to are emitted "
              "again with it (the sink updates their rows), e.g. to take in what a broken "
              "connection's redelivery brings after the source's ack_wait_ms. Costs memory: "
              "the samples of that many windows are kept per vehicle and sensor.",
              &O::correction_horizon)
        .Default(int64_t{0})
        .Min(0)
        .Max(3'600'000);
    c.StringArray("sensors", "The sensors joined into each row, one slot each, in this order.",
                  &O::sensors)
        .MinItems(1)
        .UniqueItems()
        .DefaultJson(R"(["gps", "speed", "soc", "torque"])");
  });
}

/// Behind a partitioned source, a partition's new owner restores its windows from the keyed
/// state's history (docs/scaling.md): the history must reach back over the lateness.
std::vector<UpstreamProblem> CheckHistoryCoversLateness(const Config& self,
                                                        const std::string& self_id,
                                                        const std::vector<UpstreamNode>& upstream) {
  const bool partitioned = std::any_of(upstream.begin(), upstream.end(),
                                       [](const UpstreamNode& n) { return n.facts.partitioned; });
  std::vector<UpstreamProblem> problems;
  if (!partitioned) return problems;
  const int64_t lateness = Spec().Parse(self).allowed_lateness.count();
  for (const UpstreamNode& n : upstream) {
    const std::optional<int64_t> history = n.facts.state_history_ms;
    if (!history || *history >= lateness) continue;
    problems.push_back(
        {n.id, "/history_ms",
         "history_ms (" + std::to_string(*history) + ") is shorter than allowed_lateness_ms (" +
             std::to_string(lateness) + ") of window_join '" + self_id +
             "': behind a partitioned source, a partition's next owner computes the windows "
             "not yet emitted from this history (docs/scaling.md); set history_ms to at least " +
             std::to_string(lateness)});
  }
  return problems;
}

}  // namespace

void RegisterWindowJoin(Registry& registry) {
  OperatorInfo info = TypedOperator<WindowJoin>(
      "window_join",
      "Every every_ms, after allowed_lateness_ms, emits one row per active vehicle with the "
      "samples bracketing the window time for each sensor.",
      PortKind::kSamples, PortKind::kRows, Spec());
  info.check_upstream = CheckHistoryCoversLateness;
  info.facts = [](const Config& config) {
    NodeFacts f;
    f.rows = NodeFacts::Rows::kSlots;
    f.sensors = Spec().Parse(config).sensors;
    return f;
  };
  registry.Add(std::move(info));
}

}  // namespace fleetflow
