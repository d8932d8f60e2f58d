#include "window_join.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "nats_config.hpp"
#include "state/kv_membership.hpp"

namespace fleetflow {

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

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
  uint32_t shard = 0;
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
        retain_(ctx.config.String("sharding") == "none"
                    ? 0
                    : std::max(ctx.config.Integer("member_timeout_ms") +
                                   2 * ctx.config.Integer("every_ms") +
                                   ctx.config.Integer("allowed_lateness_ms"),
                               ctx.config.Integer("correction_horizon_ms")) *
                          kMs),
        clock_(ctx.clock),
        sensors_(
            std::make_shared<const std::vector<std::string>>(ctx.config.StringArray("sensors"))),
        windows_(
            ctx.metrics.GetCounter("windows_emitted", "Windows closed and emitted.", ctx.labels())),
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
                                      ctx.labels())),
        reemitted_(ctx.metrics.GetCounter(
            "rows_reemitted",
            "Rows emitted on taking shards over: the windows after the previous owner's record "
            "this worker had passed already, or (without a record) recent windows again.",
            ctx.labels())),
        corrected_(ctx.metrics.GetCounter(
            "rows_corrected", "Rows of recent windows emitted again because of a late sample.",
            ctx.labels())),
        handed_over_(ctx.metrics.GetCounter(
            "shards_handed_over",
            "Shards given up with a record of the last window emitted (stop, or a new owner).",
            ctx.labels())),
        taken_over_(ctx.metrics.GetCounter(
            "shards_taken_over",
            "Shards taken over from their previous owner's record: emitted from the next window.",
            ctx.labels())),
        recovered_(ctx.metrics.GetCounter(
            "shards_recovered",
            "Shards taken over without a record (the previous owner crashed): their recent "
            "windows are emitted again.",
            ctx.labels())),
        timeout_ns_(ctx.config.Integer("member_timeout_ms") * kMs) {
    const auto shards = static_cast<size_t>(ctx.config.Integer("shards"));
    owned_.assign(shards, true);
    done_.resize(shards);
    no_rewrite_.resize(shards);
    pending_.resize(shards);
    catch_up_from_.assign(shards, kNone);
    if (ctx.config.String("sharding") == "jetstream_kv") {
      MembershipOptions m;
      m.connection = NatsConnectOptions(ctx.config, "fleetflow:" + ctx.node_id + ":members");
      m.bucket = ctx.config.String("membership_bucket");
      m.heartbeat_ms = static_cast<int>(ctx.config.Integer("heartbeat_ms"));
      m.timeout_ms = static_cast<int>(ctx.config.Integer("member_timeout_ms"));
      m.warmup_ms = static_cast<int>(retain_ / kMs);
      m.progress_bucket = ctx.config.String("progress_bucket");
      membership_ = std::make_unique<KvMembership>(std::move(m), ctx.metrics, ctx.labels());
    }
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
  uint32_t ShardOf(const std::string& vehicle) const {
    return static_cast<uint32_t>(KvMembership::Hash(vehicle) % std::max<size_t>(owned_.size(), 1));
  }

  int64_t WindowOf(int64_t ts) const {  // the smallest window time >= ts
    const int64_t q = ts / every_;
    const int64_t t = q * every_;
    return t >= ts ? t : t + every_;
  }

  VehicleState& Vehicle(const std::string& id) {
    auto [it, inserted] = vehicles_.try_emplace(id);
    if (inserted) {
      it->second.sensors.resize(sensors_->size());
      it->second.shard = ShardOf(id);
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
    last_arrival_ns_ = b.received_ns != 0 ? b.received_ns : clock_.NowNs();
    for (const wire::Point& p : b.points) {
      newest_event_ns_ = std::max(newest_event_ns_, p.ts_ns);
      if (!next_) {
        next_ = WindowOf(std::min(p.ts_ns, last_arrival_ns_));
        first_window_ = *next_;
      }
      const int64_t w = WindowOf(p.ts_ns);
      const bool oldest = s.Add(w, p);
      if (next_ && w < *next_) {
        late_.Inc();
        ScheduleCorrection(b.vehicle, v, w);
      } else if (next_ && oldest && w == *next_) {
        // Out of order after the previous window was emitted: it may be that window's after
        // sample (it came through another worker).
        ScheduleCorrection(b.vehicle, v, w);
      }
      v.newest_ns = std::max(v.newest_ns, p.ts_ns);
      if (v.off_at_ns && p.ts_ns > *v.off_at_ns) {
        // A sample from shortly after the off time is the tail of the run that arrived late
        // (through another worker): it moves the off time. A later one means it runs again.
        if (p.ts_ns - *v.off_at_ns <= max_gap_) {
          v.off_at_ns = p.ts_ns;
        } else {
          v.off_at_ns.reset();
        }
      }
    }
  }

  void Status(const StatusEvent& e) {
    VehicleState& v = Vehicle(e.vehicle);
    if (e.on) {
      v.off_at_ns.reset();
    } else {
      // Off after its newest sample: the vehicle's own clock, not ours, decides which windows
      // it still has.
      v.off_at_ns = std::max(v.newest_ns, e.at_ns);
    }
  }

  /// Sharded workers correct recent windows a late sample belongs to (a redelivery after a
  /// worker died): the windows it may bracket are emitted again for its vehicle.
  void ScheduleCorrection(const std::string& vehicle, const VehicleState& v, int64_t w) {
    if (retain_ == 0 || !Owned(v.shard)) return;
    const int64_t oldest = std::max(first_window_, *next_ - retain_);
    for (int64_t t = std::max(w - every_, oldest); t < *next_ && t <= w + max_gap_; t += every_) {
      corrections_[t].insert(vehicle);
    }
  }

  void EmitCorrections(Emitter& out) {
    for (const auto& [t, ids] : corrections_) {
      // clang 14 cannot capture a structured binding: copies for the lambda.
      const auto& vehicles = ids;
      const int64_t window = t;
      corrected_.Inc(
          EmitRows(window, out, vehicles.size(), [&](const std::string& id, uint32_t shard) {
            return vehicles.count(id) > 0 && Corrects(shard, window);
          }));
    }
    corrections_.clear();
  }

  /// Event-time progress: while samples flow, the newest event time seen (never ahead of the
  /// clock), so a backlog (JetStream catch-up, replay) closes its windows as they were live;
  /// when nothing arrived for idle_ms, the clock, unless input is held back by backpressure.
  void Advance(const Tick& tick, Emitter& out) {
    if (!next_) return;  // no sample yet: no window can have a row
    int64_t progress = tick.now_ns;
    if (tick.held_back || tick.now_ns - last_arrival_ns_ <= idle_) {
      progress = std::min(progress, newest_event_ns_);
    }
    // A drain closes every window up to the clock, except in a sharded worker: it emits only
    // the windows whose input it has (the usual horizon) and records, per shard, the last one;
    // the next owner goes on from there with the input still in the stream.
    const bool close_all = tick.drain && !membership_;
    const int64_t horizon = close_all ? tick.now_ns : progress - lateness_;
    if (membership_) Rebalance(out);
    if (!corrections_.empty()) EmitCorrections(out);
    if (horizon - *next_ > 2 * every_) SkipEmptyWindows();
    while (*next_ <= horizon) {
      Emit(*next_, out);
      *next_ += every_;
    }
    if (tick.drain && membership_) {
      for (uint32_t shard = 0; shard < owned_.size(); ++shard) {
        if (owned_[shard] && !pending_[shard]) HandOver(shard);
      }
    }
  }

  /// Jumps over windows before the oldest sample held (a gap in the data, a restored state).
  void SkipEmptyWindows() {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const auto& [_, v] : vehicles_) {
      for (const SensorBuckets& s : v.sensors) {
        oldest = std::min(oldest, s.Oldest());
      }
    }
    if (oldest != std::numeric_limits<int64_t>::max()) next_ = std::max(*next_, WindowOf(oldest));
  }

  void Emit(int64_t t, Emitter& out) {
    const size_t rows =
        EmitRows(t, out, vehicles_.size(),
                 [this, t](const std::string&, uint32_t shard) { return Emits(shard, t); });
    active_.Set(static_cast<double>(rows));
    windows_.Inc();
    Forget(t);
  }

  /// Emits window t's rows of the vehicles whose shard `take` accepts; returns how many.
  /// `expected_rows` sizes the batch up front.
  template <typename Take>
  size_t EmitRows(int64_t t, Emitter& out, size_t expected_rows, const Take& take) {
    WindowBatch batch;
    batch.rows.reserve(expected_rows);
    batch.window_ns = t;
    batch.sensors = sensors_;
    for (auto& [id, v] : vehicles_) {
      if (v.off_at_ns && t > *v.off_at_ns) continue;
      if (!take(id, v.shard)) continue;
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
    if (n > 0) {
      rows_.Inc(n);
      out.Emit(MakeMessage(std::move(batch)));
    }
    return n;
  }

  /// Drops what no later window (nor, when sharded, a re-emitted recent one) can use.
  void Forget(int64_t t) {
    const int64_t keep_from = t + every_ - retain_;
    for (auto it = vehicles_.begin(); it != vehicles_.end();) {
      VehicleState& v = it->second;
      for (SensorBuckets& s : v.sensors) s.Prune(keep_from);
      const bool gone = v.newest_ns < keep_from - max_gap_ ||
                        (v.off_at_ns && v.newest_ns <= *v.off_at_ns && keep_from > *v.off_at_ns);
      it = gone ? vehicles_.erase(it) : std::next(it);
    }
    tracked_.Set(static_cast<double>(vehicles_.size()));
  }

  bool Owned(uint32_t shard) const { return !membership_ || owned_[shard]; }

  /// Whether this worker emits window t of `shard`: it owns the shard, is not waiting for its
  /// previous owner's record, and the previous owner did not emit t already.
  bool Emits(uint32_t shard, int64_t t) const {
    if (!membership_) return true;
    return owned_[shard] && !pending_[shard] && (!done_[shard] || t > *done_[shard]);
  }

  /// Whether a late sample may correct window t of `shard`. A worker that took the shard over
  /// when it started holds only the restored history before the handed-over window: it never
  /// rewrites the windows up to it. A worker that took it over while running has all the recent
  /// samples (every worker sees every sample), so it corrects them as the previous owner would.
  bool Corrects(uint32_t shard, int64_t t) const {
    if (!membership_) return true;
    return owned_[shard] && !pending_[shard] && (!no_rewrite_[shard] || t > *no_rewrite_[shard]);
  }

  /// The last window of `shard` emitted by this worker or, before it, by the previous owner.
  std::optional<int64_t> LastEmitted(uint32_t shard) const {
    std::optional<int64_t> last = done_[shard];
    if (next_ && *next_ > first_window_ && (!last || *next_ - every_ > *last)) {
      last = *next_ - every_;
    }
    return last;
  }

  /// Hand-over (docs/scaling.md). When the owners change, a worker that gives a shard up
  /// records the last window it emitted of it; the worker that gains it claims the record and
  /// goes on from the next window, emitting at once the windows it has passed already. While
  /// the previous owner runs (or has just stopped) the gaining worker waits for its record, up
  /// to member_timeout_ms; without a record (the previous owner crashed) it emits the shard's
  /// recent windows again, as far back as it keeps samples. Called at every Tick before windows
  /// are emitted: every window before next_ is emitted.
  void Rebalance(Emitter& out) {
    const auto [owners, generation] = membership_->Owners();
    if (generation != generation_) {
      generation_ = generation;
      const bool first = !rebalanced_once_;
      rebalanced_once_ = true;
      std::vector<uint32_t> lost, gained;
      for (uint32_t shard = 0; shard < owned_.size(); ++shard) {
        const bool mine = KvMembership::OwnerOf(owners, shard) == membership_->id();
        if (mine && (first || !owned_[shard])) gained.push_back(shard);
        if (!mine && owned_[shard] && !first) lost.push_back(shard);
        if (!mine && first) owned_[shard] = false;
      }
      // Late samples of the shards given up still correct their windows, while they are ours.
      if (!lost.empty() && !corrections_.empty()) EmitCorrections(out);
      for (const uint32_t shard : lost) {
        if (!pending_[shard]) HandOver(shard);
        Release(shard);
      }
      for (const uint32_t shard : gained) Gain(shard, first, owners.size() > 1);
      previous_owners_ = owners;
    }
    if (waiting_ > 0) ResolvePending();
    EmitCatchUp(out);
  }

  void Release(uint32_t shard) {
    owned_[shard] = false;
    if (pending_[shard]) --waiting_;
    pending_[shard].reset();
    done_[shard].reset();
    no_rewrite_[shard].reset();
    catch_up_from_[shard] = kNone;
  }

  void HandOver(uint32_t shard) {
    const std::optional<int64_t> last = LastEmitted(shard);
    if (!last) return;  // nothing emitted: the next owner waits, then starts on its own
    membership_->RecordHandover(shard, *last);
    handed_over_.Inc();
  }

  /// `first`: this worker's first ownership (it has just started); `shared`: other workers
  /// own shards too.
  void Gain(uint32_t shard, bool first, bool shared) {
    Release(shard);
    owned_[shard] = true;
    if (const auto window = membership_->ClaimHandover(shard)) {
      TakeOver(shard, *window, first);
      return;
    }
    if (first && !shared) return;  // alone and nothing recorded: its own windows from now on
    // Unknown previous owner (first), or one that runs or stopped cleanly: its record comes.
    const bool wait =
        first || membership_->StandingOf(KvMembership::OwnerOf(previous_owners_, shard)) !=
                     KvMembership::Standing::kGone;
    if (wait) {
      pending_[shard] = Pending{SteadyNowNs() + timeout_ns_, *next_, first};
      ++waiting_;
    } else {
      Recover(shard, *next_);
    }
  }

  void TakeOver(uint32_t shard, int64_t window, bool started_with_it) {
    done_[shard] = window;
    if (started_with_it) no_rewrite_[shard] = window;
    catch_up_from_[shard] = window + every_;
    taken_over_.Inc();
  }

  /// Without a record: the previous owner may have died before emitting its last windows.
  void Recover(uint32_t shard, int64_t gained_at) {
    catch_up_from_[shard] = std::max(first_window_, WindowOf(gained_at - retain_));
    recovered_.Inc();
  }

  void ResolvePending() {
    const int64_t now = SteadyNowNs();
    for (uint32_t shard = 0; shard < pending_.size() && waiting_ > 0; ++shard) {
      if (!pending_[shard]) continue;
      const Pending p = *pending_[shard];
      if (const auto window = membership_->ClaimHandover(shard)) {
        pending_[shard].reset();
        --waiting_;
        TakeOver(shard, *window, p.first);
      } else if (now >= p.deadline_ns) {
        pending_[shard].reset();
        --waiting_;
        if (p.first) {
          catch_up_from_[shard] = p.gained_at;  // nobody emitted them: no re-emission
        } else {
          Recover(shard, p.gained_at);
        }
      }
    }
  }

  /// Emits the windows before next_ of the shards taken over, from catch_up_from_ on (as far
  /// back as samples are kept).
  void EmitCatchUp(Emitter& out) {
    const int64_t oldest = *std::min_element(catch_up_from_.begin(), catch_up_from_.end());
    if (oldest == kNone) return;
    const int64_t kept_from = std::max(first_window_, WindowOf(*next_ - retain_));
    for (int64_t w = std::max(oldest, kept_from); w < *next_; w += every_) {
      reemitted_.Inc(EmitRows(w, out, 0, [&](const std::string&, uint32_t shard) {
        return catch_up_from_[shard] <= w && Emits(shard, w);
      }));
    }
    catch_up_from_.assign(catch_up_from_.size(), kNone);
  }

  const int64_t every_;
  const int64_t lateness_;
  const int64_t max_gap_;
  const int64_t idle_;
  const int64_t retain_;  // how far back windows may be emitted again (sharded only)
  const Clock& clock_;
  std::unique_ptr<KvMembership> membership_;
  // By shard:
  std::vector<bool> owned_;
  std::vector<std::optional<int64_t>> done_;        // windows up to it emitted by the previous owner
  std::vector<std::optional<int64_t>> no_rewrite_;  // windows up to it are never corrected here
  struct Pending {
    int64_t deadline_ns;  // steady clock
    int64_t gained_at;    // next_ when the shard was gained
    bool first;
  };
  std::vector<std::optional<Pending>> pending_;  // gained, waiting for the previous owner's record
  std::vector<int64_t> catch_up_from_;           // windows before next_ to emit now; kNone: none
  size_t waiting_ = 0;                           // shards pending
  std::vector<std::string> previous_owners_;
  uint64_t generation_ = 0;
  bool rebalanced_once_ = false;
  int64_t first_window_ = 0;
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
  Counter& reemitted_;
  Counter& corrected_;
  Counter& handed_over_;
  Counter& taken_over_;
  Counter& recovered_;
  const int64_t timeout_ns_;
  std::map<int64_t, std::set<std::string>> corrections_;  // window -> vehicles to emit again
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
               "A sample arriving later is counted as late and misses that window (with "
               "sharding, a recent window is emitted again with it).")
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
  info.config
      .String("sharding",
              "none: this worker emits every vehicle's rows. jetstream_kv: the workers of the "
              "pipeline share the vehicles (fixed shards, membership in a KV bucket); each "
              "row is emitted by one worker; a worker that stops or gives shards up records the "
              "last window it emitted of each, and the next owner goes on from there (after a "
              "crash it re-emits their recent windows). A stopping worker emits only the windows "
              "it has the input of. Needs the state of every vehicle, e.g. keyed_last_value with "
              "backend jetstream_kv and history_ms at least allowed_lateness_ms.")
      .Default("none")
      .OneOf({"none", "jetstream_kv"});
  info.config.Integer("shards", "Number of vehicle shards (the same for every worker).")
      .Default(int64_t{64})
      .Min(1)
      .Max(4096);
  info.config.String("membership_bucket", "jetstream_kv: the KV bucket of worker membership.")
      .Default("fleetflow_members");
  info.config
      .String("progress_bucket",
              "jetstream_kv: the KV bucket (without TTL) of the hand-over records, keys "
              "<membership_bucket>.shard.<n>: by default keyed_last_value's state bucket, which "
              "ignores them.")
      .Default("telemetry");
  info.config.Integer("heartbeat_ms", "jetstream_kv: how often a worker renews its membership.")
      .Default(int64_t{1000})
      .Min(100)
      .Max(60'000);
  info.config
      .Integer("correction_horizon_ms",
               "jetstream_kv: how far back a late sample still corrects the windows it belongs "
               "to (at least member_timeout_ms + 2 every_ms + allowed_lateness_ms). Keep it above "
               "the source's ack_wait_ms plus a reconnect: messages delivered to a connection "
               "that broke come again only after ack_wait_ms. Costs memory: the samples of that "
               "many windows are kept per vehicle and sensor.")
      .Default(int64_t{10000})
      .Min(0)
      .Max(3'600'000);
  info.config
      .Integer("member_timeout_ms",
               "jetstream_kv: a worker silent this long is gone and its shards move.")
      .Default(int64_t{4000})
      .Min(500)
      .Max(600'000);
  AddNatsConnectionFields(info.config);
  info.create = [](const OperatorContext& ctx) { return std::make_unique<WindowJoin>(ctx); };
  registry.Add(std::move(info));
}

}  // namespace fleetflow
