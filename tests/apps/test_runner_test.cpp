// `fleetflow test`: the committed schema of test files is the generated one, and the runner
// reports passing, failing and invalid tests as documented (docs/cli.md).
#include "test_runner.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "schema_check.hpp"

namespace fleetflow {
namespace {

const std::string kSource = ::fleetflow::testing::SourceDir();

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TestRunnerTest : public ::testing::Test {
 protected:
  TestRunnerTest() {
    RegisterBuiltinOperators(registry_);
    dir_ = std::filesystem::temp_directory_path() /
           ("fleetflow-test-runner-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  ~TestRunnerTest() override { std::filesystem::remove_all(dir_); }

  /// Writes `tests` (a JSON array) as a test file of `pipeline_` and runs it.
  int Run(const std::string& tests, const std::string& extra_file = "",
          const std::string& extra_text = "") {
    if (!extra_file.empty()) std::ofstream(dir_ / extra_file) << extra_text;
    const std::string file = (dir_ / "t.test.json").string();
    const std::string pipeline = pipeline_.front() == '/' ? pipeline_ : kSource + "/" + pipeline_;
    std::ofstream(file) << R"({ "pipeline": ")" << pipeline << R"(", )"
                        << R"("tests": )" << tests << "}";
    out_.str("");
    err_.str("");
    return RunPipelineTests(registry_, {file}, out_, err_);
  }

  Registry registry_;
  std::string pipeline_ = "pipelines/default.json";
  std::filesystem::path dir_;
  std::ostringstream out_, err_;
};

// Two samples of speed around window 1 s: linear gives 10 + (20 - 10) * 0.2 / 0.5 = 14.
constexpr char kInputs[] = R"("inputs": [
  { "subject": "vehicle.v1.speed", "samples": [ { "ts": 1767225600800, "value": 10 } ] },
  { "subject": "vehicle.v1.speed", "samples": [ { "ts": "2026-01-01T01:00:01.300+01:00", "value": 20 } ] } ])";

TEST(TestFileSchema, CommittedSchemaIsTheGeneratedOne) {
  EXPECT_EQ(Read(kSource + "/schemas/test.schema.json"), TestFileJsonSchema())
      << "schemas/test.schema.json is stale: regenerate it with\n"
         "  build/apps/fleetflow test --schema > schemas/test.schema.json";
}

TEST(TestFileSchema, ShippedTestFilesAreValid) {
  rapidjson::Document schema;
  schema.Parse(TestFileJsonSchema().c_str());
  ASSERT_FALSE(schema.HasParseError());
  const SchemaChecker checker(schema);
  for (const char* name :
       {"pipelines/default.test.json", "pipelines/jetstream.test.json", "pipelines/tiers.test.json",
        "pipelines/jetstream-tiers.test.json", "tests/data/fleet_seed42.test.json"}) {
    rapidjson::Document doc;
    doc.Parse(Read(kSource + "/" + name).c_str());
    ASSERT_FALSE(doc.HasParseError()) << name;
    const auto violations = checker.Check(doc);
    EXPECT_TRUE(violations.empty())
        << name << ": " << violations.front().pointer << ": " << violations.front().message;
  }
}

// The stage across workers runs in the process: a fleet_source's rows are what the fleet_publish
// nodes of its stream read; one that none feeds could never have a row, and says so.
TEST_F(TestRunnerTest, AFleetSourceThatNoFleetPublishFeedsCannotRun) {
  pipeline_ = (dir_ / "stage.json").string();
  std::ofstream(pipeline_) << R"({"name": "stage", "nodes": [
      {"id": "partials", "type": "fleet_source", "config": {"stream": "CELLS"}},
      {"id": "merge", "type": "cell_merge", "inputs": ["partials"]},
      {"id": "db", "type": "timescale_sink", "inputs": ["merge"], "config": {"key_column": "cell",
       "columns": [{"name": "vehicles", "sensor": "vehicles", "stat": "count"}]}}]})";
  EXPECT_NE(Run(std::string(R"([{ "name": "none", )") + kInputs + R"(, "expect": [] }])"), 0);
  const std::string said = out_.str() + err_.str();
  EXPECT_NE(said.find("fleet_source 'partials' reads stream CELLS, which no fleet_publish of the "
                      "pipeline writes"),
            std::string::npos)
      << said;
}

TEST_F(TestRunnerTest, MatchingRowsPass) {
  EXPECT_EQ(Run(std::string(R"([{ "name": "ok", )") + kInputs + R"(, "expect": [
      { "vehicle": "v1", "time": "2026-01-01T00:00:01Z", "values": { "speed": 14, "soc": null } } ] }])"),
            0)
      << out_.str() << err_.str();
  EXPECT_NE(out_.str().find("PASS ok"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("1 test: 1 passed, 0 failed"), std::string::npos) << out_.str();
}

TEST_F(TestRunnerTest, DifferingCellsMissingAndUnexpectedRowsFail) {
  EXPECT_EQ(Run(std::string(R"([{ "name": "wrong", )") + kInputs + R"(, "expect": [
      { "vehicle": "v1", "time": 1767225601000, "values": { "speed": 15, "lat": 1 } },
      { "vehicle": "v9", "time": 1767225601000, "values": { "speed": 1 } } ] }])"),
            1);
  const std::string out = out_.str();
  EXPECT_NE(out.find("FAIL wrong"), std::string::npos) << out;
  EXPECT_NE(out.find("v1 2026-01-01T00:00:01.000Z speed: expected 15, got 14"), std::string::npos)
      << out;
  EXPECT_NE(out.find("v1 2026-01-01T00:00:01.000Z lat: expected 1, got NULL"), std::string::npos)
      << out;
  EXPECT_NE(out.find("missing row v9 2026-01-01T00:00:01.000Z: speed=1"), std::string::npos) << out;
  EXPECT_NE(out.find("1 test: 0 passed, 1 failed"), std::string::npos) << out;

  EXPECT_EQ(Run(std::string(R"([{ "name": "none", )") + kInputs + R"(, "expect": [] }])"), 1);
  EXPECT_NE(out_.str().find("unexpected row v1 2026-01-01T00:00:01.000Z: lat=NULL, lon=NULL, "
                            "speed=14, soc=NULL, torque=NULL"),
            std::string::npos)
      << out_.str();
}

TEST_F(TestRunnerTest, GoldenCsvAndTolerance) {
  const std::string tests = std::string(R"([{ "name": "csv", "tolerance": 0.01, )") + kInputs +
                            R"(, "expect_csv": "rows.csv" }])";
  EXPECT_EQ(Run(tests, "rows.csv", "vehicle_id,time_ms,speed,soc\nv1,1767225601000,14.005,\n"), 0)
      << out_.str() << err_.str();
  EXPECT_EQ(Run(tests, "rows.csv", "vehicle_id,time_ms,speed,soc\nv1,1767225601000,14.02,\n"), 1)
      << out_.str() << err_.str();
  EXPECT_NE(out_.str().find("speed: expected 14.02, got 14"), std::string::npos) << out_.str();
}

TEST_F(TestRunnerTest, InvalidFilesNameThePointer) {
  EXPECT_EQ(Run(R"([{ "name": "bad", "inputs": [
      { "subject": "vehicle.v1.speed", "samples": [ { "ts": "yesterday", "value": 1 } ] } ],
      "expect": [] }])"),
            2);
  EXPECT_NE(err_.str().find("/tests/0/inputs/0/samples/0/ts"), std::string::npos) << err_.str();

  EXPECT_EQ(Run(R"([{ "name": "status", "inputs": [
      { "subject": "vehicle.v1.status", "samples": [ { "ts": 1, "value": 1 } ] } ],
      "expect": [] }])"),
            2);
  EXPECT_NE(err_.str().find("/tests/0/inputs/0: vehicle.<id>.status takes status (on or off)"),
            std::string::npos)
      << err_.str();

  EXPECT_EQ(Run(std::string(R"([{ "name": "column", )") + kInputs + R"(, "expect": [
      { "vehicle": "v1", "time": 1767225601000, "values": { "sped": 14 } } ] }])"),
            2);
  EXPECT_NE(err_.str().find("/tests/0/expect/0: unknown column 'sped'; did you mean 'speed'?"),
            std::string::npos)
      << err_.str();
}

// pipelines/tiers.json: three sinks, the 1 s rows (database) and two statistics tiers.
class SeveralSinksTest : public TestRunnerTest {
 protected:
  SeveralSinksTest() { pipeline_ = "pipelines/tiers.json"; }
};

// Minute 0 of v1: speed 10 and 30 (count 2, mean 20), one position at 20.25 s (distance 0). The
// sample at 60.6 s closes the minute; no hour ends.
constexpr char kTiersInputs[] = R"("inputs": [
  { "subject": "vehicle.v1.speed", "samples": [ { "ts": "2026-01-01T00:00:10Z", "value": 10 } ] },
  { "subject": "vehicle.v1.gps", "samples": [ { "ts": "2026-01-01T00:00:20.250Z", "lat": 48.85, "lon": 2.35 } ] },
  { "subject": "vehicle.v1.speed", "samples": [ { "ts": "2026-01-01T00:00:50Z", "value": 30 } ] },
  { "subject": "vehicle.v1.speed", "samples": [ { "ts": "2026-01-01T00:01:00.600Z", "value": 5 } ] } ])";

std::string TiersTest(const std::string& fields) {
  return std::string(R"([{ "name": "tiers", )") + kTiersInputs + ", " + fields + " }]";
}

TEST_F(SeveralSinksTest, RowsOfEverySinkComparedPass) {
  for (const char* last_seen : {R"("2026-01-01T00:00:20.250Z")", "1767225620250"}) {
    EXPECT_EQ(Run(TiersTest(std::string(R"("ignore_sinks": ["database", "fleet_table"], "expect": {
        "minutes_table": [ { "vehicle": "v1", "time": "2026-01-01T00:00:00Z", "values": {
          "speed_samples": 2, "speed_mean": 20, "speed_max": 30, "soc_first": null,
          "gps_samples": 1, "distance_m": 0, "last_seen": )") +
                            last_seen + " } } ], \"hours_table\": [] }")),
              0)
        << out_.str() << err_.str();
    EXPECT_NE(out_.str().find("PASS tiers"), std::string::npos) << out_.str();
  }

  // The object form is also the one sink's of a pipeline with one.
  pipeline_ = "pipelines/default.json";
  EXPECT_EQ(Run(std::string(R"([{ "name": "one", )") + kInputs + R"(, "expect": { "database": [
      { "vehicle": "v1", "time": "2026-01-01T00:00:01Z", "values": { "speed": 14 } } ] } }])"),
            0)
      << out_.str() << err_.str();
}

TEST_F(SeveralSinksTest, ADifferenceNamesItsSink) {
  EXPECT_EQ(Run(TiersTest(R"("ignore_sinks": ["database", "fleet_table"], "expect": {
      "minutes_table": [ { "vehicle": "v1", "time": "2026-01-01T00:00:00Z", "values": {
        "speed_samples": 2, "last_seen": "2026-01-01T00:00:20.250Z" } } ],
      "hours_table": [ { "vehicle": "v1", "time": "2026-01-01T00:00:00Z", "values": {
        "speed_samples": 2 } } ] })")),
            1);
  const std::string out = out_.str();
  EXPECT_NE(out.find("FAIL tiers"), std::string::npos) << out;
  EXPECT_NE(out.find("\n  hours_table: missing row v1 2026-01-01T00:00:00.000Z: speed_samples=2\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("minutes_table:"), std::string::npos) << out;

  // A time is compared to the microsecond, and shown to it when it has a part below the ms.
  EXPECT_EQ(Run(TiersTest(R"("ignore_sinks": ["database", "fleet_table"], "expect": {
      "minutes_table": [ { "vehicle": "v1", "time": "2026-01-01T00:00:00Z", "values": {
        "last_seen": "2026-01-01T00:00:20.2504Z" } } ], "hours_table": [] })")),
            1);
  EXPECT_NE(out_.str().find("  minutes_table: v1 2026-01-01T00:00:00.000Z last_seen: expected "
                            "2026-01-01T00:00:20.250400Z, got 2026-01-01T00:00:20.250Z"),
            std::string::npos)
      << out_.str();
}

TEST_F(SeveralSinksTest, ExpectedCsvFilesBySink) {
  std::ofstream(dir_ / "minutes.csv") << "vehicle_id,time_ms,speed_samples,distance_m,last_seen\n"
                                         "v1,1767225600000,2,0,2026-01-01T00:00:20.250Z\n";
  std::ofstream(dir_ / "hours.csv") << "vehicle_id,time_ms,speed_samples\n";
  EXPECT_EQ(Run(TiersTest(R"("ignore_sinks": ["database", "fleet_table"],
      "expect_csv": { "minutes_table": "minutes.csv", "hours_table": "hours.csv" })")),
            0)
      << out_.str() << err_.str();
}

TEST_F(SeveralSinksTest, ANodeThatIsNoSinkIsInvalid) {
  EXPECT_EQ(Run(TiersTest(R"("ignore_sinks": ["database", "hours", "fleet_table"], "expect": {
      "minute_table": [], "windows": [], "hours_table": [] })")),
            2);
  const std::string err = err_.str();
  EXPECT_NE(
      err.find("/tests/0/expect/minute_table: unknown sink 'minute_table'; did you mean "
               "'minutes_table'? Known sinks: database, minutes_table, hours_table, fleet_table."),
      std::string::npos)
      << err;
  EXPECT_NE(
      err.find("/tests/0/expect/windows: node 'windows' is a window_join, not a "
               "timescale_sink; the sinks: database, minutes_table, hours_table, fleet_table"),
      std::string::npos)
      << err;
  EXPECT_NE(err.find("/tests/0/ignore_sinks/1: node 'hours' is a window_aggregate, not a "
                     "timescale_sink"),
            std::string::npos)
      << err;
}

TEST_F(SeveralSinksTest, EverySinkIsComparedOrIgnored) {
  EXPECT_EQ(Run(TiersTest(R"("expect": { "minutes_table": [] })")), 2);
  std::string err = err_.str();
  for (const char* sink : {"database", "hours_table", "fleet_table"}) {
    EXPECT_NE(err.find("/tests/0/expect: sink '" + std::string(sink) +
                       "' is not compared: add its rows (an empty list when it writes none) to "
                       "expect, or name it in ignore_sinks"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ(err.find("sink 'minutes_table' is not compared"), std::string::npos) << err;

  EXPECT_EQ(Run(TiersTest(R"("ignore_sinks": ["database", "hours_table", "fleet_table"], "expect": {
      "hours_table": [] })")),
            2);
  err = err_.str();
  EXPECT_NE(err.find("/tests/0/ignore_sinks/1: sink 'hours_table' is both in expect and ignored"),
            std::string::npos)
      << err;

  // The list alone is for a pipeline with one sink.
  EXPECT_EQ(Run(TiersTest(R"("expect": [])")), 2);
  EXPECT_NE(err_.str().find("/tests/0/expect: the pipeline has 4 timescale_sink nodes (database, "
                            "minutes_table, hours_table, fleet_table): give expect as an object "
                            "from sink node id to its rows"),
            std::string::npos)
      << err_.str();
}

TEST_F(SeveralSinksTest, ATimeColumnTakesATime) {
  EXPECT_EQ(
      Run(TiersTest(R"("ignore_sinks": ["database", "fleet_table"], "expect": { "hours_table": [],
      "minutes_table": [ { "vehicle": "v1", "time": 0, "values": {
        "last_seen": "noon", "speed_mean": "2026-01-01T00:00:00Z" } } ] })")),
      2);
  const std::string err = err_.str();
  EXPECT_NE(err.find("/tests/0/expect/minutes_table/0/values/last_seen: column 'last_seen' is a "
                     "time: milliseconds since the Unix epoch or an RFC 3339 time, found the "
                     "string \"noon\""),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("/tests/0/expect/minutes_table/0/values/speed_mean: column 'speed_mean' "
                     "takes a number or null"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace fleetflow
