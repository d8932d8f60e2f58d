// row_archive: a window join's rows written by period and cell with their summaries, the values
// interpolated as timescale_sink writes them, exactly once across a worker killed, a hand-over
// and the end of a period (the log in the directory and the commit record), and read back as
// any reader would (docs/archive.md).
#include "row_archive.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fleetflow/testkit/harness.hpp"
#include "interpolation.hpp"
#include "layout.hpp"
#include "servers.hpp"

namespace fleetflow::testkit {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kHour = 3600 * kS;
// 2026-11-18T09:00:00Z: an hour's start.
constexpr int64_t kBase = 1'794'992'400 * kS;

/// A fresh directory, removed at the end (tests/support/servers.hpp's, as a path).
class TempDir {
 public:
  fs::path path() const { return dir_.path(); }

 private:
  testing::TempDir dir_{"ff-row-archive"};
};

std::string ReadFile(const fs::path& p) { return testing::ReadFile(p.string()); }

struct Chunk {
  archive::ChunkPlace place;
  archive::Summary summary;
  std::string header;
  std::vector<std::string> lines;
};

/// Every committed chunk of rows under `root` (what a reader globbing rows=*/**/*.csv.zst sees).
std::vector<Chunk> ReadRows(const fs::path& root) {
  std::vector<Chunk> chunks;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(e.path(), root).string();
    if (!e.is_regular_file() || rel.rfind("rows=", 0) != 0 || !rel.ends_with(".csv.zst")) {
      continue;
    }
    Chunk c;
    const auto place = archive::ParseChunkPath(rel);
    EXPECT_TRUE(place) << rel;
    if (!place) continue;
    c.place = *place;
    std::string why;
    const auto summary =
        archive::ParseSummary(ReadFile(archive::SummaryPathOf(e.path().string())), &why);
    EXPECT_TRUE(summary) << "no summary beside " << rel << ": " << why;
    if (summary) c.summary = *summary;
    const std::string data = ReadFile(e.path());
    EXPECT_EQ(c.summary.bytes, data.size()) << rel;
    const auto csv = archive::Decompress(data);
    EXPECT_TRUE(csv) << rel;
    if (!csv) continue;
    std::istringstream in(*csv);
    std::getline(in, c.header);
    for (std::string line; std::getline(in, line);) c.lines.push_back(line);
    chunks.push_back(std::move(c));
  }
  return chunks;
}

/// How often each (vehicle, ts) is in the archive, and the line it has (the last seen).
struct Counted {
  std::map<std::pair<std::string, std::string>, int> n;
  std::map<std::pair<std::string, std::string>, std::string> line;
};
Counted Count(const std::vector<Chunk>& chunks) {
  Counted c;
  for (const Chunk& ch : chunks) {
    for (const std::string& l : ch.lines) {
      const size_t a = l.find(','), b = l.find(',', a + 1);
      const std::pair<std::string, std::string> key{l.substr(0, a), l.substr(a + 1, b - a - 1)};
      ++c.n[key];
      c.line[key] = l;
    }
  }
  return c;
}

/// Waits until `done` holds, 10 s at most (the writer thread commits in the background).
template <typename F>
bool WaitUntil(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

const auto kSensors = std::make_shared<const std::vector<std::string>>(
    std::vector<std::string>{"gps", "speed", "soc", "torque"});

wire::Point Gps(int64_t ts, double lat, double lon) {
  wire::Point p{ts, 0, 0.0};
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  return p;
}

/// Vehicle `v`'s row at window `t`: near Paris (even v) or Munich (odd), moving; a speed, a
/// state of charge held, no torque sample near.
struct TestRow {
  std::string vehicle;
  std::vector<Slot> slots;
};

TestRow RowOf(int v, int64_t t, double shift = 0) {
  const double k = static_cast<double>((t - kBase) / kS);
  const double lat = (v % 2 == 0 ? 48.8566 : 48.137) + 1e-4 * k + 1e-3 * v;
  const double lon = (v % 2 == 0 ? 2.3522 : 11.575) + 2e-4 * k;
  TestRow r;
  r.vehicle = "veh-" + std::to_string(v);
  r.slots.push_back({Gps(t - 100 * kMs, lat, lon), Gps(t + 150 * kMs, lat + 2e-5, lon + 3e-5)});
  r.slots.push_back({wire::Point{t - 50 * kMs, 0, 30.0 + k / 7 + shift},
                     wire::Point{t + 50 * kMs, 0, 31.0 + k / 7 + shift}});
  r.slots.push_back({wire::Point{t - 900 * kMs, 0, 80.0 - k / 1000}, std::nullopt});
  r.slots.push_back({});
  return r;
}

WindowBatch Window(int64_t t, int vehicles, uint32_t partition = 0, double shift = 0) {
  WindowBatch b;
  b.window_ns = t;
  b.sensors = kSensors;
  b.partition = partition;
  for (int v = vehicles - 1; v >= 0; --v) {
    const TestRow r = RowOf(v, t, shift);
    b.AddRow(r.vehicle, r.slots);
  }
  return b;
}

/// The line the archive must hold for a row: the values computed as the sink computes them.
std::string Expected(const TestRow& r, int64_t t) {
  std::string line = r.vehicle + ",";
  archive::AppendTime(line, t);
  const auto add = [&](size_t slot, ColumnField f, bool position) {
    line += ',';
    const auto v = InterpolateSlot(r.slots[slot], f, Interpolation::kLinear, t);
    if (!v) return;
    if (position) {
      archive::AppendFixed(line, *v, 5);
    } else {
      archive::AppendSignificant(line, *v, 4);
    }
  };
  add(0, ColumnField::kLat, true);
  add(0, ColumnField::kLon, true);
  add(1, ColumnField::kValue, false);
  add(2, ColumnField::kValue, false);
  add(3, ColumnField::kValue, false);
  return line;
}

std::string Config(const fs::path& dir) {
  return R"({"directory": ")" + dir.string() + R"(", "stats_subject": ""})";
}

void Assign(OperatorHarness& h, uint32_t p) {
  PartitionEvent e;
  e.kind = PartitionEvent::Kind::kAssigned;
  e.partition = p;
  h.Feed(e);
}

void Revoke(OperatorHarness& h, uint32_t p) {
  PartitionEvent e;
  e.kind = PartitionEvent::Kind::kRevoked;
  e.partition = p;
  e.handover = std::make_shared<Handover>();
  h.Feed(e);
}

/// Every (vehicle, window) of windows [from, to) (1 s apart) of `vehicles` vehicles is in the
/// archive exactly once, with the values of RowOf(shift).
void ExpectEveryRowOnce(const fs::path& root, int64_t from, int64_t to, int vehicles) {
  const Counted c = Count(ReadRows(root));
  size_t expected = 0;
  for (int64_t t = from; t < to; t += kS) {
    for (int v = 0; v < vehicles; ++v) {
      ++expected;
      std::string ts;
      archive::AppendTime(ts, t);
      const std::pair<std::string, std::string> key{"veh-" + std::to_string(v), ts};
      const auto it = c.n.find(key);
      ASSERT_NE(it, c.n.end()) << key.first << " " << ts << " missing";
      EXPECT_EQ(it->second, 1) << key.first << " " << ts;
      EXPECT_EQ(c.line.at(key), Expected(RowOf(v, t), t));
    }
  }
  EXPECT_EQ(c.n.size(), expected);
}

TEST(RowArchiveTest, WritesEachPeriodAsChunksByCellSortedWithTheValuesTheSinkWrites) {
  TempDir dir;
  OperatorHarness h("row_archive", Config(dir.path()));
  // 2 vehicles (Paris, Munich), the hour's last 3 windows and the next hour's first 2.
  for (int64_t t = kBase + kHour - 3 * kS; t < kBase + kHour + 2 * kS; t += kS) {
    h.Feed(Window(t, 2));
    h.TickAt(t + 500 * kMs);
  }
  // The first hour is written once the windows reach the next one; the next hour at the drain.
  ASSERT_TRUE(h.Counter("chunks_committed") == 0 || h.Counter("chunks_committed") == 2);
  h.TickAt(kBase + kHour + 3 * kS, /*drain=*/true);
  const std::vector<Chunk> chunks = ReadRows(dir.path());
  ASSERT_EQ(chunks.size(), 4u);  // 2 hours x 2 cells
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.header, "vehicle_id,ts,lat,lon,speed,soc,torque");
    EXPECT_EQ(c.place.row_set, "telemetry_1s");
    EXPECT_EQ(c.summary.row_set, "telemetry_1s");
    EXPECT_EQ(c.summary.columns, c.header);
    EXPECT_EQ(c.summary.samples, c.lines.size());
    ASSERT_EQ(c.summary.vehicles.size(), 1u);
    ASSERT_TRUE(c.summary.box);
    EXPECT_EQ(c.place.cell, archive::Geohash(c.summary.box->min_lat, c.summary.box->min_lon, 5));
    const bool first_hour = c.place.period_start_ns == kBase;
    EXPECT_EQ(c.lines.size(), first_hour ? 3u : 2u);
    EXPECT_EQ(c.summary.first_ns, first_hour ? kBase + kHour - 3 * kS : kBase + kHour);
  }
  ExpectEveryRowOnce(dir.path(), kBase + kHour - 3 * kS, kBase + kHour + 2 * kS, 2);
  EXPECT_EQ(h.Counter("rows_archived"), 10u);
  EXPECT_EQ(h.Counter("rows_logged"), 10u);
  EXPECT_TRUE(fs::is_empty(dir.path() / "_tmp")) << "staged files left behind";
  for (const auto& e : fs::directory_iterator(dir.path() / "_commits" / "op")) {
    EXPECT_FALSE(e.path().string().ends_with(".log")) << e.path() << ": a log left after the drain";
  }
}

TEST(RowArchiveTest, AWorkerKilledIsFollowedByOneThatGoesOnWithItsLogEveryRowOnce) {
  TempDir dir;
  const uint32_t kP = 3;
  {
    OperatorHarness a("row_archive", Config(dir.path()));
    Assign(a, kP);
    for (int64_t t = kBase + 10 * kS; t < kBase + 40 * kS; t += kS) {
      a.Feed(Window(t, 3, kP));
      a.TickAt(t + 500 * kMs);
    }
    EXPECT_EQ(a.Counter("chunks_committed"), 0u);
  }  // killed: no drain, no revoke (the harness goes without either)
  // The crash tore the log's last block: a row without its window's end.
  const fs::path log = dir.path() / "_commits" / "op" / "p3-1.log";
  ASSERT_TRUE(fs::exists(log));
  std::ofstream(log, std::ios::app) << "u09tu,veh-0,2026-11-18T09:00:40Z,48.8";

  OperatorHarness b("row_archive", Config(dir.path()));
  Assign(b, kP);
  // The window join's next owner emits again what its restored state computes: from window 35.
  for (int64_t t = kBase + 35 * kS; t < kBase + 60 * kS; t += kS) {
    b.Feed(Window(t, 3, kP));
    b.TickAt(t + 500 * kMs);
  }
  EXPECT_EQ(b.Counter("rows_in_archive"), 15u);  // windows 35..39, 3 vehicles
  b.TickAt(kBase + 61 * kS, /*drain=*/true);
  ExpectEveryRowOnce(dir.path(), kBase + 10 * kS, kBase + 60 * kS, 3);
  EXPECT_EQ(b.Counter("rows_archived"), 150u);
}

TEST(RowArchiveTest, AHandOverAcrossAPeriodsEndWritesEachRowOnce) {
  TempDir dir;
  const uint32_t kP = 1;
  const int64_t start = kBase + kHour - 20 * kS;
  {
    OperatorHarness a("row_archive", Config(dir.path()));
    Assign(a, kP);
    for (int64_t t = start; t < kBase + kHour + 5 * kS; t += kS) {
      a.Feed(Window(t, 2, kP));
      a.TickAt(t + 500 * kMs);
    }
    EXPECT_TRUE(WaitUntil([&] { return a.Counter("rows_archived") == 40u; }))
        << "the first hour is written once the windows reach the next";
    Revoke(a, kP);  // the next hour's 5 windows are written too
    EXPECT_EQ(a.Counter("rows_archived"), 50u);
  }
  OperatorHarness b("row_archive", Config(dir.path()));
  Assign(b, kP);
  // Without a hand-over record the join emits again from before the hour's end.
  for (int64_t t = kBase + kHour - 3 * kS; t < kBase + kHour + 30 * kS; t += kS) {
    b.Feed(Window(t, 2, kP));
    b.TickAt(t + 500 * kMs);
  }
  EXPECT_EQ(b.Counter("rows_in_archive"), 16u);  // 8 windows committed, 2 vehicles
  b.TickAt(kBase + kHour + 31 * kS, /*drain=*/true);
  ExpectEveryRowOnce(dir.path(), start, kBase + kHour + 30 * kS, 2);
}

TEST(RowArchiveTest, ASegmentWrittenButNotDeletedIsNotWrittenAgain) {
  TempDir dir;
  const fs::path commits = dir.path() / "_commits" / "op";
  std::string segment;
  {
    OperatorHarness a("row_archive", Config(dir.path()));
    for (int64_t t = kBase + kHour - 5 * kS; t < kBase + kHour; t += kS) {
      a.Feed(Window(t, 2));
      a.TickAt(t + 500 * kMs);
    }
    segment = ReadFile(commits / "p0-1.log");
    a.Feed(Window(kBase + kHour, 2));  // the next hour: the first is written
    a.TickAt(kBase + kHour + 500 * kMs);
    ASSERT_TRUE(WaitUntil([&] { return a.Counter("rows_archived") == 10u; }));
  }
  std::ofstream(commits / "p0-1.log", std::ios::binary) << segment;  // its deletion was lost
  OperatorHarness b("row_archive", Config(dir.path()));
  b.Feed(Window(kBase + kHour + kS, 2));
  b.TickAt(kBase + kHour + 2 * kS, /*drain=*/true);
  EXPECT_FALSE(fs::exists(commits / "p0-1.log"));
  ExpectEveryRowOnce(dir.path(), kBase + kHour - 5 * kS, kBase + kHour + 2 * kS, 2);
}

TEST(RowArchiveTest, ASegmentClosedButNotWrittenBeforeACrashIsWrittenByTheNextOwner) {
  TempDir dir;
  const fs::path commits = dir.path() / "_commits" / "op";
  std::string segment;
  {
    OperatorHarness a("row_archive", Config(dir.path()));
    for (int64_t t = kBase + kHour - 5 * kS; t < kBase + kHour + 2 * kS; t += kS) {
      if (t == kBase + kHour) segment = ReadFile(commits / "p0-1.log");
      a.Feed(Window(t, 2));
      a.TickAt(t + 500 * kMs);
    }
    ASSERT_TRUE(WaitUntil([&] { return a.Counter("rows_archived") == 10u; }));
  }
  // As if the worker was killed before its writer began the first hour: no record, no chunk.
  fs::remove_all(dir.path() / "rows=telemetry_1s");
  fs::remove(commits / "p0.json");
  std::ofstream(commits / "p0-1.log", std::ios::binary) << segment;
  OperatorHarness b("row_archive", Config(dir.path()));
  b.Feed(Window(kBase + kHour + 2 * kS, 2));
  b.TickAt(kBase + kHour + 3 * kS, /*drain=*/true);
  ExpectEveryRowOnce(dir.path(), kBase + kHour - 5 * kS, kBase + kHour + 3 * kS, 2);
}

TEST(RowArchiveTest, ALogThatCannotBeWrittenIsTriedAgainAndNothingIsLost) {
  TempDir dir;
  const fs::path segment = dir.path() / "_commits" / "op" / "p0-1.log";
  fs::create_directories(segment);  // not a file: the append fails until it is gone
  OperatorHarness h("row_archive", Config(dir.path()));
  std::thread feeding([&] {
    for (int64_t t = kBase; t < kBase + 3 * kS; t += kS) h.Feed(Window(t, 2));
  });
  EXPECT_TRUE(WaitUntil([&] { return h.Counter("flush_failures") >= 1; }));
  fs::remove(segment);  // the disk is back
  EXPECT_TRUE(WaitUntil([&] { return h.Counter("rows_logged") == 6u; }));
  feeding.join();
  h.TickAt(kBase + 4 * kS, /*drain=*/true);
  ExpectEveryRowOnce(dir.path(), kBase, kBase + 3 * kS, 2);
  EXPECT_EQ(h.Counter("rows_dropped"), 0u);
}

TEST(RowArchiveTest, ACorrectionReplacesTheLoggedRowAndOneAfterItsPeriodIsCountedLate) {
  TempDir dir;
  OperatorHarness h("row_archive", Config(dir.path()));
  const int64_t t0 = kBase + kHour - 2 * kS;
  h.Feed(Window(t0, 1));
  h.Feed(Window(t0 + kS, 1));
  h.Feed(Window(t0, 1, 0, /*shift=*/5.0));  // a late sample changed window t0
  h.TickAt(t0 + 2 * kS);
  EXPECT_EQ(h.Counter("rows_replaced"), 1u);
  h.Feed(Window(kBase + kHour, 1));         // the next hour: the first is written
  h.Feed(Window(t0, 1, 0, /*shift=*/9.0));  // too late: its hour is written
  EXPECT_EQ(h.Counter("rows_late"), 1u);
  h.TickAt(kBase + kHour + kS, /*drain=*/true);
  const Counted c = Count(ReadRows(dir.path()));
  EXPECT_EQ(c.n.size(), 3u);
  std::string ts;
  archive::AppendTime(ts, t0);
  EXPECT_EQ(c.n.at({"veh-0", ts}), 1);
  EXPECT_EQ(c.line.at({"veh-0", ts}), Expected(RowOf(0, t0, 5.0), t0));
}

TEST(RowArchiveTest, TheRetentionDeletesTheDaysWhollyOlderThanIt) {
  TempDir dir;
  OperatorHarness h("row_archive",
                    R"({"directory": ")" + dir.path().string() +
                        R"(", "stats_subject": "", "retention_days": 2, "row_set": "one"})");
  fs::create_directories(dir.path() / "rows=one" / "day=2026-11-10" / "hour=00");
  fs::create_directories(dir.path() / "rows=other" / "day=2026-11-10");
  fs::create_directories(dir.path() / "rows=one" / "day=2026-11-17");
  h.TickAt(kBase);  // 2026-11-18T09:00Z: 11-10 goes, 11-17 stays (not wholly older)
  ASSERT_TRUE(WaitUntil([&] { return h.Counter("archive_days_expired") == 1u; }));
  EXPECT_FALSE(fs::exists(dir.path() / "rows=one" / "day=2026-11-10"));
  EXPECT_TRUE(fs::exists(dir.path() / "rows=one" / "day=2026-11-17"));
  EXPECT_TRUE(fs::exists(dir.path() / "rows=other" / "day=2026-11-10")) << "another row set's";
}

TEST(RowArchiveTest, ADirectoryIsRequiredAndColumnsAreNamed) {
  EXPECT_THROW(OperatorHarness("row_archive", "{}"), std::invalid_argument);
  EXPECT_THROW(
      OperatorHarness("row_archive", R"({"directory": "/tmp/x", "columns": [{"sensor": "gps"}]})"),
      std::invalid_argument);
}

}  // namespace
}  // namespace fleetflow::testkit
