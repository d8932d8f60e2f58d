// pipelines/tiers.json with real components: fleet-sim (fixed seed) over a real nats-server, the
// 1 s rows and two statistics tiers in a real PostgreSQL. The statistics are recomputed here from
// the simulator's signal model (every sample it published) and the rules of docs/semantics.md,
// independently of the engine's code.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <fstream>
#include <sstream>

#include "build_paths.hpp"
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

TEST(TiersE2E, TheSecondRowsAndBothTiersOfStatisticsFromOneStreamEqualTheIndependentComputation) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-e2e");
  const std::string shipped = SourceDir() + "/pipelines/tiers.json";
  // Tiers of 4 s and 12 s stand for the minutes and the hours of the shipped file.
  WritePipelineVariant(shipped, "minutes", R"({"every_ms": 4000})", s.dir.File("a.json"));
  const std::string pipeline = WritePipelineVariant(s.dir.File("a.json"), "hours",
                                                    R"({"every_ms": 12000})", s.dir.File("b.json"));
  Engine engine(pipeline, s.nats, s.pg, s.dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();

  constexpr int kVehicles = 8;
  constexpr int kDurationS = 14;
  const SimRun sim = RunFleetSim(s.nats, kVehicles, kDurationS);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  ASSERT_TRUE(WaitForRows(s.pg, sim.expected.size()))
      << "rows: " << Rows(s.pg) << ", expected " << sim.expected.size() << "\n"
      << engine.process().ReadLog();

  const Samples samples = FleetSamples(sim.fleet.config, sim.fleet.end_ns);
  const std::vector<std::string> sensors = {"gps", "speed", "soc", "torque"};
  struct Tier {
    const char* node;
    const char* table;
    int every_s;
    ExpectedTable expected;
    TableColumns columns;
  };
  std::vector<Tier> tiers = {{"minutes_table", "vehicle_stats_1m", 4, {}, {}},
                             {"hours_table", "vehicle_stats_1h", 12, {}, {}}};
  for (Tier& t : tiers) {
    t.columns = ColumnsOf(shipped, t.node);
    ASSERT_FALSE(t.columns.columns.empty());
    t.expected = ComputeExpectedStats(samples, t.every_s * kSecond, 10 * kSecond, sensors,
                                      t.columns.columns);
    ASSERT_GE(t.expected.size(), static_cast<size_t>(kVehicles * (kDurationS / t.every_s)));
    // A tier's last window closes on the clock once it has ended and the fleet is quiet.
    const auto count = [&] {
      return std::stoul(s.pg.Psql("SELECT count(*) FROM " + std::string(t.table)));
    };
    EXPECT_TRUE(WaitFor([&] { return count() >= t.expected.size(); }, 40s))
        << t.table << ": " << count() << " rows of " << t.expected.size();
  }
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();

  const CheckResult rows = CheckRows(s.pg, sim.expected);
  EXPECT_TRUE(rows.ok()) << rows.Summary() << "\n" << rows.first_problems;
  for (const Tier& t : tiers) {
    const char* table = t.table;
    SCOPED_TRACE(table);
    const CheckResult check = CheckTable(s.pg, table, t.columns.sql, t.expected);
    EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
    std::printf("e2e tiers %s: %s\n", table, check.Summary().c_str());
  }
}

}  // namespace
}  // namespace fleetflow::testing
