// The whole path with real components: fleet-sim (fixed seed) publishes over a real nats-server,
// fleetflow runs pipelines/default.json, rows land in a real PostgreSQL. The expected rows are
// recomputed here from the simulator's signal model and the rules of docs/semantics.md,
// independently of the engine's code.
#include <gtest/gtest.h>

#include "fleet_check.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int kVehicles = 20;
constexpr int kDurationS = 8;

TEST(DefaultPipelineE2E, EveryExpectedRowOnceWithIndependentlyComputedValues) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  NatsServer nats;
  nats.Start();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-e2e");

  Engine engine(std::string(FF_SOURCE_DIR) + "/pipelines/default.json", nats, pg,
                dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();

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
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_NE(sim.out.find("\"end_ns\":" + std::to_string(end_ns)), std::string::npos) << sim.out;

  const auto expected = ComputeExpectedRows(fleet, end_ns);
  ASSERT_GT(expected.size(), static_cast<size_t>(kVehicles * (kDurationS - 2)));
  const std::string count_sql = "SELECT count(*) FROM vehicle_telemetry";
  ASSERT_TRUE(WaitFor([&] { return pg.Psql(count_sql) == std::to_string(expected.size()); }, 30s))
      << "rows: " << pg.Psql(count_sql) << ", expected " << expected.size() << "\n"
      << engine.process().ReadLog();

  const auto metrics = engine.Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();

  // Every row once, nothing else, with the values of the independent computation.
  const CheckResult check = CheckRows(pg, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  EXPECT_NE(metrics->find("fleetflow_sink_rows_written_total"), std::string::npos);
  std::printf("e2e default pipeline: %d vehicles x %d s: %s\n", kVehicles, kDurationS,
              check.Summary().c_str());
}

}  // namespace
}  // namespace fleetflow::testing
