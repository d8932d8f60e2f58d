#include "window_aggregate.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numbers>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "aggregate_state.hpp"
#include "event_time.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "state/jetstream_kv_snapshots.hpp"
#include "state_store.hpp"
#include "vehicle_table.hpp"

namespace fleetflow {

double DistanceMetres(double lat1, double lon1, double lat2, double lon2) {
  constexpr double kEarthRadius = 6'371'008.8;  // mean radius (IUGG), metres
  constexpr double kRad = std::numbers::pi / 180.0;
  const double dlat = (lat2 - lat1) * kRad;
  const double dlon = (lon2 - lon1) * kRad;
  const double a =
      std::sin(dlat / 2) * std::sin(dlat / 2) +
      std::cos(lat1 * kRad) * std::cos(lat2 * kRad) * std::sin(dlon / 2) * std::sin(dlon / 2);
  return 2 * kEarthRadius * std::asin(std::min(1.0, std::sqrt(a)));
}

namespace {

constexpr int64_t Ns(std::chrono::nanoseconds d) { return d.count(); }

double Hop(const wire::Point& a, const wire::Point& b) {
  return a.has_position && b.has_position ? DistanceMetres(a.lat, a.lon, b.lat, b.lon) : 0.0;
}

/// Samples of one sensor in one window, reduced to their statistics. The samples themselves are
/// not kept: runs of consecutive ones (each sequence number one more than the one before, later
/// in time) are, as their first and last sample and the distance along them. A sample inside a
/// run is one already counted; runs that meet merge, so an in-order stream is one run and one
/// that arrived out of order or with gaps a few.
class Accumulator {
 public:
  /// False when `p` was counted before (the same sample delivered again).
  bool Add(const wire::Point& p) {
    auto next = std::upper_bound(runs_.begin(), runs_.end(), p.ts_ns,
                                 [](int64_t ts, const Run& r) { return ts < r.first.ts_ns; });
    if (next != runs_.begin()) {
      Run& prev = *std::prev(next);
      if (p.ts_ns <= prev.last.ts_ns && p.seq >= prev.first.seq && p.seq <= prev.last.seq) {
        return false;
      }
      if (p.ts_ns > prev.last.ts_ns && p.seq == prev.last.seq + 1) {
        prev.distance_m += Hop(prev.last, p);
        prev.last = p;
        if (next != runs_.end() && next->first.seq == p.seq + 1) {  // the gap is filled
          prev.distance_m += Hop(p, next->first) + next->distance_m;
          prev.last = next->last;
          runs_.erase(next);
        }
        Count(p);
        return true;
      }
    }
    if (next != runs_.end() && next->first.seq == p.seq + 1 && p.ts_ns < next->first.ts_ns) {
      next->distance_m += Hop(p, next->first);
      next->first = p;
    } else {
      runs_.insert(next, Run{p, p, 0.0});
    }
    Count(p);
    return true;
  }

  /// The statistics; `before`: the sensor's newest sample before the window, if any, whose hop
  /// to the window's first sample counts in the window's distance.
  SensorStats Stats(const std::optional<wire::Point>& before) const {
    SensorStats s = stats_;
    s.first = runs_.front().first;
    s.last = runs_.front().last;
    s.distance_m = before ? Hop(*before, s.first) : 0.0;
    for (size_t i = 0; i < runs_.size(); ++i) {
      s.distance_m += runs_[i].distance_m;
      if (i > 0) s.distance_m += Hop(runs_[i - 1].last, runs_[i].first);
      if (runs_[i].last.ts_ns > s.last.ts_ns) s.last = runs_[i].last;
    }
    return s;
  }

  const wire::Point& Oldest() const { return runs_.front().first; }

  wire::Point Newest() const {
    wire::Point newest = runs_.front().last;
    for (const Run& r : runs_) {
      if (r.last.ts_ns > newest.ts_ns) newest = r.last;
    }
    return newest;
  }

  /// What it counted so far, as window `end_ns` of a snapshot.
  aggregate::Window Saved(int64_t end_ns) const {
    const SensorStats& s = stats_;
    return {end_ns,    s.count,   s.min,     s.max,     s.sum, s.positions,
            s.min_lat, s.max_lat, s.min_lon, s.max_lon, runs_};
  }

  /// The window of a snapshot; empty when it is not one Saved made (no run, runs out of order).
  static std::optional<Accumulator> Restored(const aggregate::Window& w) {
    const auto by_time = [](const Run& a, const Run& b) { return a.first.ts_ns < b.first.ts_ns; };
    if (w.runs.empty() || w.count == 0 || !std::is_sorted(w.runs.begin(), w.runs.end(), by_time)) {
      return std::nullopt;
    }
    Accumulator a;
    SensorStats& s = a.stats_;
    s.count = w.count;
    s.min = w.min;
    s.max = w.max;
    s.sum = w.sum;
    s.positions = w.positions;
    s.min_lat = w.min_lat;
    s.max_lat = w.max_lat;
    s.min_lon = w.min_lon;
    s.max_lon = w.max_lon;
    a.runs_ = w.runs;
    return a;
  }

 private:
  using Run = aggregate::Run;  // distance_m: along the run's samples

  void Count(const wire::Point& p) {
    SensorStats& s = stats_;
    if (s.count == 0 || p.value < s.min) s.min = p.value;
    if (s.count == 0 || p.value > s.max) s.max = p.value;
    s.sum += p.value;
    ++s.count;
    if (!p.has_position) return;
    if (s.positions == 0 || p.lat < s.min_lat) s.min_lat = p.lat;
    if (s.positions == 0 || p.lat > s.max_lat) s.max_lat = p.lat;
    if (s.positions == 0 || p.lon < s.min_lon) s.min_lon = p.lon;
    if (s.positions == 0 || p.lon > s.max_lon) s.max_lon = p.lon;
    ++s.positions;
  }

  SensorStats stats_;
  std::vector<Run> runs_;  // by the time of their first sample
};

/// A sensor's open windows by their end, oldest first. A few at a time (the allowed lateness over
/// every_ms, most often one): searched from the newest, where samples go.
class OpenWindows {
 public:
  using Entry = std::pair<int64_t, Accumulator>;

  bool empty() const { return windows_.empty(); }
  int64_t OldestEnd() const { return windows_.front().first; }
  auto begin() const { return windows_.begin(); }
  auto end() const { return windows_.end(); }

  /// Window `end`'s, created empty when it is not open yet.
  Accumulator& At(int64_t end) {
    auto it = windows_.end();
    while (it != windows_.begin() && std::prev(it)->first > end) --it;
    if (it != windows_.begin() && std::prev(it)->first == end) return std::prev(it)->second;
    return windows_.emplace(it, end, Accumulator{})->second;
  }

  /// Removes window `end` and returns what it held, if it was open.
  std::optional<Accumulator> Take(int64_t end) {
    auto it = std::find_if(windows_.begin(), windows_.end(),
                           [end](const Entry& e) { return e.first == end; });
    if (it == windows_.end()) return std::nullopt;
    std::optional<Accumulator> taken = std::move(it->second);
    windows_.erase(it);
    return taken;
  }

 private:
  std::vector<Entry> windows_;
};

struct SensorState {
  OpenWindows windows;
  std::optional<wire::Point> last_emitted;  // the newest sample of the last window emitted
};

struct VehicleState {
  VehicleState(std::string vehicle, size_t sensors) : id(std::move(vehicle)), sensors(sensors) {}
  std::string id;
  std::vector<SensorState> sensors;
};

struct Partition : WindowProgress {
  VehicleTable<VehicleState> vehicles;
  // Assigned by a partitioned source (which partition, when): its batches say which, and it
  // reports every window it closes (StatsBatch::partition).
  std::optional<uint32_t> id;
  int64_t assigned_ns = 0;
  // Snapshots (a store, and the partition assigned by a partitioned source):
  bool snapshots = false;
  std::optional<uint64_t> checkpoint;  // of the snapshot restored: messages up to it are in it
  uint64_t taken = 0;                  // the highest stream sequence taken in
  bool changed = false;                // since the last snapshot
  bool save_due = false;               // its snapshot waits for the rows in flight
  // Windows emitted whose rows are not stored yet (InFlight: their tokens count it down).
  std::shared_ptr<std::atomic<int64_t>> in_flight = std::make_shared<std::atomic<int64_t>>(0);
};

/// The token of one window's rows in flight: counts the partition's windows in flight down when
/// the last node that stores them lets go.
struct WindowInFlight {
  explicit WindowInFlight(std::shared_ptr<std::atomic<int64_t>> n) : count(std::move(n)) {
    count->fetch_add(1);
  }
  ~WindowInFlight() { count->fetch_sub(1); }
  WindowInFlight(const WindowInFlight&) = delete;
  WindowInFlight& operator=(const WindowInFlight&) = delete;
  std::shared_ptr<std::atomic<int64_t>> count;
};

/// The values a partition's snapshot is spread over (`r<k>`, k = RecordOfVehicle), so that a
/// value stays well under the KV max payload; and the value of its progress.
constexpr size_t kSnapshotRecords = 16;
constexpr char kProgressKey[] = "progress";

/// The options of window_aggregate (see Spec()).
struct WindowAggregateOptions {
  enum class Backend { kMemory, kJetStreamKv };
  Backend backend = Backend::kMemory;
  std::string bucket;
  KvBucketSettings bucket_settings;
  int64_t flush_ms = 0;
  NatsClientOptions nats;
  std::chrono::milliseconds every{0};
  std::chrono::milliseconds allowed_lateness{0};
  std::chrono::milliseconds idle{0};
  std::chrono::milliseconds max_gap{0};
  std::vector<std::string> sensors;
};

class WindowAggregate final : public Operator {
 public:
  /// `memory_snapshots`: the store of the memory backend (none: nothing is kept).
  WindowAggregate(const OperatorContext& ctx, const WindowAggregateOptions& options,
                  std::shared_ptr<SnapshotStore> memory_snapshots = nullptr)
      : node_(ctx.node_id),
        clock_(ctx.clock),
        flush_ns_(options.flush_ms * 1'000'000),
        every_(Ns(options.every)),
        lateness_(Ns(options.allowed_lateness)),
        max_gap_(Ns(options.max_gap)),
        time_(every_, lateness_, Ns(options.idle), ctx.clock),
        sensors_(std::make_shared<const std::vector<std::string>>(options.sensors)),
        windows_(
            ctx.metrics.GetCounter("windows_emitted", "Windows closed and emitted.", ctx.labels())),
        rows_(ctx.metrics.GetCounter("rows_emitted",
                                     "Rows emitted (one per vehicle with a sample in the window).",
                                     ctx.labels())),
        aggregated_(ctx.metrics.GetCounter("samples_aggregated", "Samples counted into a window.",
                                           ctx.labels())),
        late_(ctx.metrics.GetCounter(
            "late_samples", "Samples that arrived after their window had closed (in no window).",
            ctx.labels())),
        duplicates_(ctx.metrics.GetCounter(
            "samples_duplicate",
            "Samples counted before (the same time and sequence number delivered again).",
            ctx.labels())),
        ignored_(ctx.metrics.GetCounter(
            "samples_ignored", "Samples of sensors that are not aggregated.", ctx.labels())),
        tracked_(ctx.metrics.GetGauge(
            "tracked_vehicles", "Vehicles with an open window or a recent one.", ctx.labels())),
        in_snapshot_(ctx.metrics.GetCounter(
            "samples_in_snapshot",
            "Samples of messages up to the checkpoint of the snapshot a partition was restored "
            "from: counted there already, skipped.",
            ctx.labels())),
        corrupt_(ctx.metrics.GetCounter(
            "snapshot_values_corrupt",
            "Snapshot values that could not be read on taking a partition over: skipped (their "
            "vehicles' open windows start afresh).",
            ctx.labels())),
        waiting_(ctx.metrics.GetGauge(
            "snapshots_waiting",
            "Partitions whose snapshot is due but waits for the rows of windows they emitted to "
            "be stored (a sink retrying PostgreSQL).",
            ctx.labels())) {
    for (size_t i = 0; i < sensors_->size(); ++i) index_[(*sensors_)[i]] = i;
    snapshots_ = options.backend == WindowAggregateOptions::Backend::kJetStreamKv
                     ? OpenKvSnapshots(ctx, options.nats, options.bucket, options.bucket_settings)
                     : std::move(memory_snapshots);
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
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      last_tick_ = *t;
      for (auto& [_, p] : partitions_) {
        if (t->cut_off) time_.CutOff(p, t->now_ns);
        if (p.id) time_.StartIdle(p, *t, p.assigned_ns);
        if (const auto horizon = time_.OnTick(p, *t)) CloseUpTo(p, *horizon, out);
      }
      tracked_.Set(static_cast<double>(tracked_count_));
      if (snapshots_) SaveDue(*t);
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e, out);
      out.Emit(in);
    }
  }

  bool Ready() const override { return !snapshots_ || snapshots_->Ready(); }

 private:
  /// The end of the window holding ts: windows are [end - every, end).
  int64_t EndOf(int64_t ts) const { return time_.WindowOf(ts + 1); }

  void Add(const SampleBatch& b, Emitter& out) {
    // Restored state is history the previous owner's windows already counted.
    if (b.restored) return;
    Partition& part = partitions_[b.partition];
    if (b.sequence != 0 && part.checkpoint && b.sequence <= *part.checkpoint) {
      in_snapshot_.Inc(b.points.size());  // re-read from the stream, counted in the snapshot
      return;
    }
    part.taken = std::max(part.taken, b.sequence);
    part.changed = true;
    const auto idx = index_.find(b.sensor);
    if (idx == index_.end()) {
      ignored_.Inc(b.points.size());
      return;
    }
    if (const auto horizon = time_.Arrived(part, b.received_ns, b.stream_ns)) {
      CloseUpTo(part, *horizon, out, b.received_ns);
    }
    SensorState* sensor = nullptr;
    Accumulator* window = nullptr;  // of window_end: a batch's samples are mostly in one window
    int64_t window_end = 0;
    // Counted once per batch: an atomic increment per sample waits for the stores before it.
    uint64_t late = 0;
    uint64_t aggregated = 0;
    const int64_t kept_at = time_.KeptAt(b);
    for (const wire::Point& p : b.points) {
      time_.Saw(part, p.ts_ns, false, kept_at);
      const int64_t end = EndOf(p.ts_ns);
      if (end < *part.next) {
        ++late;
        continue;
      }
      if (sensor == nullptr) sensor = &Vehicle(part, b.vehicle).sensors[idx->second];
      if (window == nullptr || end != window_end) {
        window = &sensor->windows.At(end);
        window_end = end;
      }
      if (window->Add(p)) ++aggregated;
    }
    if (late > 0) late_.Inc(late);
    if (aggregated > 0) aggregated_.Inc(aggregated);
    if (const uint64_t duplicates = b.points.size() - late - aggregated; duplicates > 0) {
      duplicates_.Inc(duplicates);
    }
    // Progress passed a window: it closes now, not at the next Tick (once a Tick said how long
    // the sources gather their input).
    if (!last_tick_) return;
    const auto horizon = time_.OnInput(part, b, kept_at, *last_tick_);
    if (horizon && *horizon >= *part.next) CloseUpTo(part, *horizon, out, b.received_ns);
  }

  VehicleState& Vehicle(Partition& p, const std::string& id) {
    auto [v, inserted] = p.vehicles.Get(id, sensors_->size());
    if (inserted) ++tracked_count_;
    return v;
  }

  /// Emits every window of the partition whose end is at most `horizon`: on the input the source
  /// received at `input_ns`, or (0) on the clock.
  void CloseUpTo(Partition& p, int64_t horizon, Emitter& out, int64_t input_ns = 0) {
    if (horizon - *p.next > 2 * every_) SkipEmptyWindows(p);
    while (*p.next <= horizon) {
      Emit(p, *p.next, out, input_ns);
      *p.next += every_;
      p.changed = true;
    }
  }

  /// Jumps over windows before the oldest one open.
  void SkipEmptyWindows(Partition& p) const {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const VehicleState& v : p.vehicles) {
      for (const SensorState& s : v.sensors) {
        if (!s.windows.empty()) oldest = std::min(oldest, s.windows.OldestEnd());
      }
    }
    if (oldest != std::numeric_limits<int64_t>::max()) p.next = std::max(*p.next, oldest);
  }

  void Emit(Partition& p, int64_t end, Emitter& out, int64_t input_ns) {
    const int64_t closed_ns = clock_.NowNs();
    StatsBatch batch;
    batch.start_ns = end - every_;
    batch.length_ns = every_;
    batch.sensors = sensors_;
    batch.partition = p.id;
    const bool emits = EventTime::Emits(p, end);
    for (size_t i = 0; i < p.vehicles.size();) {
      VehicleState& v = p.vehicles[i];
      StatsRow row;
      bool any = false;
      bool open = false;
      for (SensorState& s : v.sensors) {
        SensorStats stats;
        if (const std::optional<Accumulator> w = s.windows.Take(end)) {
          std::optional<wire::Point> before;
          if (s.last_emitted && w->Oldest().ts_ns - s.last_emitted->ts_ns <= max_gap_) {
            before = s.last_emitted;
          }
          stats = w->Stats(before);
          s.last_emitted = w->Newest();
          any = true;
        }
        row.sensors.push_back(stats);
        // Samples to come are at or after `end` (earlier ones are late).
        open = open || !s.windows.empty() ||
               (s.last_emitted && s.last_emitted->ts_ns >= end - max_gap_);
      }
      if (any && emits) {
        row.vehicle = v.id;
        batch.rows.push_back(std::move(row));
      }
      if (open) {
        ++i;
      } else {
        p.vehicles.Remove(i);  // the last one moves into place i: it is looked at next
        --tracked_count_;
      }
    }
    windows_.Inc();
    // A partition's window without a row is reported too (its progress), unless the previous
    // owner closed it.
    if (!batch.rows.empty() || (p.id && emits)) {
      rows_.Inc(batch.rows.size());
      batch.timing = {.due_ns = end + lateness_,
                      .input_ns = input_ns,
                      .closed_ns = closed_ns,
                      .emitted_ns = clock_.NowNs(),
                      .live = closed_ns - (end + lateness_) < every_};
      if (p.snapshots) batch.in_flight = std::make_shared<const WindowInFlight>(p.in_flight);
      out.Emit(MakeMessage(std::move(batch)));
    }
  }

  /// A partition revoked first closes the windows its event time has closed, records the last
  /// one emitted and is forgotten; an assigned one starts afresh after the previous owner's last
  /// window (its hand-over record), as window_join's do.
  /// With a snapshot store, a revoked partition stores its final snapshot (what its windows
  /// still hold once those its event time closed were emitted) before the event goes on, and an
  /// assigned one restores its snapshot: progress, open windows and the samples the distance hops
  /// from, and the checkpoint up to which the messages are in it.
  void OnPartitionEvent(const PartitionEvent& e, Emitter& out) {
    Partition& p = partitions_[e.partition];
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      if (const auto horizon = time_.OnRevoke(p)) CloseUpTo(p, *horizon, out);
      if (e.handover) e.handover->Emitted(node_, time_.LastEmitted(p));
      if (p.snapshots) {
        Save(e.partition, p);
        if (!snapshots_->Sync()) {
          spdlog::warn(
              "window_aggregate '{}': the final snapshot of partition {} was not stored; "
              "its next owner restores the one before",
              node_, e.partition);
        }
        snapshots_->Forget(e.partition);
      }
    }
    tracked_count_ -= p.vehicles.size();
    tracked_.Set(static_cast<double>(tracked_count_));
    if (e.kind == PartitionEvent::Kind::kRevoked) {
      partitions_.erase(e.partition);
      return;
    }
    p = Partition{};
    p.id = e.partition;
    p.assigned_ns = clock_.NowNs();
    if (e.emitted) p.done = EmittedBy(*e.emitted, node_);
    if (snapshots_) Restore(e.partition, p);
    tracked_.Set(static_cast<double>(tracked_count_));
  }

  /// Every flush_ms, the partitions changed since their last snapshot store one, each once the
  /// rows of every window it emitted are stored (its windows in flight: a snapshot says they are
  /// done, and a worker killed after it must not leave them unwritten); a drain stores every one
  /// and waits for them.
  void SaveDue(const Tick& t) {
    if (t.drain || t.now_ns >= next_save_ns_) {
      next_save_ns_ = t.now_ns + flush_ns_;
      for (auto& [_, p] : partitions_) p.save_due = p.save_due || (p.snapshots && p.changed);
    }
    int64_t waiting = 0;
    for (auto& [id, p] : partitions_) {
      if (!p.save_due) continue;
      if (t.drain || p.in_flight->load() == 0) {
        Save(id, p);
      } else {
        ++waiting;
      }
    }
    waiting_.Set(static_cast<double>(waiting));
    if (t.drain && !snapshots_->Sync()) {
      spdlog::warn("window_aggregate '{}': snapshots not stored at the drain", node_);
    }
  }

  void Save(uint32_t id, Partition& p) {
    std::map<std::string, std::string> values;
    aggregate::State progress;
    progress.progress = aggregate::Progress{p.next, p.first_window, p.newest_event_ns, p.stream_ns};
    values[kProgressKey] = aggregate::Encode(progress);
    std::array<aggregate::State, kSnapshotRecords> records;
    for (const VehicleState& state : p.vehicles) {
      const std::string& vehicle = state.id;
      aggregate::Vehicle saved{vehicle, {}};
      for (size_t i = 0; i < state.sensors.size(); ++i) {
        const SensorState& s = state.sensors[i];
        if (s.windows.empty() && !s.last_emitted) continue;
        aggregate::Sensor& sensor = saved.sensors.emplace_back();
        sensor.name = (*sensors_)[i];
        sensor.last_emitted = s.last_emitted;
        for (const auto& [end, w] : s.windows) sensor.windows.push_back(w.Saved(end));
      }
      if (!saved.sensors.empty()) {
        records[RecordOfVehicle(vehicle, kSnapshotRecords)].vehicles.push_back(std::move(saved));
      }
    }
    for (size_t k = 0; k < records.size(); ++k) {
      if (!records[k].vehicles.empty()) {
        values["r" + std::to_string(k)] = aggregate::Encode(records[k]);
      }
    }
    snapshots_->Save(id, std::move(values), p.taken);
    p.changed = false;
    p.save_due = false;
  }

  void Restore(uint32_t id, Partition& p) {
    p.snapshots = true;
    SnapshotStore::Snapshot snapshot = snapshots_->Restore(id);
    std::vector<aggregate::State> states;
    for (const auto& [key, value] : snapshot.values) {
      aggregate::State& state = states.emplace_back();
      if (aggregate::Decode(value, state)) continue;
      states.pop_back();
      corrupt_.Inc();
      corrupt_log_.Log("snapshot", spdlog::level::warn,
                       "window_aggregate '" + node_ + "': snapshot value " + key +
                           " of partition " + std::to_string(id) +
                           " is not an FLA1 State: skipped");
    }
    for (const aggregate::State& state : states) {
      if (state.progress && state.progress->next &&
          time_.WindowOf(*state.progress->next) != *state.progress->next) {
        // Stored with another every_ms: none of its windows is one of ours. Nothing is skipped
        // then (its checkpoint is not ours either).
        spdlog::warn(
            "window_aggregate '{}': the snapshot of partition {} has windows of another "
            "every_ms: not restored",
            node_, id);
        return;
      }
    }
    p.checkpoint = snapshot.checkpoint;
    p.taken = snapshot.checkpoint.value_or(0);
    for (const aggregate::State& state : states) {
      if (state.progress) {
        p.next = state.progress->next;
        p.first_window = state.progress->first_window;
        p.newest_event_ns = state.progress->newest_event_ns;
        p.stream_ns = state.progress->stream_ns;
        // The re-read of what came after the checkpoint is on its way: not idle before it.
        p.last_arrival_ns = clock_.NowNs();
      }
      for (const aggregate::Vehicle& v : state.vehicles) RestoreVehicle(p, v);
    }
  }

  void RestoreVehicle(Partition& p, const aggregate::Vehicle& saved) {
    for (const aggregate::Sensor& s : saved.sensors) {
      const auto idx = index_.find(s.name);
      if (idx == index_.end()) continue;  // no longer aggregated
      SensorState& sensor = Vehicle(p, saved.id).sensors[idx->second];
      sensor.last_emitted = s.last_emitted;
      for (const aggregate::Window& w : s.windows) {
        if (auto a = Accumulator::Restored(w); a && EndOf(w.end_ns - 1) == w.end_ns) {
          sensor.windows.At(w.end_ns) = std::move(*a);
        } else {
          corrupt_.Inc();
        }
      }
    }
  }

  const std::string node_;  // its hand-over record's name
  const Clock& clock_;
  const int64_t flush_ns_;
  const int64_t every_;
  const int64_t lateness_;
  const int64_t max_gap_;
  const EventTime time_;
  std::optional<Tick> last_tick_;  // windows close on input only once a Tick came (OnInput)
  const std::shared_ptr<const std::vector<std::string>> sensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<uint32_t, Partition> partitions_;
  size_t tracked_count_ = 0;
  Counter& windows_;
  Counter& rows_;
  Counter& aggregated_;
  Counter& late_;
  Counter& duplicates_;
  Counter& ignored_;
  Gauge& tracked_;
  Counter& in_snapshot_;
  Counter& corrupt_;
  Gauge& waiting_;
  RateLimitedLog corrupt_log_{1, std::chrono::minutes(10)};
  std::shared_ptr<SnapshotStore> snapshots_;  // null: the memory backend keeps nothing
  int64_t next_save_ns_ = std::numeric_limits<int64_t>::min();
};

const OptionsSpec<WindowAggregateOptions>& Spec() {
  using O = WindowAggregateOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.Integer("every_ms",
              "Window length. Windows are [S, S + every_ms), S a multiple of every_ms since the "
              "Unix epoch; a row's time is S.",
              &O::every)
        .Default(int64_t{60'000})
        .Min(1000)
        .Max(86'400'000);
    c.Integer("allowed_lateness_ms",
              "How long after a window's end the operator waits for samples before emitting it. "
              "A sample arriving later is counted as late and is in no window: an emitted window "
              "never changes.",
              &O::allowed_lateness)
        .Default(int64_t{500})
        .Min(0)
        .Max(600'000);
    c.Integer("idle_ms",
              "As window_join's: windows close on event time while samples flow (a backlog is "
              "windowed as it was live); after this long without any sample they close on the "
              "clock, unless a source holds input back (docs/semantics.md).",
              &O::idle)
        .Default(int64_t{2000})
        .Min(1)
        .Max(3'600'000);
    c.Integer("max_gap_ms",
              "The distance of a window includes the hop from the sensor's last sample before "
              "the window to its first one in it, when they are at most this far apart (so that "
              "the distances of consecutive windows add up to the whole trip); a vehicle off "
              "for longer starts afresh.",
              &O::max_gap)
        .Default(int64_t{10'000})
        .Min(0)
        .Max(3'600'000);
    c.StringArray("sensors",
                  "The sensors aggregated, one set of statistics each in every row, in this "
                  "order.",
                  &O::sensors)
        .MinItems(1)
        .UniqueItems()
        .DefaultJson(R"(["gps", "speed", "soc", "torque"])");
    c.Enum("backend",
           "Where the open windows of each partition are kept: memory (this process only: a "
           "partition taken over starts afresh) or jetstream_kv (a snapshot per partition in a "
           "JetStream Key/Value bucket, keys agg.<node>.<partition>.*, restored by the worker "
           "that takes the partition over, which skips the messages up to the snapshot's "
           "checkpoint agg.<node>.<partition>.checkpoint).",
           &O::backend,
           {{"memory", O::Backend::kMemory}, {"jetstream_kv", O::Backend::kJetStreamKv}})
        .Default("memory");
    c.String("bucket",
             "jetstream_kv: the bucket, created when missing. Behind a JetStream source, the one "
             "it names in state_bucket, from which it re-reads a partition's stream after the "
             "oldest checkpoint of the nodes after it (keyed_last_value's bucket too: the keys "
             "do not meet).",
             &O::bucket)
        .Default("telemetry");
    c.Include(&O::bucket_settings, KvBucketSpec());
    c.Integer("flush_ms",
              "jetstream_kv: each partition with new input stores a snapshot every flush_ms "
              "(at a clock tick), written in the background, once the rows of the windows it "
              "emitted are stored (committed by the sink, published as partials; "
              "snapshots_waiting counts the partitions waiting); a partition revoked and a drain "
              "store theirs at once. What came after a partition's last snapshot is what its "
              "next owner must read again.",
              &O::flush_ms)
        .Default(int64_t{5000})
        .Min(100)
        .Max(600'000);
    c.Include(&O::nats, NatsClientSpec());
  });
}

/// Open windows that move with their partition need the snapshots and the changelog after
/// them: behind a partitioned source the backend is jetstream_kv, and behind an at-least-once
/// source the snapshots are in the bucket it reads checkpoints from (docs/scaling.md, "State").
std::vector<UpstreamProblem> CheckUpstream(const Config& self, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  const WindowAggregateOptions o = Spec().Parse(self);
  const bool stored = o.backend == WindowAggregateOptions::Backend::kJetStreamKv;
  std::vector<UpstreamProblem> problems;
  for (const UpstreamNode& n : upstream) {
    if (n.facts.partitioned && !stored) {
      problems.push_back(
          {n.id, "/partitions",
           "window_aggregate '" + self_id +
               "' keeps its open windows in memory: a partition moving to another worker would "
               "lose their statistics so far; set its backend to jetstream_kv "
               "(pipelines/jetstream-tiers.json), or read an unpartitioned source"});
      continue;
    }
    const std::string named = n.facts.state_bucket.value_or("");
    if (stored && n.facts.at_least_once && named != o.bucket) {
      problems.push_back(
          {n.id, "/state_bucket",
           "window_aggregate '" + self_id + "' keeps its snapshots in bucket \"" + o.bucket +
               "\": set \"state_bucket\": \"" + o.bucket +
               "\" here, so that a partition's next owner re-reads what came after its last "
               "snapshot (docs/scaling.md)" +
               (named.empty() ? "" : " (it names \"" + named + "\")")});
    }
  }
  return problems;
}

/// `fleetflow validate --connect`: the jetstream_kv backend's server and bucket.
std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const WindowAggregateOptions o = Spec().Parse(config);
  if (o.backend != WindowAggregateOptions::Backend::kJetStreamKv) return {};
  return CheckStateBucket(o.nats, o.bucket, o.bucket_settings, "open windows");
}

NodeFacts Facts(const Config& config) {
  NodeFacts f;
  f.rows = NodeFacts::Rows::kStatistics;
  f.sensors = Spec().Parse(config).sensors;
  if (Spec().Parse(config).backend == WindowAggregateOptions::Backend::kJetStreamKv) {
    f.checkpoint_key = [](std::string_view node, uint32_t p) {
      return JetStreamKvSnapshots::KeyOf(node, p, JetStreamKvSnapshots::kCheckpointKey);
    };
  }
  return f;
}

}  // namespace

void RegisterWindowAggregate(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots) {
  OperatorInfo info = TypedOperator<WindowAggregate>(
      "window_aggregate",
      "Per vehicle and sensor, tumbling windows of every_ms over the raw samples: count, min, "
      "max, mean, first and last; for positions the bounding box and the distance travelled.",
      PortKind::kSamples, PortKind::kRows, Spec());
  if (memory_snapshots) {
    info.create = [memory_snapshots](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
      return std::make_unique<WindowAggregate>(ctx, Spec().Parse(ctx.config), memory_snapshots);
    };
  }
  info.facts = Facts;
  info.check_upstream = CheckUpstream;
  info.check_connect = CheckConnect;
  registry.Add(std::move(info));
}

}  // namespace fleetflow
