// The archive operator: chunks by sensor, period and cell with their summaries, written exactly
// once across flushes, hand-overs and crashes (the commit record and the checkpoint), the
// retention, and the files read back as any reader would (docs/archive.md).
#include "archive.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fleetflow/testkit/harness.hpp"
#include "layout.hpp"
#include "state_store.hpp"

namespace fleetflow::testkit {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'795'000'000 * kS;  // 2026-11-18T09:46:40Z

/// A fresh directory under the test's temporary folder, removed at the end.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("ff-archive-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// One line of a chunk, as any CSV reader would see it.
struct Line {
  std::string vehicle;
  std::string ts;
  std::string rest;  // lat,lon or value
};

struct Chunk {
  archive::ChunkPlace place;
  archive::Summary summary;
  std::string header;
  std::vector<Line> lines;
};

/// Every committed chunk under `root` (what a reader globbing **/*.csv.zst sees).
std::vector<Chunk> ReadArchive(const fs::path& root) {
  std::vector<Chunk> chunks;
  if (!fs::exists(root)) return chunks;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(e.path(), root).string();
    if (!e.is_regular_file() || rel.size() < 8 || rel.substr(rel.size() - 8) != ".csv.zst") {
      continue;
    }
    Chunk c;
    const auto place = archive::ParseChunkPath(rel);
    EXPECT_TRUE(place) << rel;
    if (!place) continue;
    c.place = *place;
    const auto summary = archive::ParseSummary(ReadFile(archive::SummaryPathOf(e.path().string())));
    EXPECT_TRUE(summary) << "no summary beside " << rel;
    if (summary) c.summary = *summary;
    const std::string data = ReadFile(e.path());
    EXPECT_EQ(c.summary.bytes, data.size()) << rel;
    const auto csv = archive::Decompress(data);
    EXPECT_TRUE(csv) << rel;
    if (!csv) continue;
    std::istringstream in(*csv);
    std::getline(in, c.header);
    for (std::string line; std::getline(in, line);) {
      const size_t a = line.find(','), b = line.find(',', a + 1);
      c.lines.push_back({line.substr(0, a), line.substr(a + 1, b - a - 1), line.substr(b + 1)});
    }
    chunks.push_back(std::move(c));
  }
  return chunks;
}

/// Waits until `done` holds, 10 s at most (the writer thread commits in the background).
template <typename F>
bool WaitFor(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

using SampleKey = std::tuple<std::string, std::string, int64_t>;  // vehicle, sensor, ts

/// How often each (vehicle, sensor, ts) is in the archive.
std::map<SampleKey, int> Count(const std::vector<Chunk>& chunks) {
  std::map<SampleKey, int> n;
  for (const Chunk& c : chunks) {
    for (const Line& l : c.lines) {
      const auto ts = archive::ParseTime(l.ts);
      EXPECT_TRUE(ts) << l.ts;
      ++n[{l.vehicle, c.place.sensor, ts.value_or(0)}];
    }
  }
  return n;
}

wire::Point Gps(int64_t ts_ns, uint32_t seq, double lat, double lon) {
  wire::Point p{ts_ns, seq, 0.0};
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  return p;
}

SampleBatch Batch(std::string vehicle, std::string sensor, std::vector<wire::Point> points,
                  uint32_t partition = 0, uint64_t sequence = 0) {
  SampleBatch b;
  b.vehicle = std::move(vehicle);
  b.sensor = std::move(sensor);
  b.points = std::move(points);
  b.partition = partition;
  b.sequence = sequence;
  return b;
}

std::string Config(const fs::path& dir, const std::string& more = "") {
  return R"({"directory": ")" + dir.string() + R"(", "stats_subject": "")" + more + "}";
}

TEST(ArchiveTest, WritesChunksBySensorPeriodAndCellSortedWithTheirSummaries) {
  TempDir dir;
  OperatorHarness h("archive", Config(dir.path(), R"(, "flush_ms": 1000)"));
  h.clock.Set(kBase);
  // v2 then v1 (sorted by vehicle in the chunk); gps in two cells (Paris and Munich), speed
  // after gps takes v1's cell; a sample past the hour goes to the next hour's folder.
  const int64_t hour_end = (kBase / (3600 * kS) + 1) * 3600 * kS;
  h.Feed(Batch("v2", "gps", {Gps(kBase + 2 * kS, 1, 48.8566, 2.3522)}));
  h.Feed(Batch("v1", "gps",
               {Gps(kBase + 1 * kS, 1, 48.8566, 2.3522), Gps(kBase + 3 * kS, 2, 48.137, 11.575)}));
  h.Feed(Batch("v1", "speed", {{kBase + 4 * kS, 1, 12.3456789}, {hour_end + kS, 2, 0.5}}));
  h.Feed(Batch("v0", "speed", {{kBase + 5 * kS, 1, 1.0 / 3.0}}));  // no position known
  EXPECT_EQ(h.Gauge("samples_buffered"), 6);
  h.TickAt(kBase + 500 * kMs);
  EXPECT_TRUE(ReadArchive(dir.path()).empty()) << "written before flush_ms";
  h.TickAt(kBase + 1000 * kMs);
  h.TickAt(kBase + 1000 * kMs, /*drain=*/true);

  std::map<std::string, Chunk> by_folder;
  for (Chunk& c : ReadArchive(dir.path())) {
    const std::string folder =
        archive::ChunkFolder(archive::SensorFolder(c.place.sensor), c.place.period_start_ns,
                             archive::Period::kHour, c.place.cell);
    by_folder[folder] = std::move(c);
  }
  const std::string paris = archive::Geohash(48.8566, 2.3522, 5);
  const std::string munich = archive::Geohash(48.137, 11.575, 5);
  ASSERT_EQ(by_folder.size(), 5u);
  const Chunk& g = by_folder.at(
      archive::ChunkFolder(archive::SensorFolder("gps"), kBase, archive::Period::kHour, paris));
  EXPECT_EQ(g.header, "vehicle_id,ts,lat,lon");
  ASSERT_EQ(g.lines.size(), 2u);
  EXPECT_EQ(g.lines[0].vehicle, "v1");
  EXPECT_EQ(g.lines[1].vehicle, "v2");
  EXPECT_EQ(g.lines[0].rest, "48.8566,2.3522");
  EXPECT_EQ(g.summary.samples, 2u);
  EXPECT_EQ(g.summary.vehicles, (std::vector<std::string>{"v1", "v2"}));
  EXPECT_EQ(g.summary.first_ns, kBase + 1 * kS);
  EXPECT_EQ(g.summary.last_ns, kBase + 2 * kS);
  ASSERT_TRUE(g.summary.box);
  EXPECT_EQ(g.summary.box->min_lat, 48.8566);
  EXPECT_TRUE(g.summary.positions);
  EXPECT_EQ(by_folder
                .at(archive::ChunkFolder(archive::SensorFolder("gps"), kBase,
                                         archive::Period::kHour, munich))
                .lines.size(),
            1u);
  const Chunk& s = by_folder.at(
      archive::ChunkFolder(archive::SensorFolder("speed"), kBase, archive::Period::kHour, munich));
  EXPECT_EQ(s.header, "vehicle_id,ts,value");
  ASSERT_EQ(s.lines.size(), 1u);
  EXPECT_EQ(s.lines[0].rest, "12.34568");  // 7 significant digits
  EXPECT_FALSE(s.summary.box);
  EXPECT_EQ(by_folder
                .at(archive::ChunkFolder(archive::SensorFolder("speed"), hour_end,
                                         archive::Period::kHour, munich))
                .lines.size(),
            1u);
  const Chunk& none = by_folder.at(archive::ChunkFolder(archive::SensorFolder("speed"), kBase,
                                                        archive::Period::kHour, archive::kNoCell));
  EXPECT_EQ(none.lines.at(0).rest, "0.3333333");
  EXPECT_EQ(h.Counter("chunks_committed"), 5u);
  EXPECT_EQ(h.Counter("samples_archived"), 6u);
  EXPECT_EQ(h.Gauge("samples_buffered"), 0);
  EXPECT_FALSE(fs::exists(dir.path() / "_tmp") && !fs::is_empty(dir.path() / "_tmp"))
      << "staged files left behind";
}

TEST(ArchiveTest, ASampleDeliveredTwiceInAFlushIsArchivedOnceAndSensorsNotAskedForAreIgnored) {
  TempDir dir;
  OperatorHarness h("archive", Config(dir.path(), R"(, "sensors": ["speed"])"));
  h.Feed(Batch("v1", "speed", {{kBase, 7, 1.0}, {kBase + kS, 8, 2.0}}));
  h.Feed(Batch("v1", "speed", {{kBase + kS, 8, 2.0}}));
  h.Feed(Batch("v1", "torque", {{kBase, 1, 1.0}}));
  h.TickAt(kBase, /*drain=*/true);
  const auto counts = Count(ReadArchive(dir.path()));
  EXPECT_EQ(counts.size(), 2u);
  for (const auto& [key, n] : counts) EXPECT_EQ(n, 1) << std::get<2>(key);
  EXPECT_EQ(h.Counter("samples_duplicate"), 1u);
  EXPECT_EQ(h.Counter("samples_ignored"), 1u);
}

TEST(ArchiveTest, ACopyGivenAnotherCellThanTheFirstIsStillArchivedOnce) {
  TempDir dir;
  OperatorHarness h("archive", Config(dir.path()));
  // Taken over: v1's speed comes before any of its positions (cell none), then a position, then
  // the same speed message again (its acknowledgement was late): its cell is known now.
  h.Feed(Batch("v1", "speed", {{kBase, 7, 1.0}}, 0, 10));
  h.Feed(Batch("v1", "gps", {Gps(kBase, 3, 48.8566, 2.3522)}, 0, 11));
  h.Feed(Batch("v1", "speed", {{kBase, 7, 1.0}}, 0, 10));
  h.TickAt(kBase, /*drain=*/true);
  const auto counts = Count(ReadArchive(dir.path()));
  EXPECT_EQ(counts.size(), 2u);
  for (const auto& [key, n] : counts) EXPECT_EQ(n, 1) << std::get<1>(key);
  EXPECT_EQ(h.Counter("samples_duplicate"), 1u);
}

TEST(ArchiveTest, AMessageDeliveredAgainAfterItsFlushIsNotArchivedAgain) {
  TempDir dir;
  OperatorHarness h("archive", Config(dir.path(), R"(, "flush_ms": 1000)"));
  h.clock.Set(kBase);
  h.Feed(Batch("v1", "speed", {{kBase, 1, 1.0}}, 0, 1));
  h.Feed(Batch("v1", "speed", {{kBase + kS, 2, 2.0}}, 0, 2));
  h.TickAt(kBase + 1000 * kMs);                           // flushed
  h.Feed(Batch("v1", "speed", {{kBase, 1, 1.0}}, 0, 1));  // its acknowledgement was late
  h.Feed(Batch("v1", "speed", {{kBase + 2 * kS, 3, 3.0}}, 0, 3));
  h.TickAt(kBase + 2000 * kMs, /*drain=*/true);
  const auto counts = Count(ReadArchive(dir.path()));
  EXPECT_EQ(counts.size(), 3u);
  for (const auto& [key, n] : counts) EXPECT_EQ(n, 1) << std::get<2>(key);
  EXPECT_EQ(h.Counter("samples_in_archive"), 1u);
}

/// A partition's stream: vehicles' gps and speed messages with sequences 1..N.
std::vector<SampleBatch> Stream(uint32_t partition, size_t messages, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> size(1, 5);
  std::vector<SampleBatch> out;
  std::map<std::string, uint32_t> seq;
  int64_t t = kBase;
  for (size_t i = 0; i < messages; ++i) {
    const std::string vehicle = "v" + std::to_string(rng() % 7);
    const bool gps = rng() % 2 == 0;
    const std::string sensor = gps ? "gps" : "speed";
    std::vector<wire::Point> points;
    for (int k = size(rng); k > 0; --k) {
      t += 37 * kMs;
      const uint32_t s = ++seq[vehicle + sensor];
      points.push_back(gps ? Gps(t, s, 48.0 + (rng() % 1000) * 2e-5, 2.0 + (rng() % 1000) * 3e-5)
                           : wire::Point{t, s, static_cast<double>(rng() % 100)});
    }
    out.push_back(Batch(vehicle, sensor, std::move(points), partition, i + 1));
  }
  return out;
}

std::map<SampleKey, int> Expected(const std::vector<SampleBatch>& stream) {
  std::map<SampleKey, int> n;
  for (const SampleBatch& b : stream) {
    for (const wire::Point& p : b.points) n[{b.vehicle, b.sensor, p.ts_ns}] = 1;
  }
  return n;
}

class ArchiveHandOver : public ::testing::Test {
 protected:
  ArchiveHandOver() { RegisterArchive(registry_, store_); }

  std::unique_ptr<OperatorHarness> Worker() {
    HarnessOptions o;
    o.registry = &registry_;
    o.node_id = "arch";
    return std::make_unique<OperatorHarness>("archive",
                                             Config(dir_.path(), R"(, "flush_ms": 1000)"), o);
  }

  /// Where a partition's next owner's source re-reads from: after the stored checkpoint.
  size_t Reread(uint32_t p) { return store_->Restore(p).checkpoint.value_or(0); }

  static void Assign(OperatorHarness& h, uint32_t p) {
    PartitionEvent e;
    e.kind = PartitionEvent::Kind::kAssigned;
    e.partition = p;
    h.Feed(e);
  }
  static void Revoke(OperatorHarness& h, uint32_t p) {
    PartitionEvent e;
    e.kind = PartitionEvent::Kind::kRevoked;
    e.partition = p;
    e.handover = std::make_shared<Handover>();
    h.Feed(e);
  }

  TempDir dir_;
  std::shared_ptr<MemorySnapshotStore> store_ = std::make_shared<MemorySnapshotStore>();
  Registry registry_;
};

TEST_F(ArchiveHandOver, EverySampleIsArchivedOnceAcrossAHandOverAndACrashMidFlush) {
  const uint32_t kP = 5;
  const std::vector<SampleBatch> stream = Stream(kP, 600, 17);
  int64_t clock = kBase;
  {
    // Worker A: flushes twice, then is revoked at message 300 (a SIGTERM hand-over).
    auto a = Worker();
    Assign(*a, kP);
    for (size_t i = 0; i < 300; ++i) {
      a->Feed(stream[i]);
      if (i % 100 == 99) a->TickAt(clock += 1000 * kMs);
    }
    Revoke(*a, kP);
  }
  EXPECT_EQ(Reread(kP), 300u);
  {
    // Worker B: takes it over, flushes, takes 100 more and dies (kill -9: no drain).
    auto b = Worker();
    Assign(*b, kP);
    for (size_t i = Reread(kP); i < 500; ++i) {
      b->Feed(stream[i]);
      if (i == 399) b->TickAt(clock += 1000 * kMs);
    }
    ASSERT_TRUE(WaitFor([&] { return Reread(kP) == 400; }));
  }
  EXPECT_EQ(Reread(kP), 400u);
  {
    // Worker C: re-reads after the checkpoint; its first flush dies between the commit record
    // and the renames (simulated: its files moved back to their staged names).
    auto c = Worker();
    Assign(*c, kP);
    for (size_t i = Reread(kP); i < 550; ++i) c->Feed(stream[i]);
    c->TickAt(clock += 1000 * kMs);
    ASSERT_TRUE(WaitFor([&] { return Reread(kP) == 550; }));
  }
  const std::string record = ReadFile(dir_.path() / "_commits" / "arch" / "p5.json");
  ASSERT_NE(record.find("\"last_sequence\":550"), std::string::npos) << record;
  size_t unmoved = 0;
  for (const Chunk& ch : ReadArchive(dir_.path())) {
    if (ch.summary.last_sequence != 550) continue;
    // Put the flush's files back where they were staged, as if the renames had not happened.
    const auto at = [&](const std::string& to) {
      const size_t k = record.find("\"to\":\"" + to + "\"");
      const size_t from = record.rfind("\"from\":\"", k) + 8;
      return record.substr(from, record.find('"', from) - from);
    };
    const std::string folder =
        archive::ChunkFolder(archive::SensorFolder(ch.place.sensor), ch.place.period_start_ns,
                             archive::Period::kHour, ch.place.cell);
    const std::string chunk = folder + "/" + ch.place.name;
    fs::rename(dir_.path() / chunk, dir_.path() / at(chunk));
    fs::rename(dir_.path() / archive::SummaryPathOf(chunk),
               dir_.path() / at(archive::SummaryPathOf(chunk)));
    ++unmoved;
  }
  ASSERT_GT(unmoved, 0u);
  // Had C died before its renames, its checkpoint would not have been stored: the next owner
  // re-reads from B's, skips up to the record's 550 and finishes the renames.
  store_->Save(kP, {}, 400);
  {
    auto d = Worker();
    Assign(*d, kP);
    for (size_t i = Reread(kP); i < stream.size(); ++i) d->Feed(stream[i]);
    d->TickAt(clock += 1000 * kMs, /*drain=*/true);
    EXPECT_GT(d->Counter("samples_in_archive"), 0u);
  }
  EXPECT_EQ(Count(ReadArchive(dir_.path())), Expected(stream));
}

TEST_F(ArchiveHandOver, FilesOfAFlushWhoseRecordWasNeverStoredAreDeletedByTheNextOwner) {
  const uint32_t kP = 2;
  fs::create_directories(dir_.path() / "_tmp");
  std::ofstream(dir_.path() / "_tmp" / "arch.p2.part-2-1-9.0.csv.zst.tmp") << "half written";
  std::ofstream(dir_.path() / "_tmp" / "arch.p3.part-3-1-9.0.csv.zst.tmp") << "another's";
  auto w = Worker();
  Assign(*w, kP);
  EXPECT_FALSE(fs::exists(dir_.path() / "_tmp" / "arch.p2.part-2-1-9.0.csv.zst.tmp"));
  EXPECT_TRUE(fs::exists(dir_.path() / "_tmp" / "arch.p3.part-3-1-9.0.csv.zst.tmp"));
}

TEST(ArchiveTest, TheRetentionDeletesTheDaysWhollyOlderThanItOnTheOwnerOfPartitionZero) {
  TempDir dir;
  OperatorHarness h("archive", Config(dir.path(), R"(, "retention_days": 2, "period": "day")"));
  const int64_t day = 86'400 * kS;
  const int64_t today = kBase / day * day;
  for (int d = 0; d < 4; ++d) {
    h.Feed(Batch("v1", "speed", {{today - d * day + kS, 1, 1.0}}));
  }
  h.TickAt(today + 2 * kS, /*drain=*/true);  // written; the retention runs at the first tick
  h.TickAt(today + 3 * kS);
  ASSERT_TRUE(h.op().Ready());
  // The writer runs the retention after the flush.
  std::set<int64_t> days;
  WaitFor([&] { return h.Counter("archive_days_expired") == 1; });
  for (const Chunk& c : ReadArchive(dir.path())) days.insert(c.place.period_start_ns);
  // Deleted: the day that ended more than two days ago (today - 3 days ends at today - 2 days);
  // the day before yesterday ended a day and a half ago: kept.
  EXPECT_EQ(days, (std::set<int64_t>{today - 2 * day, today - day, today}));
  EXPECT_EQ(h.Counter("archive_days_expired"), 1u);
}

TEST(ArchiveTest, TwoFlushesAtOneClockTimeWithoutSequencesKeepBothChunks) {
  TempDir dir;  // a replay: no sequences, the clock stands still between recorded times
  OperatorHarness h("archive", Config(dir.path(), R"(, "max_buffered_samples": 1)"));
  h.clock.Set(kBase);
  h.Feed(Batch("v1", "speed", {{kBase, 1, 1.0}}));
  h.Feed(Batch("v1", "speed", {{kBase + kS, 2, 2.0}}));
  h.TickAt(kBase, /*drain=*/true);
  EXPECT_EQ(Count(ReadArchive(dir.path())).size(), 2u);
  EXPECT_EQ(h.Counter("chunks_committed"), 2u);
}

TEST(ArchiveTest, ADirectoryIsRequired) {
  EXPECT_THROW(OperatorHarness("archive", "{}"), std::invalid_argument);
}

}  // namespace
}  // namespace fleetflow::testkit
