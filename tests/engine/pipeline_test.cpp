// Pipeline loading: one bad pipeline per error kind, each asserting the message a user sees.
#include "pipeline.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "build_paths.hpp"
#include "builtin.hpp"

namespace fleetflow {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
    CheckErrors(Load(nodes_json), {{pointer, fragments}});
  }

  struct Expected {
    std::string pointer;
    std::vector<std::string> fragments;
  };

  /// Expects exactly these errors, in this order.
  static void CheckErrors(const LoadResult& r, const std::vector<Expected>& expected) {
    ASSERT_FALSE(r.ok());
    std::string all;
    for (const auto& e : r.errors) all += e.Format() + "\n";
    ASSERT_EQ(r.errors.size(), expected.size()) << all;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(r.errors[i].pointer, expected[i].pointer) << all;
      for (const auto& f : expected[i].fragments) {
        EXPECT_THAT(r.errors[i].Format(), HasSubstr(f)) << all;
      }
    }
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
  EXPECT_EQ(r.pipeline->nodes[0].config.String("subject"), "vehicle.*.*");
}

TEST_F(PipelineTest, ShippedDefaultPipelineIsValid) {
  const LoadResult r = LoadPipelineFile(
      ::fleetflow::testing::SourceDir() + "/pipelines/default.json", registry_, Env());
  ASSERT_TRUE(r.ok()) << r.errors.front().Format();
  EXPECT_EQ(r.pipeline->nodes.size(), 5u);
}

TEST_F(PipelineTest, InvalidJsonNamesLineAndColumn) {
  const LoadResult r =
      ParsePipeline("{\n  \"name\": \"x\",\n  \"nodes\": [,]\n}", "bad.json", registry_, Env());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0].line, 3u);
  EXPECT_EQ(r.errors[0].column, 13u);
  EXPECT_EQ(r.errors[0].Format(), "bad.json:3:13: invalid JSON: Invalid value.");
  EXPECT_EQ(r.errors[0].FormatGcc(), "bad.json:3:13: error: invalid JSON: Invalid value.");
}

TEST_F(PipelineTest, AProblemIsAtTheValueItsPointerNamesOrTheObjectThatLacksIt) {
  const LoadResult r = ParsePipeline(R"({"name": "t",
 "nodes": [
  {"id": "in", "type": "nats_source", "config": {"subject": 5}},
  {"type": "keyed_last_value", "inputs": ["in"]}
 ]})",
                                     "t.json", registry_, Env());
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].pointer, "/nodes/1");
  EXPECT_THAT(r.errors[0].message, HasSubstr("missing required field 'id'"));
  EXPECT_EQ(r.errors[0].line, 4u);
  EXPECT_EQ(r.errors[0].column, 3u);  // the object without it
  EXPECT_EQ(r.errors[1].pointer, "/nodes/0/config/subject");
  EXPECT_EQ(r.errors[1].line, 3u);
  EXPECT_EQ(r.errors[1].column, 61u);  // the 5
}

TEST_F(PipelineTest, AByteOrderMarkIsSkippedAndNotCountedInTheColumn) {
  const std::string text =
      R"({"name": "t", "nodes": )" + Nodes({kSource, kState, kJoin, kSink}) + "}";
  const LoadResult ok = ParsePipeline("\xEF\xBB\xBF" + text, "bom.json", registry_, Env());
  ASSERT_TRUE(ok.ok()) << ok.errors.front().Format();
  const LoadResult bad =
      ParsePipeline("\xEF\xBB\xBF{\"name\": 7, \"nodes\": []}", "bom.json", registry_, Env());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.errors[0].pointer, "/name");
  EXPECT_EQ(bad.errors[0].line, 1u);
  EXPECT_EQ(bad.errors[0].column, 10u);
}

// A text that ends inside a multi-byte UTF-8 sequence is an error at that byte; nothing past the
// text is read (RapidJSON's check of a NUL-terminated text read past the NUL: the sanitizer
// build fails this test without the bound, the fuzzer found it).
TEST_F(PipelineTest, ATextEndingInsideAMultiByteCharacterIsAnEncodingError) {
  for (const std::string& text : {std::string("{\"name\": \"x\",\n \"n]\xE1"),
                                  std::string("{\"name\": \"vehicle-telemetry\xF0\x9F")}) {
    const LoadResult r = ParsePipeline(text, "cut.json", registry_, Env());
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.errors[0].Format(), HasSubstr("cut.json:"));
    EXPECT_THAT(r.errors[0].message, HasSubstr("invalid UTF-8 in a string"));
  }
}

// Nesting far past the bound (the fuzzer's input: crash-deep-nesting of its corpus, grown) is one
// error at the start of the file. Before it was refused, where each value starts was recorded by
// its whole JSON pointer: the square of the depth, seconds under the sanitizers (a fuzz timeout).
TEST_F(PipelineTest, ThirtyThousandNestedArraysAreOneErrorAtTheStart) {
  const LoadResult r = Load(std::string(30000, '[') + std::string(30000, ']'));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].message, HasSubstr("nests arrays and objects more than 64 levels deep"));
  EXPECT_EQ(r.errors[0].line, 1u);
  EXPECT_EQ(r.errors[0].column, 1u);
}

// Each of thousands of problems on one line has its column (each was counted from the start of
// the text: the square of the text).
TEST_F(PipelineTest, EachOfThousandsOfProblemsOnOneLineHasItsColumn) {
  std::string nodes = "[1";
  for (int i = 1; i < 20000; ++i) nodes += ",1";
  const LoadResult r = Load(nodes + "]");
  ASSERT_EQ(r.errors.size(), 20000u);
  const size_t first = std::string(R"({"name": "t", "nodes": [)").size() + 1;
  for (size_t i : {size_t{0}, size_t{12345}, size_t{19999}}) {
    EXPECT_EQ(r.errors[i].pointer, "/nodes/" + std::to_string(i));
    EXPECT_THAT(r.errors[i].message, HasSubstr("must be object, found the integer 1"));
    EXPECT_EQ(r.errors[i].line, 1u);
    EXPECT_EQ(r.errors[i].column, first + 2 * i);
  }
}

// A key repeated thousands of times in a node: each repetition and each unknown field is
// reported with the node (whose id was looked up among all its members for every problem).
TEST_F(PipelineTest, AKeyRepeatedThousandsOfTimesInANodeIsReportedEachTimeWithTheNode) {
  std::string node = R"({"id": "in", "type": "nats_source")";
  for (int i = 0; i < 5000; ++i) node += R"(, "a": 0)";
  const LoadResult r = Load(Nodes({node + "}", kState, kJoin, kSink}));
  ASSERT_EQ(r.errors.size(), 4999u + 5000u);
  size_t duplicates = 0;
  for (const auto& e : r.errors) {
    EXPECT_EQ(e.node, "in") << e.Format();
    if (e.message.rfind("duplicate key 'a'", 0) == 0) ++duplicates;
  }
  EXPECT_EQ(duplicates, 4999u);
}

// Thousands of items under a key of thousands of characters are one unknown field, at its value
// (each item's JSON pointer, with the key in it, was kept for its position and built again for
// the ${VAR} substitution: a gigabyte).
TEST_F(PipelineTest, ThousandsOfItemsUnderALongKeyAreOneUnknownField) {
  const std::string key(5000, 'k');
  std::string items = "[0";
  for (int i = 1; i < 10000; ++i) items += ",0";
  const std::string text = R"({"name": "t", "nodes": )" + Nodes({kSource, kState, kJoin, kSink}) +
                           ", \"" + key + "\": " + items + "]}";
  const LoadResult r = ParsePipeline(text, "t.json", registry_, Env());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].pointer, "/" + key);
  EXPECT_THAT(r.errors[0].message, HasSubstr("unknown field 'kkk"));
  EXPECT_EQ(r.errors[0].line, 1u);
  EXPECT_EQ(r.errors[0].column, text.find("[0") + 1);
}

// Only the first 20 unknown inputs get a "did you mean": each compares the name with every node's
// id, and thousands of them in a pipeline of hundreds of nodes took seconds.
TEST_F(PipelineTest, TheFirstTwentyUnknownInputsGetADidYouMean) {
  std::string inputs = R"("inn")";
  for (int i = 1; i < 25; ++i) inputs += R"(, "inn")";
  const LoadResult r = Load(
      Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value", "inputs": [)" + inputs + "]}",
             kJoin, kSink}));
  ASSERT_EQ(r.errors.size(), 25u);
  for (size_t i = 0; i < r.errors.size(); ++i) {
    EXPECT_THAT(r.errors[i].message, HasSubstr("input 'inn' is not a node"));
    EXPECT_EQ(r.errors[i].Suggestion(), i < 20 ? "in" : "") << i;
  }
}

TEST_F(PipelineTest, TheSuggestionIsTheNameADidYouMeanProposes) {
  const LoadResult r = Load(Nodes({R"({"id": "in", "type": "nats_sorce"})", kState, kJoin, kSink}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0].Suggestion(), "nats_source");
  const Diagnostic plain{"f", "", "", "must be integer"};
  EXPECT_EQ(plain.Suggestion(), "");
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
  CheckInvalid(Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value", "inputs": ["inn"]})",
                      kJoin, kSink}),
               "/nodes/1/inputs/0",
               {"(node 'kv')", "input 'inn' is not a node", "did you mean 'in'"});
}

TEST_F(PipelineTest, Cycle) {
  CheckInvalid(
      Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in", "kv2"]})",
             R"({"id": "kv2", "type": "keyed_last_value", "inputs": ["kv"]})", kJoin, kSink}),
      "/nodes/1/inputs/1", {"(node 'kv')", "the inputs form a cycle: kv -> kv2 -> kv;"});
  // join and db read from the cycle but are not in it.
  const LoadResult r =
      Load(Nodes({kSource, R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in", "kv2"]})",
                  R"({"id": "kv2", "type": "keyed_last_value", "inputs": ["kv"]})", kJoin, kSink}));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].message, Not(HasSubstr("join")));
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
  CheckInvalid(Nodes({kSource, R"({"id": "in2", "type": "nats_source", "inputs": ["in"]})", kState,
                      kJoin, kSink}),
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
               "/nodes/2/config/every_ms",
               {"must be at least 100, found the integer 50", "(allowed: 100 to 3600000)"});
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
  // The misspelt field is unknown, with the one it was meant to be; without it the column has
  // neither a sensor nor an expression.
  CheckErrors(Load(Nodes({kSource, kState, kJoin,
                          R"({"id": "db", "type": "timescale_sink", "inputs": ["join"],
                              "config": {"columns": [{"name": "speed", "sensr": "speed"}]}})"})),
              {{"/nodes/3/config/columns/0/sensr", {"(node 'db')", "did you mean 'sensor'"}}});
  CheckErrors(Load(Nodes({kSource, kState, kJoin,
                          R"({"id": "db", "type": "timescale_sink", "inputs": ["join"],
                              "config": {"columns": [{"name": "speed"}]}})"})),
              {{"/nodes/3/config/columns/0", {"needs a sensor", "or an expression"}}});
}

/// A pipeline whose sink has `config` (JSON object members).
std::string WithSink(const std::string& config) {
  return Nodes({kSource, kState, kJoin,
                R"({"id": "db", "type": "timescale_sink", "inputs": ["join"], "config": {)" +
                    config + "}}"});
}

TEST_F(PipelineTest, DerivedColumnsAreCheckedWithTheirPointers) {
  const std::string ok = R"j({"name": "speed", "sensor": "speed"},
                            {"name": "torque", "sensor": "torque"},
                            {"name": "power_kw", "expression": "torque * speed / 1000"},
                            {"name": "fast", "expression": "power_kw > 50 && vehicle(\"v1\")"})j";
  EXPECT_TRUE(Load(WithSink(R"("columns": [)" + ok + "]")).ok());
  CheckErrors(
      Load(WithSink(R"("columns": [{"name": "speed", "sensor": "speed"},
                                   {"name": "a", "expression": "sped * 2"},
                                   {"name": "b", "expression": "speed * (2"},
                                   {"name": "c", "expression": "d + 1"},
                                   {"name": "d", "expression": "speed"},
                                   {"name": "e", "sensor": "soc", "expression": "speed"}])")),
      {{"/nodes/3/config/columns/5/sensor", {"column 'e' has both a sensor and an expression"}},
       {"/nodes/3/config/columns/1/expression",
        {"column 'a'", "unknown name 'sped' at character 1", "did you mean 'speed'"}},
       {"/nodes/3/config/columns/2/expression", {"column 'b'", "speed * (2"}},
       {"/nodes/3/config/columns/3/expression",
        {"column 'c'", "'d' is a derived column listed after this one"}}});
}

TEST_F(PipelineTest, PatternsOfTheSpecAreReportedWithTheirPointer) {
  CheckInvalid(WithSink(R"("table": "Vehicle-Telemetry")"), "/nodes/3/config/table",
               {"(node 'db')", "must be a valid identifier: 1 to 63 lower-case letters",
                "found the string \"Vehicle-Telemetry\""});
  CheckErrors(Load(WithSink(R"("columns": [{"name": "9speed", "sensor": "sp eed"}])")),
              {{"/nodes/3/config/columns/0/name", {"must be a valid identifier"}},
               {"/nodes/3/config/columns/0/sensor",
                {"a sensor name: 1 to 64 of A-Z a-z 0-9 _ -", "\"sp eed\""}}});
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source",
                         "config": {"partition_prefix": "tele.metry"}})",
                      kState, kJoin, kSink}),
               "/nodes/0/config/partition_prefix", {"must be one subject token"});
}

TEST_F(PipelineTest, ItemCountsAndUniqueItemsAreReportedWithTheirPointer) {
  CheckInvalid(WithSink(R"("columns": [])"), "/nodes/3/config/columns",
               {"must have at least 1 item(s), found 0"});
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"sensors": []}})",
                      kSink}),
               "/nodes/2/config/sensors", {"(node 'join')", "must have at least 1 item(s)"});
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"sensors": ["gps", "soc", "gps"]}})",
                      kSink}),
               "/nodes/2/config/sensors/2",
               {"repeats an earlier item; list each item once", "found the string \"gps\""});
  CheckInvalid(WithSink(R"("chunk_interval": "")"), "/nodes/3/config/chunk_interval",
               {"must not be empty, e.g. \"6 hours\""});
}

TEST_F(PipelineTest, CrossFieldRulesAreReportedWithTheirPointer) {
  CheckErrors(
      Load(WithSink(R"("columns": [{"name": "time", "sensor": "speed"},
                                           {"name": "a", "sensor": "speed"},
                                           {"name": "a", "sensor": "soc"},
                                           {"name": "vehicle_id", "sensor": "soc"}],
                               "batch_rows": 500, "max_pending_rows": 100,
                               "retry_initial_ms": 500, "retry_max_ms": 100)")),
      {{"/nodes/3/config/columns/0/name", {"(node 'db')", "'time' is reserved"}},
       {"/nodes/3/config/columns/2/name", {"duplicate column 'a'"}},
       {"/nodes/3/config/columns/3/name", {"'vehicle_id' is reserved"}},
       {"/nodes/3/config/max_pending_rows", {"must be at least batch_rows (500), found 100"}},
       {"/nodes/3/config/retry_max_ms", {"must be at least retry_initial_ms (500), found 100"}}});
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source", "config": {"partitions": 4}})", kState,
                      kJoin, kSink}),
               "/nodes/0/config/partitions",
               {"(node 'in')", "a partitioned source needs delivery \"jetstream\""});
}

TEST_F(PipelineTest, BehindAPartitionedSourceTheStateHistoryCoversTheJoinsLateness) {
  const std::string source = R"({"id": "in", "type": "nats_source",
                                 "config": {"partitions": 4, "delivery": "jetstream"}})";
  const auto state = [](int history_ms) {
    return R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in"],
               "config": {"history_ms": )" +
           std::to_string(history_ms) + "}}";
  };
  const std::string join = R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                               "config": {"allowed_lateness_ms": 1000}})";
  CheckInvalid(Nodes({source, state(999), join, kSink}), "/nodes/1/config/history_ms",
               {"(node 'kv')", "history_ms (999) is shorter than allowed_lateness_ms (1000)",
                "window_join 'join'", "at least 1000"});
  EXPECT_TRUE(Load(Nodes({source, state(1000), join, kSink})).ok());
  // Not partitioned: nobody restores windows from the history.
  EXPECT_TRUE(Load(Nodes({kSource, state(0), join, kSink})).ok());
}

TEST_F(PipelineTest, ASinksColumnsTakeStatisticsBehindAWindowAggregateAndSlotsBehindAJoin) {
  const std::string aggregate = R"({"id": "agg", "type": "window_aggregate", "inputs": ["in"]})";
  const auto sink = [](const std::string& input, const std::string& column) {
    return R"({"id": "db", "type": "timescale_sink", "inputs": [")" + input +
           R"("], "config": {"columns": [)" + column + "]}}";
  };
  const std::string mean = R"({"name": "speed", "sensor": "speed", "stat": "mean"})";
  const std::string plain = R"({"name": "speed", "sensor": "speed"})";
  EXPECT_TRUE(Load(Nodes({kSource, aggregate, sink("agg", mean)})).ok());
  CheckInvalid(Nodes({kSource, aggregate, sink("agg", plain)}), "/nodes/2/config/columns/0/stat",
               {"(node 'db')", "column 'speed' reads statistics from window_aggregate 'agg'",
                "set its stat"});
  CheckInvalid(Nodes({kSource, kState, kJoin, sink("join", mean)}),
               "/nodes/3/config/columns/0/stat",
               {"(node 'db')", "has stat mean, but window_join 'join' emits interpolated rows"});
}

// Behind a partitioned source, window_aggregate's open windows move with their partition only
// as snapshots (backend jetstream_kv) in the bucket the source re-reads the changelog after.
TEST_F(PipelineTest, AnAggregateBehindAPartitionedSourceKeepsSnapshotsInTheSourcesBucket) {
  const auto source = [](const std::string& extra) {
    return R"({"id": "in", "type": "nats_source",
               "config": {"partitions": 4, "delivery": "jetstream")" +
           extra + "}}";
  };
  const auto aggregate = [](const std::string& config) {
    return R"({"id": "agg", "type": "window_aggregate", "inputs": ["in"], "config": )" + config +
           "}";
  };
  const std::string sink = R"({"id": "db", "type": "timescale_sink", "inputs": ["agg"],
      "config": {"columns": [{"name": "speed", "sensor": "speed", "stat": "mean"}]}})";
  CheckInvalid(Nodes({source(""), aggregate("{}"), sink}), "/nodes/0/config/partitions",
               {"window_aggregate 'agg' keeps its open windows in memory",
                "set its backend to jetstream_kv"});
  const std::string stored = R"({"backend": "jetstream_kv", "bucket": "cars"})";
  CheckInvalid(Nodes({source(R"(, "state_bucket": "telemetry")"), aggregate(stored), sink}),
               "/nodes/0/config/state_bucket",
               {"keeps its snapshots in bucket \"cars\"", "set \"state_bucket\": \"cars\"",
                "(it names \"telemetry\")"});
  EXPECT_TRUE(Load(Nodes({source(R"(, "state_bucket": "cars")"), aggregate(stored), sink})).ok());
}

// Behind a partitioned source each partition's rows across vehicles are partials: they go to
// fleet_publish, never to a sink, and only a cell_merge after a fleet_source writes them.
TEST_F(PipelineTest, RowsAcrossVehiclesOfPartitionsAreMergedAcrossWorkersBeforeTheyAreWritten) {
  const std::string source = R"({"id": "in", "type": "nats_source", "config": {"partitions": 4,
      "delivery": "jetstream", "state_bucket": "telemetry"}})";
  const std::string aggregate = R"({"id": "agg", "type": "window_aggregate", "inputs": ["in"],
      "config": {"backend": "jetstream_kv"}})";
  const std::string fleet = R"({"id": "fleet", "type": "fleet_aggregate", "inputs": ["agg"]})";
  const auto sink = [](const std::string& input) {
    return R"({"id": "db", "type": "timescale_sink", "inputs": [")" + input +
           R"("], "config": {"key_column": "cell", "columns": [{"name": "vehicles",
           "sensor": "vehicles", "stat": "count"}]}})";
  };
  const auto publish = [](int partitions) {
    return R"({"id": "pub", "type": "fleet_publish", "inputs": ["fleet"], "config":
        {"partitions": )" +
           std::to_string(partitions) + "}}";
  };
  CheckInvalid(Nodes({source, aggregate, fleet, sink("fleet")}), "/nodes/2/config",
               {"fleet_aggregate 'fleet' is behind partitioned source 'in'", "fleet_publish"});
  EXPECT_TRUE(Load(Nodes({source, aggregate, fleet, publish(4)})).ok());
  CheckInvalid(Nodes({source, aggregate, fleet, publish(16)}), "/nodes/3/config/partitions",
               {"source 'in' has 4 partitions", "set \"partitions\": 4"});
  const std::string unpartitioned =
      R"({"id": "agg", "type": "window_aggregate", "inputs": ["in"]})";
  CheckInvalid(Nodes({kSource, unpartitioned, fleet, publish(4)}), "/nodes/3/config",
               {"nothing to merge across workers"});

  const auto partials = [](const std::string& bucket) {
    return R"({"id": "partials", "type": "fleet_source", "config": {"state_bucket": ")" + bucket +
           R"("}})";
  };
  const std::string merge = R"({"id": "merge", "type": "cell_merge", "inputs": ["partials"]})";
  EXPECT_TRUE(Load(Nodes({partials("fleet"), merge, sink("merge")})).ok());
  CheckInvalid(Nodes({partials("fleet"), sink("partials")}), "/nodes/1/config",
               {"reads the partials of fleet_source 'partials'", "cell_merge"});
  CheckInvalid(Nodes({partials("telemetry"), merge, sink("merge")}), "/nodes/0/config/state_bucket",
               {"set \"state_bucket\": \"fleet\""});
  const std::string stray = R"({"id": "merge", "type": "cell_merge", "inputs": ["agg"]})";
  CheckInvalid(Nodes({kSource, unpartitioned, stray, sink("merge")}), "/nodes/2/config",
               {"give it a fleet_source as input"});
}

// The stream is the changelog of a JetStream source's partitions: the source re-reads it after
// the checkpoint that keyed_last_value stores in its bucket, so the two must name one bucket.
TEST_F(PipelineTest, AJetStreamSourceNamesTheBucketOfTheStateItFeeds) {
  const auto source = [](const std::string& extra) {
    return R"({"id": "in", "type": "nats_source",
               "config": {"partitions": 4, "delivery": "jetstream")" +
           extra + "}}";
  };
  const auto state = [](const std::string& backend) {
    return R"({"id": "kv", "type": "keyed_last_value", "inputs": ["in"],
               "config": {"history_ms": 2000, "backend": ")" +
           backend + R"(", "bucket": "cars"}})";
  };
  CheckInvalid(
      Nodes({source(""), state("jetstream_kv"), kJoin, kSink}), "/nodes/0/config/state_bucket",
      {"(node 'in')", "keeps its state in bucket \"cars\"", "set \"state_bucket\": \"cars\""});
  CheckInvalid(
      Nodes({source(R"(, "state_bucket": "telemetry")"), state("jetstream_kv"), kJoin, kSink}),
      "/nodes/0/config/state_bucket", {"(it names \"telemetry\")"});
  CheckInvalid(Nodes({source(R"(, "state_bucket": "cars")"), state("memory"), kJoin, kSink}),
               "/nodes/0/config/state_bucket", {"keeps its state in memory"});
  CheckInvalid(Nodes({source(R"(, "state_bucket": "cars", "stream_retention": "workqueue")"),
                      state("jetstream_kv"), kJoin, kSink}),
               "/nodes/0/config/stream_retention", {"\"workqueue\" retention deletes"});
  EXPECT_TRUE(
      Load(Nodes({source(R"(, "state_bucket": "cars")"), state("jetstream_kv"), kJoin, kSink}))
          .ok());
  EXPECT_TRUE(Load(Nodes({source(""), state("memory"), kJoin, kSink})).ok());
}

TEST_F(PipelineTest, RulesAreCheckedByParseOperatorConfigToo) {
  const OperatorInfo* sink = registry_.Find("timescale_sink");
  ASSERT_NE(sink, nullptr);
  Config config;
  const auto errors =
      ParseOperatorConfig(*sink, R"({"retry_initial_ms": 500, "retry_max_ms": 100})", config);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].pointer, "/nodes/0/config/retry_max_ms");
}

TEST_F(PipelineTest, ThreeMistakesInThreePlacesGiveThreeDiagnostics) {
  CheckErrors(
      Load(Nodes({R"({"id": "in", "type": "nats_source", "config": {"subjet": "vehicle.>"}})",
                  kState,
                  R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                      "config": {"every_ms": "1s"}})",
                  R"({"id": "db", "type": "timescale_sink", "inputs": ["jion"]})"})),
      {{"/nodes/0/config/subjet", {"(node 'in')", "unknown field 'subjet'", "'subject'"}},
       {"/nodes/2/config/every_ms", {"(node 'join')", "must be integer, found the string \"1s\""}},
       {"/nodes/3/inputs/0", {"(node 'db')", "input 'jion'", "did you mean 'join'"}}});
}

TEST_F(PipelineTest, EveryFieldOfOneConfigIsCheckedOnItsOwn) {
  CheckErrors(Load(Nodes({kSource, kState,
                          R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                              "config": {"every_ms": 1.5, "max_gap_ms": 0, "evry_ms": 5,
                                         "sensors": ["gps", 7, "soc"]}})",
                          kSink})),
              {{"/nodes/2/config/every_ms", {"must be integer, found the number 1.5"}},
               {"/nodes/2/config/max_gap_ms", {"must be at least 1, found the integer 0"}},
               {"/nodes/2/config/evry_ms", {"did you mean 'every_ms'"}},
               {"/nodes/2/config/sensors/1", {"must be string, found the integer 7"}}});
  CheckInvalid(Nodes({kSource, kState,
                      R"({"id": "join", "type": "window_join", "inputs": ["kv"],
                          "config": {"sensors": "gps"}})",
                      kSink}),
               "/nodes/2/config/sensors", {"must be array of strings, found the string \"gps\""});
}

TEST_F(PipelineTest, EnvelopeVariableAndConfigErrorsTogether) {
  // The graph is not checked while a node is malformed: it would only add noise.
  const LoadResult r = ParsePipeline(
      R"({"name": "t", "nmae": "x", "nodes": [
            {"id": "1in", "type": "nats_source", "config": {"url": "${NOPE}"}},
            {"id": "kv", "type": "keyed_last_value", "inputs": ["in"], "config": {"keep": 0}},
            {"id": "join", "type": "window_join", "inputs": ["kv"], "input": []}]})",
      "t.json", registry_, Env());
  CheckErrors(r, {{"/nodes/0/config/url", {"NOPE is not set"}},
                  {"/nmae", {"unknown field 'nmae'", "did you mean 'name'"}},
                  {"/nodes/0/id", {"(node '1in')", "must match", "found the string \"1in\""}},
                  {"/nodes/2/input", {"(node 'join')", "did you mean 'inputs'"}},
                  {"/nodes/1/config/keep", {"(node 'kv')", "at least 1, found the integer 0"}}});
}

TEST_F(PipelineTest, MissingRequiredFieldsAndWrongTypesInTheEnvelope) {
  const LoadResult r = ParsePipeline(R"({"nodes": [{"id": "in"}, {"type": 3, "id": "x"}, 5]})",
                                     "t.json", registry_, Env());
  CheckErrors(r, {{"/nodes/0", {"missing required field 'type' (string: The operator"}},
                  {"/nodes/1/type", {"must be string, found the integer 3"}},
                  {"/nodes/2", {"must be object, found the integer 5"}},
                  {"", {"missing required field 'name'"}}});
}

TEST_F(PipelineTest, ParseOperatorConfigReportsEveryProblem) {
  const OperatorInfo* join = registry_.Find("window_join");
  ASSERT_NE(join, nullptr);
  Config config;
  const auto errors = ParseOperatorConfig(*join, R"({"every_ms": 50, "sensor": []})", config);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].pointer, "/nodes/0/config/every_ms");
  EXPECT_THAT(errors[1].message, HasSubstr("did you mean 'sensors'"));
  EXPECT_TRUE(ParseOperatorConfig(*join, R"({"every_ms": 200})", config).empty());
  EXPECT_EQ(config.Integer("every_ms"), 200);
}

TEST_F(PipelineTest, UnknownTopLevelAndNodeFields) {
  const LoadResult r = ParsePipeline(R"({"name": "t", "nodez": []})", "t.json", registry_, Env());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.errors[0].Format(), HasSubstr("did you mean 'nodes'"));
  CheckInvalid(Nodes({R"({"id": "in", "type": "nats_source", "input": []})", kState, kJoin, kSink}),
               "/nodes/0/input", {"did you mean 'inputs'"});
}

TEST_F(PipelineTest, EnvironmentSubstitution) {
  env_["BUS"] = "nats://10.0.0.1:4222";
  const LoadResult r = Load(Nodes(
      {R"({"id": "in", "type": "nats_source", "config": {"url": "${BUS}", "subject": "${SUBJ:-vehicle.*.*}"}})",
       kState, kJoin, kSink}));
  ASSERT_TRUE(r.ok()) << r.errors.front().Format();
  EXPECT_EQ(r.pipeline->nodes[0].config.String("url"), "nats://10.0.0.1:4222");
  EXPECT_EQ(r.pipeline->nodes[0].config.String("subject"), "vehicle.*.*");
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
