// Config is bound to its operator's spec: the spec declares the fields and holds the defaults.
#include "config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace fleetflow {
namespace {

using ::testing::HasSubstr;

ConfigSpec Spec() {
  ConfigSpec items;
  items.String("name", "A name.").Required();
  items.Integer("weight", "A weight.").Default(int64_t{3});
  ConfigSpec spec;
  spec.Integer("every_ms", "A period.").Default(int64_t{1000});
  spec.Number("speed", "A speed.").Default(0.5);
  spec.Boolean("on", "A switch.").Default(true);
  spec.String("mode", "A mode.").Default("auto").OneOf({"auto", "off"});
  spec.StringArray("sensors", "Sensors.").DefaultJson(R"(["gps"])");
  spec.ObjectArray("items", "Items.", std::move(items)).DefaultJson("[]");
  return spec;
}

/// The message of the std::logic_error `f` throws ("" when it throws none).
template <typename F>
std::string LogicError(F f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, AbsentFieldsGiveTheSpecsDefaults) {
  const Config c = Config::Parse(R"({"every_ms": 200})", Spec(), "test_op");
  EXPECT_EQ(c.Integer("every_ms"), 200);
  EXPECT_EQ(c.Number("speed"), 0.5);
  EXPECT_TRUE(c.Boolean("on"));
  EXPECT_EQ(c.String("mode"), "auto");
  EXPECT_EQ(c.StringArray("sensors"), std::vector<std::string>{"gps"});
  EXPECT_TRUE(c.Objects("items").empty());
  EXPECT_EQ(c.Number("every_ms"), 200.0);  // an integer reads as a number too
}

TEST(ConfigTest, AnUndeclaredFieldThrowsNamingOperatorAndField) {
  const Config c = Config::Parse(R"({"evry_ms": 5})", Spec(), "test_op");
  const std::string msg = LogicError([&] { (void)c.Integer("evry_ms"); });
  EXPECT_THAT(msg, HasSubstr("test_op"));
  EXPECT_THAT(msg, HasSubstr("'evry_ms'"));
  EXPECT_THAT(msg, HasSubstr("not declared"));
  EXPECT_NE(LogicError([&] { (void)c.String("nope"); }), "");
  EXPECT_NE(LogicError([&] { (void)c.Number("nope"); }), "");
  EXPECT_NE(LogicError([&] { (void)c.Boolean("nope"); }), "");
  EXPECT_NE(LogicError([&] { (void)c.StringArray("nope"); }), "");
  EXPECT_NE(LogicError([&] { (void)c.Objects("nope"); }), "");
  EXPECT_NE(LogicError([] { (void)Config().Integer("every_ms"); }), "");
}

TEST(ConfigTest, AFieldReadAsAnotherTypeThrows) {
  const Config c = Config::Parse("{}", Spec(), "test_op");
  EXPECT_THAT(LogicError([&] { (void)c.String("every_ms"); }),
              HasSubstr("'every_ms' is declared as integer, read as string"));
  EXPECT_NE(LogicError([&] { (void)c.Integer("speed"); }), "");
}

TEST(ConfigTest, ObjectsAreBoundToTheItemSpec) {
  const Config c = Config::Parse(R"({"items": [{"name": "a"}]})", Spec(), "test_op");
  const auto items = c.Objects("items");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].String("name"), "a");
  EXPECT_EQ(items[0].Integer("weight"), 3);
  EXPECT_THAT(LogicError([&] { (void)items[0].Integer("every_ms"); }),
              HasSubstr("test_op.items[]"));
}

TEST(ConfigTest, ASpecFieldNeedsADefaultOrToBeRequired) {
  ConfigSpec spec;
  spec.Integer("every_ms", "A period.");
  EXPECT_THAT(LogicError([&] { spec.CheckComplete("test_op"); }),
              HasSubstr("every_ms is optional without a default"));
  EXPECT_EQ(LogicError([] { Spec().CheckComplete("test_op"); }), "");
}

TEST(ConfigTest, RulesReportProblemsWithPointers) {
  ConfigSpec spec = Spec();
  spec.Rule("every_ms is at least 10 times speed.",
            [](const Config& c, std::vector<ConfigProblem>& out) {
              if (c.Integer("every_ms") < 10 * c.Number("speed")) {
                out.push_back({"/every_ms", "too small"});
              }
            });
  EXPECT_TRUE(spec.CheckRules(Config::Parse("{}", spec, "test_op")).empty());
  const auto problems = spec.CheckRules(Config::Parse(R"({"speed": 1000})", spec, "test_op"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].pointer, "/every_ms");
}

TEST(ConfigTest, SchemaCarriesTheNewKeywords) {
  ConfigSpec spec;
  spec.String("table", "A table.").Default("t").Pattern("^[a-z]+$", "lower-case letters");
  spec.String("interval", "An interval.").Default("1 day").MinLength(1);
  spec.StringArray("sensors", "Sensors.").DefaultJson(R"(["a"])").MinItems(1).UniqueItems();
  rapidjson::Document d;
  spec.ToJsonSchema(d, d.GetAllocator());
  const auto& p = d["properties"];
  EXPECT_STREQ(p["table"]["pattern"].GetString(), "^[a-z]+$");
  EXPECT_STREQ(p["table"]["patternDescription"].GetString(), "lower-case letters");
  EXPECT_EQ(p["interval"]["minLength"].GetUint64(), 1u);
  EXPECT_EQ(p["sensors"]["minItems"].GetUint64(), 1u);
  EXPECT_TRUE(p["sensors"]["uniqueItems"].GetBool());
}

}  // namespace
}  // namespace fleetflow
