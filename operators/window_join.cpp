#include "window_join.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "event_time.hpp"
#include "options.hpp"
#include "vehicle_table.hpp"

namespace fleetflow {

namespace {

/// A duration as the int64 ns the join computes in.
constexpr int64_t Ns(std::chrono::nanoseconds d) { return d.count(); }

/// A sample as an interval holds it: wire::Point's fields without its padding, 40 bytes instead
/// of 48 (a vehicle holds 24 of them in a steady stream of 4 sensors).
struct Held {
  int64_t ts_ns = 0;
  double value = 0.0;
  double lat = 0.0;
  double lon = 0.0;
  uint32_t seq = 0;
  bool has_position = false;

  Held() = default;
  Held(const wire::Point& p)  // NOLINT(google-explicit-constructor): a sample, held
      : ts_ns(p.ts_ns),
        value(p.value),
        lat(p.lat),
        lon(p.lon),
        seq(p.seq),
        has_position(p.has_position) {}
  wire::Point Point() const { return wire::Point{ts_ns, seq, value, lat, lon, has_position}; }
};
static_assert(sizeof(Held) == 40);

/// One interval (T - every, T] of one sensor (keyed by T): its oldest and newest sample.
struct Bucket {
  int64_t key;
  Held oldest;
  Held newest;
};

/// The key of a place holding no interval: greater than any window time, so the binary searches
/// over a sensor's places see the unused ones as the end.
constexpr int64_t kNoInterval = std::numeric_limits<int64_t>::max();
/// Places per sensor of a new vehicle: a steady stream keeps 2-3 intervals per sensor.
constexpr size_t kInitialPlaces = 3;

constexpr size_t kCacheLine = 64;
/// How many vehicles ahead of the one being emitted have their intervals prefetched.
constexpr size_t kReadAhead = 2;

bool KeyLess(const Bucket& b, int64_t key) { return b.key < key; }
bool LessKey(int64_t key, const Bucket& b) { return key < b.key; }

/// One vehicle: its id, and its samples reduced to what any open window can still use. The
/// intervals of all its sensors live in one block it owns: sensor s has the places
/// [s * places, (s + 1) * places), its intervals sorted by key, then the unused places (key
/// kNoInterval). Emitting a window reads one block per vehicle, and a steady stream allocates
/// nothing; a sensor that needs more places (samples ahead of the windows,
/// correction_horizon_ms) widens its own vehicle's block only.
struct VehicleState {
  VehicleState(std::string vehicle, size_t sensors)
      : id(std::move(vehicle)), buckets(sensors * kInitialPlaces, Bucket{kNoInterval, {}, {}}) {}

  std::string id;
  std::vector<Bucket> buckets;
  size_t places = kInitialPlaces;
  int64_t newest_ns = std::numeric_limits<int64_t>::min();
  // Windows before it would miss samples: restored state is the newest part of each key's
  // samples, so a window is computed exactly once every sensor's restored samples reach it.
  int64_t exact_from_ns = std::numeric_limits<int64_t>::min();
  std::optional<int64_t> off_at_ns;  // said off; no rows for windows after this

  size_t Sensors() const { return buckets.size() / places; }
  std::span<Bucket> Sensor(size_t s) { return {buckets.data() + s * places, places}; }
  std::span<const Bucket> Sensor(size_t s) const { return {buckets.data() + s * places, places}; }

  /// Returns true when `p` is now the oldest sample of its interval.
  bool Add(size_t sensor, int64_t key, const wire::Point& p) {
    const std::span<Bucket> b = Sensor(sensor);
    const auto it = std::lower_bound(b.begin(), b.end(), key, KeyLess);
    if (it != b.end() && it->key == key) {
      if (p.ts_ns >= it->newest.ts_ns) it->newest = p;
      if (p.ts_ns >= it->oldest.ts_ns) return false;
      it->oldest = p;
      return true;
    }
    if (b.back().key != kNoInterval) {
      Widen();
      return Add(sensor, key, p);
    }
    std::move_backward(it, b.end() - 1, b.end());
    *it = Bucket{key, p, p};
    return true;
  }

  Slot At(size_t sensor, int64_t t, int64_t max_gap) const {
    const std::span<const Bucket> b = Sensor(sensor);
    Slot slot;
    // The first interval ending after t holds the oldest sample > t.
    const auto after = std::upper_bound(b.begin(), b.end(), t, LessKey);
    if (after != b.end() && after->key != kNoInterval && after->oldest.ts_ns - t <= max_gap) {
      slot.after = after->oldest.Point();
    }
    if (after != b.begin()) {
      const Held& p = std::prev(after)->newest;  // newest sample <= t
      if (t - p.ts_ns <= max_gap) slot.before = p.Point();
    }
    return slot;
  }

  /// Forgets intervals no window from `next` on can use: of each sensor, all before its newest
  /// interval <= next.
  void Prune(int64_t next) {
    for (size_t s = 0; s < Sensors(); ++s) {
      const std::span<Bucket> b = Sensor(s);
      const auto keep = std::upper_bound(b.begin(), b.end(), next, LessKey);
      if (keep == b.begin() || keep == std::next(b.begin())) continue;
      const auto end = std::move(std::prev(keep), b.end(), b.begin());
      std::fill(end, b.end(), Bucket{kNoInterval, {}, {}});
    }
  }

  /// Asks the CPU to bring its intervals into the cache.
  void Prefetch() const {
    const auto* bytes = reinterpret_cast<const char*>(buckets.data());
    for (size_t at = 0; at < buckets.size() * sizeof(Bucket); at += kCacheLine) {
      __builtin_prefetch(bytes + at);
    }
  }

  /// The time of its oldest sample held; the maximum when it holds none.
  int64_t Oldest() const {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (size_t s = 0; s < Sensors(); ++s) {
      const Bucket& first = Sensor(s).front();
      if (first.key != kNoInterval) oldest = std::min(oldest, first.oldest.ts_ns);
    }
    return oldest;
  }

 private:
  /// Doubles every sensor's places.
  void Widen() {
    std::vector<Bucket> wider(buckets.size() * 2, Bucket{kNoInterval, {}, {}});
    for (size_t s = 0; s < Sensors(); ++s) {
      std::copy(Sensor(s).begin(), Sensor(s).end(), wider.begin() + s * places * 2);
    }
    buckets = std::move(wider);
    places *= 2;
  }
};

/// One partition's windowing: its vehicles, and its own event-time progress (event_time.hpp).
/// An unpartitioned source is partition 0.
struct Partition : WindowProgress {
  uint32_t id = 0;
  VehicleTable<VehicleState> vehicles;
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
        lateness_(Ns(options.allowed_lateness)),
        max_gap_(Ns(options.max_gap)),
        horizon_(Ns(options.correction_horizon)),
        clock_(ctx.clock),
        time_(every_, lateness_, Ns(options.idle), ctx.clock),
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

  void Prefetch(const Message& soon) override {
    if (const auto* b = std::get_if<SampleBatch>(soon.get())) {
      if (const auto p = partitions_.find(b->partition); p != partitions_.end()) {
        p->second.vehicles.Prefetch(b->vehicle);
      }
    }
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      Add(*b, out);
    } else if (const auto* s = std::get_if<StatusEvent>(in.get())) {
      Status(*s);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      last_tick_ = *t;
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
    auto [v, inserted] = p.vehicles.Get(id, sensors_->size());
    if (inserted) ++tracked_count_;
    return v;
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
        CloseUpTo(part, *horizon, out, b.received_ns);
      }
    }
    VehicleState& v = Vehicle(part, b.vehicle);
    const size_t sensor = idx->second;
    if (restored) v.exact_from_ns = std::max(v.exact_from_ns, b.points.front().ts_ns);
    const int64_t kept_at = b.restored ? 0 : time_.KeptAt(b);
    for (const wire::Point& p : b.points) {
      time_.Saw(part, p.ts_ns, b.restored, kept_at);
      const int64_t w = time_.WindowOf(p.ts_ns);
      const bool oldest = v.Add(sensor, w, p);
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
    // `v` may be forgotten from here. Progress passed a window: it closes now, not at the next
    // Tick (once a Tick said how long the sources gather their input).
    if (restored || !last_tick_) return;
    const auto horizon = time_.OnInput(part, b, kept_at, *last_tick_);
    if (horizon && *horizon >= *part.next) CloseUpTo(part, *horizon, out, b.received_ns);
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
  /// for its vehicle with the next window that closes or at the next Tick (docs/semantics.md,
  /// *Late samples*).
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

  /// Emits the pending corrections and every window of the partition up to `horizon`: on the
  /// input the source received at `input_ns`, or (0) on the clock.
  void CloseUpTo(Partition& p, int64_t horizon, Emitter& out, int64_t input_ns = 0) {
    if (!p.corrections.empty()) EmitCorrections(p, out);
    if (horizon - *p.next > 2 * every_) SkipEmptyWindows(p);
    while (*p.next <= horizon) {
      Emit(p, *p.next, out, input_ns);
      *p.next += every_;
    }
  }

  /// Jumps over windows before the oldest sample held (a gap in the data, a restored state).
  void SkipEmptyWindows(Partition& p) const {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const VehicleState& v : p.vehicles) oldest = std::min(oldest, v.Oldest());
    if (oldest != std::numeric_limits<int64_t>::max()) {
      p.next = std::max(*p.next, time_.WindowOf(oldest));
    }
  }

  /// Emits window t (unless the previous owner did) and forgets, in the same pass over the
  /// vehicles, what no later window (nor a correction) can use.
  void Emit(Partition& p, int64_t t, Emitter& out, int64_t input_ns) {
    const int64_t closed_ns = clock_.NowNs();
    const bool emits = EventTime::Emits(p, t);
    WindowBatch batch = NewBatch(p, t, emits ? p.vehicles.size() : 0);
    const int64_t keep_from = t + every_ - horizon_;
    for (size_t i = 0; i < p.vehicles.size();) {
      VehicleState& v = p.vehicles[i];
      // Each vehicle's block is an allocation of its own: reading a later one's while this row
      // is built hides the memory latency (12 % less CPU per window at 100 000 vehicles).
      if (i + kReadAhead < p.vehicles.size()) p.vehicles[i + kReadAhead].Prefetch();
      if (emits) AddRow(v, t, batch);
      const bool gone = v.newest_ns < keep_from - max_gap_ ||
                        (v.off_at_ns && v.newest_ns <= *v.off_at_ns && keep_from > *v.off_at_ns);
      if (gone) {
        p.vehicles.Remove(i);  // the last vehicle takes its place, and is visited next
        --tracked_count_;
      } else {
        v.Prune(keep_from);
        ++i;
      }
    }
    if (emits) {
      // Emitted without rows too (WindowBatch::every_ns).
      const size_t n = batch.rows.size();
      rows_.Inc(n);
      active_.Set(static_cast<double>(n));
      batch.timing = {.due_ns = t + lateness_,
                      .input_ns = input_ns,
                      .closed_ns = closed_ns,
                      .emitted_ns = clock_.NowNs(),
                      .live = closed_ns - (t + lateness_) < every_};
      out.Emit(MakeMessage(std::move(batch)));
    }
    windows_.Inc();
  }

  /// A batch for window t of the partition, room for `expected_rows`.
  WindowBatch NewBatch(const Partition& p, int64_t t, size_t expected_rows) const {
    WindowBatch batch;
    batch.rows.reserve(expected_rows);
    batch.slots.reserve(expected_rows * sensors_->size());
    batch.window_ns = t;
    batch.partition = p.id;
    batch.every_ns = every_;
    batch.sensors = sensors_;
    return batch;
  }

  /// Appends the vehicle's row for window t to the batch, when it has one.
  void AddRow(const VehicleState& v, int64_t t, WindowBatch& batch) const {
    if ((v.off_at_ns && t > *v.off_at_ns) || t < v.exact_from_ns) return;
    // Each slot written once, in place: zeroing them first would be a second pass over the block.
    const size_t first = batch.slots.size();
    bool active = false;
    for (size_t s = 0; s < sensors_->size(); ++s) {
      active = batch.slots.emplace_back(v.At(s, t, max_gap_)).before.has_value() || active;
    }
    if (active) {
      batch.rows.push_back(WindowRow{v.id, first});
    } else {
      batch.slots.resize(first);
    }
  }

  /// A correction is never emitted without rows.
  void EmitCorrections(Partition& p, Emitter& out) {
    for (const auto& [t, ids] : p.corrections) {
      WindowBatch batch = NewBatch(p, t, ids.size());
      for (const std::string& id : ids) {
        if (VehicleState* v = p.vehicles.Find(id)) AddRow(*v, t, batch);
      }
      const size_t n = batch.rows.size();
      rows_.Inc(n);
      corrected_.Inc(n);
      if (n > 0) out.Emit(MakeMessage(std::move(batch)));
    }
    p.corrections.clear();
  }

  const std::string node_;  // its hand-over record's name
  const int64_t every_;
  const int64_t lateness_;
  const int64_t max_gap_;
  const int64_t horizon_;  // correction_horizon_ms; 0: a late sample changes no emitted window
  const Clock& clock_;
  const EventTime time_;
  std::optional<Tick> last_tick_;  // windows close on input only once a Tick came (OnInput)
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
