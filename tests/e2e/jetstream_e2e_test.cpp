// pipelines/jetstream.json end to end with real servers: a durable JetStream consumer shared by
// the workers, state in one KV bucket, windows sharded among workers. Checks that nothing a
// vehicle sent is lost and no row is written twice when the engine is down, and when a worker is
// killed with SIGKILL and started again.
#include <gtest/gtest.h>

#include <csignal>

#include "fleet_check.hpp"
#include "jetstream.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kPipeline = std::string(FF_SOURCE_DIR) + "/pipelines/jetstream.json";

/// One engine worker running pipelines/jetstream.json.
class Worker : public Engine {
 public:
  Worker(const NatsServer& nats, const PostgresServer& pg, const TempDir& dir, int n)
      : Engine(kPipeline, nats, pg, dir.File("worker" + std::to_string(n) + ".log")) {}
};

class JetStreamE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    nats_.Start();
    pg_.Start();
  }
  NatsServer nats_;
  PostgresServer pg_;
  TempDir dir_{"fleetflow-js-e2e"};
};

TEST_F(JetStreamE2E, EverythingPublishedWhileTheEngineWasDownIsWritten) {
  {
    Worker first(nats_, pg_, dir_, 0);  // creates the stream, the consumer and the bucket
    ASSERT_TRUE(first.WaitReady()) << first.process().ReadLog();
    ASSERT_EQ(first.process().Stop(SIGTERM, 30s), 0) << first.process().ReadLog();
  }
  constexpr int kVehicles = 10, kDurationS = 30;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const CommandResult sim = RunCommand(SimArgs(nats_, fleet, kDurationS), 120s);
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_EQ(Rows(pg_), 0);

  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Worker worker(nats_, pg_, dir_, 1);
  ASSERT_TRUE(worker.WaitReady()) << worker.process().ReadLog();
  EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size()); }, 90s))
      << Rows(pg_) << " of " << expected.size() << " rows\n"
      << worker.process().ReadLog();
  EXPECT_EQ(worker.process().Stop(SIGTERM, 30s), 0) << worker.process().ReadLog();
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, engine down for %d s of publishing: %s\n", kDurationS,
              check.Summary().c_str());
}

TEST_F(JetStreamE2E, ThreeWorkersOneKilledAndRestartedNoRowMissingNoneTwice) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();

  constexpr int kVehicles = 30, kDurationS = 24;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));

  // A third of the way in, kill one worker without warning; two thirds in, start it again.
  const int third = static_cast<int>(expected.size() / 3);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= third; }, 60s)) << Rows(pg_);
  workers[1]->process().Signal(SIGKILL);
  ASSERT_TRUE(workers[1]->process().Wait(10s).has_value());
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= 2 * third; }, 60s)) << Rows(pg_);
  workers[1] = std::make_unique<Worker>(nats_, pg_, dir_, 3);
  ASSERT_TRUE(workers[1]->WaitReady()) << workers[1]->process().ReadLog();

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size()); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  for (auto& w : workers) EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  // Every row once and nothing else. Values are not compared here: windows closed while the
  // killed worker's unacknowledged samples waited for redelivery (ack_wait) miss those samples
  // (docs/scaling.md); the run without a crash below compares values.
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_EQ(check.found, check.expected) << check.Summary() << "\n" << check.first_problems;
  EXPECT_EQ(check.unexpected, 0u) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, 3 workers, one killed and restarted: %s\n", check.Summary().c_str());
}

TEST_F(JetStreamE2E, ThreeWorkersWriteEveryRowOnceWithTheSingleWorkerValues) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  constexpr int kVehicles = 30, kDurationS = 10;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  const CommandResult sim = RunCommand(SimArgs(nats_, fleet, kDurationS), 120s);
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size()); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  for (auto& w : workers) {
    EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  }
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, 3 workers: %s\n", check.Summary().c_str());
}

/// Metric `name` of a worker, -1 when it cannot be read.
double Metric(const Worker& w, const char* name) {
  const auto body = w.Get("/metrics");
  return body ? Scrape(*body, name) : -1;
}

/// Workers whose membership says warm (past their warm-up: they own the shards).
int WarmWorkers(const NatsServer& nats) {
  nats::ConnectOptions o;
  o.url = nats.url();
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  nats::BucketOptions b;
  b.name = "fleetflow_members";
  auto watcher = js.EnsureBucket(b)->WatchAll();
  nats::KvEntry e;
  int warm = 0;
  while (watcher->Next(2000, e) == nats::KvWatcher::Event::kEntry) {
    warm += !e.deleted && e.value == "warm" ? 1 : 0;
  }
  return warm;
}

TEST_F(JetStreamE2E, ScaleOutThenScaleInEveryRowOnceExactValuesAwayFromTheHandOvers) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  constexpr int kVehicles = 30, kDurationS = 32;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  const auto at_s = [&] { return static_cast<double>(NowNs() - fleet.config.start_ns) / 1e9; };
  // Both past their warm-up (10 s: member_timeout_ms + 2 every_ms + lateness, or the
  // correction horizon), so that a new worker starts cold, owning nothing.
  ASSERT_TRUE(WaitFor([&] { return WarmWorkers(nats_) == 2; }, 60s));

  // Scale out: a third worker joins, warms up, and takes its share over from the others'
  // records (they give the shards up where they stopped emitting them).
  workers.push_back(std::make_unique<Worker>(nats_, pg_, dir_, 2));
  ASSERT_TRUE(workers[2]->WaitReady()) << workers[2]->process().ReadLog();
  ASSERT_TRUE(WaitFor([&] { return Metric(*workers[2], "fleetflow_shards_taken_over_total") > 0; },
                      60s))
      << workers[2]->process().ReadLog();
  const double joined_at_s = at_s();
  const int rows_at_join = Rows(pg_);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= rows_at_join + 3 * kVehicles; }, 30s));

  // Scale in: the first worker stops (SIGTERM); the two others take its shards over.
  const double before =
      Metric(*workers[1], "fleetflow_shards_taken_over_total") +
      Metric(*workers[2], "fleetflow_shards_taken_over_total");
  const double stopped_at_s = at_s();
  ASSERT_EQ(workers[0]->process().Stop(SIGTERM, 30s), 0) << workers[0]->process().ReadLog();
  workers.erase(workers.begin());
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric(*workers[0], "fleetflow_shards_taken_over_total") +
                   Metric(*workers[1], "fleetflow_shards_taken_over_total") >
               before;
      },
      30s));

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size()); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  double taken = 0, recovered = 0;
  for (auto& w : workers) {
    taken += Metric(*w, "fleetflow_shards_taken_over_total");
    recovered += Metric(*w, "fleetflow_shards_recovered_total");
  }
  EXPECT_EQ(recovered, 0) << "a shard was taken over without a record";
  for (auto& w : workers) EXPECT_EQ(w->process().Stop(SIGTERM, 30s), 0) << w->process().ReadLog();
  // Every row once. Values: exact, except (known limit, docs/scaling.md) in the windows of the
  // 3 s around each hand-over, where a sample that reached another worker later than the
  // lateness (a loaded machine) may be missing from the new owner's row.
  const CheckResult all = CheckRows(pg_, expected);
  EXPECT_EQ(all.found, all.expected) << all.Summary() << "\n" << all.first_problems;
  EXPECT_EQ(all.unexpected, 0u) << all.Summary() << "\n" << all.first_problems;
  ExpectedRows outside = expected;
  std::string band;
  for (const double t : {joined_at_s, stopped_at_s}) {
    const int64_t from = fleet.config.start_ns + static_cast<int64_t>((t - 3) * 1e9);
    const int64_t to = fleet.config.start_ns + static_cast<int64_t>((t + 3) * 1e9);
    std::erase_if(outside, [&](const auto& row) {
      return row.first.second >= from && row.first.second <= to;
    });
    band += (band.empty() ? "" : " OR ") + std::string("(time >= to_timestamp(") +
            std::to_string(from / 1e9) + ") AND time <= to_timestamp(" + std::to_string(to / 1e9) +
            "))";
  }
  pg_.Psql("DELETE FROM vehicle_telemetry WHERE " + band);
  const CheckResult check = CheckRows(pg_, outside);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, scale out (a third worker took shards over at t = %.1f s) and in "
              "(the first stopped at t = %.1f s), %.0f shards taken over from records by the "
              "remaining workers, %.0f without: every row %s; values outside the 3 s around the "
              "hand-overs: %s; value mismatches within them: %zu\n",
              joined_at_s, stopped_at_s, taken, recovered, all.Summary().c_str(),
              check.Summary().c_str(), all.mismatched - check.mismatched);
}

TEST_F(JetStreamE2E, NatsServerRestartedMidRunTheEngineReconnectsAndNothingIsLost) {
  Worker worker(nats_, pg_, dir_, 0);
  ASSERT_TRUE(worker.WaitReady()) << worker.process().ReadLog();
  constexpr int kVehicles = 20, kDurationS = 16;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size() / 3); }, 60s));
  nats_.Restart();  // same port, same store
  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= static_cast<int>(expected.size()); }, 60s))
      << Rows(pg_) << " of " << expected.size() << "\n"
      << worker.process().ReadLog();
  EXPECT_EQ(worker.process().Stop(SIGTERM, 30s), 0) << worker.process().ReadLog();
  const CheckResult check = CheckRows(pg_, expected);
  EXPECT_EQ(check.found, check.expected) << check.Summary() << "\n" << check.first_problems;
  EXPECT_EQ(check.unexpected, 0u) << check.Summary() << "\n" << check.first_problems;
  std::printf("jetstream e2e, nats-server restarted mid-run: %s\n", check.Summary().c_str());
}

}  // namespace
}  // namespace fleetflow::testing
