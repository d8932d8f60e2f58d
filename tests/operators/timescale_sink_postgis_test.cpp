// timescale_sink's geometry column (the geometry setting) against a real PostgreSQL with PostGIS:
// points of the 1 s rows and bounding boxes of the statistics, their GiST index and the spatial
// queries that use it, on plain PostgreSQL (range partitions) and on TimescaleDB (a hypertable);
// and the fallback where PostGIS cannot be used: the plain columns, one warning, rows written.
// PostGIS and TimescaleDB are installed by scripts/deps.sh: without them these tests FAIL.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fleetflow/testkit/harness.hpp"
#include "log_capture.hpp"
#include "servers.hpp"
#include "timescale_schema.hpp"
#include "timescale_sink.hpp"

namespace fleetflow {
namespace {

using fleetflow::testing::LogCapture;
using fleetflow::testing::PostgresServer;
using ::testing::HasSubstr;
using ::testing::Not;
using testkit::OperatorHarness;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1000 * kMs;

/// A whole minute a little before now: the rows' time, inside any retention.
int64_t RecentMinute() {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return (now / (60 * kSecond) - 2) * 60 * kSecond;
}

wire::Point Position(int64_t ts_ns, double lat, double lon) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  return p;
}

wire::Point Scalar(int64_t ts_ns, double v) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.value = v;
  return p;
}

/// Vehicle i of the 1 s rows stands at lat 48 + i / 100, lon 11 + i / 50: a diagonal line.
double LatOf(int i) { return 48.0 + i * 0.01; }
double LonOf(int i) { return 11.0 + i * 0.02; }

/// One window_join batch at `window_ns`: vehicles v0..v<n-1> at their place (held from 100 ms
/// before), and "nowhere", whose gps slot is empty (no position: NULL lat, lon and geometry).
WindowBatch PlacesBatch(int64_t window_ns, int n) {
  WindowBatch b;
  b.window_ns = window_ns;
  b.sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"gps", "speed"});
  for (int i = 0; i < n; ++i) {
    b.AddRow("v" + std::to_string(i),
             {Slot{Position(window_ns - 100 * kMs, LatOf(i), LonOf(i)), {}},
              Slot{Scalar(window_ns - 100 * kMs, i), {}}});
  }
  b.AddRow("nowhere", {Slot{}, Slot{Scalar(window_ns - 100 * kMs, 1.0), {}}});
  return b;
}

constexpr char kPointColumns[] = R"("columns":[
    {"name": "lat", "sensor": "gps", "field": "lat"},
    {"name": "lon", "sensor": "gps", "field": "lon"},
    {"name": "speed", "sensor": "speed"}])";

constexpr char kBoxColumns[] = R"("columns":[
    {"name": "gps_samples", "sensor": "gps", "stat": "count"},
    {"name": "lat_min", "sensor": "gps", "field": "lat", "stat": "min"},
    {"name": "lat_max", "sensor": "gps", "field": "lat", "stat": "max"},
    {"name": "lon_min", "sensor": "gps", "field": "lon", "stat": "min"},
    {"name": "lon_max", "sensor": "gps", "field": "lon", "stat": "max"},
    {"name": "distance_m", "sensor": "gps", "stat": "distance"}])";

SensorStats Box(double min_lat, double max_lat, double min_lon, double max_lon, int64_t t) {
  SensorStats s;
  s.count = s.positions = 3;
  s.min_lat = min_lat;
  s.max_lat = max_lat;
  s.min_lon = min_lon;
  s.max_lon = max_lon;
  s.first = Position(t + kSecond, min_lat, min_lon);
  s.last = Position(t + 50 * kSecond, max_lat, max_lon);
  s.distance_m = 100;
  return s;
}

/// A window_aggregate batch of one minute from `start`: "moving" in a box, "parked" at one
/// place (a point), "along" a parallel (a line), "blind" with gps samples but no position, and
/// "silent" without gps samples.
StatsBatch BoxesBatch(int64_t start) {
  StatsBatch b;
  b.start_ns = start;
  b.length_ns = 60 * kSecond;
  b.sensors = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"gps"});
  SensorStats blind;
  blind.count = 2;  // samples without a position
  b.rows = {{"moving", {Box(48.1, 48.2, 11.5, 11.7, start)}},
            {"parked", {Box(48.3, 48.3, 11.8, 11.8, start)}},
            {"along", {Box(48.4, 48.4, 11.1, 11.2, start)}},
            {"blind", {blind}},
            {"silent", {SensorStats{}}}};
  return b;
}

/// A PostgreSQL with PostGIS installed (and TimescaleDB preloaded with kTimescaleDb), shared by
/// the tests of a suite, and a table per test named after it.
template <PostgresServer::Preload kPreload>
class PostgisSinkTest : public ::testing::Test {
 protected:
  static constexpr bool kTimescaleDb = kPreload == PostgresServer::Preload::kTimescaleDb;

  static void SetUpTestSuite() {
    if (!PostgresServer::Available()) return;
    if (kTimescaleDb && !PostgresServer::TimescaleDbInstalled()) return;
    server_ = new PostgresServer(kPreload);
    try {
      server_->Start();
    } catch (const std::exception& e) {
      start_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    if (!PostgresServer::Available()) {
      GTEST_SKIP() << "*** PostgreSQL server binaries (initdb, postgres, psql, pg_isready) not "
                      "found: these integration tests did NOT run; run scripts/deps.sh ***";
    }
    FF_REQUIRE_POSTGIS();
    if constexpr (kTimescaleDb) FF_REQUIRE_TIMESCALEDB();
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    if (!server_->running()) server_->Start();
    table_ = std::string(kTimescaleDb ? "h_" : "t_") +
             ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (auto& c : table_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }

  /// The sink's config on this test's table with a geometry column "position" and `fields`.
  /// With TimescaleDB "timescaledb": "on"; on plain PostgreSQL a retention, so that the table
  /// is partitioned by time (one partition a day).
  std::string Config(const std::string& fields, const std::string& conninfo = "") const {
    return R"({"conninfo":")" + (conninfo.empty() ? server_->conninfo() : conninfo) +
           R"(","table":")" + table_ + R"(",)" +
           (kTimescaleDb ? R"("timescaledb":"on",)" : R"("timescaledb":"off",)") +
           R"("retention":"30 days","geometry":"position","retry_initial_ms":20,)" +
           R"("retry_max_ms":200,)" + fields + "}";
  }

  std::string Psql(const std::string& sql) const { return server_->Psql(sql); }

  /// The type of the column "position" as PostgreSQL names it ("" when there is none).
  std::string PositionType() const {
    return Psql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '" +
                table_ + "'::regclass AND attname = 'position' AND NOT attisdropped");
  }

  /// The definitions of the table's GiST indexes.
  std::string GistIndexes() const {
    return Psql("SELECT string_agg(indexdef, E'\\n') FROM pg_indexes WHERE tablename = '" + table_ +
                "' AND indexdef LIKE '%USING gist%'");
  }

  /// Whether the table is what the test wants: a hypertable, or partitioned by range.
  void ExpectTableKind() const {
    if constexpr (kTimescaleDb) {
      EXPECT_EQ(Psql("SELECT count(*) FROM timescaledb_information.hypertables WHERE "
                     "hypertable_name = '" +
                     table_ + "'"),
                "1");
    } else {
      EXPECT_EQ(Psql("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = '" + table_ +
                     "'::regclass"),
                "r");
    }
  }

  /// The 1 s rows: a Point (lon, lat) in SRID 4326 from the interpolated columns, NULL without a
  /// position; a GiST index that a small-box query on 10 000 rows uses, and finds the vehicles
  /// in the box.
  void PointsOfTheOneSecondRows() {
    LogCapture log;
    OperatorHarness h("timescale_sink", Config(kPointColumns));
    ASSERT_TRUE(h.op().Ready()) << log.text();
    ExpectTableKind();
    EXPECT_EQ(PositionType(), "geometry(Point,4326)");
    EXPECT_THAT(GistIndexes(), HasSubstr("USING gist (\"position\")"));
    EXPECT_THAT(log.text(), HasSubstr("the geometry column 'position' (point, SRID 4326, GiST"));
    EXPECT_EQ(Psql("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"), "1");

    constexpr int kVehicles = 200, kWindows = 50;
    const int64_t t0 = RecentMinute();
    for (int w = 0; w < kWindows; ++w) h.Feed(PlacesBatch(t0 + w * kSecond, kVehicles));
    h.TickAt(t0 + kWindows * kSecond, /*drain=*/true);
    ASSERT_EQ(h.Counter("sink_rows_written"), uint64_t{(kVehicles + 1) * kWindows});

    // Every point is exactly (lon, lat) of its row, in SRID 4326; no position gives NULL.
    EXPECT_EQ(Psql("SELECT count(*) FILTER (WHERE ST_X(position) = lon AND ST_Y(position) = lat "
                   "AND ST_SRID(position) = 4326 AND GeometryType(position) = 'POINT'), "
                   "count(*) FILTER (WHERE position IS NULL AND lat IS NULL), count(*) FROM " +
                   table_),
              std::to_string(kVehicles * kWindows) + "|" + std::to_string(kWindows) + "|" +
                  std::to_string((kVehicles + 1) * kWindows));
    EXPECT_EQ(
        Psql("SELECT ST_AsText(position) FROM " + table_ + " WHERE vehicle_id = 'v7' LIMIT 1"),
        "POINT(11.14 48.07)");

    // Vehicles 10, 11 and 12 are in the box (lon 11.195..11.245, lat 48.095..48.125).
    const std::string box = "ST_MakeEnvelope(11.195, 48.095, 11.245, 48.125, 4326)";
    EXPECT_EQ(Psql("SELECT string_agg(DISTINCT vehicle_id, ',') FROM " + table_ +
                   " WHERE position && " + box),
              "v10,v11,v12");
    EXPECT_EQ(
        Psql("SELECT count(*) FROM " + table_ + " WHERE ST_Intersects(position, " + box + ")"),
        std::to_string(3 * kWindows));
    // The plan over the partition or chunk of these rows (the time range prunes the others)
    // scans the GiST index for the box.
    Psql("ANALYZE " + table_);
    const std::string plan =
        Psql("EXPLAIN SELECT vehicle_id FROM " + table_ + " WHERE ST_Intersects(position, " + box +
             ") AND time >= to_timestamp(" + std::to_string(t0 / kSecond) +
             ") AND time < to_timestamp(" + std::to_string(t0 / kSecond + kWindows) + ")");
    EXPECT_THAT(plan, HasSubstr("Index Scan"));
    EXPECT_THAT(plan, HasSubstr("Index Cond: (\"position\" && ")) << plan;
    EXPECT_THAT(plan, Not(HasSubstr("Seq Scan"))) << plan;
  }

  /// The statistics: the bounding box of each window's positions (ST_Envelope: a Polygon, a
  /// Point for a vehicle that stood still, a LineString along one axis), its corners the min and
  /// max columns; NULL without a position. Spatial queries find the right vehicles.
  void BoundingBoxesOfTheStatistics() {
    OperatorHarness h("timescale_sink", Config(kBoxColumns));
    ASSERT_TRUE(h.op().Ready());
    ExpectTableKind();
    EXPECT_EQ(PositionType(), "geometry(Geometry,4326)");
    EXPECT_THAT(GistIndexes(), HasSubstr("USING gist (\"position\")"));
    const int64_t start = RecentMinute();
    h.Feed(BoxesBatch(start - 60 * kSecond));
    h.Feed(BoxesBatch(start));
    h.TickAt(start + 61 * kSecond, /*drain=*/true);
    ASSERT_EQ(h.Counter("sink_rows_written"), 10u);

    EXPECT_EQ(Psql("SELECT string_agg(DISTINCT vehicle_id || ' ' || coalesce(GeometryType("
                   "position), 'NULL') || ' ' || coalesce(ST_SRID(position)::text, '-'), ', ' "
                   "ORDER BY vehicle_id || ' ' || coalesce(GeometryType(position), 'NULL') || ' ' "
                   "|| coalesce(ST_SRID(position)::text, '-')) FROM " +
                   table_),
              "along LINESTRING 4326, blind NULL -, moving POLYGON 4326, parked POINT 4326, "
              "silent NULL -");
    // The envelope's corners are the statistics, exactly.
    EXPECT_EQ(Psql("SELECT count(*) FROM " + table_ +
                   " WHERE ST_XMin(position) = lon_min AND ST_XMax(position) = lon_max AND "
                   "ST_YMin(position) = lat_min AND ST_YMax(position) = lat_max"),
              "6");
    EXPECT_EQ(
        Psql("SELECT ST_AsText(position) FROM " + table_ + " WHERE vehicle_id = 'moving' LIMIT 1"),
        "POLYGON((11.5 48.1,11.5 48.2,11.7 48.2,11.7 48.1,11.5 48.1))");
    EXPECT_EQ(
        Psql("SELECT ST_AsText(position) FROM " + table_ + " WHERE vehicle_id = 'parked' LIMIT 1"),
        "POINT(11.8 48.3)");

    // Which vehicles were somewhere: inside the box, at a place, near a point.
    const auto where = [&](const std::string& condition) {
      return Psql("SELECT string_agg(DISTINCT vehicle_id, ',') FROM " + table_ + " WHERE " +
                  condition);
    };
    EXPECT_EQ(where("ST_Intersects(position, ST_SetSRID(ST_MakePoint(11.6, 48.15), 4326))"),
              "moving");
    EXPECT_EQ(where("position && ST_MakeEnvelope(11.79, 48.29, 11.81, 48.31, 4326)"), "parked");
    EXPECT_EQ(where("ST_Intersects(position, ST_MakeEnvelope(11.15, 48.0, 11.6, 48.45, 4326))"),
              "along,moving");
    EXPECT_EQ(where("ST_DWithin(position, ST_SetSRID(ST_MakePoint(11.8, 48.3), 4326), 0.2)"),
              "moving,parked");
  }

  static inline PostgresServer* server_ = nullptr;
  static inline std::string start_error_;
  std::string table_;
};

class SinkPostgisPg : public PostgisSinkTest<PostgresServer::Preload::kNothing> {
 protected:
  /// A new database `name` on the shared server, and its conninfo for `user`.
  std::string NewDatabase(const std::string& name, const std::string& user = "postgres") const {
    server_->Psql("DROP DATABASE IF EXISTS " + name, "postgres");
    server_->Psql("CREATE DATABASE " + name, "postgres");
    return "host=127.0.0.1 port=" + std::to_string(server_->port()) + " user=" + user +
           " dbname=" + name;
  }

  std::string Columns(const std::string& database) const {
    return server_->Psql(
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
        "information_schema.columns WHERE table_name = '" +
            table_ + "'",
        database);
  }
};

class SinkPostgisTsdb : public PostgisSinkTest<PostgresServer::Preload::kTimescaleDb> {};

TEST_F(SinkPostgisPg, PointsOfTheOneSecondRowsWithAGistIndexOnPartitions) {
  PointsOfTheOneSecondRows();
  // Every partition has the index (created on the partitioned table).
  EXPECT_EQ(Psql("SELECT count(*) FROM pg_inherits i WHERE i.inhparent = '" + table_ +
                 "'::regclass AND NOT EXISTS (SELECT 1 FROM pg_indexes x WHERE x.tablename = "
                 "i.inhrelid::regclass::text AND x.indexdef LIKE '%USING gist%')"),
            "0");
}

TEST_F(SinkPostgisTsdb, PointsOfTheOneSecondRowsWithAGistIndexOnChunks) {
  PointsOfTheOneSecondRows();
}

TEST_F(SinkPostgisPg, BoundingBoxesOfTheStatistics) { BoundingBoxesOfTheStatistics(); }

TEST_F(SinkPostgisTsdb, BoundingBoxesOfTheStatistics) { BoundingBoxesOfTheStatistics(); }

TEST_F(SinkPostgisPg, ARewrittenWindowMovesItsGeometry) {
  OperatorHarness h("timescale_sink", Config(kPointColumns));
  const int64_t t = RecentMinute();
  h.Feed(PlacesBatch(t, 2));
  WindowBatch moved = PlacesBatch(t, 2);
  moved.Slots(moved.rows[1])[0] = Slot{Position(t - 100 * kMs, 50.5, 7.25), {}};
  h.Feed(std::move(moved));
  h.TickAt(t, /*drain=*/true);
  EXPECT_EQ(Psql("SELECT ST_AsText(position) FROM " + table_ + " WHERE vehicle_id = 'v1'"),
            "POINT(7.25 50.5)");
  h.Feed(PlacesBatch(t, 2));  // back to where it was: updated again
  h.TickAt(t + kSecond, /*drain=*/true);
  EXPECT_EQ(Psql("SELECT ST_AsText(position) FROM " + table_ + " WHERE vehicle_id = 'v1'"),
            "POINT(11.02 48.01)");
}

// ---- PostGIS cannot be used --------------------------------------------------------------------

TEST_F(SinkPostgisPg, ARoleThatMayNotCreatePostgisGetsPlainColumns) {
  const std::string db = "nogis_role";
  // Once: both runs write the same rows (read twice, the clock may cross a minute between them).
  const int64_t minute = RecentMinute();
  server_->Psql("DROP ROLE IF EXISTS mapless", "postgres");
  const std::string conninfo = NewDatabase(db, "mapless");
  server_->Psql("CREATE ROLE mapless LOGIN", "postgres");
  server_->Psql("GRANT CREATE ON SCHEMA public TO mapless", db);
  server_->Psql("GRANT CREATE ON DATABASE " + db + " TO mapless", "postgres");
  {
    LogCapture log;
    OperatorHarness h("timescale_sink", Config(kPointColumns, conninfo));
    ASSERT_TRUE(h.op().Ready()) << log.text();
    const std::string text = log.text();
    const std::string warning =
        "PostGIS cannot be used, so '" + table_ + "' gets no geometry column 'position'";
    EXPECT_THAT(text, HasSubstr(warning));
    EXPECT_THAT(text, HasSubstr("the role 'mapless' may not create the postgis extension in "
                                "database 'nogis_role'"));
    EXPECT_THAT(text, HasSubstr("run CREATE EXTENSION postgis there once as a superuser"));
    EXPECT_EQ(text.find(warning), text.rfind(warning)) << "one warning, not more:\n" << text;
    EXPECT_EQ(Columns(db), "vehicle_id,time,lat,lon,speed");
    h.Feed(PlacesBatch(minute, 3));
    h.TickAt(minute, /*drain=*/true);
    EXPECT_EQ(server_->Psql("SELECT count(*) FROM " + table_, db), "4");
    EXPECT_EQ(server_->Psql("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'", db),
              "0");
    // fleetflow validate --connect says so too.
    std::string findings;
    const fleetflow::Config config = fleetflow::Config::Parse(Config(kPointColumns, conninfo),
                                                              TimescaleSinkSpec().config(), "test");
    for (const ConnectFinding& f : CheckSinkDatabase(TimescaleSinkSpec().Parse(config))) {
      findings += f.message + "\n";
    }
    EXPECT_THAT(findings, HasSubstr("the table gets no geometry column 'position': the role "
                                    "'mapless' may not create the postgis extension"));
  }

  // A DBA creates the extension: the next start adds the column and its index, and rows written
  // again get their geometry.
  server_->Psql("CREATE EXTENSION postgis", db);
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(kPointColumns, conninfo));
  ASSERT_TRUE(h.op().Ready()) << log.text();
  EXPECT_THAT(log.text(), Not(HasSubstr("PostGIS cannot be used")));
  EXPECT_EQ(Columns(db), "vehicle_id,time,lat,lon,speed,position");
  EXPECT_EQ(server_->Psql("SELECT count(*) FROM pg_indexes WHERE tablename = '" + table_ +
                              "' AND indexdef LIKE '%USING gist (\"position\")%'",
                          db),
            "1");
  EXPECT_EQ(server_->Psql("SELECT count(position) FROM " + table_, db), "0");
  h.Feed(PlacesBatch(minute, 3));
  h.TickAt(minute, /*drain=*/true);
  EXPECT_EQ(server_->Psql("SELECT count(position), count(*) FROM " + table_, db), "3|4");
}

TEST_F(SinkPostgisPg, AFailedCreateExtensionGivesThePlainColumns) {
  // A superuser, whose CREATE EXTENSION the database refuses (an event trigger stands in for
  // whatever a server may say: a full disk, a broken installation).
  const std::string db = "nogis_refused";
  const std::string conninfo = NewDatabase(db);
  server_->Psql(
      "CREATE FUNCTION no_extensions() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
      "RAISE EXCEPTION 'extensions are frozen here'; END $$; CREATE EVENT TRIGGER "
      "freeze_extensions ON ddl_command_start WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION "
      "no_extensions()",
      db);
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(kBoxColumns, conninfo));
  ASSERT_TRUE(h.op().Ready()) << log.text();
  EXPECT_THAT(log.text(), HasSubstr("PostGIS cannot be used, so '" + table_ +
                                    "' gets no geometry column 'position'"));
  EXPECT_THAT(log.text(), HasSubstr("CREATE EXTENSION postgis failed in database 'nogis_refused'"));
  EXPECT_THAT(log.text(), HasSubstr("extensions are frozen here"));
  EXPECT_EQ(Columns(db), "vehicle_id,time,gps_samples,lat_min,lat_max,lon_min,lon_max,distance_m");
  const int64_t minute = RecentMinute();
  h.Feed(BoxesBatch(minute));
  h.TickAt(minute + 61 * kSecond, /*drain=*/true);
  EXPECT_EQ(server_->Psql("SELECT count(*) FROM " + table_, db), "5");
}

TEST_F(SinkPostgisPg, WithoutTheSettingNothingNeedsPostgis) {
  const std::string db = "nogis_unset";
  const std::string conninfo = NewDatabase(db);
  LogCapture log;
  OperatorHarness h("timescale_sink", R"({"conninfo":")" + conninfo + R"(","table":")" + table_ +
                                          R"(","timescaledb":"off",)" + kPointColumns + "}");
  ASSERT_TRUE(h.op().Ready());
  EXPECT_EQ(Columns(db), "vehicle_id,time,lat,lon,speed");
  EXPECT_EQ(server_->Psql("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'", db), "0");
  EXPECT_THAT(log.text(), Not(HasSubstr("PostGIS")));
  EXPECT_THAT(log.text(), Not(HasSubstr("geometry")));
}

// ---- configuration ------------------------------------------------------------------------------

std::string BuildError(const std::string& fields) {
  return testkit::BuildError(
      "timescale_sink",
      R"({"conninfo":"host=127.0.0.1 port=1","geometry":"position",)" + fields + "}");
}

TEST(TimescaleSinkGeometryConfig, TheColumnsItIsMadeFromMustBeThere) {
  const std::string no_lon =
      BuildError(R"("columns":[{"name": "lat", "sensor": "gps", "field": "lat"}])");
  EXPECT_THAT(no_lon, HasSubstr("/geometry"));
  EXPECT_THAT(no_lon, HasSubstr("the point of the interpolated lat / lon columns of sensor 'gps'"));
  EXPECT_THAT(no_lon, HasSubstr("lack {sensor gps, field lon}"));

  const std::string no_max = BuildError(R"("columns":[
      {"name": "lat_min", "sensor": "gps", "field": "lat", "stat": "min"},
      {"name": "lon_min", "sensor": "gps", "field": "lon", "stat": "min"},
      {"name": "lat_last", "sensor": "gps", "field": "lat", "stat": "last"}])");
  EXPECT_THAT(no_max, HasSubstr("the bounding box of the statistics"));
  EXPECT_THAT(no_max, HasSubstr("{sensor gps, field lon, stat max}; {sensor gps, field lat, stat "
                                "max}"));

  // Another sensor's columns do not count.
  EXPECT_THAT(BuildError(R"("geometry_sensor":"gnss")"), HasSubstr("of sensor 'gnss'"));
  EXPECT_EQ(BuildError(R"("geometry_sensor":"gnss","columns":[
      {"name": "y", "sensor": "gnss", "field": "lat"},
      {"name": "x", "sensor": "gnss", "field": "lon"}])"),
            "");
  // The default columns (lat, lon, speed, soc, torque) make a point.
  EXPECT_EQ(BuildError(R"("batch_rows":10)"), "");
}

TEST(TimescaleSinkGeometryConfig, ItsNameIsItsOwn) {
  EXPECT_THAT(BuildError(R"("columns":[{"name": "position", "sensor": "gps", "field": "lat"},
      {"name": "lon", "sensor": "gps", "field": "lon"}])"),
              HasSubstr("'position' is the name of another column"));
  EXPECT_THAT(testkit::BuildError("timescale_sink", R"({"geometry":"time"})"),
              HasSubstr("'time' is the name of another column"));
  EXPECT_THAT(testkit::BuildError("timescale_sink", R"({"geometry":"Position"})"),
              HasSubstr("/config/geometry"));
}

TEST(TimescaleSinkGeometryConfig, TheExpressionsTheDatabaseComputes) {
  TimescaleSinkOptions o;
  o.geometry = "position";
  o.columns = {
      {"speed", "speed"}, {"lat", "gps", ColumnField::kLat}, {"lon", "gps", ColumnField::kLon}};
  SinkGeometry g = GeometryOf(o);
  EXPECT_EQ(g.problem, "");
  EXPECT_FALSE(g.box);
  EXPECT_EQ(GeometryType(g), "geometry(Point, 4326)");
  EXPECT_EQ(GeometryExpression(g, {"a", "b", "c"}), "ST_SetSRID(ST_MakePoint(c, b), 4326)");
  o.columns = {{"lat_max", "gps", ColumnField::kLat, Interpolation::kLinear, ColumnStat::kMax},
               {"lon_min", "gps", ColumnField::kLon, Interpolation::kLinear, ColumnStat::kMin},
               {"lat_min", "gps", ColumnField::kLat, Interpolation::kLinear, ColumnStat::kMin},
               {"lon_max", "gps", ColumnField::kLon, Interpolation::kLinear, ColumnStat::kMax}};
  g = GeometryOf(o);
  EXPECT_TRUE(g.box);
  EXPECT_EQ(GeometryType(g), "geometry(Geometry, 4326)");
  EXPECT_EQ(GeometryExpression(g, {"a", "b", "c", "d"}),
            "ST_SetSRID(ST_Envelope(ST_MakeLine(ST_MakePoint(b, c), ST_MakePoint(d, a))), 4326)");
}

}  // namespace
}  // namespace fleetflow
