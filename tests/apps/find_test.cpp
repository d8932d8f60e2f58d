// `fleetflow find --pg` against a real PostgreSQL with PostGIS: a generated fleet's 1 s rows
// (seeded random walks that cross the area's edges, and rows exactly on them), the vehicles in a
// rectangle during a period as computed here without a geometry library, from the lat/lon
// columns and from a point geometry column with its GiST index; and every bad input refused with
// what is wrong.
#include "find.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

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

}  // namespace
}  // namespace fleetflow
