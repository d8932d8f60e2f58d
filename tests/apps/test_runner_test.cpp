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

  /// Writes `tests` (a JSON array) as a test file of pipelines/default.json and runs it.
  int Run(const std::string& tests, const std::string& extra_file = "",
          const std::string& extra_text = "") {
    if (!extra_file.empty()) std::ofstream(dir_ / extra_file) << extra_text;
    const std::string file = (dir_ / "t.test.json").string();
    std::ofstream(file) << R"({ "pipeline": ")" << kSource << R"(/pipelines/default.json", )"
                        << R"("tests": )" << tests << "}";
    out_.str("");
    err_.str("");
    return RunPipelineTests(registry_, {file}, out_, err_);
  }

  Registry registry_;
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
  for (const char* name : {"pipelines/default.test.json", "pipelines/jetstream.test.json",
                           "tests/data/fleet_seed42.test.json"}) {
    rapidjson::Document doc;
    doc.Parse(Read(kSource + "/" + name).c_str());
    ASSERT_FALSE(doc.HasParseError()) << name;
    const auto violations = checker.Check(doc);
    EXPECT_TRUE(violations.empty())
        << name << ": " << violations.front().pointer << ": " << violations.front().message;
  }
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

}  // namespace
}  // namespace fleetflow
