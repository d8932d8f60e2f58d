// pipelines/jetstream.json writing to a PostgreSQL primary with a synchronous streaming standby
// (PostgresPair), the sink's connection string naming both with target_session_attrs=read-write:
// the primary is killed with SIGKILL under load and the standby promoted. Every row the
// simulated fleet must give is then in the new primary, with the values of the independent
// computation (fleet_check.hpp), each written exactly once (a trigger installed on the primary
// before the load counts every insert and update; replication takes it and its counts to the
// standby), and the engine's log says what happened in one line each. Each scenario prints one
// line with what it measured.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <string>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

class PgFailoverE2E : public ::testing::Test {
 protected:
  static constexpr int kVehicles = 20, kDurationS = 14;

  PgFailoverE2E() : dir_("fleetflow-pg-failover-e2e") {}

  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    nats_.MapPartitions(16);
    nats_.Start();
    pg_.Start();
  }

  /// The engine on both servers (FLEETFLOW_PG is the sink's conninfo in jetstream.json), ready;
  /// then the writes to its table are counted and fleet-sim publishes the load. Returns once
  /// the primary holds three windows of rows.
  void StartEngineUnderLoad() {
    engine_ =
        std::make_unique<Engine>(kPipeline,
                                 std::map<std::string, std::string>{
                                     {"NATS_URL", nats_.url()}, {"FLEETFLOW_PG", pg_.conninfo()}},
                                 dir_.File("engine.log"));
    ASSERT_TRUE(engine_->WaitReady()) << engine_->process().ReadLog();
    CountWrites(pg_.primary());
    fleet_ = MakeFleet(kVehicles, kDurationS);
    expected_ = ComputeExpectedRows(fleet_.config, fleet_.end_ns);
    sim_ = std::make_unique<Process>(SimArgs(nats_, fleet_, kDurationS), dir_.File("sim.log"));
    ASSERT_TRUE(WaitFor([&] { return Rows(pg_.primary()) >= 3 * kVehicles; }, 30s))
        << engine_->process().ReadLog();
  }

  /// Kills the primary; once the sink has failed to find a server that takes writes twice (the
  /// primary gone, the standby read-only) and holds three windows of rows, promotes the standby and
  /// waits until the sink writes rows again. Records the times.
  void KillThePrimaryAndPromoteTheStandby() {
    const double written_before = engine_->Metric("fleetflow_sink_rows_written_total");
    const double retries_before = engine_->Metric("fleetflow_sink_retries_total");
    killed_ = SteadyClock::now();
    pg_.primary().Kill();
    // As long as a failover takes: three windows of rows held, two failed attempts at least.
    EXPECT_TRUE(WaitFor(
        [&] {
          return engine_->Metric("fleetflow_sink_retries_total") >= retries_before + 2 &&
                 engine_->Metric("fleetflow_sink_pending_rows") >= 3 * kVehicles;
        },
        30s))
        << engine_->process().ReadLog();
    EXPECT_EQ(engine_->Get("/readyz"), std::nullopt) << "ready without a writable PostgreSQL";
    const auto promote = SteadyClock::now();
    pg_.standby().Promote();
    promoted_ = SteadyClock::now();
    promote_s_ = Seconds(promoted_ - promote);
    EXPECT_TRUE(WaitFor(
        [&] { return engine_->Metric("fleetflow_sink_rows_written_total") > written_before; }, 30s))
        << engine_->process().ReadLog();
    written_again_ = SteadyClock::now();
  }

  /// After the load: every row once in the new primary, exact values, each written once, the
  /// log lines; prints the scenario's line. Returns the engine's log.
  std::string ExpectEveryRowOnceInTheNewPrimary(const char* scenario) {
    EXPECT_EQ(sim_->Wait(60s), std::optional<int>(0)) << sim_->ReadLog();
    PostgresServer& now_primary = pg_.standby();
    EXPECT_TRUE(WaitFor([&] { return HasEveryRow(now_primary, expected_); }, 30s))
        << Rows(now_primary) << " of " << expected_.size() << "\n"
        << engine_->process().ReadLog();
    EXPECT_EQ(engine_->Metric("fleetflow_sink_rows_dropped_total"), 0);
    EXPECT_EQ(engine_->process().Stop(SIGTERM, 30s), 0) << engine_->process().ReadLog();
    const CheckResult check = CheckRows(now_primary, expected_);
    EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
    const WriteCount writes = Writes(now_primary);
    EXPECT_EQ(writes.writes, static_cast<int64_t>(expected_.size()));
    EXPECT_EQ(writes.rows, static_cast<int64_t>(expected_.size()));
    EXPECT_EQ(writes.most_per_row, 1);

    const std::string log = engine_->process().ReadLog();
    const std::string primary = "127.0.0.1:" + std::to_string(pg_.primary().port());
    const std::string standby = "127.0.0.1:" + std::to_string(pg_.standby().port());
    EXPECT_NE(log.find("lost the connection to PostgreSQL at " + primary + " while writing"),
              std::string::npos)
        << log;
    std::smatch m;
    const bool again = std::regex_search(
        log, m,
        std::regex("writing to PostgreSQL at " + standby + ", a different server than before \\(" +
                   primary + "\\); connected ([0-9.]+) s after the connection to " + primary +
                   " was lost, ([0-9]+) failed attempts in between; ([0-9]+) rows held"));
    EXPECT_TRUE(again) << log;
    std::printf(
        "pg failover, %s: samples sent %lld, rows expected %zu, found %zu, lost %zu, writes %lld "
        "(most per row %lld); no primary for %.2f s (promotion %.2f s), rows written again "
        "%.2f s after the kill; the sink: connected %s s after it lost the connection, %s "
        "failed attempts, %s rows held\n",
        scenario, static_cast<long long>(SensorCounter(*sim_, "samples")), check.expected,
        check.found, check.missing, static_cast<long long>(writes.writes),
        static_cast<long long>(writes.most_per_row), Seconds(promoted_ - killed_), promote_s_,
        Seconds(written_again_ - killed_), again ? m[1].str().c_str() : "?",
        again ? m[2].str().c_str() : "?", again ? m[3].str().c_str() : "?");
    return log;
  }

  /// Samples fleet-sim reports having sent (its final JSON line), -1 when it printed none.
  TempDir dir_;
  NatsServer nats_;
  PostgresPair pg_;
  Fleet fleet_;
  ExpectedRows expected_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Process> sim_;
  SteadyClock::time_point killed_, promoted_, written_again_;
  double promote_s_ = 0;
};

TEST_F(PgFailoverE2E, PrimaryKilledUnderLoadTheStandbyPromotedEveryRowOnce) {
  ASSERT_NO_FATAL_FAILURE(StartEngineUnderLoad());
  KillThePrimaryAndPromoteTheStandby();
  const std::string log = ExpectEveryRowOnceInTheNewPrimary("primary killed under load");
  EXPECT_NE(log.find("session is read-only"), std::string::npos)
      << "no attempt met the standby before its promotion\n"
      << log;
}

TEST_F(PgFailoverE2E, PrimaryKilledWhileTheSinksCommitWaitsTheRowsAreWrittenOnce) {
  ASSERT_NO_FATAL_FAILURE(StartEngineUnderLoad());
  // The primary waits for a synchronous standby that never comes, so the sink's next COMMIT
  // hangs; the standby, now asynchronous, receives and applies that transaction. The primary
  // dies with the COMMIT unanswered: the sink cannot know whether its rows are written.
  PostgresServer& primary = pg_.primary();
  primary.Psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
  primary.Psql("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitFor(
      [&] {
        return primary.TryPsql(
                   "SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
                   "'SyncRep'") == "1";
      },
      30s))
      << engine_->process().ReadLog();
  const std::string flushed = primary.Psql("SELECT pg_current_wal_flush_lsn()");
  ASSERT_TRUE(WaitFor(
      [&] {
        return pg_.standby().TryPsql("SELECT pg_last_wal_replay_lsn() >= '" + flushed +
                                     "'::pg_lsn") == "t";
      },
      30s));
  KillThePrimaryAndPromoteTheStandby();
  const std::string log = ExpectEveryRowOnceInTheNewPrimary("primary killed during a COMMIT");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      log, m,
      std::regex("the write after the unanswered COMMIT of ([0-9]+) rows added or changed ([0-9]+) "
                 "of ([0-9]+) rows; the other ([0-9]+) were in the table as sent")))
      << log;
  // Every row of that COMMIT was in the table (it had happened) and not written again.
  EXPECT_EQ(m[1].str(), m[4].str()) << m[0];
  EXPECT_GT(std::stoi(m[1].str()), 0);
  std::printf(
      "pg failover, primary killed during a COMMIT: the COMMIT held %s rows; the write after it "
      "added or changed %s of %s rows, %s found in the table as sent\n",
      m[1].str().c_str(), m[2].str().c_str(), m[3].str().c_str(), m[4].str().c_str());
}

}  // namespace
}  // namespace fleetflow::testing
