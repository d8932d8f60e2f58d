// pipelines/tiers.json and pipelines/jetstream-tiers.json with real components: fleet-sim (fixed
// seed) over a real nats-server, the 1 s rows and two statistics tiers in a real PostgreSQL. The
// statistics are recomputed here from the simulator's signal model (every sample it published)
// and the rules of docs/semantics.md, independently of the engine's code. On the partitioned
// stream, workers are killed, added and stopped, and the engine is down for 30 s: every window
// of every tier is written once (a trigger counts the writes: the tables' primary keys would
// hide a second one), with the statistics of the independent computation.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "alarm_check.hpp"
#include "build_paths.hpp"
#include "e2e_fixture.hpp"
#include "fleet_check.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

/// The columns of sink node `node` of the pipeline file `path`, and the SQL that reads each as a
/// number.
struct TableColumns {
  std::vector<StatColumn> columns;
  std::vector<std::string> sql;
};

TableColumns ColumnsOf(const std::string& path, const std::string& node) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document d;
  d.Parse(text.str().c_str());
  TableColumns out;
  for (const auto& n : d["nodes"].GetArray()) {
    if (node != n["id"].GetString()) continue;
    for (const auto& c : n["config"]["columns"].GetArray()) {
      StatColumn col{c["name"].GetString(), c["sensor"].GetString(), c["stat"].GetString()};
      if (c.HasMember("field")) col.field = c["field"].GetString();
      out.sql.push_back(col.stat == "first_time" || col.stat == "last_time"
                            ? "extract(epoch FROM " + col.name + " - time)"
                            : col.name);
      out.columns.push_back(col);
    }
  }
  return out;
}

/// A statistics tier of the shipped pipelines: its sink node and table, its window in the tests
/// (4 s and 12 s stand for the minutes and the hours), and what it must hold.
struct Tier {
  const char* node;
  const char* table;
  int every_s;
  ExpectedTable expected;
  TableColumns columns;
};

/// The two tiers of `shipped`, expected from `samples`.
std::vector<Tier> Tiers(const std::string& shipped, const Samples& samples) {
  const std::vector<std::string> sensors = {"gps", "speed", "soc", "torque"};
  std::vector<Tier> tiers = {{"minutes_table", "vehicle_stats_1m", 4, {}, {}},
                             {"hours_table", "vehicle_stats_1h", 12, {}, {}}};
  for (Tier& t : tiers) {
    t.columns = ColumnsOf(shipped, t.node);
    t.expected = ComputeExpectedStats(samples, t.every_s * kSecond, 10 * kSecond, sensors,
                                      t.columns.columns);
  }
  return tiers;
}

/// `shipped` with the tiers' windows of the tests, written in `dir`.
std::string TestVariant(const std::string& shipped, const TempDir& dir) {
  WritePipelineVariant(shipped, "minutes", R"({"every_ms": 4000})", dir.File("a.json"));
  return WritePipelineVariant(dir.File("a.json"), "hours", R"({"every_ms": 12000})",
                              dir.File("b.json"));
}

size_t TableRows(const PostgresServer& pg, const std::string& table) {
  return std::stoul(pg.Psql("SELECT count(*) FROM " + table));
}

/// Waits until each tier's table has its rows: a tier's last window closes on the clock once it
/// has ended and the fleet is quiet.
void WaitForTiers(const PostgresServer& pg, const std::vector<Tier>& tiers) {
  for (const Tier& t : tiers) {
    EXPECT_TRUE(WaitFor([&] { return TableRows(pg, t.table) >= t.expected.size(); }, 40s))
        << t.table << ": " << TableRows(pg, t.table) << " rows of " << t.expected.size();
  }
}

/// Compares each tier's table with its independent computation; with `counted` (CountWrites on
/// the tiers' tables), also that every window was written once.
void CheckTiers(const PostgresServer& pg, const std::vector<Tier>& tiers, const char* scenario,
                bool counted, const std::string& logs = "") {
  for (const Tier& t : tiers) {
    SCOPED_TRACE(t.table);
    const CheckResult check = CheckTable(pg, t.table, t.columns.sql, t.expected);
    EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems << logs;
    std::string written;
    if (counted) {
      const WriteCount writes = Writes(pg, t.table);
      EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
      EXPECT_EQ(static_cast<size_t>(writes.rows), t.expected.size());
      written = "; " + std::to_string(writes.writes) + " writes of " + std::to_string(writes.rows) +
                " windows";
    }
    std::printf("e2e tiers, %s, %s: %s%s\n", scenario, t.table, check.Summary().c_str(),
                written.c_str());
  }
}

/// fleet_cells_1m (the fleet_aggregate nodes of pipelines/tiers.json, the stage across workers of
/// pipelines/jetstream-tiers.json) against the vehicles' rows of the minutes' table grouped here
/// in SQL: by the geohash PostGIS computes of each vehicle's last position (ST_GeoHash, not the
/// engine's), and for the whole fleet. The query of the rows that differ, `select` of them.
std::string FleetCellsDiffering(const std::string& select) {
  const std::string per_vehicle =
      "SELECT time, ST_GeoHash(ST_SetSRID(ST_MakePoint(lon_last, lat_last), 4326), 5) AS cell, "
      "speed_samples, speed_mean, speed_max, soc_last FROM vehicle_stats_1m";
  const std::string metrics =
      "count(*) AS vehicles, sum(CASE WHEN speed_max >= 1 THEN 1 ELSE 0 END) FILTER (WHERE "
      "speed_samples > 0) AS moving, avg(speed_mean) AS speed_mean, max(speed_max) AS speed_max, "
      "avg(soc_last) AS soc_mean, min(soc_last) AS soc_min";
  const std::string expected = "WITH v AS (" + per_vehicle + "), e AS (SELECT cell, time, " +
                               metrics + " FROM v WHERE cell IS NOT NULL GROUP BY cell, time " +
                               "UNION ALL SELECT 'fleet', time, " + metrics +
                               " FROM v GROUP BY time) ";
  const auto differs = [](const std::string& c) {
    return "(e." + c + " IS NULL) <> (f." + c + " IS NULL) OR abs(e." + c + " - f." + c +
           ") > 1e-9";
  };
  return expected + "SELECT " + select +
         " FROM e FULL JOIN fleet_cells_1m f USING (cell, time) WHERE e.vehicles IS NULL OR "
         "f.vehicles IS NULL OR " +
         differs("vehicles") + " OR " + differs("moving") + " OR " + differs("speed_mean") +
         " OR " + differs("speed_max") + " OR " + differs("soc_mean") + " OR " + differs("soc_min");
}

/// Checks fleet_cells_1m (FleetCellsDiffering); returns its rows.
size_t CheckFleetCells(const PostgresServer& pg) {
  pg.Psql("CREATE EXTENSION IF NOT EXISTS postgis");
  EXPECT_EQ(pg.Psql(FleetCellsDiffering("count(*)")), "0")
      << pg.Psql(FleetCellsDiffering("cell, time, e.vehicles, f.vehicles, e.moving, f.moving, "
                                     "e.speed_mean, f.speed_mean, e.soc_mean, f.soc_mean") +
                 " LIMIT 10");
  return std::stoul(pg.Psql("SELECT count(*) FROM fleet_cells_1m"));
}

TEST(TiersE2E, TheSecondRowsAndBothTiersOfStatisticsFromOneStreamEqualTheIndependentComputation) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_POSTGIS();  // the fleet cells are checked against PostGIS's geohash
  Servers s("fleetflow-e2e");
  const std::string shipped = SourceDir() + "/pipelines/tiers.json";
  Engine engine(TestVariant(shipped, s.dir), s.nats, s.pg, s.dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();

  constexpr int kVehicles = 8;
  constexpr int kDurationS = 14;
  const SimRun sim = RunFleetSim(s.nats, kVehicles, kDurationS);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  ASSERT_TRUE(WaitForRows(s.pg, sim.expected.size()))
      << "rows: " << Rows(s.pg) << ", expected " << sim.expected.size() << "\n"
      << engine.process().ReadLog();

  const std::vector<Tier> tiers = Tiers(shipped, FleetSamples(sim.fleet.config, sim.fleet.end_ns));
  for (const Tier& t : tiers) {
    ASSERT_FALSE(t.columns.columns.empty());
    ASSERT_GE(t.expected.size(), static_cast<size_t>(kVehicles * (kDurationS / t.every_s)));
  }
  WaitForTiers(s.pg, tiers);
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();

  const CheckResult rows = CheckRows(s.pg, sim.expected);
  EXPECT_TRUE(rows.ok()) << rows.Summary() << "\n" << rows.first_problems;
  CheckTiers(s.pg, tiers, "one worker", false);
  const size_t cells = CheckFleetCells(s.pg);
  EXPECT_GT(cells, tiers[0].expected.size() / kVehicles) << "a fleet row per minute, and cells";
  std::printf(
      "e2e tiers, one worker, fleet_cells_1m: %zu rows (cells and the fleet) as grouped "
      "in SQL\n",
      cells);
}

class JetStreamTiersE2E : public PartitionedServersTest {
 protected:
  JetStreamTiersE2E() : PartitionedServersTest("fleetflow-js-tiers-e2e") {}

  const std::string shipped_ = SourceDir() + "/pipelines/jetstream-tiers.json";
  // The archive flushes every 3 s: a kill lands in the middle of a flush's samples. The alarms'
  // rules are some the simulated fleet sets off in a test's seconds (the shipped ones watch for
  // 130 km/h and an empty battery): with a duration, with hysteresis, on the previous row and on
  // a derived column.
  const std::string pipeline_ =
      WritePipelineVariant(WritePipelineVariant(TestVariant(shipped_, dir_), "archive",
                                                R"({"flush_ms": 3000})", dir_.File("c.json")),
                           "alarms", R"({"flush_ms": 500,
        "columns": [{"name": "speed", "sensor": "speed"}, {"name": "soc", "sensor": "soc"},
                    {"name": "torque", "sensor": "torque"},
                    {"name": "kmh", "expression": "speed * 3.6"}],
        "rules": [
          {"name": "fast", "when": "kmh > 52", "for_ms": 2000, "clear": "kmh < 50",
           "value": "kmh", "on_raise": "rate gps 20", "on_clear": "rate gps 10"},
          {"name": "slow", "when": "speed < 7", "clear": "speed > 8", "value": "speed"},
          {"name": "surge", "when": "abs(speed - prev_speed) / dt > 0.8", "value": "speed"}]})",
                           dir_.File("d.json"));
  const std::vector<std::string> tables_ = {"vehicle_telemetry", "vehicle_stats_1m",
                                            "vehicle_stats_1h", "fleet_cells_1m"};

  /// Waits until fleet_cells_1m holds the rows of the minutes' table grouped in SQL: the last
  /// windows of the stage across workers are merged once every partition reported them.
  void WaitForFleetStage(const std::string& logs) {
    pg_.Psql("CREATE EXTENSION IF NOT EXISTS postgis");
    EXPECT_TRUE(WaitFor([&] { return pg_.Psql(FleetCellsDiffering("count(*)")) == "0"; }, 60s))
        << logs;
  }
  /// The stage across workers: fleet_cells_1m holds the rows of the minutes' table grouped in
  /// SQL, each written once.
  void CheckFleetStage(const char* scenario) {
    const size_t cells = CheckFleetCells(pg_);
    const WriteCount writes = Writes(pg_, "fleet_cells_1m");
    EXPECT_EQ(writes.most_per_row, 1) << writes.writes << " writes of " << writes.rows << " rows";
    EXPECT_EQ(static_cast<size_t>(writes.rows), cells);
    std::printf(
        "e2e tiers, %s, fleet_cells_1m (merged across workers): %zu rows (cells and the fleet) "
        "as grouped in SQL; %lld writes\n",
        scenario, cells, static_cast<long long>(writes.writes));
  }

  /// Every sample the fleet sent is in the archive (the workers' shared directory) exactly once,
  /// counted per (vehicle, sensor, time) in the committed chunks; every 1 s row of the
  /// independent computation once in the rows' chunks, with its values.
  void CheckArchive(const Fleet& fleet, const ExpectedRows& rows, const char* scenario) {
    const ArchiveCount archive = CountArchive(dir_.File("archive"));
    const Samples sent = FleetSamples(fleet.config, fleet.end_ns);
    EXPECT_EQ(CompareArchive(archive, sent), "") << scenario;
    EXPECT_EQ(CompareRowArchive(archive, rows), "") << scenario;
    std::printf(
        "e2e tiers, %s, archive: %zu samples in %zu chunks (%llu bytes), %zu rows in %zu chunks "
        "(%llu bytes), each once\n",
        scenario, CountSamples(sent), archive.chunks,
        static_cast<unsigned long long>(archive.bytes), archive.rows.size(), archive.row_chunks,
        static_cast<unsigned long long>(archive.row_bytes));
  }

  /// Every alarm the rules raise on the independent computation's rows is in the stream ALARMS
  /// raised once and cleared once, at their times, and nothing else is (the vehicles' rule state
  /// moved with their partitions; an event evaluated twice is stored once).
  void CheckAlarms(const ExpectedRows& rows, const char* scenario) {
    const std::vector<AlarmEvent> expected = ExpectedAlarms(pipeline_, "alarms", rows);
    ASSERT_GT(expected.size(), 10u) << "the rules set off too few alarms to test anything";
    std::vector<AlarmEvent> stored;
    EXPECT_TRUE(WaitFor(
        [&] {
          stored = StoredAlarms(nats_.url());
          return stored.size() >= expected.size();
        },
        60s))
        << stored.size() << " of " << expected.size() << " events";
    EXPECT_EQ(CompareAlarms(stored, expected), "") << scenario;
    const std::string table = pg_.Psql(
        "SELECT count(*), count(cleared), count(DISTINCT (vehicle_id, rule, raised)) FROM "
        "vehicle_alarms");
    const std::string events = std::to_string(expected.size() / 2);
    EXPECT_EQ(table, events + "|" + events + "|" + events) << scenario;
    std::printf(
        "e2e tiers, %s, alarms: %zu events (%s alarms) as the rules give on the "
        "independent rows, each raised once and cleared once\n",
        scenario, stored.size(), events.c_str());
  }

  std::unique_ptr<Engine> Worker(int n) {
    return std::make_unique<Engine>(pipeline_, nats_, pg_,
                                    dir_.File("worker" + std::to_string(n) + ".log"));
  }

  /// The lines of the workers' logs about partitions, and the tiers' snapshot lines.
  std::string Logs(int workers) const {
    std::string out;
    for (int n = 0; n < workers; ++n) {
      std::ifstream log(dir_.File("worker" + std::to_string(n) + ".log"));
      for (std::string line; std::getline(log, line);) {
        if (line.find("artition") != std::string::npos ||
            line.find("snapshot") != std::string::npos) {
          out += "worker" + std::to_string(n) + ": " + line + "\n";
        }
      }
    }
    return out;
  }
};

// Two workers share the partitions; a quarter of the way in one is killed without warning (its
// partitions are taken over without a record: the snapshots and the stream after their
// checkpoints), half-way a third joins (hand-overs to it), three quarters in the first is
// stopped (its partitions handed over with their final snapshots).
TEST_F(JetStreamTiersE2E, WorkersKilledAddedAndStoppedEveryWindowOfEveryTierWrittenOnceExactly) {
  std::vector<std::unique_ptr<Engine>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(Worker(i));
  for (auto& w : workers) ASSERT_TRUE(w->WaitReady()) << w->process().ReadLog();
  CountWrites(pg_, tables_);

  constexpr int kVehicles = 20, kDurationS = 30;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  const std::vector<Tier> tiers = Tiers(shipped_, FleetSamples(fleet.config, fleet.end_ns));
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  const auto at = [&](int quarter) {
    const int rows = static_cast<int>(expected.size()) * quarter / 4;
    EXPECT_TRUE(WaitFor([&] { return Rows(pg_) >= rows; }, 60s)) << Rows(pg_);
  };
  at(1);
  workers[1]->process().Signal(SIGKILL);
  ASSERT_TRUE(workers[1]->process().Wait(10s).has_value());
  at(2);
  workers.push_back(Worker(2));
  ASSERT_TRUE(workers.back()->WaitReady()) << workers.back()->process().ReadLog();
  at(3);
  // The survivor of the kill took its partitions over from their checkpoints.
  const double reread = workers[0]->Metric("fleetflow_changelog_messages_reread_total");
  const double in_state = workers[0]->Metric("fleetflow_changelog_in_state_total");
  EXPECT_GT(reread, 0);
  EXPECT_EQ(workers[0]->process().Stop(SIGTERM, 30s), 0) << workers[0]->process().ReadLog();

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 60s))
      << Rows(pg_) << " of " << expected.size();
  WaitForTiers(pg_, tiers);
  WaitForFleetStage(Logs(3));
  EXPECT_EQ(workers[2]->process().Stop(SIGTERM, 30s), 0) << workers[2]->process().ReadLog();

  const CheckResult rows = CheckRows(pg_, expected);
  EXPECT_EQ(rows.found, rows.expected) << rows.Summary() << "\n" << rows.first_problems;
  EXPECT_EQ(rows.unexpected, 0u) << rows.Summary() << "\n" << rows.first_problems;
  CheckTiers(pg_, tiers, "kill -9, scale out, SIGTERM hand-over", true, Logs(3));
  CheckFleetStage("kill -9, scale out, SIGTERM hand-over");
  CheckArchive(fleet, expected, "kill -9, scale out, SIGTERM hand-over");
  CheckAlarms(expected, "kill -9, scale out, SIGTERM hand-over");
  std::printf(
      "e2e tiers: the survivor of the kill re-read %.0f messages, %.0f of them in its keyed state "
      "already\n",
      reread, in_state);
}

// One worker, killed without warning a few seconds in and started again 30 s later: the windows
// open at the kill come back from the partitions' snapshots, the stream after their checkpoints
// and the backlog of the 30 s, as if nothing had happened.
TEST_F(JetStreamTiersE2E,
       TheEngineKilledAndDown30sWritesEveryWindowOnceWithTheStatisticsOfOneThatWasNot) {
  auto worker = Worker(0);
  ASSERT_TRUE(worker->WaitReady()) << worker->process().ReadLog();
  CountWrites(pg_, tables_);

  constexpr int kVehicles = 10, kDurationS = 44;
  const Fleet fleet = MakeFleet(kVehicles, kDurationS);
  const auto expected = ComputeExpectedRows(fleet.config, fleet.end_ns);
  const std::vector<Tier> tiers = Tiers(shipped_, FleetSamples(fleet.config, fleet.end_ns));
  Process sim(SimArgs(nats_, fleet, kDurationS), dir_.File("sim.log"));
  // The first tier's windows close; then the engine goes while the fleet goes on.
  ASSERT_TRUE(WaitFor([&] { return TableRows(pg_, "vehicle_stats_1m") >= 2 * kVehicles; }, 60s))
      << TableRows(pg_, "vehicle_stats_1m") << " minute rows, " << Rows(pg_) << " 1 s rows; the "
      << "worker is " << (worker->process().Running() ? "running" : "gone") << "\n"
      << worker->process().ReadLog() << sim.ReadLog();
  worker->process().Signal(SIGKILL);
  ASSERT_TRUE(worker->process().Wait(10s).has_value());
  const size_t rows_before = static_cast<size_t>(Rows(pg_));
  std::this_thread::sleep_for(30s);  // the outage itself, not a wait for an outcome
  EXPECT_EQ(static_cast<size_t>(Rows(pg_)), rows_before) << "nothing writes while it is down";
  worker = Worker(1);
  ASSERT_TRUE(worker->WaitReady()) << worker->process().ReadLog();

  ASSERT_EQ(sim.Wait(120s), std::optional<int>(0)) << sim.ReadLog();
  EXPECT_TRUE(WaitFor([&] { return HasEveryRow(pg_, expected); }, 90s))
      << Rows(pg_) << " of " << expected.size();
  WaitForTiers(pg_, tiers);
  WaitForFleetStage(Logs(2));
  const double reread = worker->Metric("fleetflow_changelog_messages_reread_total");
  const double in_state = worker->Metric("fleetflow_changelog_in_state_total");
  const double in_snapshot = worker->Metric("fleetflow_samples_in_snapshot_total");
  EXPECT_EQ(worker->process().Stop(SIGTERM, 30s), 0) << worker->process().ReadLog();

  // The 1 s rows too: the changelog is re-read from the oldest checkpoint (the tiers' snapshots
  // are older than the keyed state's), what the keyed state held already does not reach the join.
  const CheckResult rows = CheckRows(pg_, expected);
  EXPECT_TRUE(rows.ok()) << rows.Summary() << "\n" << rows.first_problems << Logs(2);
  CheckTiers(pg_, tiers, "kill -9, down 30 s", true, Logs(2));
  CheckFleetStage("kill -9, down 30 s");
  CheckArchive(fleet, expected, "kill -9, down 30 s");
  CheckAlarms(expected, "kill -9, down 30 s");
  std::printf(
      "e2e tiers: the restarted engine re-read %.0f messages, of which the keyed state held %.0f "
      "and the tiers' snapshots held samples %.0f times; 1 s rows: %s\n",
      reread, in_state, in_snapshot, rows.Summary().c_str());
}

}  // namespace
}  // namespace fleetflow::testing
