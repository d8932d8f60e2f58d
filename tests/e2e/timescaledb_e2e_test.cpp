// TimescaleDB end to end: pipelines/default.json into a PostgreSQL that preloads TimescaleDB (the
// Apache-licensed edition scripts/timescaledb.sh installs). The rows are checked against the
// independent recomputation as in the plain PostgreSQL tests; the table must be a hypertable
// with the configured chunk interval, survive an engine restart, and a server that does not
// preload TimescaleDB must give either a plain table (auto) or a refusal to start (on), both
// naming shared_preload_libraries.
#include <gtest/gtest.h>

#include <csignal>

#include "fleet_check.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int kVehicles = 20;
constexpr int kDurationS = 8;

const std::string kPipeline = std::string(FF_SOURCE_DIR) + "/pipelines/default.json";

/// Runs fleet-sim (seed 42) for kDurationS and returns the rows it must produce.
ExpectedRows PublishFleet(const NatsServer& nats) {
  sim::FleetConfig fleet;
  fleet.seed = 42;
  fleet.vehicles = kVehicles;
  fleet.start_ns = (NowNs() / kSecond + 2) * kSecond + 250'000'000;  // not on a window boundary
  const int64_t end_ns = fleet.start_ns + kDurationS * kSecond;
  const CommandResult sim = RunCommand(
      {std::string(FF_BINARY_DIR) + "/firmware/fleet-sim", "--nats-url", nats.url(), "--vehicles",
       std::to_string(kVehicles), "--seed", "42", "--duration", std::to_string(kDurationS),
       "--start-ns", std::to_string(fleet.start_ns), "--quiet"},
      60s);
  EXPECT_EQ(sim.exit_code, 0) << sim.err;
  return ComputeExpectedRows(fleet, end_ns);
}

TEST(TimescaleDbE2E, DefaultPipelineIntoAHypertableEveryRowOnceThenARestartOnIt) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TIMESCALEDB();
  NatsServer nats;
  nats.Start();
  PostgresServer pg(PostgresServer::Preload::kTimescaleDb);
  pg.Start();
  TempDir dir("fleetflow-e2e");
  // The shipped pipeline with a chunk interval of its own, to see it honoured.
  const std::string pipeline = WritePipelineVariant(
      kPipeline, "database", R"({"chunk_interval": "2 hours"})", dir.File("pipeline.json"));
  {
    Engine engine(pipeline, nats, pg, dir.File("engine.log"));
    ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();
    const auto expected = PublishFleet(nats);
    ASSERT_GT(expected.size(), static_cast<size_t>(kVehicles * (kDurationS - 2)));
    const std::string count_sql = "SELECT count(*) FROM vehicle_telemetry";
    ASSERT_TRUE(WaitFor([&] { return pg.Psql(count_sql) == std::to_string(expected.size()); }, 30s))
        << "rows: " << pg.Psql(count_sql) << ", expected " << expected.size() << "\n"
        << engine.process().ReadLog();
    EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
    const CheckResult check = CheckRows(pg, expected);
    EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
    EXPECT_NE(engine.process().ReadLog().find("TimescaleDB hypertable, Apache-licensed"),
              std::string::npos)
        << engine.process().ReadLog();
    std::printf("e2e default pipeline into a TimescaleDB hypertable: %d vehicles x %d s: %s\n",
                kVehicles, kDurationS, check.Summary().c_str());
  }
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM timescaledb_information.hypertables WHERE "
                    "hypertable_name = 'vehicle_telemetry'"),
            "1");
  EXPECT_EQ(pg.Psql("SELECT time_interval FROM timescaledb_information.dimensions WHERE "
                    "hypertable_name = 'vehicle_telemetry' AND column_name = 'time'"),
            "02:00:00");
  EXPECT_GE(std::stoi(pg.Psql("SELECT count(*) FROM show_chunks('vehicle_telemetry')")), 1);

  // A new engine on the existing hypertable: ready, and its rows join the old ones.
  const std::string before = pg.Psql("SELECT count(*) FROM vehicle_telemetry");
  Engine again(pipeline, nats, pg, dir.File("engine2.log"));
  ASSERT_TRUE(again.WaitReady()) << again.process().ReadLog();
  const auto expected = PublishFleet(nats);
  ASSERT_TRUE(WaitFor(
      [&] {
        return std::stoul(pg.Psql("SELECT count(*) FROM vehicle_telemetry")) ==
               std::stoul(before) + expected.size();
      },
      30s))
      << pg.Psql("SELECT count(*) FROM vehicle_telemetry") << "\n"
      << again.process().ReadLog();
  EXPECT_EQ(again.process().Stop(SIGTERM, 30s), 0) << again.process().ReadLog();
  EXPECT_EQ(again.process().ReadLog().find("cannot be used"), std::string::npos)
      << again.process().ReadLog();
}

TEST(TimescaleDbE2E, NotPreloadedAutoIsReadyOnAPlainTableAndOnRefusesToStart) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TIMESCALEDB();  // installed, but this server does not preload it
  NatsServer nats;
  nats.Start();
  PostgresServer pg(PostgresServer::Preload::kNothing);
  pg.Start();
  TempDir dir("fleetflow-e2e");
  {
    Engine engine(kPipeline, nats, pg, dir.File("auto.log"));
    ASSERT_TRUE(engine.WaitReady(20s)) << engine.process().ReadLog();  // no retry loop: /readyz 200
    EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0);
    const std::string log = engine.process().ReadLog();
    EXPECT_NE(log.find("installed but not preloaded"), std::string::npos) << log;
    EXPECT_NE(log.find("shared_preload_libraries = 'timescaledb'"), std::string::npos) << log;
    EXPECT_EQ(log.find("retry"), std::string::npos) << log;
  }
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM pg_tables WHERE tablename = 'vehicle_telemetry'"), "1");
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"), "0");

  const std::string on =
      WritePipelineVariant(kPipeline, "database", R"({"timescaledb": "on"})", dir.File("on.json"));
  Engine engine(on, nats, pg, dir.File("on.log"));
  const auto status = engine.process().Wait(30s);
  ASSERT_TRUE(status.has_value()) << "the engine did not stop\n" << engine.process().ReadLog();
  EXPECT_NE(*status, 0);
  const std::string log = engine.process().ReadLog();
  EXPECT_NE(log.find("installed but not preloaded"), std::string::npos) << log;
  EXPECT_NE(log.find("shared_preload_libraries"), std::string::npos) << log;
  EXPECT_EQ(pg.ReadLog().find("must be preloaded"), std::string::npos) << pg.ReadLog();
}

}  // namespace
}  // namespace fleetflow::testing
