// CellMerge, the merge of fleet rows across workers: the partials of fleet_aggregate over each
// partition's vehicle rows, merged, equal fleet_aggregate over every vehicle's rows at once; a
// window is given once every partition reported it; what a partition sends again is not counted
// twice, also by a next owner restored from the state.
#include "cell_merge.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "fleet_partial.hpp"
#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMinute = 60 * kS;
constexpr int64_t kStart = 1'700'000'040 * kS;
constexpr uint32_t kOrigins = 4;

/// Seeded vehicle rows of one window (sensors gps, speed, soc) around three cities.
std::vector<StatsRow> VehicleRows(int vehicles, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  const std::pair<double, double> cities[] = {
      {48.8566, 2.3522}, {45.7640, 4.8357}, {43.2965, 5.37}};
  std::vector<StatsRow> rows;
  for (int v = 0; v < vehicles; ++v) {
    StatsRow row{"v" + std::to_string(v), std::vector<SensorStats>(3)};
    const auto& city = cities[v % 3];
    SensorStats& gps = row.sensors[0];
    gps.count = gps.positions = 1;
    gps.last.lat = city.first + unit(rng) * 0.2;
    gps.last.lon = city.second + unit(rng) * 0.2;
    gps.last.has_position = true;
    if (v % 7 != 0) {  // some without a speed sample in the window
      SensorStats& speed = row.sensors[1];
      speed.count = 1 + static_cast<uint64_t>(unit(rng) * 30);
      speed.min = unit(rng) * 2;
      speed.max = speed.min + unit(rng) * 40;
      speed.sum = (speed.min + speed.max) / 2 * static_cast<double>(speed.count);
    }
    SensorStats& soc = row.sensors[2];
    soc.count = 1;
    soc.min = soc.max = soc.sum = soc.last.value = 20 + unit(rng) * 80;
    rows.push_back(std::move(row));
  }
  return rows;
}

Message Window(int64_t start, std::vector<StatsRow> rows) {
  StatsBatch b;
  b.start_ns = start;
  b.length_ns = kMinute;
  b.sensors = std::make_shared<const std::vector<std::string>>(
      std::vector<std::string>{"gps", "speed", "soc"});
  b.rows = std::move(rows);
  return MakeMessage(std::move(b));
}

/// fleet_aggregate's rows of one window's vehicle rows (`config`: its options).
std::vector<std::shared_ptr<const StatsBatch>> Aggregate(const std::string& config, int64_t start,
                                                         std::vector<StatsRow> rows) {
  OperatorHarness h("fleet_aggregate", config);
  std::vector<std::shared_ptr<const StatsBatch>> out;
  for (const auto& b : Only<StatsBatch>(h.Feed(Window(start, std::move(rows))))) out.push_back(b);
  return out;
}

/// The partials of each origin: fleet_aggregate over the rows of its vehicles (an empty one for
/// an origin without any).
std::vector<CellMerge::Partial> Partials(const std::string& config, int64_t start,
                                         const std::vector<StatsRow>& rows) {
  std::vector<std::vector<StatsRow>> by_origin(kOrigins);
  for (const StatsRow& r : rows) by_origin[PartitionOf(r.vehicle, kOrigins)].push_back(r);
  std::vector<CellMerge::Partial> partials;
  for (uint32_t o = 0; o < kOrigins; ++o) {
    CellMerge::Partial p{o, start, kMinute, {}};
    for (const auto& b : Aggregate(config, start, by_origin[o])) p.rows = b->rows;
    partials.push_back(std::move(p));
  }
  return partials;
}

const std::shared_ptr<const std::vector<std::string>>& Metrics() {
  static const auto names = std::make_shared<const std::vector<std::string>>(
      std::vector<std::string>{"vehicles", "moving", "speed", "speed_max", "soc"});
  return names;
}

/// A batch's rows by key and metric: count, sum, min, max.
using Table = std::map<std::string, std::map<std::string, std::vector<double>>>;
Table TableOf(const StatsBatch& b) {
  Table t;
  for (const StatsRow& row : b.rows) {
    for (size_t i = 0; i < row.sensors.size(); ++i) {
      const SensorStats& s = row.sensors[i];
      t[row.vehicle][(*b.sensors)[i]] = {static_cast<double>(s.count), s.sum, s.min, s.max};
    }
  }
  return t;
}

void ExpectSameRows(const StatsBatch& merged, const StatsBatch& whole) {
  EXPECT_EQ(merged.start_ns, whole.start_ns);
  EXPECT_EQ(merged.length_ns, whole.length_ns);
  EXPECT_EQ(*merged.sensors, *whole.sensors);
  const Table a = TableOf(merged), b = TableOf(whole);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, metrics] : b) {
    ASSERT_TRUE(a.count(key)) << key;
    for (const auto& [metric, v] : metrics) {
      const std::vector<double>& got = a.at(key).at(metric);
      EXPECT_EQ(got[0], v[0]) << key << " " << metric << " count";
      EXPECT_NEAR(got[1], v[1], 1e-9 * std::max(1.0, std::abs(v[1]))) << key << " " << metric;
      if (v[0] > 0) {
        EXPECT_EQ(got[2], v[2]) << key << " " << metric << " min";
        EXPECT_EQ(got[3], v[3]) << key << " " << metric << " max";
      }
    }
  }
}

TEST(CellMergeTest, MergedPartialsOfEachPartitionEqualTheRowsOfEveryVehicleAtOnce) {
  for (const std::string config : {R"({"moving_speed": 5})", R"({"group_by": "fleet"})"}) {
    SCOPED_TRACE(config);
    const std::vector<StatsRow> rows = VehicleRows(200, 7);
    const auto whole = Aggregate(config, kStart, rows);
    ASSERT_EQ(whole.size(), 1u);
    CellMerge merge(kOrigins, Metrics());
    for (const auto& p : Partials(config, kStart, rows)) {
      EXPECT_TRUE(merge.TakeComplete().empty()) << "complete before origin " << p.origin;
      EXPECT_EQ(merge.Add(p), CellMerge::Taken::kMerged);
    }
    const std::vector<StatsBatch> out = merge.TakeComplete();
    ASSERT_EQ(out.size(), 1u);
    ExpectSameRows(out[0], *whole[0]);
    EXPECT_TRUE(merge.TakeComplete().empty()) << "a window given twice";
  }
}

TEST(CellMergeTest, AWindowWaitsForTheSlowestPartitionAndWindowsComeOldestFirst) {
  const std::string config = R"({"moving_speed": 5})";
  CellMerge merge(kOrigins, Metrics());
  // Origins 0-2 run three windows ahead; origin 3 has reported none.
  for (int w = 0; w < 3; ++w) {
    const int64_t start = kStart + w * kMinute;
    const auto partials = Partials(config, start, VehicleRows(60, 10 + w));
    for (uint32_t o = 0; o < 3; ++o) merge.Add(partials[o]);
  }
  EXPECT_EQ(merge.CompleteUpTo(), std::nullopt);
  EXPECT_TRUE(merge.TakeComplete().empty());
  // Origin 3 reports the first two windows.
  for (int w = 0; w < 2; ++w) {
    const int64_t start = kStart + w * kMinute;
    merge.Add(Partials(config, start, VehicleRows(60, 10 + w))[3]);
  }
  EXPECT_EQ(merge.CompleteUpTo(), kStart + 2 * kMinute);
  const std::vector<StatsBatch> out = merge.TakeComplete();
  ASSERT_EQ(out.size(), 2u);
  for (int w = 0; w < 2; ++w) {
    const int64_t start = kStart + w * kMinute;
    ExpectSameRows(out[w], *Aggregate(config, start, VehicleRows(60, 10 + w))[0]);
  }
}

TEST(CellMergeTest, APartitionWithoutVehiclesReportsEmptyWindowsAndAWindowOfNoCellGivesNothing) {
  CellMerge merge(2, Metrics());
  const auto rows = VehicleRows(10, 3);
  // Every vehicle in origin 0; origin 1 sends the window empty.
  const auto whole = Aggregate("{}", kStart, rows);
  EXPECT_EQ(merge.Add({0, kStart, kMinute, whole[0]->rows}), CellMerge::Taken::kMerged);
  EXPECT_TRUE(merge.TakeComplete().empty());
  EXPECT_EQ(merge.Add({1, kStart, kMinute, {}}), CellMerge::Taken::kMerged);
  const auto out = merge.TakeComplete();
  ASSERT_EQ(out.size(), 1u);
  ExpectSameRows(out[0], *whole[0]);
  // A window that both send empty is complete and gives no rows.
  merge.Add({0, kStart + kMinute, kMinute, {}});
  merge.Add({1, kStart + kMinute, kMinute, {}});
  EXPECT_EQ(merge.CompleteUpTo(), kStart + 2 * kMinute);
  EXPECT_TRUE(merge.TakeComplete().empty());
}

TEST(CellMergeTest, WhatAPartitionSendsAgainIsNotCountedTwice) {
  const std::string config = R"({"moving_speed": 5})";
  const auto rows = VehicleRows(80, 21);
  const auto partials = Partials(config, kStart, rows);
  CellMerge merge(kOrigins, Metrics());
  merge.Add(partials[0]);
  merge.Add(partials[1]);
  // Origin 1 sends its window again (its worker died before its snapshot), and an older one.
  EXPECT_EQ(merge.Add(partials[1]), CellMerge::Taken::kDuplicate);
  EXPECT_EQ(merge.Add({1, kStart - kMinute, kMinute, partials[1].rows}),
            CellMerge::Taken::kDuplicate);
  merge.Add(partials[2]);
  merge.Add(partials[3]);
  const auto out = merge.TakeComplete();
  ASSERT_EQ(out.size(), 1u);
  ExpectSameRows(out[0], *Aggregate(config, kStart, rows)[0]);
  // After the window was given, every partial of it is one sent again.
  for (const auto& p : partials) EXPECT_EQ(merge.Add(p), CellMerge::Taken::kDuplicate);
  EXPECT_TRUE(merge.TakeComplete().empty());
}

TEST(CellMergeTest, ANextOwnerRestoredFromTheStateGivesTheRowsOfOneThatKeptGoing) {
  const std::string config = R"({"moving_speed": 5})";
  std::vector<std::vector<CellMerge::Partial>> windows;
  for (int w = 0; w < 3; ++w) {
    windows.push_back(Partials(config, kStart + w * kMinute, VehicleRows(50, 30 + w)));
  }
  // The first owner takes every origin's first window and half of the second's, then its state
  // is saved; the partials after it reach the next owner, and those before it again (a re-read
  // from an older checkpoint).
  CellMerge first(kOrigins, Metrics());
  for (const auto& p : windows[0]) first.Add(p);
  std::vector<StatsBatch> given = first.TakeComplete();
  first.Add(windows[1][0]);
  first.Add(windows[1][1]);
  const std::string saved = first.Save();  // the snapshot value, as stored

  CellMerge next(kOrigins, Metrics());
  ASSERT_TRUE(next.Restore(saved));
  for (const auto& p : windows[1]) next.Add(p);  // 0 and 1 again, then 2 and 3
  for (const auto& p : windows[2]) next.Add(p);
  for (StatsBatch& b : next.TakeComplete()) given.push_back(std::move(b));
  ASSERT_EQ(given.size(), 3u);
  for (int w = 0; w < 3; ++w) {
    ExpectSameRows(given[w], *Aggregate(config, kStart + w * kMinute, VehicleRows(50, 30 + w))[0]);
  }
  CellMerge other(kOrigins + 1, Metrics());
  EXPECT_FALSE(other.Restore(saved)) << "a state of another number of partitions";
  CellMerge other_metrics(
      kOrigins, std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"x"}));
  EXPECT_FALSE(other_metrics.Restore(saved)) << "a state of other metrics";
  EXPECT_FALSE(next.Restore(std::string_view("not a snapshot")));
  EXPECT_FALSE(other.Restore(first.state())) << "the state itself, of other partitions";
}

TEST(CellMergeTest, PartialsOfAnotherShapeAreRefused) {
  CellMerge merge(2, Metrics());
  EXPECT_EQ(merge.Add({2, kStart, kMinute, {}}), CellMerge::Taken::kRefused);  // no origin 2
  EXPECT_EQ(merge.Add({0, kStart, 0, {}}), CellMerge::Taken::kRefused);
  EXPECT_EQ(merge.Add({0, kStart, kMinute, {{"u09tv", std::vector<SensorStats>(2)}}}),
            CellMerge::Taken::kRefused);  // 2 metrics, not 5
  EXPECT_EQ(merge.Add({0, kStart, kMinute, {}}), CellMerge::Taken::kMerged);
  EXPECT_EQ(merge.Add({1, kStart, 2 * kMinute, {}}), CellMerge::Taken::kRefused);  // length
  EXPECT_EQ(merge.CompleteUpTo(), std::nullopt);
}

// --- the cell_merge operator ---------------------------------------------------------------

constexpr uint32_t kShard = 3;

/// A partial as fleet_source emits it: of shard kShard, stream sequence `sequence`.
Body AsRead(const CellMerge::Partial& p, uint64_t sequence, uint32_t origins = kOrigins) {
  StatsBatch b;
  b.start_ns = p.start_ns;
  b.length_ns = p.length_ns;
  b.sensors = Metrics();
  b.rows = p.rows;
  b.partition = kShard;
  b.origin = StatsBatch::Origin{p.origin, origins};
  b.sequence = sequence;
  return b;
}

PartitionEvent ShardEvent(PartitionEvent::Kind kind) {
  PartitionEvent e;
  e.kind = kind;
  e.partition = kShard;
  if (kind == PartitionEvent::Kind::kRevoked) e.handover = std::make_shared<Handover>();
  return e;
}

/// The partials of `windows` windows in the order a stream holds them: window by window, each
/// window's origins in a seeded order; partials[k] is stream sequence k + 1.
std::vector<CellMerge::Partial> StreamOfPartials(int windows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<CellMerge::Partial> stream;
  for (int w = 0; w < windows; ++w) {
    auto partials = Partials(R"({"group_by": "cell_and_fleet"})", kStart + w * kMinute,
                             VehicleRows(30, seed + static_cast<uint32_t>(w)));
    std::shuffle(partials.begin(), partials.end(), rng);
    for (auto& p : partials) stream.push_back(std::move(p));
  }
  return stream;
}

/// What a worker emitted: each window's rows by start, and how often each window came.
struct Merged {
  std::map<int64_t, Table> windows;
  std::map<int64_t, int> times;
  void Take(const std::vector<Message>& out) {
    for (const auto& b : Only<StatsBatch>(out)) {
      windows[b->start_ns] = TableOf(*b);
      ++times[b->start_ns];
      EXPECT_FALSE(b->origin) << "rows of their own";
    }
  }
};

/// The same cells and metrics; sums within `tolerance` (relative; 0: the same bits).
void ExpectSameTables(const Table& got, const Table& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [cell, metrics] : want) {
    ASSERT_TRUE(got.count(cell)) << cell;
    for (const auto& [metric, v] : metrics) {
      const std::vector<double>& g = got.at(cell).at(metric);
      EXPECT_EQ(g[0], v[0]) << cell << " " << metric << " count";
      EXPECT_NEAR(g[1], v[1], tolerance * std::max(1.0, std::abs(v[1]))) << cell << " " << metric;
      EXPECT_EQ(g[2], v[2]) << cell << " " << metric << " min";
      EXPECT_EQ(g[3], v[3]) << cell << " " << metric << " max";
    }
  }
}

void ExpectSameWindows(const Merged& got, const Merged& want) {
  ASSERT_EQ(got.windows.size(), want.windows.size());
  for (const auto& [start, table] : want.windows) {
    SCOPED_TRACE((start - kStart) / kMinute);
    ASSERT_TRUE(got.windows.count(start));
    ExpectSameTables(got.windows.at(start), table, 0);
  }
}

/// Workers of cell_merge's memory backend sharing one snapshot store (they hand shards over
/// through it).
struct SharedStore {
  SharedStore() { RegisterCellMerge(registry, store); }
  std::unique_ptr<OperatorHarness> Worker() {
    HarnessOptions o;
    o.registry = &registry;
    return std::make_unique<OperatorHarness>("cell_merge", R"({"backend": "memory"})", o);
  }
  std::shared_ptr<MemorySnapshotStore> store = std::make_shared<MemorySnapshotStore>();
  Registry registry;
};

/// One worker merging the whole stream.
Merged Single(const std::vector<CellMerge::Partial>& stream) {
  OperatorHarness h("cell_merge", R"({"backend": "memory"})");
  Merged got;
  h.Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
  for (size_t k = 0; k < stream.size(); ++k) got.Take(h.Feed(AsRead(stream[k], k + 1)));
  return got;
}

TEST(CellMergeOperator, EachWindowOnceWhenEveryPartitionReportedItWithTheMergedRows) {
  const auto stream = StreamOfPartials(3, 11);
  OperatorHarness h("cell_merge", R"({"backend": "memory"})");
  h.Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
  Merged got;
  for (size_t k = 0; k < stream.size(); ++k) {
    const auto out = h.Feed(AsRead(stream[k], k + 1));
    // A window comes with the last of its partitions' partials, not before.
    EXPECT_EQ(Only<StatsBatch>(out).size(), (k + 1) % kOrigins == 0 ? 1u : 0u) << k;
    got.Take(out);
  }
  ASSERT_EQ(got.windows.size(), 3u);
  for (int w = 0; w < 3; ++w) {
    const int64_t start = kStart + w * kMinute;
    const auto whole = Aggregate(R"({"group_by": "cell_and_fleet"})", start,
                                 VehicleRows(30, 11 + static_cast<uint32_t>(w)));
    ASSERT_EQ(whole.size(), 1u);
    ExpectSameTables(got.windows[start], TableOf(*whole[0]), 1e-9);
    EXPECT_TRUE(got.windows[start].count("fleet")) << "the fleet's row is one of the shard's";
  }
  // Sent again (a partition's owner crashed after publishing): ignored.
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(AsRead(stream[2], 99))).empty());
  EXPECT_EQ(h.Counter("partials_duplicate"), 1u);
  EXPECT_EQ(h.Counter("partials_merged"), stream.size());
  EXPECT_EQ(h.Counter("windows_emitted"), 3u);
}

// Worker A merges part of the shard's stream and is revoked: its final snapshot holds what it
// merged (checkpoint: the last partial). B restores it and is given the stream again from a few
// partials before the checkpoint, as a re-read would: every window once across A and B, with
// the rows of one worker.
TEST(CellMergeOperator, AHandOverMidWindowGivesTheRowsOfOneWorkerEachWindowOnce) {
  const auto stream = StreamOfPartials(4, 21);
  const Merged single = Single(stream);
  for (const size_t n : {size_t{3}, size_t{6}, size_t{9}}) {
    SCOPED_TRACE(n);
    SharedStore shared;
    Merged got;
    auto a = shared.Worker();
    a->Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
    for (size_t k = 0; k < n; ++k) got.Take(a->Feed(AsRead(stream[k], k + 1)));
    got.Take(a->Feed(ShardEvent(PartitionEvent::Kind::kRevoked)));
    EXPECT_EQ(shared.store->Restore(kShard).checkpoint, n);

    auto b = shared.Worker();
    b->Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
    for (size_t k = n - 2; k < stream.size(); ++k) got.Take(b->Feed(AsRead(stream[k], k + 1)));
    EXPECT_EQ(b->Counter("partials_in_snapshot"), 2u);
    ExpectSameWindows(got, single);
    for (const auto& [start, times] : got.times) EXPECT_EQ(times, 1) << start;
  }
}

// Worker A saves a snapshot at a tick and dies later without a revocation: B restores the older
// snapshot and merges what came after its checkpoint; the windows A emitted after the snapshot
// come again, with the same rows (the sink leaves a row it has as it is).
TEST(CellMergeOperator, AfterACrashTheLastSnapshotAndThePartialsAfterItGiveTheSameRows) {
  const auto stream = StreamOfPartials(4, 31);
  const Merged single = Single(stream);
  SharedStore shared;
  Merged got;
  auto a = shared.Worker();
  a->Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
  for (size_t k = 0; k < 6; ++k) got.Take(a->Feed(AsRead(stream[k], k + 1)));
  a->TickAt(kStart);  // a snapshot: checkpoint 6
  for (size_t k = 6; k < 11; ++k) got.Take(a->Feed(AsRead(stream[k], k + 1)));
  EXPECT_EQ(shared.store->Restore(kShard).checkpoint, 6u);
  a.reset();  // kill -9

  auto b = shared.Worker();
  b->Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
  for (size_t k = 6; k < stream.size(); ++k) got.Take(b->Feed(AsRead(stream[k], k + 1)));
  ExpectSameWindows(got, single);
  EXPECT_EQ(got.times[kStart + kMinute], 2) << "emitted by A after its snapshot, and by B";
}

TEST(CellMergeOperator, PartialsOfAnotherNumberOfPartitionsOrAPartitionsRowsAreIgnored) {
  const auto stream = StreamOfPartials(1, 41);
  OperatorHarness h("cell_merge", R"({"backend": "memory"})");
  h.Feed(ShardEvent(PartitionEvent::Kind::kAssigned));
  h.Feed(AsRead(stream[0], 1));
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(AsRead(stream[1], 2, kOrigins + 1))).empty());
  StatsBatch rows;  // a partition's rows that did not come through a fleet_source
  rows.sensors = Metrics();
  rows.partition = 2;
  EXPECT_TRUE(Only<StatsBatch>(h.Feed(std::move(rows))).empty());
  EXPECT_EQ(h.Counter("partials_refused"), 2u);
  EXPECT_EQ(h.Counter("partials_merged"), 1u);
}

// One process that read every vehicle (a replay, `fleetflow test`) has a window's whole rows in
// one batch: they go on as they are.
TEST(CellMergeOperator, AWindowsWholeRowsGoOnAsTheyAre) {
  OperatorHarness h("cell_merge", R"({"backend": "memory"})");
  const auto whole = Aggregate(R"({"group_by": "cell_and_fleet"})", kStart, VehicleRows(12, 51));
  ASSERT_EQ(whole.size(), 1u);
  const auto out = Only<StatsBatch>(h.Feed(MakeMessage(StatsBatch(*whole[0]))));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(TableOf(*out[0]), TableOf(*whole[0]));
  EXPECT_EQ(h.Counter("partials_refused"), 0u);
}

TEST(MergeStatsTest, CountsSumsExtremesPositionsAndTheFirstAndLastSample) {
  SensorStats a, b;
  a.count = 2;
  a.min = 1;
  a.max = 5;
  a.sum = 6;
  a.first.ts_ns = 10;
  a.last.ts_ns = 20;
  a.positions = 2;
  a.min_lat = 48;
  a.max_lat = 48.5;
  a.min_lon = 2;
  a.max_lon = 2.5;
  a.distance_m = 100;
  b.count = 3;
  b.min = -1;
  b.max = 4;
  b.sum = 9;
  b.first.ts_ns = 5;
  b.last.ts_ns = 15;
  b.positions = 1;
  b.min_lat = 47;
  b.max_lat = 47.5;
  b.min_lon = 3;
  b.max_lon = 3.5;
  b.distance_m = 50;
  SensorStats m = a;
  MergeStats(m, b);
  EXPECT_EQ(m.count, 5u);
  EXPECT_EQ(m.min, -1);
  EXPECT_EQ(m.max, 5);
  EXPECT_EQ(m.sum, 15);
  EXPECT_EQ(m.first.ts_ns, 5);
  EXPECT_EQ(m.last.ts_ns, 20);
  EXPECT_EQ(m.positions, 3u);
  EXPECT_EQ(m.min_lat, 47);
  EXPECT_EQ(m.max_lat, 48.5);
  EXPECT_EQ(m.min_lon, 2);
  EXPECT_EQ(m.max_lon, 3.5);
  EXPECT_EQ(m.distance_m, 150);
  SensorStats none;
  MergeStats(none, SensorStats{});
  EXPECT_EQ(none.count, 0u);
  MergeStats(none, b);
  EXPECT_EQ(none.sum, 9);
}

fleet::Partial APartial() {
  fleet::Partial p;
  p.node = "cells";
  p.origin = 3;
  p.origins = 16;
  p.start_ns = kStart;
  p.length_ns = kMinute;
  p.metrics = *Metrics();
  p.rows.push_back(
      {"u09tv", {{3, 1, 1, 3}, {2, 0, 1, 2}, {3, 4.5, 60, 80}, {3, 9, 70, 120}, {3, 20, 90, 150}}});
  p.rows.push_back({"u0h2b", std::vector<fleet::Stats>(5)});
  return p;
}

TEST(FleetPartialCodecTest, PartialsAndMergeStatesComeBackAsTheyWere) {
  const fleet::Partial p = APartial();
  fleet::Partial back;
  ASSERT_TRUE(fleet::Decode(fleet::Encode(p), back));
  EXPECT_EQ(back, p);
  fleet::Partial empty = p;
  empty.rows.clear();  // a window closed without a vehicle in the shard's cells
  ASSERT_TRUE(fleet::Decode(fleet::Encode(empty), back));
  EXPECT_EQ(back, empty);

  fleet::MergeState s;
  s.origins = 16;
  s.length_ns = kMinute;
  s.metrics = *Metrics();
  s.reached = {{0, kStart + kMinute}, {7, kStart + 3 * kMinute}};
  s.windows[kStart] = p.rows;
  s.windows[kStart + kMinute] = {p.rows[0]};
  fleet::MergeState state_back;
  ASSERT_TRUE(fleet::Decode(fleet::Encode(s), state_back));
  EXPECT_EQ(state_back, s);
  ASSERT_TRUE(fleet::Decode(fleet::Encode(fleet::MergeState{}), state_back));
  EXPECT_EQ(state_back, fleet::MergeState{});

  // A message's payload at an odd address (as the NATS client hands it over) decodes the same
  // (the sanitizer build checks that nothing is read unaligned).
  const std::string encoded = fleet::Encode(p);
  std::string shifted = "x" + encoded;
  ASSERT_TRUE(fleet::Decode(std::string_view(shifted).substr(1), back));
  EXPECT_EQ(back, p);
}

TEST(FleetPartialCodecTest, AnythingElseIsRefusedWithoutACrash) {
  const std::string partial = fleet::Encode(APartial());
  fleet::Partial p;
  fleet::MergeState s;
  EXPECT_FALSE(fleet::Decode(partial, s)) << "a partial is no merge state";
  EXPECT_FALSE(fleet::Decode(fleet::Encode(s), p)) << "a merge state is no partial";
  EXPECT_FALSE(fleet::Decode("", p));
  EXPECT_FALSE(fleet::Decode("FLP1", p));
  // Cut short (the last bytes may be the builder's alignment padding: a cut there loses nothing).
  for (size_t n = 0; n + 8 < partial.size(); n += 7) {
    EXPECT_FALSE(fleet::Decode(partial.substr(0, n), p)) << n << " bytes of " << partial.size();
  }
  fleet::Partial short_row = APartial();
  short_row.rows[0].stats.pop_back();  // 4 statistics for 5 metrics
  EXPECT_FALSE(fleet::Decode(fleet::Encode(short_row), p));
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string junk = partial;
    junk[8 + rng() % (junk.size() - 8)] = static_cast<char>(rng());
    fleet::Decode(junk, p);  // either way, no crash (the verifier bounds every read)
  }
}

}  // namespace
}  // namespace fleetflow::testkit
