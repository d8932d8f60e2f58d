// OptionsSpec: one declaration per field makes the ConfigSpec and fills the options struct.
#include "options.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace fleetflow {
namespace {

struct Group {
  std::string url;
  bool fast = false;
};

struct Item {
  std::string name;
  uint32_t weight = 0;
};

enum class Mode { kAuto, kOff };

struct Options {
  int64_t every_ms = 0;
  std::chrono::milliseconds wait{0};
  double speed = 0;
  Mode mode = Mode::kAuto;
  std::vector<std::string> sensors;
  Group group;
  std::vector<Item> items;
};

OptionsSpec<Group> GroupSpec() {
  OptionsSpec<Group> g;
  g.String("url", "A URL.", &Group::url).Default("");
  g.Boolean("fast", "Fast.", &Group::fast).Default(false);
  return g;
}

OptionsSpec<Options> Spec() {
  OptionsSpec<Item> items;
  items.String("name", "A name.", &Item::name).Required();
  items.Integer("weight", "A weight.", &Item::weight).Default(int64_t{3});
  OptionsSpec<Options> spec;
  spec.Integer("every_ms", "A period.", &Options::every_ms).Default(int64_t{1000});
  spec.Integer("wait_ms", "A wait.", &Options::wait).Default(int64_t{250});
  spec.Number("speed", "A speed.", &Options::speed).Default(0.5);
  spec.Enum("mode", "A mode.", &Options::mode, {{"auto", Mode::kAuto}, {"off", Mode::kOff}})
      .Default("auto");
  spec.Include(&Options::group, GroupSpec());
  spec.StringArray("sensors", "Sensors.", &Options::sensors).DefaultJson(R"(["gps"])");
  spec.ObjectArray("items", "Items.", &Options::items, items).DefaultJson("[]");
  spec.Rule("every_ms is at least wait_ms.", [](const Options& o, std::vector<ConfigProblem>& out) {
    if (o.every_ms < o.wait.count()) out.push_back({"/every_ms", "too short"});
  });
  return spec;
}

TEST(OptionsTest, TheSpecListsTheFieldsInTheirOrderWithTheGroupInPlace) {
  const auto spec = Spec();
  std::vector<std::string> names;
  for (const Field& f : spec.config().fields()) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{"every_ms", "wait_ms", "speed", "mode", "url", "fast",
                                             "sensors", "items"}));
  EXPECT_EQ(spec.config().Find("mode")->one_of, (std::vector<std::string>{"auto", "off"}));
  EXPECT_EQ(spec.config().rules().size(), 1u);
}

TEST(OptionsTest, ParseFillsEveryMemberWithTheValueOrItsDefault) {
  const auto spec = Spec();
  const Options o = spec.Parse(Config::Parse(
      R"({"every_ms": 200, "mode": "off", "url": "nats://x", "items": [{"name": "a"}]})",
      spec.config(), "test_op"));
  EXPECT_EQ(o.every_ms, 200);
  EXPECT_EQ(o.wait, std::chrono::milliseconds(250));
  EXPECT_EQ(o.speed, 0.5);
  EXPECT_EQ(o.mode, Mode::kOff);
  EXPECT_EQ(o.group.url, "nats://x");
  EXPECT_FALSE(o.group.fast);
  EXPECT_EQ(o.sensors, (std::vector<std::string>{"gps"}));
  ASSERT_EQ(o.items.size(), 1u);
  EXPECT_EQ(o.items[0].name, "a");
  EXPECT_EQ(o.items[0].weight, 3u);
}

TEST(OptionsTest, RulesSeeTheParsedOptions) {
  const auto spec = Spec();
  const auto problems = spec.config().CheckRules(
      Config::Parse(R"({"every_ms": 100, "wait_ms": 200})", spec.config(), "test_op"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].pointer, "/every_ms");
  EXPECT_TRUE(spec.config().CheckRules(Config::Parse("{}", spec.config(), "test_op")).empty());
}

TEST(OptionsTest, AGroupFieldDeclaredAlreadyIsAProgrammingError) {
  struct Twice {
    std::string url;
    Group group;
  };
  OptionsSpec<Twice> spec;
  spec.String("url", "A URL.", &Twice::url).Default("");
  EXPECT_THROW(spec.Include(&Twice::group, GroupSpec()), std::logic_error);
}

// Each function keeps its own spec (its lambda is a type of its own), built on its first call.
const OptionsSpec<Group>& UrlOnlySpec() {
  return StaticSpec<Group>(
      [](OptionsSpec<Group>& c) { c.String("url", "A URL.", &Group::url).Default(""); });
}

const OptionsSpec<Group>& FastOnlySpec() {
  return StaticSpec<Group>(
      [](OptionsSpec<Group>& c) { c.Boolean("fast", "Fast.", &Group::fast).Default(false); });
}

TEST(OptionsTest, AStaticSpecIsBuiltOncePerFunction) {
  EXPECT_EQ(&UrlOnlySpec(), &UrlOnlySpec());
  EXPECT_NE(&UrlOnlySpec(), &FastOnlySpec());
  ASSERT_EQ(UrlOnlySpec().config().fields().size(), 1u);
  EXPECT_EQ(UrlOnlySpec().config().fields()[0].name, "url");
  ASSERT_EQ(FastOnlySpec().config().fields().size(), 1u);
  EXPECT_EQ(FastOnlySpec().config().fields()[0].name, "fast");
}

}  // namespace
}  // namespace fleetflow
