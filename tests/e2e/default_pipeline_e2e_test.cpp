// The whole path with real components: fleet-sim (fixed seed) publishes over a real nats-server,
// fleetflow runs pipelines/default.json, rows land in a real PostgreSQL. The expected rows are
// recomputed here from the simulator's signal model and the rules of docs/semantics.md,
// independently of the engine's code.
#include <gtest/gtest.h>

#include "build_paths.hpp"
#include "fleet_check.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kVehicles = 20;
constexpr int kDurationS = 8;

TEST(DefaultPipelineE2E, EveryExpectedRowOnceWithIndependentlyComputedValues) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-e2e");
  Engine engine(::fleetflow::testing::SourceDir() + "/pipelines/default.json", s.nats, s.pg,
                s.dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();

  const SimRun sim = RunFleetSim(s.nats, kVehicles, kDurationS);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  EXPECT_NE(sim.result.out.find("\"end_ns\":" + std::to_string(sim.fleet.end_ns)),
            std::string::npos)
      << sim.result.out;

  const auto& expected = sim.expected;
  ASSERT_GT(expected.size(), static_cast<size_t>(kVehicles * (kDurationS - 2)));
  ASSERT_TRUE(WaitForRows(s.pg, expected.size()))
      << "rows: " << Rows(s.pg) << ", expected " << expected.size() << "\n"
      << engine.process().ReadLog();

  const auto metrics = engine.Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();

  // Every row once, nothing else, with the values of the independent computation.
  const CheckResult check = CheckRows(s.pg, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  EXPECT_NE(metrics->find("fleetflow_sink_rows_written_total"), std::string::npos);
  std::printf("e2e default pipeline: %d vehicles x %d s: %s\n", kVehicles, kDurationS,
              check.Summary().c_str());
}

// Core NATS shares a queue group's messages among its members one by one: two workers on
// default.json would each join about half of every vehicle's samples and upsert wrong rows. The
// second refuses to start, before it took any message, and says what to run instead; the first
// writes every row once, with the values of the independent computation.
TEST(DefaultPipelineE2E, ASecondWorkerOnTheQueueGroupRefusesToStartAndEveryRowIsWrittenOnce) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-e2e");
  const std::string pipeline = ::fleetflow::testing::SourceDir() + "/pipelines/default.json";
  Engine first(pipeline, s.nats, s.pg, s.dir.File("first.log"));
  ASSERT_TRUE(first.WaitReady()) << first.process().ReadLog();
  CountWrites(s.pg);

  Engine second(pipeline, s.nats, s.pg, s.dir.File("second.log"));
  const std::optional<int> status = second.process().Wait(30s);
  ASSERT_TRUE(status.has_value()) << "the second worker runs\n" << second.process().ReadLog();
  EXPECT_NE(*status, 0);
  const std::string refused = second.process().ReadLog();
  EXPECT_NE(refused.find("queue group 'fleetflow' on vehicle.*.* is read already by node "
                         "'telemetry' on host "),
            std::string::npos)
      << refused;
  EXPECT_NE(refused.find("pipelines/jetstream.json"), std::string::npos) << refused;
  EXPECT_NE(first.process().ReadLog().find("another worker asked to read queue group 'fleetflow'"),
            std::string::npos)
      << first.process().ReadLog();

  const SimRun sim = RunFleetSim(s.nats, 8, 6);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  ASSERT_TRUE(WaitForRows(s.pg, sim.expected.size()))
      << "rows: " << Rows(s.pg) << ", expected " << sim.expected.size() << "\n"
      << first.process().ReadLog();
  EXPECT_EQ(first.process().Stop(SIGTERM, 30s), 0) << first.process().ReadLog();
  const CheckResult check = CheckRows(s.pg, sim.expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  const WriteCount writes = Writes(s.pg);
  EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
}

}  // namespace
}  // namespace fleetflow::testing
