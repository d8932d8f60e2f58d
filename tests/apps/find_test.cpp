// `fleetflow find --pg` against a real PostgreSQL with PostGIS: a generated fleet's 1 s rows
// (seeded random walks that cross the area's edges, and rows exactly on them), the vehicles in a
// rectangle during a period as computed here without a geometry library, from the lat/lon
// columns and from a point geometry column with its GiST index; and every bad input refused with
// what is wrong. `fleetflow find --archive` (FindArchiveTest, no server) the same way on an
// archive written here.
#include "find.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <tuple>

#include "layout.hpp"
#include "pg_client.hpp"
#include "servers.hpp"
#include "utc_time.hpp"

namespace fleetflow {
namespace {

using testing::PostgresServer;
using testing::TempDir;

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'767'225'600 * kS;  // 2026-01-01T00:00:00Z
constexpr int kVehicles = 40;
constexpr int kSeconds = 900;

// The area: lon 2.30 .. 2.40, lat 48.80 .. 48.90 (a rectangle, so that inside is two comparisons).
constexpr double kLon0 = 2.30, kLon1 = 2.40, kLat0 = 48.80, kLat1 = 48.90;
constexpr char kRectangle[] =
    R"({"type": "Polygon", "coordinates": [[[2.30, 48.80], [2.40, 48.80], [2.40, 48.90],
        [2.30, 48.90], [2.30, 48.80]]]})";

struct Row {
  std::string vehicle;
  int64_t time_ns;
  double lat, lon;
};

/// Seeded walks around the area (most vehicles cross an edge some time), one row a second, and a
/// vehicle standing on the southern edge and one on the western edge.
std::vector<Row> Fleet() {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> start_lat(48.70, 49.00), start_lon(2.20, 2.50);
  std::normal_distribution<double> step(0, 0.0015);
  std::vector<Row> rows;
  for (int v = 0; v < kVehicles; ++v) {
    double lat = start_lat(rng), lon = start_lon(rng);
    for (int s = 0; s < kSeconds; ++s) {
      rows.push_back({"car" + std::to_string(v), kStart + s * kS, lat, lon});
      lat += step(rng);
      lon += step(rng);
    }
  }
  for (int s = 0; s < kSeconds; s += 10) {
    rows.push_back({"edge-south", kStart + s * kS, kLat0, 2.35});
    rows.push_back({"edge-west", kStart + s * kS, 48.85, kLon0});
  }
  return rows;
}

/// What find must print as CSV for the period [from, to), computed from the rows.
std::string Expected(const std::vector<Row>& rows, int64_t from, int64_t to) {
  struct Seen {
    int64_t first = 0, last = 0;
    uint64_t n = 0;
  };
  std::map<std::string, Seen> by_vehicle;
  for (const Row& r : rows) {
    if (r.time_ns < from || r.time_ns >= to) continue;
    if (r.lat < kLat0 || r.lat > kLat1 || r.lon < kLon0 || r.lon > kLon1) continue;
    Seen& s = by_vehicle[r.vehicle];
    if (s.n == 0 || r.time_ns < s.first) s.first = r.time_ns;
    if (s.n == 0 || r.time_ns > s.last) s.last = r.time_ns;
    ++s.n;
  }
  std::string out = "vehicle_id,first_inside,last_inside,samples_inside\n";
  for (const auto& [vehicle, s] : by_vehicle) {
    out += vehicle + "," + FormatUtc(s.first) + "," + FormatUtc(s.last) + "," +
           std::to_string(s.n) + "\n";
  }
  return out;
}

class FindPgTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!PostgresServer::Available()) return;
    server_ = new PostgresServer();
    try {
      server_->Start();
      Load();
    } catch (const std::exception& e) {
      start_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  /// The fleet's rows in vehicle_telemetry as the sink makes it (lat/lon columns, no geometry).
  static void Load() {
    server_->Psql("CREATE EXTENSION IF NOT EXISTS postgis");
    server_->Psql(
        "CREATE TABLE vehicle_telemetry (vehicle_id text NOT NULL, time timestamptz NOT NULL, "
        "lat double precision, lon double precision, speed double precision, "
        "PRIMARY KEY (vehicle_id, time))");
    std::ostringstream sql;
    sql.precision(17);
    sql << "INSERT INTO vehicle_telemetry (vehicle_id, time, lat, lon) VALUES ";
    const auto rows = Fleet();
    for (size_t i = 0; i < rows.size(); ++i) {
      sql << (i ? "," : "") << "('" << rows[i].vehicle << "', timestamptz 'epoch' + "
          << rows[i].time_ns / 1000 << " * interval '1 microsecond', " << rows[i].lat << ", "
          << rows[i].lon << ")";
    }
    pg::Connection::Connect(server_->conninfo())->Exec(sql.str());
  }

  void SetUp() override {
    if (!PostgresServer::Available()) {
      GTEST_SKIP() << "*** PostgreSQL server binaries (initdb, postgres, psql, pg_isready) not "
                      "found: these integration tests did NOT run; run scripts/deps.sh ***";
    }
    FF_REQUIRE_POSTGIS();
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  std::string Area(const std::string& json) {
    const std::string path = dir_.File("area" + std::to_string(++areas_) + ".geojson");
    std::ofstream(path) << json;
    return path;
  }

  /// Runs find; its status, and what it printed to stdout and stderr.
  struct Result {
    int status;
    std::string out, err;
  };
  Result Run(FindArgs args) {
    if (args.conninfo.empty()) args.conninfo = server_->conninfo();
    std::ostringstream out, err;
    const int status = Find(args, out, err);
    return {status, out.str(), err.str()};
  }
  FindArgs Args(const std::string& area, int64_t from, int64_t to, const std::string& format) {
    FindArgs a;
    a.area = area;
    a.from = FormatUtc(from);
    a.to = FormatUtc(to);
    a.pg = true;
    a.format = format;
    return a;
  }

  static PostgresServer* server_;
  static std::string start_error_;
  TempDir dir_{"fleetflow-find"};
  int areas_ = 0;
};

PostgresServer* FindPgTest::server_ = nullptr;
std::string FindPgTest::start_error_;

TEST_F(FindPgTest, TheVehiclesInARectangleDuringAPeriodAreTheOnesComputedFromTheRows) {
  const auto rows = Fleet();
  const int64_t from = kStart + 120 * kS, to = kStart + 600 * kS;
  const std::string expected = Expected(rows, from, to);
  // A header, then one line per vehicle.
  const size_t lines = static_cast<size_t>(std::count(expected.begin(), expected.end(), '\n'));
  const size_t vehicles = lines - 1;
  ASSERT_GT(vehicles, 5u) << "the walks cross the area";
  ASSERT_LT(vehicles, kVehicles + 2u) << "and some stay out";
  ASSERT_NE(expected.find("edge-south,"), std::string::npos) << "on the edge is inside";
  ASSERT_NE(expected.find("edge-west,"), std::string::npos);

  const Result lat_lon = Run(Args(Area(kRectangle), from, to, "csv"));
  ASSERT_EQ(lat_lon.status, 0) << lat_lon.err;
  EXPECT_EQ(lat_lon.out, expected);
  EXPECT_NE(lat_lon.err.find(std::to_string(vehicles) + " vehicles in the area"), std::string::npos)
      << lat_lon.err;

  // The same from a point geometry column with its GiST index (the sink's geometry setting).
  server_->Psql(
      "ALTER TABLE vehicle_telemetry ADD COLUMN position geometry(Point, 4326); "
      "UPDATE vehicle_telemetry SET position = ST_SetSRID(ST_MakePoint(lon, lat), 4326); "
      "CREATE INDEX vehicle_telemetry_position_idx ON vehicle_telemetry USING gist (position)");
  const Result column = Run(Args(Area(kRectangle), from, to, "csv"));
  server_->Psql("ALTER TABLE vehicle_telemetry DROP COLUMN position");
  ASSERT_EQ(column.status, 0) << column.err;
  EXPECT_EQ(column.out, expected);

  // A MultiPolygon of the rectangle and a square far away, where nobody drives: the same.
  const Result halves = Run(Args(Area(R"({"type": "Feature", "properties": {}, "geometry":
      {"type": "MultiPolygon", "coordinates": [
        [[[2.30, 48.80], [2.40, 48.80], [2.40, 48.90], [2.30, 48.90], [2.30, 48.80]]],
        [[[5.00, 45.00], [5.10, 45.00], [5.10, 45.10], [5.00, 45.10], [5.00, 45.00]]]]}})"),
                                 from, to, "csv"));
  ASSERT_EQ(halves.status, 0) << halves.err;
  EXPECT_EQ(halves.out, expected);

  // The table and JSON forms hold the same vehicles.
  const Result table = Run(Args(Area(kRectangle), from, to, "table"));
  ASSERT_EQ(table.status, 0);
  EXPECT_EQ(table.out.rfind("vehicle_id", 0), 0u) << table.out;
  EXPECT_EQ(static_cast<size_t>(std::count(table.out.begin(), table.out.end(), '\n')), lines);
  const Result json = Run(Args(Area(kRectangle), from, to, "json"));
  ASSERT_EQ(json.status, 0);
  EXPECT_EQ(static_cast<size_t>(std::count(json.out.begin(), json.out.end(), '{')), vehicles);
  EXPECT_NE(json.out.find(R"("vehicle_id": "edge-south")"), std::string::npos) << json.out;
}

TEST_F(FindPgTest, APeriodBeforeTheTablesRowsIsSaidAndAnEmptyAnswerIsNoError) {
  const Result r = Run(Args(Area(kRectangle), kStart - 3600 * kS, kStart - 60 * kS, "csv"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "vehicle_id,first_inside,last_inside,samples_inside\n");
  EXPECT_NE(r.err.find("holds rows from 2026-01-01T00:00:00.000Z on"), std::string::npos) << r.err;
}

TEST_F(FindPgTest, BadAreasPeriodsAndPlacesAreRefusedWithWhatIsWrong) {
  const int64_t from = kStart, to = kStart + 60 * kS;
  const auto refused = [&](FindArgs args, int status, const std::string& said) {
    const Result r = Run(std::move(args));
    EXPECT_EQ(r.status, status) << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  };
  refused(Args(Area(R"({"type": "Point", "coordinates": [2.3, 48.8]})"), from, to, "csv"), 2,
          "is not a GeoJSON Polygon or MultiPolygon (nor a Feature of one): it is a Point");
  refused(Args(Area("{not json"), from, to, "csv"), 2, "is not JSON");
  refused(Args(Area(R"({"type": "Polygon", "coordinates": [[[200, 48.8], [2.4, 48.8],
      [2.4, 48.9], [200, 48.8]]]})"),
               from, to, "csv"),
          2, "is not a WGS 84 longitude and latitude");
  // A bow tie crosses itself.
  refused(Args(Area(R"({"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.9],
      [2.4, 48.8], [2.3, 48.9], [2.3, 48.8]]]})"),
               from, to, "csv"),
          2, "is not a valid polygon: Self-intersection");
  refused(Args(Area(kRectangle), to, from, "csv"), 2, "is empty: --to must come after --from");
  FindArgs bad_time = Args(Area(kRectangle), from, to, "csv");
  bad_time.from = "yesterday";
  refused(bad_time, 2, "--from 'yesterday' is not an RFC 3339 time");
  FindArgs nowhere = Args(Area(kRectangle), from, to, "csv");
  nowhere.pg = false;
  refused(nowhere, 2, "say where to look: --pg");
  FindArgs other_table = Args(Area(kRectangle), from, to, "csv");
  other_table.table = "vehicle_stats_2m";
  refused(other_table, 1, "has no table vehicle_stats_2m");

  server_->Psql("CREATE DATABASE without_postgis");
  FindArgs no_postgis = Args(Area(kRectangle), from, to, "csv");
  no_postgis.conninfo = server_->conninfo() + " dbname=without_postgis";
  refused(no_postgis, 1, "has no PostGIS");
}

// find --archive: an archive written here with the layout's functions (operators/archive/
// layout.hpp) from a generated fleet, hour periods and cells of about 5 km, against the vehicles
// computed here from the samples with a point-in-polygon test of its own (exact, in integers of
// 1e-7 degree, the positions' precision in the chunks), not GEOS.

constexpr int kArchiveVehicles = 50;
constexpr int kArchiveHours = 4;
constexpr int64_t kEvery = 5 * kS;
constexpr int kCellPrecision = 5;

/// A position as the chunks hold it: degrees to 7 decimals, here in integers of 1e-7 degree.
struct Fixed7 {
  int64_t lon, lat;
};
int64_t ToFixed7(double degrees) { return std::llround(degrees * 1e7); }

using Ring = std::vector<Fixed7>;
using Polygon = std::vector<Ring>;  // the shell, then its holes

/// -1 outside the ring, 0 on it, 1 inside (crossings of a ray towards +lon).
int Side(const Ring& ring, Fixed7 p) {
  bool inside = false;
  for (size_t i = 0; i + 1 < ring.size(); ++i) {
    const Fixed7 a = ring[i], b = ring[i + 1];
    const int64_t cross = (b.lon - a.lon) * (p.lat - a.lat) - (p.lon - a.lon) * (b.lat - a.lat);
    if (cross == 0 && std::min(a.lon, b.lon) <= p.lon && p.lon <= std::max(a.lon, b.lon) &&
        std::min(a.lat, b.lat) <= p.lat && p.lat <= std::max(a.lat, b.lat)) {
      return 0;
    }
    if ((a.lat > p.lat) != (b.lat > p.lat) && cross * (b.lat - a.lat) > 0) inside = !inside;
  }
  return inside ? 1 : -1;
}

/// In the shell and in none of its holes, the rings included.
bool Covers(const std::vector<Polygon>& area, Fixed7 p) {
  for (const Polygon& polygon : area) {
    if (Side(polygon[0], p) < 0) continue;
    bool in_hole = false;
    for (size_t h = 1; h < polygon.size(); ++h) in_hole = in_hole || Side(polygon[h], p) > 0;
    if (!in_hole) return true;
  }
  return false;
}

std::string RingJson(const Ring& ring) {
  std::string s = "[";
  for (size_t i = 0; i < ring.size(); ++i) {
    s += i ? ", [" : "[";
    archive::AppendFixed(s, static_cast<double>(ring[i].lon) / 1e7, 7);
    s += ", ";
    archive::AppendFixed(s, static_cast<double>(ring[i].lat) / 1e7, 7);
    s += "]";
  }
  return s + "]";
}

std::string GeoJson(const std::vector<Polygon>& area) {
  std::string s = R"({"type": "MultiPolygon", "coordinates": [)";
  for (size_t p = 0; p < area.size(); ++p) {
    s += p ? ", [" : "[";
    for (size_t r = 0; r < area[p].size(); ++r) s += (r ? ", " : "") + RingJson(area[p][r]);
    s += "]";
  }
  return s + "]}";
}

Ring Rectangle(double lon0, double lat0, double lon1, double lat1) {
  return {{ToFixed7(lon0), ToFixed7(lat0)},
          {ToFixed7(lon1), ToFixed7(lat0)},
          {ToFixed7(lon1), ToFixed7(lat1)},
          {ToFixed7(lon0), ToFixed7(lat1)},
          {ToFixed7(lon0), ToFixed7(lat0)}};
}

// The area: a rectangle whose corners are exact in binary (2.25, 48.75, 2.375, 48.875) with a
// rectangular hole, and a triangle of slanted edges. Vehicles stand on a corner, on an edge, on
// the hole's edge, in the hole and just outside.
const std::vector<Polygon> kArea = {
    {Rectangle(2.25, 48.75, 2.375, 48.875), Rectangle(2.3125, 48.8125, 2.34375, 48.84375)},
    {{{{ToFixed7(2.42), ToFixed7(48.70)},
       {ToFixed7(2.48), ToFixed7(48.71)},
       {ToFixed7(2.45), ToFixed7(48.77)},
       {ToFixed7(2.42), ToFixed7(48.70)}}}}};

struct Sample {
  std::string vehicle;
  int64_t ts_ns;
  double lat, lon;  // as the chunk's text reads back
  Fixed7 at;
};

/// Seeded tracks pulled towards a centre of their own around the area (so that they cross its
/// edges), a sample every 5 s with a jitter of microseconds, and vehicles standing still on the
/// area's boundary, in its hole, just outside, and one without a cell.
std::vector<Sample> ArchiveFleet() {
  std::mt19937 rng(2026);
  std::uniform_real_distribution<double> centre_lat(48.68, 48.94), centre_lon(2.18, 2.50);
  std::normal_distribution<double> step(0, 0.004);
  std::uniform_int_distribution<int64_t> jitter_us(0, 999'999);
  std::vector<Sample> samples;
  const auto add = [&](const std::string& vehicle, int64_t ts, double lat, double lon) {
    // What the chunk holds: 7 decimals, read back as a reader does.
    std::string text;
    archive::AppendFixed(text, lat, 7);
    const double lat7 = std::stod(text);
    text.clear();
    archive::AppendFixed(text, lon, 7);
    const double lon7 = std::stod(text);
    samples.push_back({vehicle, ts, lat7, lon7, {ToFixed7(lon7), ToFixed7(lat7)}});
  };
  const int64_t steps = kArchiveHours * 3600 * kS / kEvery;
  for (int v = 0; v < kArchiveVehicles; ++v) {
    const double c_lat = centre_lat(rng), c_lon = centre_lon(rng);
    double lat = c_lat + step(rng) * 5, lon = c_lon + step(rng) * 5;
    for (int64_t i = 0; i < steps; ++i) {
      add("car" + std::to_string(v), kStart + i * kEvery + jitter_us(rng) * 1000, lat, lon);
      lat += 0.01 * (c_lat - lat) + step(rng);
      lon += 0.01 * (c_lon - lon) + step(rng);
    }
  }
  for (int64_t i = 0; i < steps; i += 12) {
    const int64_t ts = kStart + i * kEvery;
    add("edge-corner", ts, 48.75, 2.25);
    add("edge-south", ts + 1000, 48.75, 2.3);
    add("edge-hole", ts + 2000, 48.825, 2.3125);
    add("in-hole", ts + 3000, 48.828, 2.328);
    add("just-outside", ts + 4000, 48.7499999, 2.3);
    add("triangle-corner", ts + 5000, 48.71, 2.48);
  }
  return samples;
}

/// The CSV find must print for [from, to) and the area, from `samples`.
std::string ExpectedCsv(const std::vector<Sample>& samples, const std::vector<Polygon>& area,
                        int64_t from, int64_t to) {
  struct Seen {
    int64_t first = 0, last = 0;
    uint64_t n = 0;
  };
  std::map<std::string, Seen> by_vehicle;
  for (const Sample& s : samples) {
    if (s.ts_ns < from || s.ts_ns >= to || !Covers(area, s.at)) continue;
    Seen& seen = by_vehicle[s.vehicle];
    if (seen.n == 0 || s.ts_ns < seen.first) seen.first = s.ts_ns;
    if (seen.n == 0 || s.ts_ns > seen.last) seen.last = s.ts_ns;
    ++seen.n;
  }
  std::string out = "vehicle_id,first_inside,last_inside,samples_inside\n";
  for (const auto& [vehicle, seen] : by_vehicle) {
    out += vehicle + "," + FormatUtc(seen.first) + "," + FormatUtc(seen.last) + "," +
           std::to_string(seen.n) + "\n";
  }
  return out;
}

/// One chunk written: its path under the root, the period it is in and its samples.
struct WrittenChunk {
  std::string relative;
  int64_t period_start;
  std::string cell;
  std::vector<size_t> samples;  // indexes into the fleet's samples
};

void WriteFile(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << data;
}

/// The chunk's CSV, sorted by vehicle then time, and its summary.
std::pair<std::string, std::string> ChunkFiles(const std::vector<Sample>& fleet,
                                               const WrittenChunk& chunk) {
  std::vector<size_t> order = chunk.samples;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(fleet[a].vehicle, fleet[a].ts_ns) < std::tie(fleet[b].vehicle, fleet[b].ts_ns);
  });
  std::string csv(archive::CsvHeader(true));
  archive::Summary summary;
  summary.sensor = "gps";
  summary.positions = true;
  for (const size_t i : order) {
    const Sample& s = fleet[i];
    csv += s.vehicle + ",";
    archive::AppendTime(csv, s.ts_ns);
    csv += ",";
    archive::AppendFixed(csv, s.lat, 7);
    csv += ",";
    archive::AppendFixed(csv, s.lon, 7);
    csv += "\n";
    if (summary.samples++ == 0) {
      summary.first_ns = summary.last_ns = s.ts_ns;
      summary.box = archive::Box{s.lat, s.lat, s.lon, s.lon};
    }
    summary.first_ns = std::min(summary.first_ns, s.ts_ns);
    summary.last_ns = std::max(summary.last_ns, s.ts_ns);
    summary.box->min_lat = std::min(summary.box->min_lat, s.lat);
    summary.box->max_lat = std::max(summary.box->max_lat, s.lat);
    summary.box->min_lon = std::min(summary.box->min_lon, s.lon);
    summary.box->max_lon = std::max(summary.box->max_lon, s.lon);
    if (summary.vehicles.empty() || summary.vehicles.back() != s.vehicle) {
      summary.vehicles.push_back(s.vehicle);
    }
  }
  std::string compressed = archive::Compress(csv, 3);
  summary.bytes = compressed.size();
  return {std::move(compressed), archive::ToJson(summary)};
}

class FindArchiveTest : public ::testing::Test {
 protected:
  /// The fleet's samples in an archive of hour periods and cells of precision 5, the vehicles
  /// of each folder split in two chunks; one chunk without its summary; temporary files beside
  /// (ignored).
  static void SetUpTestSuite() {
    fleet_ = new std::vector<Sample>(ArchiveFleet());
    root_ = new TempDir("fleetflow-find-archive");
    chunks_ = new std::vector<WrittenChunk>();
    std::map<std::string, size_t> by_path;
    for (size_t i = 0; i < fleet_->size(); ++i) {
      const Sample& s = (*fleet_)[i];
      std::string cell = s.vehicle == "no-cell" ? std::string(archive::kNoCell)
                                                : archive::Geohash(s.lat, s.lon, kCellPrecision);
      const std::string folder =
          archive::ChunkFolder(archive::SensorFolder("gps"), s.ts_ns, archive::Period::kHour, cell);
      const bool second = s.vehicle >= "car3";
      const std::string relative =
          folder + (second ? "/p0-000002" : "/p0-000001") + std::string(archive::kChunkSuffix);
      auto [at, added] = by_path.try_emplace(relative, chunks_->size());
      if (added) {
        const int64_t period = s.ts_ns - (s.ts_ns - kStart) % (3600 * kS);
        chunks_->push_back({relative, period, cell, {}});
      }
      (*chunks_)[at->second].samples.push_back(i);
    }
    for (const WrittenChunk& chunk : *chunks_) {
      const auto [data, summary] = ChunkFiles(*fleet_, chunk);
      const std::string path = root_->File(chunk.relative);
      WriteFile(path, data);
      WriteFile(archive::SummaryPathOf(path), summary);
    }
    // A sample in the area without a cell: a position sensor's chunks there are not read.
    const WrittenChunk& first = chunks_->front();
    WrittenChunk no_cell{"", first.period_start, std::string(archive::kNoCell), {}};
    fleet_->push_back({"no-cell", kStart + 1000, 48.8, 2.3, {ToFixed7(2.3), ToFixed7(48.8)}});
    no_cell.samples.push_back(fleet_->size() - 1);
    no_cell.relative =
        archive::ChunkFolder(archive::SensorFolder("gps"), kStart, archive::Period::kHour, "none") +
        "/p0-000001" + std::string(archive::kChunkSuffix);
    const auto [data, summary] = ChunkFiles(*fleet_, no_cell);
    WriteFile(root_->File(no_cell.relative), data);
    chunks_->push_back(no_cell);
    // A chunk whose summary is not there (yet): it is read.
    for (const WrittenChunk& chunk : *chunks_) {
      if (chunk.cell == "u09ts" && chunk.period_start == kStart + 3600 * kS) {
        std::filesystem::remove(archive::SummaryPathOf(root_->File(chunk.relative)));
        without_summary_ = new std::string(chunk.relative);
        break;
      }
    }
    // Files being written: ignored.
    WriteFile(root_->File(chunks_->front().relative) + ".tmp", "half a chunk");
    WriteFile(root_->File("sensor=gps/day=2026-01-01/hour=00/cell=u09tn/.p0-9.csv.zst.tmp"), "x");
  }
  static void TearDownTestSuite() {
    delete fleet_;
    delete chunks_;
    delete root_;
    delete without_summary_;
    fleet_ = nullptr;
    chunks_ = nullptr;
    root_ = nullptr;
    without_summary_ = nullptr;
  }

  /// The samples of the area outside the chunks of cell none, which find does not read.
  static std::vector<Sample> Readable() {
    std::vector<Sample> readable;
    for (const Sample& s : *fleet_) {
      if (s.vehicle != "no-cell") readable.push_back(s);
    }
    return readable;
  }

  std::string Area(const std::string& json) {
    const std::string path = dir_.File("area" + std::to_string(++areas_) + ".geojson");
    std::ofstream(path) << json;
    return path;
  }

  struct Result {
    int status;
    std::string out, err;
  };
  static Result Run(const FindArgs& args) {
    std::ostringstream out, err;
    const int status = Find(args, out, err);
    return {status, out.str(), err.str()};
  }
  FindArgs Args(const std::string& area, int64_t from, int64_t to, const std::string& format,
                const std::string& archive = "") {
    FindArgs a;
    a.area = area;
    archive::AppendTime(a.from, from);  // to the microsecond
    archive::AppendTime(a.to, to);
    a.archive = archive.empty() ? root_->path() : archive;
    a.format = format;
    return a;
  }

  /// The counts of find's last line on stderr.
  struct Counts {
    uint64_t chunks = 0, by_period = 0, by_cell = 0, by_summary = 0, read = 0, to_read = 0;
  };
  static Counts CountsOf(const std::string& err) {
    static const std::regex kLine(
        R"((\d+) chunks, skipped (\d+) by period, (\d+) by cell, (\d+) by summary; read (\d+) of (\d+))");
    std::smatch m;
    Counts c;
    EXPECT_TRUE(std::regex_search(err, m, kLine)) << err;
    if (m.empty()) return c;
    c.chunks = std::stoull(m[1]);
    c.by_period = std::stoull(m[2]);
    c.by_cell = std::stoull(m[3]);
    c.by_summary = std::stoull(m[4]);
    c.read = std::stoull(m[5]);
    c.to_read = std::stoull(m[6]);
    EXPECT_EQ(c.by_period + c.by_cell + c.by_summary + c.to_read, c.chunks) << err;
    return c;
  }

  static std::vector<Sample>* fleet_;
  static std::vector<WrittenChunk>* chunks_;
  static TempDir* root_;
  static std::string* without_summary_;
  TempDir dir_{"fleetflow-find"};
  int areas_ = 0;
};

std::vector<Sample>* FindArchiveTest::fleet_ = nullptr;
std::vector<WrittenChunk>* FindArchiveTest::chunks_ = nullptr;
TempDir* FindArchiveTest::root_ = nullptr;
std::string* FindArchiveTest::without_summary_ = nullptr;

TEST_F(FindArchiveTest, TheVehiclesInAnAreaWithAHoleAreTheOnesComputedFromTheSamples) {
  ASSERT_NE(without_summary_, nullptr) << "the fleet drives through cell u09ts in the 2nd hour";
  ASSERT_GT(chunks_->size(), 100u);
  // A period cutting through hours (the fourth is not in it), from a microsecond after a sample.
  const int64_t from = kStart + 20 * 60 * kS + 1000, to = kStart + 2 * 3600 * kS + 600 * kS;
  const std::string expected = ExpectedCsv(Readable(), kArea, from, to);
  const size_t lines = static_cast<size_t>(std::count(expected.begin(), expected.end(), '\n'));
  const size_t vehicles = lines - 1;
  ASSERT_GT(vehicles, 15u) << "the tracks cross the area";
  ASSERT_LT(vehicles, kArchiveVehicles - 5u) << "and some stay out";
  for (const char* on_boundary :
       {"edge-corner,", "edge-south,", "edge-hole,", "triangle-corner,"}) {
    ASSERT_NE(expected.find(on_boundary), std::string::npos) << on_boundary << " is inside";
  }
  ASSERT_EQ(expected.find("in-hole,"), std::string::npos);
  ASSERT_EQ(expected.find("just-outside,"), std::string::npos);

  const Result csv = Run(Args(Area(GeoJson(kArea)), from, to, "csv"));
  ASSERT_EQ(csv.status, 0) << csv.err;
  EXPECT_EQ(csv.out, expected);
  EXPECT_NE(
      csv.err.find(std::to_string(vehicles) + " vehicles in the area from " + FormatUtc(from) +
                   " to " + FormatUtc(to) + " (archive " + root_->path() + ", sensor gps: "),
      std::string::npos)
      << csv.err;
  const Counts counts = CountsOf(csv.err);
  EXPECT_EQ(counts.chunks, chunks_->size());
  EXPECT_EQ(counts.read, counts.to_read);
  EXPECT_GT(counts.by_period, 0u);
  EXPECT_GT(counts.by_cell, 0u);
  EXPECT_NE(csv.err.find("(1 without a readable summary)"), std::string::npos) << csv.err;
  EXPECT_NE(csv.err.find(archive::SummaryPathOf(root_->File(*without_summary_)) +
                         ": No such file or directory"),
            std::string::npos)
      << csv.err;
  EXPECT_EQ(csv.err.find("ignored"), std::string::npos) << "temporary files are not chunks";
  EXPECT_EQ(csv.err.find('\r'), std::string::npos) << "no progress when not asked";

  // The same area as a Feature, and in the other formats.
  const Result feature =
      Run(Args(Area(R"({"type": "Feature", "properties": {"name": "x"}, "geometry": )" +
                    GeoJson(kArea) + "}"),
               from, to, "csv"));
  ASSERT_EQ(feature.status, 0) << feature.err;
  EXPECT_EQ(feature.out, expected);
  const Result table = Run(Args(Area(GeoJson(kArea)), from, to, "table"));
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_EQ(table.out.rfind("vehicle_id", 0), 0u) << table.out;
  EXPECT_EQ(static_cast<size_t>(std::count(table.out.begin(), table.out.end(), '\n')), lines);
  const Result json = Run(Args(Area(GeoJson(kArea)), from, to, "json"));
  ASSERT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(static_cast<size_t>(std::count(json.out.begin(), json.out.end(), '{')), vehicles);
  EXPECT_NE(json.out.find(R"("vehicle_id": "edge-corner")"), std::string::npos) << json.out;

  // The whole archive's period, and the rectangle alone (a Polygon).
  const int64_t all_from = kStart - 3600 * kS, all_to = kStart + (kArchiveHours + 1) * 3600 * kS;
  const std::vector<Polygon> rectangle = {kArea[0]};
  const std::string polygon = R"({"type": "Polygon", "coordinates": [)" + RingJson(kArea[0][0]) +
                              ", " + RingJson(kArea[0][1]) + "]}";
  const Result whole = Run(Args(Area(polygon), all_from, all_to, "csv"));
  ASSERT_EQ(whole.status, 0) << whole.err;
  EXPECT_EQ(whole.out, ExpectedCsv(Readable(), rectangle, all_from, all_to));
  EXPECT_EQ(CountsOf(whole.err).by_period, 0u);
  EXPECT_NE(whole.err.find("holds sensor gps from 2026-01-01T00:00:00.000Z on"), std::string::npos)
      << whole.err;
  EXPECT_NE(whole.err.find("holds sensor gps up to 2026-01-01T04:00:00.000Z"), std::string::npos)
      << whole.err;
}

TEST_F(FindArchiveTest, AnHourAndASmallAreaReadOnlyTheChunksThatMayHoldIt) {
  // About 1 km around a point inside cell u09tj's box, in the second hour.
  const auto cell = archive::GeohashBox("u09tj");
  ASSERT_TRUE(cell);
  const double lat = (cell->min_lat + cell->max_lat) / 2, lon = (cell->min_lon + cell->max_lon) / 2;
  const std::vector<Polygon> small = {
      {Rectangle(lon - 0.005, lat - 0.005, lon + 0.005, lat + 0.005)}};
  const int64_t from = kStart + 3600 * kS, to = kStart + 2 * 3600 * kS;
  uint64_t other_hours = 0, in_the_cell = 0;
  for (const WrittenChunk& c : *chunks_) {
    if (c.period_start != from) {
      ++other_hours;
    } else if (c.cell == "u09tj") {
      ++in_the_cell;
    }
  }
  ASSERT_GT(in_the_cell, 0u) << "the fleet drives through u09tj in the second hour";
  const Result r = Run(Args(Area(GeoJson(small)), from, to, "csv"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, ExpectedCsv(Readable(), small, from, to));
  const Counts counts = CountsOf(r.err);
  EXPECT_EQ(counts.chunks, chunks_->size());
  EXPECT_EQ(counts.by_period, other_hours);
  // Only the cell's chunks are left after the cells (the area is inside its box), and some of
  // them have no position within the area's envelope.
  EXPECT_EQ(counts.by_summary + counts.to_read, in_the_cell) << r.err;
  EXPECT_LE(counts.read, in_the_cell);
  EXPECT_LT(counts.read, counts.chunks / 20) << r.err;

  // A period between the hour's last samples and the next one's first: the summaries say so.
  const int64_t gap_from = kStart + 2 * 3600 * kS - 2 * kS / 10;
  const Result gap = Run(Args(Area(GeoJson(kArea)), gap_from, gap_from + kS / 10, "csv"));
  ASSERT_EQ(gap.status, 0) << gap.err;
  EXPECT_EQ(gap.out, "vehicle_id,first_inside,last_inside,samples_inside\n");
  const Counts gap_counts = CountsOf(gap.err);
  EXPECT_GT(gap_counts.by_summary, 0u) << gap.err;
  EXPECT_EQ(gap_counts.read, 1u) << "the chunk without a summary only: " << gap.err;
}

TEST_F(FindArchiveTest, ProgressIsRedrawnInPlaceAndClearedAtTheEnd) {
  FindArgs args = Args(Area(GeoJson(kArea)), kStart, kStart + 3600 * kS, "csv");
  args.progress = true;
  const Result r = Run(args);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, ExpectedCsv(Readable(), kArea, kStart, kStart + 3600 * kS));
  EXPECT_EQ(r.err.rfind("\rfind: 0 of ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(" chunks read, "), std::string::npos) << r.err;
  const size_t cleared = r.err.rfind("\r\033[K");
  ASSERT_NE(cleared, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\r', cleared + 1), std::string::npos) << "nothing drawn after clearing";
  // After it, only find's lines.
  EXPECT_EQ(r.err.substr(cleared + 4).rfind("find: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
}

TEST_F(FindArchiveTest, ACorruptChunkIsNamedAndTheRestIsAnsweredWithStatus1) {
  TempDir copy("fleetflow-find-corrupt");
  std::filesystem::copy(root_->path(), copy.path(), std::filesystem::copy_options::recursive);
  const int64_t from = kStart, to = kStart + kArchiveHours * 3600 * kS;
  // The chunk of the fleet's first sample, cut short; a line of garbage in another; a chunk
  // named outside the layout.
  const WrittenChunk& cut = chunks_->front();
  const std::string cut_path = copy.File(cut.relative);
  const std::string frame = [&] {
    std::ifstream in(cut_path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  WriteFile(cut_path, frame.substr(0, frame.size() / 2));
  const WrittenChunk* garbled = nullptr;
  for (const WrittenChunk& c : *chunks_) {
    if (&c != &cut && c.period_start == kStart + 3600 * kS && c.cell != "none" &&
        c.samples.size() > 10) {
      garbled = &c;
      break;
    }
  }
  ASSERT_NE(garbled, nullptr);
  {
    auto [data, summary] = ChunkFiles(*fleet_, *garbled);
    std::string csv = *archive::Decompress(data);
    csv.insert(csv.find('\n', csv.find('\n') + 1) + 1, "car7,yesterday,48.8,2.3\n");
    WriteFile(copy.File(garbled->relative), archive::Compress(csv, 3));
  }
  WriteFile(copy.File("sensor=gps/stray.csv.zst"), "not in the layout");

  std::vector<Sample> rest;
  for (const Sample& s : *fleet_) {
    if (s.vehicle == "no-cell") continue;
    if (std::find_if(cut.samples.begin(), cut.samples.end(),
                     [&](size_t i) { return &(*fleet_)[i] == &s; }) == cut.samples.end()) {
      rest.push_back(s);
    }
  }
  const Result r = Run(Args(Area(GeoJson(kArea)), from, to, "csv", copy.path()));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.out, ExpectedCsv(rest, kArea, from, to));
  EXPECT_NE(r.err.find(cut_path + ": cannot decompress it: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(copy.File(garbled->relative) + ": line 3: ts is not a time"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("1 bad lines"), std::string::npos) << r.err;
  EXPECT_NE(
      r.err.find("not in the archive's layout, ignored: " + copy.File("sensor=gps/stray.csv.zst")),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("the answer may be incomplete: 1 chunk not read, 1 bad line"),
            std::string::npos)
      << r.err;
}

TEST_F(FindArchiveTest, BadAreasPeriodsAndArchivesAreRefusedWithWhatIsWrong) {
  const int64_t from = kStart, to = kStart + 3600 * kS;
  const auto refused = [&](FindArgs args, const std::string& said) {
    const Result r = Run(args);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  };
  const std::string area = Area(GeoJson(kArea));
  refused(Args(area, from, to, "csv", dir_.File("nowhere")),
          "the archive " + dir_.File("nowhere") + " does not exist");
  refused(Args(area, from, to, "csv", area), "the archive " + area + " is not a directory");
  refused(Args(area, from, to, "csv", dir_.path()),
          "has no folder sensor=gps: it holds no sensor=… folder");
  FindArgs speed = Args(area, from, to, "csv");
  speed.sensor = "speed";
  refused(speed, "has no folder sensor=speed (it holds sensor=gps;");
  FindArgs slash = Args(area, from, to, "csv");
  slash.sensor = "../gps";
  refused(slash, "--sensor '../gps' is not a sensor name");
  // A bow tie crosses itself; a ring that is not closed.
  refused(Args(Area(R"({"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.9],
      [2.4, 48.8], [2.3, 48.9], [2.3, 48.8]]]})"),
               from, to, "csv"),
          "is not a valid polygon: Self-intersection[2.35 48.85]");
  refused(Args(Area(R"({"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.9],
      [2.4, 48.8], [2.3, 48.85]]]})"),
               from, to, "csv"),
          "is not a polygon: ");
  refused(Args(Area(R"({"type": "Point", "coordinates": [2.3, 48.8]})"), from, to, "csv"),
          "is not a GeoJSON Polygon or MultiPolygon (nor a Feature of one): it is a Point");
  refused(Args(dir_.File("missing.geojson"), from, to, "csv"), "cannot read the area");
  refused(Args(area, to, from, "csv"), "is empty: --to must come after --from");
  refused(Args(area, from, from, "csv"), "is empty: --to must come after --from");
  FindArgs both = Args(area, from, to, "csv");
  both.pg = true;
  refused(both, "--pg and --archive exclude each other");
  FindArgs neither = Args(area, from, to, "csv");
  neither.archive.clear();
  refused(neither,
          "say where to look: --pg (PostgreSQL's 1 s rows, with PostGIS) or --archive DIR");
}

TEST_F(FindArchiveTest, AnArchiveWithoutChunksOfTheSensorIsAnEmptyAnswer) {
  TempDir empty("fleetflow-find-empty");
  std::filesystem::create_directories(empty.File("sensor=gps"));
  const Result r = Run(Args(Area(GeoJson(kArea)), kStart, kStart + 3600 * kS, "csv", empty.path()));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "vehicle_id,first_inside,last_inside,samples_inside\n");
  EXPECT_NE(r.err.find("holds no chunk of sensor gps"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fleetflow
