#include "timescale_sink.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fleetflow/testkit/harness.hpp"
#include "log_capture.hpp"
#include "pg_client.hpp"
#include "servers.hpp"
#include "timescale_schema.hpp"

namespace fleetflow {
namespace {

using fleetflow::testing::LogCapture;

using ::testing::HasSubstr;
using ::testing::Not;
using testkit::OperatorHarness;

constexpr int64_t kMs = 1'000'000;

/// 2026-11-22 12:00:01 UTC in ns since the epoch.
int64_t WindowT() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(
             (sys_days{year{2026} / 11 / 22} + hours(12) + seconds(1)).time_since_epoch())
      .count();
}

wire::Point Scalar(int64_t ts_ns, double v) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.value = v;
  return p;
}

wire::Point Position(int64_t ts_ns, double lat, double lon) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.lat = lat;
  p.lon = lon;
  p.has_position = true;
  return p;
}

Slot MakeSlot(std::optional<wire::Point> before, std::optional<wire::Point> after) {
  return Slot{std::move(before), std::move(after)};
}

// ---- InterpolateSlot ------------------------------------------------------------------------

constexpr int64_t T = 1'700'000'000'000'000'000;

TEST(InterpolateSlot, LinearBetweenBeforeAndAfter) {
  const Slot s = MakeSlot(Scalar(T - 250 * kMs, 0.0), Scalar(T + 750 * kMs, 100.0));
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kValue, Interpolation::kLinear, T), 25.0);
  const Slot s2 = MakeSlot(Scalar(T - 100, 10.0), Scalar(T + 300, 30.0));
  EXPECT_EQ(InterpolateSlot(s2, ColumnField::kValue, Interpolation::kLinear, T), 15.0);
}

TEST(InterpolateSlot, LinearAtTheBeforeSampleIsItsValue) {
  const Slot s = MakeSlot(Scalar(T, 7.5), Scalar(T + 10 * kMs, 99.0));
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kValue, Interpolation::kLinear, T), 7.5);
}

TEST(InterpolateSlot, LinearWithEqualTimesUsesBefore) {
  const Slot s = MakeSlot(Scalar(T, 3.0), Scalar(T, 4.0));
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kValue, Interpolation::kLinear, T), 3.0);
}

TEST(InterpolateSlot, LinearHoldsTheOnlySamplePresent) {
  EXPECT_EQ(InterpolateSlot(MakeSlot(Scalar(T - kMs, 42.0), std::nullopt), ColumnField::kValue,
                            Interpolation::kLinear, T),
            42.0);
  EXPECT_EQ(InterpolateSlot(MakeSlot(std::nullopt, Scalar(T + kMs, -1.5)), ColumnField::kValue,
                            Interpolation::kLinear, T),
            -1.5);
}

TEST(InterpolateSlot, NoSampleIsNull) {
  EXPECT_EQ(InterpolateSlot(Slot{}, ColumnField::kValue, Interpolation::kLinear, T), std::nullopt);
  EXPECT_EQ(InterpolateSlot(Slot{}, ColumnField::kValue, Interpolation::kPrevious, T),
            std::nullopt);
}

TEST(InterpolateSlot, PreviousTakesBeforeOnly) {
  const Slot both = MakeSlot(Scalar(T - kMs, 1.25), Scalar(T + kMs, 9.0));
  EXPECT_EQ(InterpolateSlot(both, ColumnField::kValue, Interpolation::kPrevious, T), 1.25);
  const Slot after_only = MakeSlot(std::nullopt, Scalar(T + kMs, 9.0));
  EXPECT_EQ(InterpolateSlot(after_only, ColumnField::kValue, Interpolation::kPrevious, T),
            std::nullopt);
}

TEST(InterpolateSlot, LatLonOfPositions) {
  const Slot s = MakeSlot(Position(T - 250 * kMs, 48.0, 2.0), Position(T + 750 * kMs, 49.0, 3.0));
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kLat, Interpolation::kLinear, T), 48.25);
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kLon, Interpolation::kLinear, T), 2.25);
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kLat, Interpolation::kPrevious, T), 48.0);
}

TEST(InterpolateSlot, SampleWithoutPositionCountsAsAbsentForLatLon) {
  const Slot s = MakeSlot(Scalar(T - kMs, 5.0), Position(T + kMs, 49.0, 3.0));
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kLat, Interpolation::kLinear, T), 49.0);
  EXPECT_EQ(InterpolateSlot(s, ColumnField::kLon, Interpolation::kPrevious, T), std::nullopt);
}

TEST(InterpolateSlot, NonFiniteValuesGiveNull) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(InterpolateSlot(MakeSlot(Scalar(T - kMs, nan), Scalar(T + kMs, 1.0)),
                            ColumnField::kValue, Interpolation::kLinear, T),
            std::nullopt);
  EXPECT_EQ(InterpolateSlot(MakeSlot(Scalar(T - kMs, 1.0), Scalar(T + kMs, inf)),
                            ColumnField::kValue, Interpolation::kLinear, T),
            std::nullopt);
  EXPECT_EQ(InterpolateSlot(MakeSlot(std::nullopt, Scalar(T + kMs, -inf)), ColumnField::kValue,
                            Interpolation::kLinear, T),
            std::nullopt);
  EXPECT_EQ(InterpolateSlot(MakeSlot(Scalar(T - kMs, nan), std::nullopt), ColumnField::kValue,
                            Interpolation::kPrevious, T),
            std::nullopt);
  // previous ignores the sample after T, even when it is not finite.
  EXPECT_EQ(InterpolateSlot(MakeSlot(Scalar(T - kMs, 2.0), Scalar(T + kMs, nan)),
                            ColumnField::kValue, Interpolation::kPrevious, T),
            2.0);
}

// ---- pg_client pure helpers -----------------------------------------------------------------

TEST(PgClient, IsValidIdentifier) {
  EXPECT_TRUE(pg::IsValidIdentifier("vehicle_telemetry"));
  EXPECT_TRUE(pg::IsValidIdentifier("_x9"));
  EXPECT_TRUE(pg::IsValidIdentifier(std::string(63, 'a')));
  EXPECT_FALSE(pg::IsValidIdentifier(std::string(64, 'a')));
  EXPECT_FALSE(pg::IsValidIdentifier(""));
  EXPECT_FALSE(pg::IsValidIdentifier("9lives"));
  EXPECT_FALSE(pg::IsValidIdentifier("Speed"));
  EXPECT_FALSE(pg::IsValidIdentifier("a-b"));
  EXPECT_FALSE(pg::IsValidIdentifier("t; DROP TABLE x"));
}

TEST(PgClient, Quoting) {
  EXPECT_EQ(pg::QuoteIdent("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(pg::QuoteLiteral("it's"), "'it''s'");
  EXPECT_EQ(pg::QuoteLiteral("a\\b"), "E'a\\\\b'");
}

TEST(PgClient, FormatTimestampIsUtcWithMicroseconds) {
  EXPECT_EQ(pg::FormatTimestamp(WindowT()), "2026-11-22 12:00:01.000000+00");
  EXPECT_EQ(pg::FormatTimestamp(WindowT() + 123'456'789), "2026-11-22 12:00:01.123456+00");
  EXPECT_EQ(pg::FormatTimestamp(0), "1970-01-01 00:00:00.000000+00");
  EXPECT_EQ(pg::FormatTimestamp(-1), "1969-12-31 23:59:59.999999+00");
}

TEST(PgClient, RedactConninfoHidesPasswords) {
  // libpq parses the string (PQconninfoParse); the result lists what it set, in libpq's order.
  EXPECT_EQ(pg::RedactConninfo("host=db password=s3cret user=u"), "user=u password=*** host=db");
  EXPECT_EQ(pg::RedactConninfo("host=db password = 'a b\\' c' user=u"),
            "user=u password=*** host=db");
  EXPECT_EQ(pg::RedactConninfo("postgresql://u:s3cret@db:5432/fleet?sslmode=require"),
            "user=u password=*** dbname=fleet host=db port=5432 sslmode=require");
  EXPECT_EQ(pg::RedactConninfo("postgres://db/fleet?user=u&password=s3cret&application_name=x"),
            "user=u password=*** dbname=fleet host=db application_name=x");
  EXPECT_EQ(pg::RedactConninfo("host=db user=u"), "user=u host=db");
  EXPECT_EQ(pg::RedactConninfo("host=db application_name='a b'"), "host=db application_name='a b'");
  // What libpq cannot parse is quoted nowhere: its message may hold part of the password.
  const std::string bad = pg::RedactConninfo("host=db password=s3 cret");
  EXPECT_THAT(bad, Not(HasSubstr("cret")));
  EXPECT_THAT(bad, HasSubstr("cannot parse"));
}

TEST(PgClient, AnUnparseableConnectionStringIsAClearErrorWithoutThePassword) {
  try {
    pg::Connection::Connect("host=127.0.0.1 password=s3 cret user=u");
    FAIL() << "connected with an unparseable connection string";
  } catch (const pg::Error& e) {
    EXPECT_FALSE(e.connection_lost());  // no retry fixes it
    EXPECT_THAT(e.what(), HasSubstr("connection string is not valid"));
    EXPECT_THAT(e.what(), Not(HasSubstr("cret")));
    EXPECT_THAT(e.what(), Not(HasSubstr("s3")));
  }
}

TEST(PgClient, ConnectErrorNamesTheServerButNotThePassword) {
  const int port = testing::FreePort();
  try {
    pg::Connection::Connect("host=127.0.0.1 port=" + std::to_string(port) +
                            " user=u password=s3cret dbname=x");
    FAIL() << "connected to a closed port";
  } catch (const pg::Error& e) {
    EXPECT_TRUE(e.connection_lost());
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(port)));
    EXPECT_THAT(e.what(), Not(HasSubstr("s3cret")));
  }
}

// ---- config validation ----------------------------------------------------------------------

/// A conninfo that refuses connections at once (nothing listens on the port).
std::string ClosedConninfo() {
  return "host=127.0.0.1 port=" + std::to_string(testing::FreePort()) + " user=postgres";
}

/// The message of the error building the sink with `config_json` throws ("" when none).
std::string BuildError(const std::string& config_json) {
  return testkit::BuildError("timescale_sink", config_json);
}

std::string WithConn(const std::string& fields) {
  return R"({"conninfo":")" + ClosedConninfo() + "\"" + (fields.empty() ? "" : ",") + fields + "}";
}

TEST(TimescaleSinkConfig, DefaultsBuildWithoutAServer) {
  OperatorHarness h("timescale_sink", WithConn(""));
  EXPECT_FALSE(h.op().Ready());
}

TEST(TimescaleSinkConfig, UnknownColumnFieldIsRefused) {
  const std::string msg =
      BuildError(WithConn(R"("columns":[{"name":"alt","sensor":"gps","field":"altitude"}])"));
  EXPECT_THAT(msg, HasSubstr("field"));
  EXPECT_THAT(msg, HasSubstr("altitude"));
}

TEST(TimescaleSinkConfig, BadInterpolationIsRefused) {
  const std::string msg = BuildError(
      WithConn(R"("columns":[{"name":"speed","sensor":"speed","interpolation":"cubic"}])"));
  EXPECT_THAT(msg, HasSubstr("interpolation"));
  EXPECT_THAT(msg, HasSubstr("cubic"));
}

TEST(TimescaleSinkConfig, UnknownKeyInAColumnIsRefused) {
  EXPECT_THAT(BuildError(WithConn(R"("columns":[{"name":"speed","sensor":"speed","fild":"x"}])")),
              HasSubstr("fild"));
}

TEST(TimescaleSinkConfig, BadTableIdentifierIsRefused) {
  const std::string msg = BuildError(WithConn(R"("table":"Vehicle-Telemetry")"));
  EXPECT_THAT(msg, HasSubstr("/config/table"));
  EXPECT_THAT(msg, HasSubstr("must be a valid identifier"));
}

TEST(TimescaleSinkConfig, BadColumnNamesAreRefused) {
  EXPECT_THAT(BuildError(WithConn(R"("columns":[{"name":"9speed","sensor":"speed"}])")),
              HasSubstr("/config/columns/0/name"));
  EXPECT_THAT(BuildError(WithConn(R"("columns":[{"name":"time","sensor":"speed"}])")),
              HasSubstr("reserved"));
  EXPECT_THAT(BuildError(WithConn(R"("columns":[{"name":"vehicle_id","sensor":"speed"}])")),
              HasSubstr("reserved"));
  EXPECT_THAT(BuildError(WithConn(
                  R"("columns":[{"name":"a","sensor":"speed"},{"name":"a","sensor":"soc"}])")),
              HasSubstr("duplicate column 'a'"));
  EXPECT_THAT(BuildError(WithConn(R"("columns":[{"name":"a","sensor":"sp eed"}])")),
              HasSubstr("/config/columns/0/sensor"));
  EXPECT_THAT(BuildError(WithConn(R"("columns":[])")), HasSubstr("at least 1 item(s)"));
}

TEST(TimescaleSinkConfig, OtherSettingsAreChecked) {
  EXPECT_THAT(BuildError(WithConn(R"("timescaledb":"maybe")")), HasSubstr("timescaledb"));
  EXPECT_THAT(BuildError(WithConn(R"("batch_rows":0)")), HasSubstr("batch_rows"));
  EXPECT_THAT(BuildError(WithConn(R"("retry_initial_ms":500,"retry_max_ms":100)")),
              HasSubstr("retry_max_ms"));
}

// ---- helpers for the tests that write ---------------------------------------------------------

struct RowSpec {
  std::string vehicle;
  std::vector<Slot> slots;
};

WindowBatch MakeBatch(int64_t window_ns, std::vector<std::string> sensors,
                      std::vector<RowSpec> rows) {
  WindowBatch b;
  b.window_ns = window_ns;
  b.sensors = std::make_shared<const std::vector<std::string>>(std::move(sensors));
  for (auto& r : rows) b.AddRow(std::move(r.vehicle), r.slots);
  return b;
}

/// A batch of `n` vehicles v0..v<n-1> with speed = i + offset held from before T.
WindowBatch SpeedBatch(int64_t window_ns, int n, double offset = 0) {
  std::vector<RowSpec> rows;
  for (int i = 0; i < n; ++i) {
    rows.push_back({"v" + std::to_string(i), {MakeSlot(Scalar(window_ns - kMs, i + offset), {})}});
  }
  return MakeBatch(window_ns, {"speed"}, std::move(rows));
}

TEST(TimescaleSinkUnreachable, DrainGivesUpAfterTimeoutAndCountsDroppedRows) {
  LogCapture log;
  OperatorHarness h("timescale_sink",
                    WithConn(R"("retry_initial_ms":20,"retry_max_ms":40,"drain_timeout_ms":200)"));
  h.Feed(SpeedBatch(WindowT(), 3));
  const auto out = h.TickAt(WindowT(), /*drain=*/true);
  ASSERT_EQ(testkit::Only<Tick>(out).size(), 1u);
  EXPECT_TRUE(testkit::Only<Tick>(out)[0]->drain);
  EXPECT_EQ(h.Counter("sink_rows_dropped"), 3u);
  EXPECT_EQ(h.Counter("sink_rows_written"), 0u);
  EXPECT_GT(h.Counter("sink_retries"), 0u);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 0.0);
  EXPECT_THAT(log.text(), HasSubstr("3 rows were NOT written"));
}

// ---- integration: a real PostgreSQL -----------------------------------------------------------

/// A PostgreSQL shared by the tests of a suite (started once; a test that stops it has it started
/// again by the next one), skipped where its binaries are missing, and a table per test: `prefix`
/// and the test's name in lower case.
template <testing::PostgresServer::Preload kPreload>
class SharedPostgresTest : public ::testing::Test {
 protected:
  static constexpr bool kTimescaleDb = kPreload == testing::PostgresServer::Preload::kTimescaleDb;

  static void SetUpTestSuite() {
    if (!testing::PostgresServer::Available()) return;
    if (kTimescaleDb && !testing::PostgresServer::TimescaleDbInstalled()) return;
    server_ = new testing::PostgresServer(kPreload);
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
    if (!testing::PostgresServer::Available()) {
      GTEST_SKIP() << "*** PostgreSQL server binaries (initdb, postgres, psql, pg_isready) not "
                      "found: these integration tests did NOT run; run scripts/deps.sh ***";
    }
    if constexpr (kTimescaleDb) FF_REQUIRE_TIMESCALEDB();
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    if (!server_->running()) server_->Start();
    table_ = std::string(kTimescaleDb ? "h_" : "t_") +
             ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (auto& c : table_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }

  /// The sink's config on this test's table, short retries (unless `fields` sets them: a key
  /// given twice is refused), and `fields` (with TimescaleDB: "timescaledb": "on" before them).
  std::string Config(const std::string& fields = "") const {
    std::string out = R"({"conninfo":")" + server_->conninfo() + R"(","table":")" + table_ + "\"" +
                      (kTimescaleDb ? R"(,"timescaledb":"on")" : "");
    if (fields.find("\"retry_initial_ms\"") == std::string::npos) {
      out += R"(,"retry_initial_ms":20)";
    }
    if (fields.find("\"retry_max_ms\"") == std::string::npos) out += R"(,"retry_max_ms":200)";
    return out + (fields.empty() ? "" : ",") + fields + "}";
  }

  std::string Psql(const std::string& sql) const { return server_->Psql(sql); }

  static inline testing::PostgresServer* server_ = nullptr;
  static inline std::string start_error_;
  std::string table_;
};

class TimescaleSinkPg : public SharedPostgresTest<testing::PostgresServer::Preload::kNothing> {
 protected:
  int Count() const { return std::stoi(Psql("SELECT count(*) FROM " + table_)); }
};

TEST_F(TimescaleSinkPg, CreatesTheTableWithExactTypesOnPlainPostgres) {
  LogCapture log;
  OperatorHarness h("timescale_sink", Config());
  EXPECT_TRUE(h.op().Ready());
  EXPECT_EQ(Psql("SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM "
                 "information_schema.columns WHERE table_name = '" +
                 table_ + "' ORDER BY ordinal_position"),
            "vehicle_id text NO\n"
            "time timestamp with time zone NO\n"
            "lat double precision YES\n"
            "lon double precision YES\n"
            "speed double precision YES\n"
            "soc double precision YES\n"
            "torque double precision YES");
  EXPECT_EQ(Psql("SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey::int2[], "
                 "a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                 "a.attnum = ANY(i.indkey::int2[]) WHERE i.indrelid = '" +
                 table_ + "'::regclass AND i.indisprimary"),
            "vehicle_id,time");
  // Like a hypertable's: recent rows of every vehicle without reading the whole table.
  EXPECT_EQ(
      Psql("SELECT indexdef FROM pg_indexes WHERE tablename = '" + table_ + "' AND indexname = '" +
           table_ + "_time_idx'"),
      "CREATE INDEX " + table_ + "_time_idx ON public." + table_ + " USING btree (\"time\" DESC)");
  // TimescaleDB is installed on the test machines, but this server does not preload it.
  EXPECT_THAT(log.text(), HasSubstr("TimescaleDB cannot be used, so '" + table_ +
                                    "' is a plain PostgreSQL table"));
  EXPECT_THAT(log.text(), HasSubstr("shared_preload_libraries"));
}

TEST_F(TimescaleSinkPg, AddsMissingColumnsToAnExistingTable) {
  Psql("CREATE TABLE " + table_ +
       " (vehicle_id text NOT NULL, time timestamptz NOT NULL, lat double precision, "
       "PRIMARY KEY (vehicle_id, time)); INSERT INTO " +
       table_ + " VALUES ('old', '2020-01-01 00:00:00+00', 1.5)");
  OperatorHarness h("timescale_sink", Config());
  EXPECT_EQ(Psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                 "information_schema.columns WHERE table_name = '" +
                 table_ + "'"),
            "vehicle_id,time,lat,lon,speed,soc,torque");
  EXPECT_EQ(Psql("SELECT vehicle_id, lat FROM " + table_), "old|1.5");
}

TEST_F(TimescaleSinkPg, RefusesATableWithoutTheKey) {
  Psql("CREATE TABLE " + table_ + " (vehicle_id text, time timestamptz, speed double precision)");
  EXPECT_THAT(BuildError(Config(R"("columns":[{"name":"speed","sensor":"speed"}])")),
              HasSubstr("ADD PRIMARY KEY (vehicle_id, time)"));
}

TEST_F(TimescaleSinkPg, TimescaledbOnFailsClearlyWithoutTheExtension) {
  const std::string msg = BuildError(Config(R"("timescaledb":"on")"));
  EXPECT_THAT(msg, HasSubstr("TimescaleDB cannot be used on the server"));
  EXPECT_THAT(msg, HasSubstr("shared_preload_libraries"));
  EXPECT_THAT(msg, HasSubstr("\"auto\" or \"off\""));
}

TEST_F(TimescaleSinkPg, ServerErrorsCarryMessageDetailAndHint) {
  auto conn = pg::Connection::Connect(server_->conninfo());
  try {
    conn->Exec(
        "DO $$ BEGIN RAISE EXCEPTION 'the message' USING DETAIL = 'the detail', HINT = 'the "
        "hint', ERRCODE = '22023'; END $$");
    FAIL() << "no error";
  } catch (const pg::Error& e) {
    EXPECT_FALSE(e.connection_lost());
    EXPECT_EQ(e.sqlstate(), "22023");
    EXPECT_THAT(e.what(), HasSubstr("the message"));
    EXPECT_THAT(e.what(), HasSubstr("DETAIL: the detail"));
    EXPECT_THAT(e.what(), HasSubstr("HINT: the hint"));
    EXPECT_THAT(e.what(), Not(HasSubstr("\n")));
  }
}

TEST_F(TimescaleSinkPg, TimescaledbOffAndIgnoredPoliciesAreLogged) {
  {
    LogCapture log;
    OperatorHarness h("timescale_sink", Config(R"("timescaledb":"off")"));
    EXPECT_THAT(log.text(),
                HasSubstr("timescaledb is off; '" + table_ + "' is a plain PostgreSQL table"));
  }
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(R"("compress_after":"7 days")"));
  EXPECT_TRUE(h.op().Ready());
  EXPECT_THAT(log.text(), HasSubstr("compress_after needs TimescaleDB and is ignored"));
}

/// Now, on the engine's clock, in ns.
int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr int64_t kDay = 86'400'000 * kMs;

TEST_F(TimescaleSinkPg, RetentionOnPlainPostgresDropsOldPartitions) {
  const std::string config = Config(
      R"("retention":"2 days","chunk_interval":"1 day","columns":[{"name":"speed","sensor":"speed"}])");
  const int64_t now = WallNs();
  const std::string partitions =
      "SELECT count(*) FROM pg_inherits WHERE inhparent = '" + table_ + "'::regclass";
  {
    LogCapture log;
    OperatorHarness h("timescale_sink", config);
    EXPECT_EQ(Psql("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = '" + table_ +
                   "'::regclass"),
              "r");
    EXPECT_EQ(Psql(partitions), "2");  // today's and tomorrow's, ahead of the rows
    h.Feed(SpeedBatch(now, 2));
    h.Feed(SpeedBatch(now - 5 * kDay, 1));  // a replay of old rows: a partition of its own
    h.TickAt(now, /*drain=*/true);
    EXPECT_EQ(Count(), 3);
    EXPECT_EQ(Psql(partitions), "3");
    // The parent's index on time is every partition's, the one made for the old rows' too.
    EXPECT_EQ(Psql("SELECT count(*) FROM pg_inherits p JOIN pg_index i ON i.indrelid = "
                   "p.inhrelid JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = "
                   "i.indkey[0] WHERE p.inhparent = '" +
                   table_ + "'::regclass AND i.indnatts = 1 AND a.attname = 'time'"),
              "3");
    EXPECT_THAT(log.text(), HasSubstr("partitioned by time (86400 s each); the sink drops "
                                      "partitions older than 2 days itself"));
  }
  // The retention runs at start and then every chunk_interval (at most hourly).
  LogCapture log;
  OperatorHarness h("timescale_sink", config);
  EXPECT_TRUE(testing::WaitFor([&] { return Count() == 2; }, std::chrono::seconds(10)))
      << Count() << " rows";
  EXPECT_EQ(Psql(partitions), "2");
  EXPECT_TRUE(testing::WaitFor(
      [&] { return log.text().find("retention dropped 1 partitions") != std::string::npos; },
      std::chrono::seconds(10)))
      << log.text();
}

TEST_F(TimescaleSinkPg, ADroppedPartitionIsCreatedAgain) {
  OperatorHarness h(
      "timescale_sink",
      Config(R"("retention":"30 days","columns":[{"name":"speed","sensor":"speed"}])"));
  const int64_t now = WallNs();
  h.Feed(SpeedBatch(now, 1));
  h.TickAt(now);
  ASSERT_EQ(Count(), 1);
  Psql("DROP TABLE " + table_.substr(0, 40) + "_p" + std::to_string(now / kDay * 86400));
  h.Feed(SpeedBatch(now, 2, 10));
  h.TickAt(now + kMs, /*drain=*/true);
  EXPECT_EQ(Psql("SELECT string_agg(speed::text, ',' ORDER BY vehicle_id) FROM " + table_),
            "10,11");
  EXPECT_GE(h.Counter("sink_retries"), 1u);
}

TEST_F(TimescaleSinkPg, RowsOlderThanTheRetentionMeetNoDroppedPartition) {
  // The retention's first turn runs at start, beside the first write: a replay of rows older
  // than the retention makes a partition that the turn finds expired. Either the write goes
  // first (then the turn drops its rows, as TimescaleDB drops such a chunk) or the turn (then
  // the write makes the partition again): never a write into a partition dropped under it.
  const std::string config = Config(
      R"("retention":"1 day","chunk_interval":"1 day","columns":[{"name":"speed","sensor":"speed"}])");
  const int64_t old = WallNs() - 30 * kDay;
  for (int round = 0; round < 8; ++round) {
    LogCapture log;
    OperatorHarness h("timescale_sink", config);
    ASSERT_TRUE(h.op().Ready());
    h.Feed(SpeedBatch(old + round * kMs, 3));
    h.TickAt(old + round * kMs, /*drain=*/true);
    EXPECT_EQ(h.Counter("sink_rows_written"), 3u) << "round " << round;
    EXPECT_EQ(h.Counter("sink_retries"), 0u) << "round " << round << "\n" << log.text();
  }
}

TEST_F(TimescaleSinkPg, RetentionOnAnUnpartitionedTableKeepsRows) {
  Psql("CREATE TABLE " + table_ +
       " (vehicle_id text NOT NULL, time timestamptz NOT NULL, speed double precision, "
       "PRIMARY KEY (vehicle_id, time))");
  LogCapture log;
  OperatorHarness h(
      "timescale_sink",
      Config(R"("retention":"2 days","columns":[{"name":"speed","sensor":"speed"}])"));
  EXPECT_THAT(log.text(), HasSubstr("exists unpartitioned: no row of it is dropped"));
  h.Feed(SpeedBatch(WallNs() - 5 * kDay, 1));
  h.TickAt(WallNs(), /*drain=*/true);
  EXPECT_EQ(Count(), 1);
}

TEST_F(TimescaleSinkPg, BadIntervalsAreRefusedByTheServer) {
  const std::string msg = BuildError(Config(R"("retention":"90 dayz")"));
  EXPECT_THAT(msg, HasSubstr("field 'retention'"));
  EXPECT_THAT(msg, HasSubstr("90 dayz"));
}

TEST_F(TimescaleSinkPg, WritesInterpolatedValuesAndNulls) {
  OperatorHarness h("timescale_sink", Config(R"("flush_ms":3600000)"));
  const int64_t t = WindowT();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // torque is configured but not in the batch: NULL.
  h.Feed(MakeBatch(
      t, {"gps", "speed", "soc"},
      {{"v1",
        {MakeSlot(Position(t - 250 * kMs, 48.0, 2.0), Position(t + 750 * kMs, 49.0, 3.0)),
         MakeSlot(Scalar(t - 100 * kMs, 50.0), {}), Slot{}}},
       {"v2",
        {Slot{}, MakeSlot({}, Scalar(t + 10 * kMs, 12.5)), MakeSlot(Scalar(t - kMs, nan), {})}},
       {"a\tb\\c'd", {Slot{}, MakeSlot(Scalar(t - kMs, 0.1), {}), Slot{}}}}));
  EXPECT_EQ(Count(), 0);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 3.0);
  h.TickAt(t + 2000 * kMs, /*drain=*/true);

  EXPECT_EQ(Psql("SELECT vehicle_id, (extract(epoch FROM time) * 1000000)::bigint, lat, lon, "
                 "speed, soc, torque FROM " +
                 table_ + " WHERE vehicle_id LIKE 'v%' ORDER BY vehicle_id"),
            "v1|" + std::to_string(t / 1000) + "|48.25|2.25|50||\n" + "v2|" +
                std::to_string(t / 1000) + "|||12.5||");
  EXPECT_EQ(Psql("SET TimeZone = 'UTC'; SELECT DISTINCT time FROM " + table_),
            "2026-11-22 12:00:01+00");
  EXPECT_EQ(Psql("SELECT speed FROM " + table_ + " WHERE vehicle_id = E'a\\tb\\\\c''d'"), "0.1");
  EXPECT_EQ(h.Counter("sink_rows_written"), 3u);
  EXPECT_EQ(h.Counter("sink_batches"), 1u);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 0.0);
  EXPECT_GT(h.Gauge("sink_last_batch_seconds"), 0.0);

  // One transaction; its three rows were committed when the engine clock said t + 2 s.
  EXPECT_EQ(h.metrics.HistogramCount("sink_write_seconds"), 1u);
  EXPECT_EQ(h.metrics.HistogramCount("row_latency_seconds"), 3u);
  const std::string metrics = h.metrics.Exposition();
  const std::string labels = "node=\"op\",operator=\"timescale_sink\"";
  EXPECT_THAT(metrics, HasSubstr("fleetflow_row_latency_seconds_sum{" + labels + "} 6\n"));
  EXPECT_THAT(metrics,
              HasSubstr("fleetflow_row_latency_seconds_bucket{" + labels + ",le=\"1.5\"} 0\n" +
                        "fleetflow_row_latency_seconds_bucket{" + labels + ",le=\"2\"} 3\n"));
  EXPECT_THAT(metrics,
              HasSubstr("fleetflow_sink_write_seconds_bucket{" + labels + ",le=\"+Inf\"} 1\n"));
}

TEST_F(TimescaleSinkPg, WritesDerivedColumnsAndCountsTheirErrors) {
  OperatorHarness h("timescale_sink", Config(R"j("columns":[
      {"name":"speed","sensor":"speed"},{"name":"torque","sensor":"torque"},
      {"name":"power_kw","expression":"torque * speed / 1000"},
      {"name":"per_torque","expression":"speed / torque"},
      {"name":"mine","expression":"vehicle(\"v2\") ? 1 : 0"}])j"));
  const int64_t t = WindowT();
  h.Feed(MakeBatch(t, {"speed", "torque"},
                   {{"v1", {MakeSlot(Scalar(t - kMs, 20.0), {}), MakeSlot(Scalar(t, 150.0), {})}},
                    {"v2", {MakeSlot(Scalar(t - kMs, 10.0), {}), MakeSlot(Scalar(t, 0.0), {})}},
                    {"v3", {MakeSlot(Scalar(t - kMs, 10.0), {}), Slot{}}}}));
  h.TickAt(t + 2000 * kMs, /*drain=*/true);
  // v2: 10 / 0 is an error (NULL, counted); v3: no torque, NULL without an error.
  EXPECT_EQ(Psql("SELECT vehicle_id, speed, torque, power_kw, per_torque, mine FROM " + table_ +
                 " ORDER BY vehicle_id"),
            "v1|20|150|3|0.13333333333333333|0\n"
            "v2|10|0|0||1\n"
            "v3|10||||0");
  EXPECT_EQ(Psql("SELECT data_type FROM information_schema.columns WHERE table_name = '" + table_ +
                 "' AND column_name = 'power_kw'"),
            "double precision");
  const std::string metrics = h.metrics.Exposition();
  EXPECT_THAT(metrics, HasSubstr("fleetflow_expression_errors_total{node=\"op\","
                                 "operator=\"timescale_sink\",column=\"per_torque\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("fleetflow_expression_errors_total{node=\"op\","
                                 "operator=\"timescale_sink\",column=\"power_kw\"} 0\n"));
}

TEST_F(TimescaleSinkPg, WritesTheStatisticsOfAWindowWithTheirTypes) {
  OperatorHarness h("timescale_sink", Config(R"("columns":[
      {"name": "samples", "sensor": "speed", "stat": "count"},
      {"name": "speed_min", "sensor": "speed", "stat": "min"},
      {"name": "speed_max", "sensor": "speed", "stat": "max"},
      {"name": "speed_mean", "sensor": "speed", "stat": "mean"},
      {"name": "speed_last", "sensor": "speed", "stat": "last"},
      {"name": "speed_from", "sensor": "speed", "stat": "first_time"},
      {"name": "speed_to", "sensor": "speed", "stat": "last_time"},
      {"name": "lat_min", "sensor": "gps", "field": "lat", "stat": "min"},
      {"name": "lon_max", "sensor": "gps", "field": "lon", "stat": "max"},
      {"name": "lat_first", "sensor": "gps", "field": "lat", "stat": "first"},
      {"name": "distance", "sensor": "gps", "stat": "distance"}])"));
  EXPECT_EQ(Psql("SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY "
                 "ordinal_position) FROM information_schema.columns WHERE table_name = '" +
                 table_ + "' AND column_name IN ('samples', 'speed_mean', 'speed_from')"),
            "samples bigint, speed_mean double precision, speed_from timestamp with time zone");
  const int64_t start = WindowT() - 1000 * kMs;  // 12:00:00
  StatsBatch b;
  b.start_ns = start;
  b.length_ns = 60'000 * kMs;
  b.sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed", "gps"});
  SensorStats speed;
  speed.count = 3;
  speed.min = 1.5;
  speed.max = 9.0;
  speed.sum = 12.0;
  speed.first = Scalar(start + 250 * kMs, 1.5);
  speed.last = Scalar(start + 59'750 * kMs, 9.0);
  SensorStats gps;
  gps.count = gps.positions = 2;
  gps.min_lat = 48.1;
  gps.max_lat = 48.2;
  gps.min_lon = 11.5;
  gps.max_lon = 11.6;
  gps.first = Position(start + 100 * kMs, 48.2, 11.5);
  gps.last = Position(start + 900 * kMs, 48.1, 11.6);
  gps.distance_m = 1234.5;
  b.rows = {{"v1", {speed, gps}}, {"v2", {speed, SensorStats{}}}};
  h.Feed(std::move(b));
  h.TickAt(start + 61'000 * kMs, /*drain=*/true);
  EXPECT_EQ(Psql("SET TimeZone = 'UTC'; SELECT vehicle_id, time, samples, speed_min, speed_max, "
                 "speed_mean, speed_last, speed_from, speed_to, lat_min, lon_max, lat_first, "
                 "distance FROM " +
                 table_ + " ORDER BY vehicle_id"),
            "v1|2026-11-22 12:00:00+00|3|1.5|9|4|9|2026-11-22 12:00:00.25+00|"
            "2026-11-22 12:00:59.75+00|48.1|11.6|48.2|1234.5\n"
            "v2|2026-11-22 12:00:00+00|3|1.5|9|4|9|2026-11-22 12:00:00.25+00|"
            "2026-11-22 12:00:59.75+00||||");
}

// A window's rows hold its token (StatsBatch::in_flight) until they are committed: the
// window_aggregate before the sink snapshots no window whose rows are not stored.
TEST_F(TimescaleSinkPg, AWindowsTokenIsHeldUntilItsRowsAreCommitted) {
  OperatorHarness h("timescale_sink", Config(R"("flush_ms": 1000,
      "columns": [{"name": "samples", "sensor": "speed", "stat": "count"}])"));
  const int64_t start = WindowT() - 1000 * kMs;
  StatsBatch b;
  b.start_ns = start;
  b.length_ns = 60'000 * kMs;
  b.sensors = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed"});
  SensorStats speed;
  speed.count = 3;
  b.rows = {{"v1", {speed}}, {"v2", {speed}}};
  auto token = std::make_shared<int>(0);
  const std::weak_ptr<int> held = token;
  b.in_flight = std::move(token);
  h.Feed(std::move(b));
  h.TickAt(start + 61'000 * kMs);  // the Tick the rows came with
  EXPECT_EQ(Count(), 0);
  EXPECT_FALSE(held.expired()) << "let go before the rows were written";
  h.TickAt(start + 62'000 * kMs);  // flush_ms later: written
  EXPECT_EQ(Count(), 2);
  EXPECT_TRUE(held.expired()) << "held after the rows were committed";
}

TEST(TimescaleSinkConfig, AStatisticThatTakesNoFieldRefusesOne) {
  const std::string what = testkit::BuildError(
      "timescale_sink",
      R"({"columns": [{"name": "n", "sensor": "gps", "field": "lat", "stat": "count"}]})");
  EXPECT_THAT(what, HasSubstr("/columns/0/field"));
  EXPECT_THAT(what, HasSubstr("stat count takes no field"));
}

TEST_F(TimescaleSinkPg, RewrittenWindowsUpdateRowsWithoutDuplicates) {
  OperatorHarness h("timescale_sink", Config(R"("columns":[{"name":"speed","sensor":"speed"}])"));
  const int64_t t = WindowT();
  h.Feed(SpeedBatch(t, 2));
  h.TickAt(t, true);
  EXPECT_EQ(Psql("SELECT vehicle_id || '=' || speed FROM " + table_ + " ORDER BY vehicle_id"),
            "v0=0\nv1=1");

  // The same window again, twice within one flush: the last one wins, no duplicate key error.
  h.Feed(SpeedBatch(t, 2, 10));
  h.Feed(SpeedBatch(t, 2, 20));
  h.TickAt(t, true);
  EXPECT_EQ(Psql("SELECT vehicle_id || '=' || speed FROM " + table_ + " ORDER BY vehicle_id"),
            "v0=20\nv1=21");
  EXPECT_EQ(Count(), 2);
  EXPECT_EQ(h.Counter("sink_batches"), 2u);
}

TEST_F(TimescaleSinkPg, AWindowEmittedAgainAsItWasIsNotWrittenAgain) {
  // A partition taken over without a hand-over record emits its last windows again, as they
  // were: the rows are left alone (the same row version), a row with other values is updated.
  OperatorHarness h("timescale_sink", Config(R"("columns":[{"name":"speed","sensor":"speed"}])"));
  const int64_t t = WindowT();
  const std::string versions =
      "SELECT string_agg(xmin::text, ',' ORDER BY vehicle_id) FROM " + table_;
  h.Feed(SpeedBatch(t, 2));
  h.TickAt(t, true);
  const std::string first = Psql(versions);
  h.Feed(SpeedBatch(t, 2));
  h.TickAt(t, true);
  EXPECT_EQ(Psql(versions), first);
  h.Feed(SpeedBatch(t, 2, 10));
  h.TickAt(t, true);
  EXPECT_NE(Psql(versions), first);
  EXPECT_EQ(Psql("SELECT vehicle_id || '=' || speed FROM " + table_ + " ORDER BY vehicle_id"),
            "v0=10\nv1=11");
}

TEST_F(TimescaleSinkPg, TickFlushesOnlyAfterFlushMs) {
  OperatorHarness h("timescale_sink", Config(R"("flush_ms":1000)"));
  h.Feed(SpeedBatch(WindowT(), 2));
  auto out = h.TickAt(10'000 * kMs);  // the Tick the rows came with
  ASSERT_EQ(testkit::Only<Tick>(out).size(), 1u);
  h.TickAt(10'999 * kMs);
  EXPECT_EQ(Count(), 0);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 2.0);

  out = h.TickAt(11'000 * kMs);
  ASSERT_EQ(testkit::Only<Tick>(out).size(), 1u);
  EXPECT_EQ(Count(), 2);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 0.0);
}

TEST_F(TimescaleSinkPg, ByDefaultRowsAreWrittenAtTheTickTheyCameWith) {
  OperatorHarness h("timescale_sink", Config(""));
  h.Feed(SpeedBatch(WindowT(), 3));  // a window join emits the rows, then forwards the Tick
  EXPECT_EQ(Count(), 0);
  h.TickAt(WindowT() + 500 * kMs);
  EXPECT_EQ(Count(), 3);
  EXPECT_EQ(h.Counter("sink_batches"), 1u);
}

TEST_F(TimescaleSinkPg, ByDefaultTheRowsOfAWindowReadLiveAreWrittenAsTheyCome) {
  OperatorHarness h("timescale_sink", Config(""));
  WindowBatch live = SpeedBatch(WindowT(), 3);
  h.clock.Set(WindowT() + 520 * kMs);
  live.timing = {.due_ns = WindowT() + 500 * kMs,
                 .input_ns = WindowT() + 505 * kMs,
                 .closed_ns = WindowT() + 510 * kMs,
                 .emitted_ns = WindowT() + 515 * kMs,
                 .live = true};
  h.Feed(live);  // no Tick waited for
  EXPECT_EQ(Count(), 3);
  EXPECT_EQ(h.Counter("sink_batches"), 1u);
  // Close to commit, and each stage, for each of the 3 rows.
  EXPECT_EQ(h.metrics.HistogramCount("row_close_latency_seconds"), 3u);
  EXPECT_EQ(h.metrics.HistogramCount("row_stage_seconds"), 3u * 9);
  // A backlog's window waits for the Tick, to be written with the others of that Tick.
  WindowBatch backlog = SpeedBatch(WindowT() + 1000 * kMs, 3);
  backlog.timing = live.timing;
  backlog.timing.live = false;
  h.Feed(backlog);
  EXPECT_EQ(Count(), 3);
  h.TickAt(WindowT() + 600 * kMs);
  EXPECT_EQ(Count(), 6);
  EXPECT_EQ(h.Counter("sink_batches"), 2u);
}

TEST_F(TimescaleSinkPg, WritesAsSoonAsBatchRowsArePending) {
  OperatorHarness h("timescale_sink", Config(R"("batch_rows":3,"flush_ms":3600000)"));
  h.Feed(SpeedBatch(WindowT(), 7));
  EXPECT_EQ(Count(), 6);
  EXPECT_EQ(h.Counter("sink_batches"), 2u);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 1.0);
}

TEST_F(TimescaleSinkPg, DrainFlushesAndForwardsTheTick) {
  OperatorHarness h("timescale_sink", Config(R"("flush_ms":3600000)"));
  h.clock.Set(WindowT());
  h.Feed(SpeedBatch(WindowT(), 4));
  EXPECT_TRUE(testkit::Only<Tick>(h.TickAt(WindowT())).size() == 1);
  EXPECT_EQ(Count(), 0);
  const auto out = h.TickAt(WindowT(), /*drain=*/true);
  ASSERT_EQ(testkit::Only<Tick>(out).size(), 1u);
  EXPECT_TRUE(testkit::Only<Tick>(out)[0]->drain);
  EXPECT_EQ(Count(), 4);
}

TEST_F(TimescaleSinkPg, RowsPendingWhilePostgresIsDownArriveAfterRestart) {
  OperatorHarness h("timescale_sink",
                    Config(R"("flush_ms":0,"retry_initial_ms":20,"retry_max_ms":100)"));
  ASSERT_TRUE(h.op().Ready());
  h.Feed(SpeedBatch(WindowT(), 5));
  server_->Stop();

  // While PostgreSQL is down, Ticks keep flowing: each retries at most once per backoff and
  // returns at once, holding the rows.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        EXPECT_EQ(testkit::Only<Tick>(h.TickAt(WindowT())).size(), 1u);
        return h.Counter("sink_retries") >= 3;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 5.0);
  EXPECT_EQ(h.Gauge("sink_blocked"), 0.0);
  EXPECT_FALSE(h.op().Ready());

  server_->Start();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        h.TickAt(WindowT());
        return h.Counter("sink_rows_written") == 5;
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(Count(), 5);
  EXPECT_EQ(h.Counter("sink_rows_dropped"), 0u);
  EXPECT_TRUE(h.op().Ready());
  // Failed attempts are retries, not writes: the histograms count what was committed.
  EXPECT_EQ(h.metrics.HistogramCount("sink_write_seconds"), h.Counter("sink_batches"));
  EXPECT_EQ(h.metrics.HistogramCount("row_latency_seconds"), 5u);
}

TEST_F(TimescaleSinkPg, HoldsUpToMaxPendingRowsThenBlocksUntilPostgresIsBack) {
  OperatorHarness h(
      "timescale_sink",
      Config(R"("batch_rows":2,"max_pending_rows":4,"flush_ms":3600000,"retry_initial_ms":20,)"
             R"("retry_max_ms":100)"));
  server_->Stop();
  h.Feed(SpeedBatch(WindowT(), 3));  // within the bound: returns, holding the rows
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 3.0);
  EXPECT_EQ(h.Gauge("sink_blocked"), 0.0);

  std::atomic<bool> done{false};
  std::thread feeder([&] {
    h.Feed(SpeedBatch(WindowT() + 1000 * kMs, 3));  // 6 > 4: blocks (backpressure)
    done = true;
  });
  const bool blocked =
      testing::WaitFor([&] { return h.Gauge("sink_blocked") == 1.0; }, std::chrono::seconds(10));
  const bool returned_early = done.load();
  server_->Start();
  const bool finished = testing::WaitFor([&] { return done.load(); }, std::chrono::seconds(30));
  feeder.join();
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(returned_early);
  ASSERT_TRUE(finished);
  EXPECT_EQ(h.Gauge("sink_blocked"), 0.0);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 4.0);  // one batch made room
  h.TickAt(WindowT(), /*drain=*/true);
  EXPECT_EQ(Count(), 6);
  EXPECT_EQ(h.Counter("sink_rows_dropped"), 0u);
}

TEST_F(TimescaleSinkPg, StartsWhilePostgresIsDownAndConnectsLater) {
  server_->Stop();
  OperatorHarness h("timescale_sink", Config(R"("flush_ms":0)"));
  EXPECT_FALSE(h.op().Ready());
  server_->Start();
  // Ticks alone reconnect (so /readyz recovers without data), once the backoff has passed.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        h.TickAt(WindowT());
        return h.op().Ready();
      },
      std::chrono::seconds(10)));
  h.Feed(SpeedBatch(WindowT(), 3));
  h.TickAt(WindowT());
  EXPECT_TRUE(h.op().Ready());
  EXPECT_EQ(Count(), 3);
}

TEST_F(TimescaleSinkPg, SqlInjectionInNamesIsRefusedBeforeTouchingTheDatabase) {
  Psql("CREATE TABLE sentinel (x int)");
  const std::string conn = server_->conninfo();
  EXPECT_THAT(
      BuildError(R"({"conninfo":")" + conn + R"(","table":"x (a int); DROP TABLE sentinel; --"})"),
      HasSubstr("/config/table"));
  EXPECT_THAT(BuildError(R"({"conninfo":")" + conn +
                         R"(","columns":[{"name":"a double precision); DROP TABLE sentinel; --",)"
                         R"("sensor":"speed"}]})"),
              HasSubstr("/config/columns/0/name"));
  EXPECT_EQ(Psql("SELECT count(*) FROM sentinel"), "0");
  EXPECT_EQ(Psql("SELECT count(*) FROM pg_class WHERE relname LIKE 'x %' OR relname LIKE 'a %'"),
            "0");
}

TEST_F(TimescaleSinkPg, NotPreloadedTimescaleDbGivesAPlainTableAndOneWarning) {
  FF_REQUIRE_TIMESCALEDB();  // this server does not preload it: the state right after installing
  LogCapture log;
  {
    OperatorHarness h("timescale_sink", Config(R"("retention":"7 days")"));
    ASSERT_TRUE(h.op().Ready());
    const int64_t now = WallNs();  // within the retention, whatever day the test runs
    h.Feed(SpeedBatch(now, 3));
    h.TickAt(now, /*drain=*/true);
    EXPECT_EQ(Count(), 3);
    EXPECT_EQ(h.Counter("sink_retries"), 0u);
  }
  const std::string text = log.text();
  EXPECT_THAT(text, HasSubstr("installed but not preloaded"));
  EXPECT_THAT(text, HasSubstr("shared_preload_libraries = 'timescaledb'"));
  EXPECT_THAT(text, HasSubstr("the retention drops partitions by time"));
  size_t warnings = 0;
  for (size_t p = 0; (p = text.find("TimescaleDB cannot be used", p)) != std::string::npos; ++p) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << text;
  // Checked before any CREATE EXTENSION: the server never had to end a session.
  EXPECT_THAT(server_->ReadLog(), Not(HasSubstr("must be preloaded")));
  EXPECT_EQ(Psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"), "0");

  const std::string msg = BuildError(Config(R"("timescaledb":"on")"));
  EXPECT_THAT(msg, HasSubstr("installed but not preloaded"));
  EXPECT_THAT(msg, HasSubstr("shared_preload_libraries"));
}

TEST(TimescaleSinkFatal, ACreateExtensionThatEndsTheSessionGivesAPlainTableNotARetryLoop) {
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TIMESCALEDB();
  // A placeholder for the loader's setting fools the sink's check, so CREATE EXTENSION runs on a
  // server that does not preload TimescaleDB: the server ends the session with FATAL.
  testing::PostgresServer pg({"timescaledb.disable_load=off"});
  pg.Start();
  const std::string config = R"({"conninfo":")" + pg.conninfo() +
                             R"(","table":"t","retry_initial_ms":20,"retry_max_ms":200)";
  LogCapture log;
  {
    OperatorHarness h("timescale_sink", config + "}");
    ASSERT_TRUE(h.op().Ready()) << log.text();
    h.Feed(SpeedBatch(WindowT(), 2));
    h.TickAt(WindowT(), /*drain=*/true);
    EXPECT_EQ(h.Counter("sink_retries"), 0u);
  }
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM t"), "2");
  EXPECT_THAT(log.text(),
              HasSubstr("the server ended the session on CREATE EXTENSION timescaledb"));
  EXPECT_THAT(log.text(), HasSubstr("shared_preload_libraries"));
  EXPECT_THAT(pg.ReadLog(), HasSubstr("must be preloaded"));
  const std::string msg = BuildError(config + R"(,"timescaledb":"on"})");
  EXPECT_THAT(msg, HasSubstr("ended the session on CREATE EXTENSION"));
  EXPECT_THAT(msg, HasSubstr("\"auto\" or \"off\""));
}

// ---- integration: a primary and a streaming standby (failover) -------------------------------

/// A synchronous primary + standby pair (testing::PostgresPair) and a sink naming both, with
/// short retries; every insert and update of the sink's table `t` is logged in `t_writes`, on
/// the primary, from where streaming replication takes it to the standby.
class TimescaleSinkFailover : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_POSTGRES();
    pair_.Start();
  }

  std::string Config(const std::string& conninfo) const {
    return R"({"conninfo":")" + conninfo +
           R"(","table":"t","columns":[{"name":"speed","sensor":"speed"}],)"
           R"("retry_initial_ms":20,"retry_max_ms":200})";
  }

  void CountWrites() {
    pair_.primary().Psql(
        "CREATE TABLE t_writes (vehicle_id text, time timestamptz);"
        "CREATE FUNCTION log_t_write() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO t_writes VALUES (NEW.vehicle_id, NEW.time); RETURN NULL; END $$;"
        "CREATE TRIGGER log_t_write AFTER INSERT OR UPDATE ON t "
        "FOR EACH ROW EXECUTE FUNCTION log_t_write();");
  }

  /// "<rows> <writes> <most writes of one row>" on `pg`.
  static std::string RowsAndWrites(const testing::PostgresServer& pg) {
    return pg.Psql(
        "SELECT (SELECT count(*) FROM t) || ' ' || coalesce(sum(n), 0) || ' ' || "
        "coalesce(max(n), 0) "
        "FROM (SELECT count(*) AS n FROM t_writes GROUP BY vehicle_id, time) AS per_row");
  }

  /// Ticks `h` until it has written `rows` rows in all; false when it has not within 30 s.
  static bool TickUntilWritten(OperatorHarness& h, uint64_t rows) {
    return testing::WaitFor(
        [&] {
          h.TickAt(WindowT());
          return h.Counter("sink_rows_written") >= rows;
        },
        std::chrono::seconds(30));
  }

  std::string Port(const testing::PostgresServer& pg) const { return std::to_string(pg.port()); }

  testing::PostgresPair pair_;
};

TEST_F(TimescaleSinkFailover, RowsHeldWhileThePrimaryIsGoneAreWrittenOnceToThePromotedStandby) {
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(pair_.conninfo()));
  ASSERT_TRUE(h.op().Ready()) << log.text();
  // The session's description names the server libpq kept, not the list.
  EXPECT_THAT(log.text(), HasSubstr("connected to PostgreSQL (host=127.0.0.1 port=" +
                                    Port(pair_.primary()) + " dbname=fleetflow user=postgres)"));
  CountWrites();
  h.Feed(SpeedBatch(WindowT(), 3));
  h.TickAt(WindowT());
  ASSERT_EQ(h.Counter("sink_rows_written"), 3u);

  pair_.primary().Kill();
  h.Feed(SpeedBatch(WindowT() + 1000 * kMs, 3));
  // Until the promotion, every connect finds the primary gone and the standby read-only.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        h.TickAt(WindowT());
        return h.Counter("sink_retries") >= 3;
      },
      std::chrono::seconds(20)));
  EXPECT_FALSE(h.op().Ready());
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 3.0);
  EXPECT_THAT(log.text(), HasSubstr("session is read-only"));

  pair_.standby().Promote();
  ASSERT_TRUE(TickUntilWritten(h, 6)) << log.text();
  EXPECT_TRUE(h.op().Ready());
  EXPECT_EQ(RowsAndWrites(pair_.standby()), "6 6 1");
  const std::string text = log.text();
  EXPECT_THAT(text, HasSubstr("lost the connection to PostgreSQL at 127.0.0.1:" +
                              Port(pair_.primary()) + " while writing 3 rows; 3 rows held"));
  EXPECT_THAT(text, HasSubstr("writing to PostgreSQL at 127.0.0.1:" + Port(pair_.standby()) +
                              ", a different server than before (127.0.0.1:" +
                              Port(pair_.primary()) + ")"));
  EXPECT_THAT(text, HasSubstr("connected to PostgreSQL (host=127.0.0.1 port=" +
                              Port(pair_.standby()) + " dbname=fleetflow user=postgres)"));
  EXPECT_THAT(text, Not(HasSubstr("unanswered COMMIT")));
}

TEST_F(TimescaleSinkFailover, ACommitWhoseOutcomeIsUnknownIsNotWrittenTwice) {
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(pair_.conninfo()));
  ASSERT_TRUE(h.op().Ready()) << log.text();
  CountWrites();
  h.Feed(SpeedBatch(WindowT(), 3));
  h.TickAt(WindowT());
  ASSERT_EQ(h.Counter("sink_rows_written"), 3u);

  // The primary waits for a synchronous standby that never comes, so the next COMMIT hangs on
  // it; the standby, now asynchronous, still receives and applies that transaction.
  testing::PostgresServer& primary = pair_.primary();
  primary.Psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
  primary.Psql("SELECT pg_reload_conf()");
  std::thread writer([&] {
    h.Feed(SpeedBatch(WindowT() + 1000 * kMs, 3));
    h.TickAt(WindowT());
  });
  const bool committing = testing::WaitFor(
      [&] {
        return primary.TryPsql(
                   "SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
                   "'SyncRep'") == "1";
      },
      std::chrono::seconds(20));
  const bool on_standby =
      testing::WaitFor([&] { return pair_.standby().TryPsql("SELECT count(*) FROM t") == "6"; },
                       std::chrono::seconds(20));
  primary.Kill();  // the COMMIT gets no answer
  writer.join();
  ASSERT_TRUE(committing) << log.text();
  ASSERT_TRUE(on_standby);
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 3.0);

  pair_.standby().Promote();
  ASSERT_TRUE(TickUntilWritten(h, 6)) << log.text();
  // Each row once: the rows of the unanswered COMMIT were in the table and not written again.
  EXPECT_EQ(RowsAndWrites(pair_.standby()), "6 6 1");
  EXPECT_EQ(h.Gauge("sink_pending_rows"), 0.0);
  const std::string text = log.text();
  EXPECT_THAT(text, HasSubstr("while writing 3 rows during their COMMIT"));
  EXPECT_THAT(text, HasSubstr("the write after the unanswered COMMIT of 3 rows added or changed 0 "
                              "of 3 rows; the other 3 were in the table as sent"));

  // A later write of a window already written updates its rows as before.
  h.Feed(SpeedBatch(WindowT(), 3, 100));
  h.TickAt(WindowT());
  EXPECT_EQ(RowsAndWrites(pair_.standby()), "6 9 2");
}

TEST_F(TimescaleSinkFailover, AStandbyIsNeverWrittenToAndTheSinkSaysWhy) {
  LogCapture log;
  testing::PostgresServer& standby = pair_.standby();
  // Named alone, without target_session_attrs: the sink asks the server what it is.
  OperatorHarness alone("timescale_sink", Config(standby.conninfo()));
  EXPECT_FALSE(alone.op().Ready());
  EXPECT_THAT(log.text(),
              HasSubstr("no PostgreSQL to write to yet (PostgreSQL at 127.0.0.1:" + Port(standby) +
                        " is a standby (in recovery) and takes no writes: name the primary"));
  EXPECT_THAT(log.text(), HasSubstr("target_session_attrs=read-write"));
  // With target_session_attrs=read-write, libpq itself refuses it.
  OperatorHarness attrs("timescale_sink",
                        Config(standby.conninfo() + " target_session_attrs=read-write"));
  EXPECT_FALSE(attrs.op().Ready());
  EXPECT_THAT(log.text(), HasSubstr("session is read-only"));

  // fleetflow validate --connect says the same.
  TimescaleSinkOptions options;
  options.conninfo = standby.conninfo();
  options.table = "t";
  options.timescale = TimescaleMode::kOff;
  const auto findings = CheckSinkDatabase(options);
  EXPECT_TRUE(std::any_of(findings.begin(), findings.end(), [](const ConnectFinding& f) {
    return f.level == ConnectFinding::Level::kProblem &&
           f.message.find("is a standby (in recovery) and takes no writes") != std::string::npos;
  }));

  alone.Feed(SpeedBatch(WindowT(), 2));
  attrs.Feed(SpeedBatch(WindowT(), 2));
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        alone.TickAt(WindowT());
        attrs.TickAt(WindowT());
        return alone.Counter("sink_retries") >= 2 && attrs.Counter("sink_retries") >= 2;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(alone.Gauge("sink_pending_rows"), 2.0);
  EXPECT_EQ(attrs.Gauge("sink_pending_rows"), 2.0);
  EXPECT_EQ(pair_.primary().TryPsql("SELECT count(*) FROM t"), std::nullopt);  // never created

  // Once promoted, it takes the rows (and the other sink's, the same ones: the upsert).
  standby.Promote();
  ASSERT_TRUE(TickUntilWritten(alone, 2)) << log.text();
  ASSERT_TRUE(TickUntilWritten(attrs, 2)) << log.text();
  EXPECT_EQ(standby.Psql("SELECT count(*) FROM t"), "2");
}

// ---- integration: PostgreSQL preloading TimescaleDB (the Apache-licensed edition) ------------

class TimescaleSinkTsdb
    : public SharedPostgresTest<testing::PostgresServer::Preload::kTimescaleDb> {
 protected:
  std::string ChunkInterval() const {
    return Psql(
        "SELECT time_interval FROM timescaledb_information.dimensions WHERE "
        "hypertable_name = '" +
        table_ + "' AND column_name = 'time'");
  }
  std::string Chunks() const { return Psql("SELECT count(*) FROM show_chunks('" + table_ + "')"); }
};

constexpr int64_t kHour = 3'600'000 * kMs;

TEST_F(TimescaleSinkTsdb, CreatesAHypertableWithTheChunkIntervalAndWritesItsRows) {
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(R"("chunk_interval":"6 hours")"));
  ASSERT_TRUE(h.op().Ready());
  EXPECT_EQ(ChunkInterval(), "06:00:00");
  EXPECT_EQ(Psql("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").empty(),
            false);
  // 12:00:01 and 19:00:01: two 6-hour chunks (they start at multiples of 6 h since the epoch).
  h.Feed(SpeedBatch(WindowT(), 3));
  h.Feed(SpeedBatch(WindowT() + 7 * kHour, 3, 100));
  h.TickAt(WindowT() + 7 * kHour, /*drain=*/true);
  EXPECT_EQ(Psql("SET TimeZone = 'UTC'; SELECT string_agg(vehicle_id || '@' || "
                 "to_char(time, 'HH24:MI:SS') || '=' || speed, ' ' ORDER BY time, vehicle_id) "
                 "FROM " +
                 table_),
            "v0@12:00:01=0 v1@12:00:01=1 v2@12:00:01=2 v0@19:00:01=100 v1@19:00:01=101 "
            "v2@19:00:01=102");
  EXPECT_EQ(Chunks(), "2");
  EXPECT_THAT(log.text(), HasSubstr("TimescaleDB hypertable, Apache-licensed ('apache') edition"));
}

// The tiers' sinks start together: on a database without the extension yet, each one's CREATE
// EXTENSION must not fail on another's (which left a plain table behind, with the warning that
// TimescaleDB cannot be used).
TEST_F(TimescaleSinkTsdb, SinksStartingTogetherOnAFreshDatabaseAllMakeHypertables) {
  constexpr int kSinks = 4;
  for (int round = 0; round < 3; ++round) {
    const std::string db = "together_" + std::to_string(round);
    server_->Psql("CREATE DATABASE " + db);
    std::vector<std::unique_ptr<OperatorHarness>> sinks(kSinks);
    std::vector<std::thread> starts;
    for (int i = 0; i < kSinks; ++i) {
      starts.emplace_back([&, i] {
        sinks[i] = std::make_unique<OperatorHarness>(
            "timescale_sink", R"({"conninfo":")" + server_->conninfo() + " dbname=" + db +
                                  R"(","table":"t)" + std::to_string(i) + R"("})");
      });
    }
    for (auto& t : starts) t.join();
    for (int i = 0; i < kSinks; ++i) {
      ASSERT_TRUE(sinks[i]->op().Ready());
      EXPECT_EQ(server_->Psql("SELECT count(*) FROM timescaledb_information.hypertables WHERE "
                              "hypertable_name = 't" +
                                  std::to_string(i) + "'",
                              db),
                "1")
          << "round " << round << ", sink " << i;
    }
  }
}

TEST_F(TimescaleSinkTsdb, RestartOnAnExistingHypertableTakesTheNewChunkInterval) {
  {
    OperatorHarness h("timescale_sink", Config(R"("chunk_interval":"6 hours")"));
    h.Feed(SpeedBatch(WindowT(), 2));
    h.TickAt(WindowT(), /*drain=*/true);
  }
  EXPECT_EQ(ChunkInterval(), "06:00:00");
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(R"("chunk_interval":"12 hours")"));
  ASSERT_TRUE(h.op().Ready());
  EXPECT_EQ(ChunkInterval(), "12:00:00");
  EXPECT_THAT(log.text(), HasSubstr("changes from 06:00:00 to 12 hours"));
  h.Feed(SpeedBatch(WindowT(), 2, 10));  // rewrites the first rows
  h.Feed(SpeedBatch(WindowT() + 1000 * kMs, 2));
  h.TickAt(WindowT() + 1000 * kMs, /*drain=*/true);
  EXPECT_EQ(Psql("SELECT count(*) FROM " + table_), "4");
  EXPECT_EQ(Psql("SELECT string_agg(speed::text, ',' ORDER BY vehicle_id) FROM " + table_ +
                 " WHERE time = (SELECT min(time) FROM " + table_ + ")"),
            "10,11");
  EXPECT_EQ(Psql("SELECT count(*) FROM timescaledb_information.hypertables WHERE "
                 "hypertable_name = '" +
                 table_ + "'"),
            "1");
}

TEST_F(TimescaleSinkTsdb, RetentionDropsOldChunksWithoutAPolicyJobOnTheApacheEdition) {
  {
    OperatorHarness h("timescale_sink", Config(R"("chunk_interval":"1 day")"));
    ASSERT_TRUE(h.op().Ready());
  }
  Psql("INSERT INTO " + table_ +
       " (vehicle_id, time, speed) SELECT 'old', now() - d * interval '1 day', d FROM "
       "generate_series(0, 29) d");
  ASSERT_GE(std::stoi(Chunks()), 29);
  LogCapture log;
  OperatorHarness h("timescale_sink", Config(R"("chunk_interval":"1 day","retention":"7 days")"));
  ASSERT_TRUE(h.op().Ready());
  // At start, off the write path: chunks entirely older than 7 days go.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return Psql("SELECT count(*) FROM " + table_ + " WHERE time < now() - interval '8 days'") ==
               "0";
      },
      std::chrono::seconds(30)))
      << log.text();
  EXPECT_EQ(Psql("SELECT count(*) FROM " + table_ + " WHERE time > now() - interval '6 days'"),
            "6");
  EXPECT_LE(std::stoi(Chunks()), 9);
  EXPECT_THAT(log.text(), HasSubstr("no retention policy job"));
  EXPECT_THAT(log.text(), HasSubstr("retention dropped"));
  // No policy job was asked of the Apache edition, and writes go on.
  EXPECT_EQ(Psql("SELECT count(*) FROM timescaledb_information.jobs WHERE hypertable_name = '" +
                 table_ + "'"),
            "0");
  h.Feed(SpeedBatch(WindowT(), 2));
  h.TickAt(WindowT(), /*drain=*/true);
  EXPECT_EQ(Psql("SELECT count(*) FROM " + table_ + " WHERE vehicle_id LIKE 'v%'"), "2");
}

TEST_F(TimescaleSinkTsdb, CompressAfterOnTheApacheEditionIsAConfigurationErrorNamingIt) {
  for (const char* mode : {"on", "auto"}) {
    const std::string msg =
        BuildError(R"({"conninfo":")" + server_->conninfo() + R"(","table":")" + table_ +
                   R"(","timescaledb":")" + mode + R"(","compress_after":"7 days"})");
    EXPECT_THAT(msg, HasSubstr("field 'compress_after'")) << mode;
    EXPECT_THAT(msg, HasSubstr("Apache-licensed ('apache') edition")) << mode;
    EXPECT_THAT(msg, HasSubstr("Community edition")) << mode;
  }
}

TEST_F(TimescaleSinkTsdb, ARoleThatMayNotCreateTheExtensionGetsAPlainTableInAuto) {
  server_->Psql("CREATE ROLE limited LOGIN", "postgres");
  server_->Psql("CREATE DATABASE limited_db", "postgres");
  server_->Psql("GRANT CREATE ON SCHEMA public TO limited", "limited_db");
  const std::string conn =
      "host=127.0.0.1 port=" + std::to_string(server_->port()) + " user=limited dbname=limited_db";
  const std::string config = R"({"conninfo":")" + conn + R"(","table":")" + table_ + "\"";
  {
    LogCapture log;
    OperatorHarness h("timescale_sink", config + "}");
    ASSERT_TRUE(h.op().Ready());
    EXPECT_THAT(log.text(), HasSubstr("the role 'limited' may not create the timescaledb "
                                      "extension in database 'limited_db'"));
    EXPECT_THAT(log.text(), HasSubstr("is a plain PostgreSQL table"));
    h.Feed(SpeedBatch(WindowT(), 2));
    h.TickAt(WindowT(), /*drain=*/true);
  }
  EXPECT_EQ(server_->Psql("SELECT count(*) FROM " + table_, "limited_db"), "2");
  EXPECT_THAT(BuildError(config + R"(,"timescaledb":"on"})"), HasSubstr("may not create"));
}

}  // namespace
}  // namespace fleetflow
