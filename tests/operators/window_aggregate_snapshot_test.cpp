// window_aggregate's partition state: the snapshot codec (schemas/aggregate_state.fbs), the
// in-memory SnapshotStore, and a partition handed over (or its worker crashed) mid-window giving
// the statistics of one worker that saw everything.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <tuple>

#include "aggregate_state.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "state_store.hpp"
#include "window_aggregate.hpp"

namespace fleetflow::testkit {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'700'000'040 * kS;  // a multiple of 60 s
constexpr uint32_t kPartition = 3;

wire::Point Sample(int64_t ms, uint32_t seq, double value, bool position = false) {
  wire::Point p{kBase + ms * kMs, seq, value};
  if (position) {
    p.lat = 48.1 + 0.0001 * seq;
    p.lon = 11.5 - 0.00005 * seq;
    p.has_position = true;
  }
  return p;
}

// --- the codec -----------------------------------------------------------------------------

TEST(AggregateStateCodec, RoundTripsVehiclesWithGappyRunsPositionsAndProgress) {
  aggregate::State state;
  aggregate::Window w{kBase + 10 * kS, 5, 1.5, 9.0, 21.0, 4, 48.1, 48.2, 11.4, 11.5, {}};
  // Two runs with a gap (seq 3 missing), positions, and a run of one sample.
  w.runs.push_back({Sample(0, 1, 1.5, true), Sample(1000, 2, 2.0, true), 12.25});
  w.runs.push_back({Sample(3000, 4, 9.0, true), Sample(4000, 5, 4.5, true), 7.5});
  w.runs.push_back({Sample(6000, 9, 4.0), Sample(6000, 9, 4.0), 0.0});
  aggregate::Sensor gps{"gps", {w, w}, Sample(-500, 0, 3.0, true)};
  gps.windows[1].end_ns += 10 * kS;
  aggregate::Sensor speed{"speed", {}, std::nullopt};
  state.vehicles.push_back({"v1", {gps, speed}});
  state.vehicles.push_back({"vehicle-ümlaut", {}});
  aggregate::State decoded;
  ASSERT_TRUE(aggregate::Decode(aggregate::Encode(state), decoded));
  EXPECT_EQ(decoded, state);

  aggregate::State progress;
  progress.progress = aggregate::Progress{kBase, kBase - 10 * kS, kBase + 5 * kS, std::nullopt};
  ASSERT_TRUE(aggregate::Decode(aggregate::Encode(progress), decoded));
  EXPECT_EQ(decoded, progress);
  progress.progress = aggregate::Progress{std::nullopt, 0, -7, kBase};
  ASSERT_TRUE(aggregate::Decode(aggregate::Encode(progress), decoded));
  EXPECT_EQ(decoded, progress);
}

TEST(AggregateStateCodec, AnythingElseIsRefusedWithoutACrash) {
  aggregate::State out;
  EXPECT_FALSE(aggregate::Decode("", out));
  EXPECT_FALSE(aggregate::Decode("not a snapshot at all", out));
  aggregate::State state;
  state.vehicles.push_back({"v1", {{"gps", {}, Sample(0, 1, 1.0)}}});
  std::string value = aggregate::Encode(state);
  EXPECT_FALSE(aggregate::Decode(value.substr(0, value.size() / 2), out));  // truncated
  std::mt19937 rng(41);
  for (int i = 0; i < 2000; ++i) {  // flipped bytes: refused or decoded, never a crash
    std::string bad = value;
    bad[rng() % bad.size()] = static_cast<char>(rng());
    aggregate::Decode(bad, out);
  }
}

// --- MemorySnapshotStore -------------------------------------------------------------------

TEST(MemorySnapshotStore, KeepsTheNewestSnapshotPerPartitionWhole) {
  MemorySnapshotStore store;
  EXPECT_FALSE(store.Restore(1).checkpoint);
  EXPECT_TRUE(store.Restore(1).values.empty());
  store.Save(1, {{"a", "1"}, {"b", "2"}}, 10);
  store.Save(2, {{"a", "x"}}, 3);
  store.Save(1, {{"a", "3"}}, 12);  // replaces: b is gone
  EXPECT_TRUE(store.Sync());
  store.Forget(1);  // the stored snapshot stays for the next owner
  const auto one = store.Restore(1);
  EXPECT_EQ(one.values, (std::map<std::string, std::string>{{"a", "3"}}));
  EXPECT_EQ(one.checkpoint, 12u);
  EXPECT_EQ(store.Restore(2).checkpoint, 3u);
  EXPECT_EQ(store.saves(), 3u);
}

// --- hand-over ------------------------------------------------------------------------------

/// Windows close on event time only (idle_ms an hour), lateness longer than the input's
/// reordering: no sample is late, so the statistics of a window do not depend on when it closed.
constexpr char kConfig[] = R"({"every_ms": 10000, "allowed_lateness_ms": 30000,
    "idle_ms": 3600000, "max_gap_ms": 5000, "sensors": ["gps", "speed"], "flush_ms": 1000})";

/// One message of the stream: its samples, its sequence (index + 1) and stream time.
struct Input {
  std::vector<SampleBatch> messages;
  std::vector<int64_t> tick_after;  // the clock of a Tick after message i (0: none)
};

/// Three vehicles for two minutes at 5 Hz, in messages of 1-4 samples of one sensor; some
/// samples never sent (gaps), some messages sent again later, neighbours swapped.
Input MakeInput(uint32_t seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution dropped(0.05), again(0.05), swapped(0.2);
  std::uniform_int_distribution<int> size(1, 4);
  std::vector<SampleBatch> messages;
  for (const std::string vehicle : {"v1", "v2", "v3"}) {
    for (const std::string sensor : {"gps", "speed"}) {
      std::vector<wire::Point> samples;
      for (uint32_t i = 0; i < 600; ++i) {
        if (!dropped(rng)) {
          samples.push_back(Sample(i * 200, i, static_cast<double>((i * 7) % 31), sensor == "gps"));
        }
      }
      for (size_t i = 0; i < samples.size();) {
        const size_t n = std::min(samples.size() - i, static_cast<size_t>(size(rng)));
        SampleBatch b;
        b.vehicle = vehicle;
        b.sensor = sensor;
        b.points.assign(samples.begin() + static_cast<std::ptrdiff_t>(i),
                        samples.begin() + static_cast<std::ptrdiff_t>(i + n));
        b.partition = kPartition;
        messages.push_back(std::move(b));
        i += n;
      }
    }
  }
  // As the vehicles sent them: by time, then some neighbours swapped and some sent again.
  std::stable_sort(messages.begin(), messages.end(), [](const auto& a, const auto& b) {
    return a.points.back().ts_ns < b.points.back().ts_ns;
  });
  for (size_t i = 1; i < messages.size(); ++i) {
    if (swapped(rng)) std::swap(messages[i - 1], messages[i]);
  }
  Input in;
  for (size_t i = 0; i < messages.size(); ++i) {
    in.messages.push_back(messages[i]);
    if (again(rng)) in.messages.push_back(messages[i]);
  }
  int64_t clock = kBase;
  for (size_t i = 0; i < in.messages.size(); ++i) {
    SampleBatch& b = in.messages[i];
    b.sequence = i + 1;
    clock = std::max(clock, b.points.back().ts_ns);
    b.stream_ns = b.received_ns = clock;
    in.tick_after.push_back(i % 10 == 9 ? clock : 0);
  }
  return in;
}

/// The one batch of `out` with rows (a partition reports its windows without a row as empty
/// batches too); null when there is not exactly one.
std::shared_ptr<const StatsBatch> OnlyOneWithRows(const std::vector<Message>& out) {
  std::vector<std::shared_ptr<const StatsBatch>> with;
  for (const auto& b : Only<StatsBatch>(out)) {
    if (!b->rows.empty()) with.push_back(b);
  }
  return with.size() == 1 ? with.front() : nullptr;
}

using WindowKey = std::tuple<std::string, std::string, int64_t>;  // vehicle, sensor, start

/// What the harnesses emitted, by window; `emitted` counts how often each was.
struct Emitted {
  std::map<WindowKey, SensorStats> stats;
  std::map<WindowKey, int> times;
  void Take(const std::vector<Message>& out) {
    for (const auto& b : Only<StatsBatch>(out)) {
      for (const StatsRow& row : b->rows) {
        for (size_t i = 0; i < row.sensors.size(); ++i) {
          if (row.sensors[i].count == 0) continue;
          const WindowKey key{row.vehicle, (*b->sensors)[i], b->start_ns};
          const auto [it, added] = stats.try_emplace(key, row.sensors[i]);
          ++times[key];
          if (!added) Same(it->second, row.sensors[i], "emitted twice with other values");
        }
      }
    }
  }
  static void Same(const SensorStats& a, const SensorStats& b, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(a.count, b.count);
    EXPECT_EQ(a.min, b.min);
    EXPECT_EQ(a.max, b.max);
    EXPECT_DOUBLE_EQ(a.sum, b.sum);
    EXPECT_EQ(a.first, b.first);
    EXPECT_EQ(a.last, b.last);
    EXPECT_EQ(a.positions, b.positions);
    EXPECT_EQ(a.min_lat, b.min_lat);
    EXPECT_EQ(a.max_lat, b.max_lat);
    EXPECT_EQ(a.min_lon, b.min_lon);
    EXPECT_EQ(a.max_lon, b.max_lon);
    EXPECT_NEAR(a.distance_m, b.distance_m, 1e-9 * a.distance_m + 1e-9);
  }
};

/// Feeds messages [from, to) of `in` with their ticks, storing what comes out at once: the
/// harness lets go of it (OperatorHarness::output keeps what the operator emitted), so the
/// windows' rows are no longer in flight.
void Feed(OperatorHarness& h, const Input& in, size_t from, size_t to, Emitted& got) {
  for (size_t i = from; i < to; ++i) {
    got.Take(h.Feed(in.messages[i]));
    if (in.tick_after[i] != 0) got.Take(h.TickAt(in.tick_after[i]));
    h.output().Clear();
  }
}

int64_t End(const Input& in) { return in.messages.back().stream_ns + 200 * kS; }

/// One worker that reads everything.
Emitted SingleWorker(const Input& in) {
  OperatorHarness h("window_aggregate", kConfig);
  Emitted got;
  h.TickAt(kBase);
  got.Take(h.Feed(Assigned(kPartition)));
  Feed(h, in, 0, in.messages.size(), got);
  got.Take(h.TickAt(End(in), /*drain=*/true));
  return got;
}

class WindowAggregateHandOver : public ::testing::TestWithParam<uint32_t> {
 protected:
  WindowAggregateHandOver() { RegisterWindowAggregate(registry_, store_); }
  std::unique_ptr<OperatorHarness> Worker() {
    HarnessOptions o;
    o.registry = &registry_;
    return std::make_unique<OperatorHarness>("window_aggregate", kConfig, o);
  }
  void ExpectTheSingleWorkersStatistics(const Emitted& got, const Emitted& single) {
    ASSERT_EQ(got.stats.size(), single.stats.size());
    for (const auto& [key, stats] : single.stats) {
      SCOPED_TRACE(std::get<0>(key) + "." + std::get<1>(key) + " at " +
                   std::to_string((std::get<2>(key) - kBase) / kS) + " s");
      ASSERT_EQ(got.stats.count(key), 1u);
      Emitted::Same(got.stats.at(key), stats, "against the single worker");
    }
  }

  std::shared_ptr<MemorySnapshotStore> store_ = std::make_shared<MemorySnapshotStore>();
  Registry registry_;
};

// Worker A takes the partition's messages up to N, storing snapshots as it goes, and is revoked
// mid-window: it stores its final snapshot (checkpoint N) and its hand-over record. Worker B
// restores both and reads again from before the checkpoint, as a re-read of the stream would:
// every window has the statistics of one worker, and is emitted once across A and B.
TEST_P(WindowAggregateHandOver, MidWindowGivesTheStatisticsOfOneWorkerEachWindowOnce) {
  const Input in = MakeInput(GetParam());
  const Emitted single = SingleWorker(in);
  std::mt19937 rng(GetParam());
  const size_t n = in.messages.size() / 4 + rng() % (in.messages.size() / 2);

  Emitted got;
  auto a = Worker();
  a->TickAt(kBase);
  got.Take(a->Feed(Assigned(kPartition)));
  Feed(*a, in, 0, n, got);
  PartitionEvent revoked = Revoked(kPartition);
  got.Take(a->Feed(revoked));
  EXPECT_EQ(store_->Restore(kPartition).checkpoint, n) << "the final snapshot holds everything";

  auto b = Worker();
  b->TickAt(in.messages[n - 1].stream_ns);
  got.Take(b->Feed(Assigned(kPartition, revoked.handover->windows())));
  const size_t reread = std::min<size_t>(n, 7);
  Feed(*b, in, n - reread, in.messages.size(), got);
  got.Take(b->TickAt(End(in), /*drain=*/true));

  EXPECT_GT(b->Counter("samples_in_snapshot"), 0u);
  ExpectTheSingleWorkersStatistics(got, single);
  for (const auto& [key, times] : got.times) EXPECT_EQ(times, 1) << std::get<2>(key);
}

// Worker A crashes (no revocation, no record): B restores A's last snapshot, taken at a tick
// before the crash, and reads everything after its checkpoint. Windows A emitted after that
// snapshot are emitted again by B, with the same values.
TEST_P(WindowAggregateHandOver, AfterACrashTheLastSnapshotAndWhatCameAfterItGiveTheSameValues) {
  const Input in = MakeInput(GetParam());
  const Emitted single = SingleWorker(in);
  std::mt19937 rng(GetParam() + 1);
  const size_t n = in.messages.size() / 4 + rng() % (in.messages.size() / 2);

  Emitted got;
  auto a = Worker();
  a->TickAt(kBase);
  got.Take(a->Feed(Assigned(kPartition)));
  Feed(*a, in, 0, n, got);
  const auto c = store_->Restore(kPartition).checkpoint;  // A's last snapshot
  ASSERT_TRUE(c);
  ASSERT_LE(*c, n);
  a.reset();  // kill -9

  auto b = Worker();
  b->TickAt(in.messages[n - 1].stream_ns);
  got.Take(b->Feed(Assigned(kPartition)));
  Feed(*b, in, *c, in.messages.size(), got);
  got.Take(b->TickAt(End(in), /*drain=*/true));
  ExpectTheSingleWorkersStatistics(got, single);
}

// Worker A is killed while its sink holds the rows of the windows it emitted last (a sink
// retrying PostgreSQL: none of them committed). A snapshot says the windows before its progress
// are done, so A stored none while those rows were in flight: B, from A's last snapshot, emits
// them again. Every window ends up stored, with the values of one worker.
TEST_P(WindowAggregateHandOver, AfterACrashTheWindowsWhoseRowsWereNotStoredAreEmittedAgain) {
  const Input in = MakeInput(GetParam());
  const Emitted single = SingleWorker(in);
  std::mt19937 rng(GetParam() + 2);
  const size_t n = in.messages.size() / 2 + rng() % (in.messages.size() / 4);
  const size_t stall = n / 2;  // the sink commits what A emits from message `stall` on: never

  Emitted stored;
  std::vector<Message> held;  // what the sink holds when A is killed
  auto a = Worker();
  const auto sink = [&](size_t i, const std::vector<Message>& out) {
    if (i < stall) {
      stored.Take(out);
    } else {
      held.insert(held.end(), out.begin(), out.end());
    }
    a->output().Clear();
  };
  a->TickAt(kBase);
  a->Feed(Assigned(kPartition));
  for (size_t i = 0; i < n; ++i) {
    sink(i, a->Feed(in.messages[i]));
    if (in.tick_after[i] != 0) sink(i, a->TickAt(in.tick_after[i]));
  }
  size_t held_rows = 0;
  for (const auto& b : Only<StatsBatch>(held)) held_rows += b->rows.size();
  ASSERT_GT(held_rows, 0u) << "the sink holds no window's rows: nothing to test";
  EXPECT_EQ(a->Gauge("snapshots_waiting"), 1.0);
  const auto c = store_->Restore(kPartition).checkpoint;
  ASSERT_TRUE(c);
  a.reset();  // kill -9: the rows the sink held are lost with it
  held.clear();

  auto b = Worker();
  b->TickAt(in.messages[n - 1].stream_ns);
  stored.Take(b->Feed(Assigned(kPartition)));
  Feed(*b, in, *c, in.messages.size(), stored);
  stored.Take(b->TickAt(End(in), /*drain=*/true));
  ExpectTheSingleWorkersStatistics(stored, single);
}

INSTANTIATE_TEST_SUITE_P(Seeds, WindowAggregateHandOver, ::testing::Values(1u, 2u, 3u, 20261127u));

// The memory backend without a store (the built-in registry) keeps today's behaviour: a
// partition taken over starts afresh, nothing is skipped.
TEST(WindowAggregateMemoryBackend, KeepsNothingWithoutAStore) {
  OperatorHarness h("window_aggregate", kConfig);
  h.TickAt(kBase);
  h.Feed(Assigned(kPartition));
  SampleBatch b;
  b.vehicle = "v1";
  b.sensor = "speed";
  b.points = {Sample(1000, 1, 1.0)};
  b.partition = kPartition;
  b.sequence = 5;
  h.Feed(b);
  h.Feed(Revoked(kPartition));
  h.Feed(Assigned(kPartition));
  h.Feed(b);
  EXPECT_EQ(h.Counter("samples_in_snapshot"), 0u);
  EXPECT_EQ(h.Counter("samples_aggregated"), 2u);
}

// A partition stores a snapshot at the first tick after flush_ms with new input, at a drain
// when it changed, and never when no partitioned source assigned it (nobody would restore it).
TEST(WindowAggregateSnapshot, StoredEveryFlushWithNewInputOnlyForAssignedPartitions) {
  auto store = std::make_shared<MemorySnapshotStore>();
  Registry registry;
  RegisterWindowAggregate(registry, store);
  HarnessOptions o;
  o.registry = &registry;
  OperatorHarness h("window_aggregate", kConfig, o);  // flush_ms 1000
  const auto sample = [](uint32_t partition, uint64_t sequence) {
    SampleBatch b;
    b.vehicle = "v1";
    b.sensor = "speed";
    b.points = {Sample(static_cast<int64_t>(sequence) * 100, static_cast<uint32_t>(sequence), 1.0)};
    b.partition = partition;
    b.sequence = sequence;
    return b;
  };
  h.TickAt(kBase);
  h.Feed(sample(0, 1));  // an unpartitioned source: partition 0, never assigned
  h.TickAt(kBase + 5 * kS);
  EXPECT_EQ(store->saves(), 0u);

  h.Feed(Assigned(kPartition));
  h.Feed(sample(kPartition, 2));
  h.TickAt(kBase + 6 * kS);
  EXPECT_EQ(store->saves(), 1u);
  EXPECT_EQ(store->Restore(kPartition).checkpoint, 2u);
  h.Feed(sample(kPartition, 3));
  h.TickAt(kBase + 6 * kS + 500 * kMs);  // within flush_ms
  EXPECT_EQ(store->saves(), 1u);
  h.TickAt(kBase + 7 * kS);
  EXPECT_EQ(store->saves(), 2u);
  EXPECT_EQ(store->Restore(kPartition).checkpoint, 3u);
  h.TickAt(kBase + 9 * kS);  // nothing new
  EXPECT_EQ(store->saves(), 2u);
  // A window emitted: the snapshot waits until its rows are stored (the message let go).
  h.Feed(sample(kPartition, 400));
  std::vector<Message> out = h.TickAt(kBase + 75 * kS);  // window [0 s, 10 s) closes at 40 s
  ASSERT_EQ(Only<StatsBatch>(out).size(), 1u);
  EXPECT_EQ(store->saves(), 2u);
  EXPECT_EQ(h.Gauge("snapshots_waiting"), 1.0);
  h.TickAt(kBase + 80 * kS);
  EXPECT_EQ(store->saves(), 2u);
  out.clear();  // the sink stored them, and the harness lets go of its copy
  h.output().Clear();
  h.TickAt(kBase + 80 * kS + 100 * kMs);  // at the next Tick, not flush_ms later
  EXPECT_EQ(store->saves(), 3u);
  EXPECT_EQ(h.Gauge("snapshots_waiting"), 0.0);
  EXPECT_EQ(store->Restore(kPartition).checkpoint, 400u);
  h.Feed(sample(kPartition, 401));
  h.TickAt(kBase + 81 * kS, /*drain=*/true);
  EXPECT_EQ(store->saves(), 4u);
  EXPECT_EQ(store->Restore(kPartition).checkpoint, 401u);
}

// A value that is not a snapshot is counted and skipped; the rest of the snapshot is restored.
TEST(WindowAggregateSnapshot, ACorruptValueIsCountedAndSkipped) {
  auto store = std::make_shared<MemorySnapshotStore>();
  Registry registry;
  RegisterWindowAggregate(registry, store);
  HarnessOptions o;
  o.registry = &registry;
  aggregate::State good;
  aggregate::Window w{kBase + 10 * kS, 1, 4.0, 4.0, 4.0, 0, 0, 0, 0, 0, {}};
  w.runs.push_back({Sample(1000, 1, 4.0), Sample(1000, 1, 4.0), 0.0});
  good.vehicles.push_back({"v1", {{"speed", {w}, std::nullopt}}});
  store->Save(kPartition, {{"r0", "garbage"}, {"r1", aggregate::Encode(good)}}, 9);

  OperatorHarness h("window_aggregate", kConfig, o);
  h.TickAt(kBase);
  h.Feed(Assigned(kPartition));
  EXPECT_EQ(h.Counter("snapshot_values_corrupt"), 1u);
  SampleBatch b;
  b.vehicle = "v1";
  b.sensor = "speed";
  b.points = {Sample(2000, 2, 6.0)};
  b.partition = kPartition;
  b.sequence = 10;
  h.Feed(b);
  const auto batch = OnlyOneWithRows(h.TickAt(kBase + 100 * kS, /*drain=*/true));
  ASSERT_NE(batch, nullptr);
  ASSERT_EQ(batch->rows.size(), 1u);
  EXPECT_EQ(batch->rows[0].sensors[1].count, 2u);  // the restored sample and the new one
  EXPECT_EQ(batch->rows[0].sensors[1].sum, 10.0);
}

// A snapshot stored with another every_ms is not restored, and nothing is skipped: its windows
// and its checkpoint are not this node's.
TEST(WindowAggregateSnapshot, ASnapshotOfAnotherWindowLengthIsNotRestored) {
  auto store = std::make_shared<MemorySnapshotStore>();
  Registry registry;
  RegisterWindowAggregate(registry, store);
  HarnessOptions o;
  o.registry = &registry;
  aggregate::State progress;
  progress.progress = aggregate::Progress{kBase + 7 * kS, kBase, kBase + 8 * kS, std::nullopt};
  aggregate::State windows;
  aggregate::Window w{kBase + 7 * kS, 1, 4.0, 4.0, 4.0, 0, 0, 0, 0, 0, {}};
  w.runs.push_back({Sample(1000, 1, 4.0), Sample(1000, 1, 4.0), 0.0});
  windows.vehicles.push_back({"v1", {{"speed", {w}, std::nullopt}}});
  store->Save(kPartition,
              {{"progress", aggregate::Encode(progress)}, {"r0", aggregate::Encode(windows)}}, 9);

  OperatorHarness h("window_aggregate", kConfig, o);  // every_ms 10 s
  h.TickAt(kBase);
  h.Feed(Assigned(kPartition));
  EXPECT_EQ(h.Gauge("tracked_vehicles"), 0.0);
  SampleBatch b;
  b.vehicle = "v1";
  b.sensor = "speed";
  b.points = {Sample(2000, 2, 6.0)};
  b.partition = kPartition;
  b.sequence = 5;  // before the foreign checkpoint: taken in all the same
  h.Feed(b);
  EXPECT_EQ(h.Counter("samples_in_snapshot"), 0u);
  const auto batch = OnlyOneWithRows(h.TickAt(kBase + 100 * kS, /*drain=*/true));
  ASSERT_NE(batch, nullptr);
  ASSERT_EQ(batch->rows.size(), 1u);
  EXPECT_EQ(batch->rows[0].sensors[1].count, 1u);
}

}  // namespace
}  // namespace fleetflow::testkit
