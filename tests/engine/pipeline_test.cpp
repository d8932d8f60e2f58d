// Pipeline loading: one bad pipeline per error kind, each asserting the message a user sees.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "builtin.hpp"
#include "pipeline.hpp"

namespace fleetflow {
namespace {

using ::testing::HasSubstr;

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() { RegisterBuiltinOperators(registry_); }

  LoadResult Load(const std::string& nodes_json) {
    return ParsePipeline(R"({"name": "t", "nodes": )" + nodes_json + "}", "t.json", registry_,
                         Env());
  }

  EnvLookup Env() {
    return [this](const std::string& k) -> std::optional<std::string> {
      auto it = env_.find(k);
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
  }

  /// Expects exactly one error, at `pointer`, containing every fragment.
  void CheckInvalid(const std::string& nodes_json, const std::string& pointer,
                    const std::vector<std::string>& fragments) {
    const LoadResult r = Load(nodes_json);
    ASSERT_FALSE(r.ok()) << nodes_json;
    ASSERT_EQ(r.errors.size(), 1u) << r.errors.front().Format();
    EXPECT_EQ(r.errors[0].pointer, pointer) << r.errors[0].Format();
    for (const auto& f : fragments) EXPECT_THAT(r.errors[0].Format(), HasSubstr(f));
  }

  Registry registry_;
  std::map<std::string, std::string> env_;
};

const char* kSource = R"({"id": "in", "type": "nats_source"})";
const char* kState = R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in"]})";
const char* kJoin = R"({"id": "join", "type": "window_join", "inputs": ["kv"]})";
const char* kSink = R"({"id": "db", "type": "timescale_sink", "inputs": ["join"]})";

std::string Nodes(std::vector<std::string> nodes) {
  std::string out = "[";
  for (size_t i = 0; i < nodes.size(); ++i) out += (i ? "," : "") + nodes[i];
  return out + "]";
}

TEST_F(PipelineTest, ValidPipelineIsOrderedTopologicallyWithDefaults) {
  const LoadResult r = Load(Nodes({kSink, kJoin, kState, kSource}));
  ASSERT_TRUE(r.ok()) << r.errors.front().Format();
  std::vector<std::string> ids;
  for (const auto& n : r.pipeline->nodes) ids.push_back(n.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"in", "kv", "join", "db"}));
  EXPECT_EQ(r.pipeline->nodes[2].config.Integer("every_ms"), 1000);
  EXPECT_EQ(r.pipeline->nodes[0].config.String("subject"), "vehicle.>");
}

TEST_F(PipelineTest, ShippedDefaultPipelineIsValid) {
  const LoadResult r =
      LoadPipelineFile(std::string(FF_SOURCE_DIR) + "/pipelines/default.json", registry_, Env());
  ASSERT_TRUE(r.ok()) << r.errors.front().Format();
  EXPECT_EQ(r.pipeline->nodes.size(), 4u);
}

TEST_F(PipelineTest, InvalidJsonNamesLineAndColumn) {
  const LoadResult r = ParsePipeline("{\n  \"name\": \"x\",\n  \"nodes\": [,]\n}", "bad.json",
                                     registry_, Env());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.errors[0].Format(), HasSubstr("bad.json"));
  EXPECT_THAT(r.errors[0].Format(), HasSubstr("line 3"));
}

TEST_F(PipelineTest, UnknownOperatorSuggestsTheClosestName) {
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_sorce"})", kState, kJoin, kSink}),
               "/nodes/0/type", {"unknown operator 'nats_sorce'", "did you mean 'nats_source'"});
}

TEST_F(PipelineTest, DuplicateNodeId) {
  CheckInvalid(Nodes({kSource, R"({"id": "in", "type": "nats_source"})", kState, kJoin, kSink}),
               "/nodes/1/id", {"duplicate node id 'in'"});
}

TEST_F(PipelineTest, InputToMissingNode) {
  CheckInvalid(
      Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value", "inputs": ["inn"]})", kJoin,
             kSink}),
      "/nodes/1/inputs/0", {"(node 'kv')", "input 'inn' is not a node", "did you mean 'in'"});
}

TEST_F(PipelineTest, Cycle) {
  CheckInvalid(Nodes({kSource,
                      R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in", "kv2"]})",
                      R"({"id": "kv2", "type": "keyed_last_value", "inputs": ["kv"]})", kJoin,
                      kSink}),
               "/nodes", {"cycle", "kv, kv2"});
}

TEST_F(PipelineTest, NoSinkAndDanglingOutput) {
  const LoadResult r = Load(Nodes({kSource, kState, kJoin}));
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].pointer, "/nodes/2");
  EXPECT_THAT(r.errors[0].Format(), HasSubstr("output of 'join' (rows) goes nowhere"));
  EXPECT_THAT(r.errors[1].Format(), HasSubstr("no sink"));
}

TEST_F(PipelineTest, IncompatiblePorts) {
  CheckInvalid(Nodes({kSource, kState, R"({"id": "db", "type": "timescale_sink",
                      "inputs": ["kv"]})"}),
               "/nodes/2/inputs/0", {"produces samples", "consumes rows"});
}

TEST_F(PipelineTest, SourceWithInputsAndTransformWithout) {
  CheckInvalid(Nodes({kSource, R"({"id": "in2", "type": "nats_source", "inputs": ["in"]})",
                      kState, kJoin, kSink}),
               "/nodes/1/inputs", {"is a source and takes no inputs"});
  CheckInvalid(Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value"})", kJoin, kSink}),
               "/nodes/1", {"needs an input"});
}

TEST_F(PipelineTest, UnknownConfigFieldSuggests) {
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"evry_ms": 1000}})",
                      kSink}),
               "/nodes/2/config/evry_ms", {"(node 'join')", "did you mean 'every_ms'"});
}

TEST_F(PipelineTest, ConfigOutOfRangeAndWrongType) {
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"every_ms": 50}})",
                      kSink}),
               "/nodes/2/config/every_ms", {"at least 100", "found an integer"});
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"every_ms": "1s"}})",
                      kSink}),
               "/nodes/2/config/every_ms", {"must be integer", "found the string \"1s\""});
}

TEST_F(PipelineTest, EnumValueAndNestedObjectField) {
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source", "config": {"delivery": "kafka"}})",
                      kState, kJoin, kSink}),
               "/nodes/0/config/delivery", {"must be one of core"});
  CheckInvalid(Nodes({kSource, kState, kJoin,
                      R"({"id": "db", "type": "timescale_sink", "inputs": ["join"],
                          "config": {"columns": [{"name": "speed", "sensr": "speed"}]}})"}),
               "/nodes/3/config/columns/0/sensr", {"(node 'db')", "did you mean 'sensor'"});
}

TEST_F(PipelineTest, UnknownTopLevelAndNodeFields) {
  const LoadResult r = ParsePipeline(R"({"name": "t", "nodez": []})", "t.json", registry_, Env());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.errors[0].Format(), HasSubstr("did you mean 'nodes'"));
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source", "input": []})", kState, kJoin,
                      kSink}),
               "/nodes/0/input", {"did you mean 'inputs'"});
}

TEST_F(PipelineTest, EnvironmentSubstitution) {
  env_["BUS"] = "nats://10.0.0.1:4222";
  const LoadResult r = Load(Nodes(
      {R"({"id": "in", "type": "nats_source", "config": {"url": "${BUS}", "subject": "${SUBJ:-vehicle.>}"}})",
       kState, kJoin, kSink}));
  ASSERT_TRUE(r.ok()) << r.errors.front().Format();
  EXPECT_EQ(r.pipeline->nodes[0].config.String("url"), "nats://10.0.0.1:4222");
  EXPECT_EQ(r.pipeline->nodes[0].config.String("subject"), "vehicle.>");
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source", "config": {"url": "${NOPE}"}})",
                      kState, kJoin, kSink}),
               "/nodes/0/config/url", {"NOPE is not set", "${NOPE:-value}"});
}

TEST(ExpandEnvTest, Forms) {
  auto env = [](const std::string& k) -> std::optional<std::string> {
    if (k == "A") return std::string("1");
    return std::nullopt;
  };
  std::string out, err;
  ASSERT_TRUE(ExpandEnv("x${A}y${B:-2}z$${A}", env, out, err)) << err;
  EXPECT_EQ(out, "x1y2z${A}");
  EXPECT_FALSE(ExpandEnv("${A", env, out, err));
  EXPECT_THAT(err, HasSubstr("unterminated"));
  EXPECT_FALSE(ExpandEnv("${A B}", env, out, err));
}

}  // namespace
}  // namespace fleetflow
