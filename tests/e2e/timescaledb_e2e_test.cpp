// TimescaleDB end to end: pipelines/default.json into a PostgreSQL that preloads TimescaleDB (the
// Apache-licensed edition scripts/timescaledb.sh installs). The rows are checked against the
// independent recomputation as in the plain PostgreSQL tests; the table must be a hypertable
// with the configured chunk interval, survive an engine restart, and a server that does not
// preload TimescaleDB must give either a plain table (auto) or a refusal to start (on), both
// naming shared_preload_libraries.
#include <gtest/gtest.h>

#include <csignal>

#include "build_paths.hpp"
#include "fleet_check.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kVehicles = 20;
constexpr int kDurationS = 8;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/default.json";

/// Runs fleet-sim (seed 42) for kDurationS and returns the rows it must produce.
ExpectedRows PublishFleet(const NatsServer& nats) {
  const SimRun sim = RunFleetSim(nats, kVehicles, kDurationS);
  EXPECT_EQ(sim.result.exit_code, 0) << sim.result.err;
  return sim.expected;
}

TEST(TimescaleDbE2E, DefaultPipelineIntoAHypertableEveryRowOnceThenARestartOnIt) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TIMESCALEDB();
  Servers s("fleetflow-e2e", 0, PostgresServer::Preload::kTimescaleDb);
  // The shipped pipeline with a chunk interval of its own, to see it honoured.
  const std::string pipeline = WritePipelineVariant(
      kPipeline, "database", R"({"chunk_interval": "2 hours"})", s.dir.File("pipeline.json"));
  {
    Engine engine(pipeline, s.nats, s.pg, s.dir.File("engine.log"));
    ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();
    const auto expected = PublishFleet(s.nats);
    ASSERT_GT(expected.size(), static_cast<size_t>(kVehicles * (kDurationS - 2)));
    ASSERT_TRUE(WaitForRows(s.pg, expected.size()))
        << "rows: " << Rows(s.pg) << ", expected " << expected.size() << "\n"
        << engine.process().ReadLog();
    EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
    const CheckResult check = CheckRows(s.pg, expected);
    EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
    EXPECT_NE(engine.process().ReadLog().find("TimescaleDB hypertable, Apache-licensed"),
              std::string::npos)
        << engine.process().ReadLog();
    std::printf("e2e default pipeline into a TimescaleDB hypertable: %d vehicles x %d s: %s\n",
                kVehicles, kDurationS, check.Summary().c_str());
  }
  EXPECT_EQ(s.pg.Psql("SELECT count(*) FROM timescaledb_information.hypertables WHERE "
                      "hypertable_name = 'vehicle_telemetry'"),
            "1");
  EXPECT_EQ(s.pg.Psql("SELECT time_interval FROM timescaledb_information.dimensions WHERE "
                      "hypertable_name = 'vehicle_telemetry' AND column_name = 'time'"),
            "02:00:00");
  EXPECT_GE(std::stoi(s.pg.Psql("SELECT count(*) FROM show_chunks('vehicle_telemetry')")), 1);

  // A new engine on the existing hypertable: ready, and its rows join the old ones.
  const std::string before = s.pg.Psql("SELECT count(*) FROM vehicle_telemetry");
  Engine again(pipeline, s.nats, s.pg, s.dir.File("engine2.log"));
  ASSERT_TRUE(again.WaitReady()) << again.process().ReadLog();
  const auto expected = PublishFleet(s.nats);
  ASSERT_TRUE(WaitFor(
      [&] {
        return std::stoul(s.pg.Psql("SELECT count(*) FROM vehicle_telemetry")) ==
               std::stoul(before) + expected.size();
      },
      30s))
      << s.pg.Psql("SELECT count(*) FROM vehicle_telemetry") << "\n"
      << again.process().ReadLog();
  EXPECT_EQ(again.process().Stop(SIGTERM, 30s), 0) << again.process().ReadLog();
  EXPECT_EQ(again.process().ReadLog().find("cannot be used"), std::string::npos)
      << again.process().ReadLog();
}

TEST(TimescaleDbE2E, NotPreloadedAutoIsReadyOnAPlainTableAndOnRefusesToStart) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TIMESCALEDB();  // installed, but this server does not preload it
  Servers s("fleetflow-e2e", 0, PostgresServer::Preload::kNothing);
  {
    Engine engine(kPipeline, s.nats, s.pg, s.dir.File("auto.log"));
    ASSERT_TRUE(engine.WaitReady(20s)) << engine.process().ReadLog();  // no retry loop: /readyz 200
    EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0);
    const std::string log = engine.process().ReadLog();
    EXPECT_NE(log.find("installed but not preloaded"), std::string::npos) << log;
    EXPECT_NE(log.find("shared_preload_libraries = 'timescaledb'"), std::string::npos) << log;
    EXPECT_EQ(log.find("retry"), std::string::npos) << log;
  }
  EXPECT_EQ(s.pg.Psql("SELECT count(*) FROM pg_tables WHERE tablename = 'vehicle_telemetry'"), "1");
  EXPECT_EQ(s.pg.Psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"), "0");

  const std::string on = WritePipelineVariant(kPipeline, "database", R"({"timescaledb": "on"})",
                                              s.dir.File("on.json"));
  Engine engine(on, s.nats, s.pg, s.dir.File("on.log"));
  const auto status = engine.process().Wait(30s);
  ASSERT_TRUE(status.has_value()) << "the engine did not stop\n" << engine.process().ReadLog();
  EXPECT_NE(*status, 0);
  const std::string log = engine.process().ReadLog();
  EXPECT_NE(log.find("installed but not preloaded"), std::string::npos) << log;
  EXPECT_NE(log.find("shared_preload_libraries"), std::string::npos) << log;
  EXPECT_EQ(s.pg.ReadLog().find("must be preloaded"), std::string::npos) << s.pg.ReadLog();
}

}  // namespace
}  // namespace fleetflow::testing
