// The rules' worked examples (docs/alarms.md): when an alarm is raised and cleared, row by row.
#include "alarms/rule_engine.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace fleetflow::alarms {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int64_t kS = 1'000'000'000;
constexpr double kNull = NAN;

RowColumn Column(const std::string& name) {
  RowColumn c;
  c.name = name;
  c.sensor = name;
  return c;
}

RuleSpec Rule(std::string name, std::string when, int64_t for_ms = 0, std::string clear = "") {
  RuleSpec r;
  r.name = std::move(name);
  r.when = std::move(when);
  r.for_ms = for_ms;
  r.clear = std::move(clear);
  r.value = "speed";
  return r;
}

/// Feeds rows of one vehicle per window (1 s windows) and says what happened, as
/// "<+|-><rule>@<s>[raised <s>]".
class Engine {
 public:
  Engine(std::vector<RuleSpec> rules, std::vector<std::string> columns = {"speed", "soc"})
      : engine(Columns(columns), std::move(rules)) {}

  static std::vector<RowColumn> Columns(const std::vector<std::string>& names) {
    std::vector<RowColumn> out;
    for (const auto& n : names) out.push_back(Column(n));
    return out;
  }

  /// Window `s` of partition 0 with these vehicles' rows (values by column, NaN: NULL).
  std::vector<std::string> Window(
      int64_t s, const std::vector<std::pair<std::string, std::vector<double>>>& rows) {
    std::vector<const std::string*> vehicles;
    RowValues::Values values;
    for (const auto& [v, x] : rows) {
      vehicles.push_back(&v);
      auto& row = values.emplace_back();
      for (double d : x) row.push_back(std::isnan(d) ? std::nullopt : std::optional<double>(d));
    }
    std::vector<AlarmEvent> events;
    engine.OnWindow(0, s * kS, kS, vehicles, values, events);
    std::vector<std::string> out;
    for (const AlarmEvent& e : events) {
      std::string text = (e.raised ? "+" : "-") + e.rule + "@" + std::to_string(e.time_ns / kS);
      if (!e.raised) text += "[raised " + std::to_string(e.raised_ns / kS) + "]";
      if (e.vehicle != "v1") text = e.vehicle + ":" + text;
      out.push_back(text);
      last.push_back(e);
    }
    return out;
  }
  std::vector<std::string> Speed(int64_t s, double speed, double soc = 50) {
    return Window(s, {{"v1", {speed, soc}}});
  }

  RuleEngine engine;
  std::vector<AlarmEvent> last;
};

TEST(RuleEngineTest, RaisedWhenTrueAndClearedWhenFalse) {
  Engine e({Rule("fast", "speed > 30")});
  EXPECT_THAT(e.Speed(10, 20), IsEmpty());
  EXPECT_THAT(e.Speed(11, 31), ElementsAre("+fast@11"));
  EXPECT_THAT(e.Speed(12, 35), IsEmpty()) << "raised once";
  EXPECT_THAT(e.Speed(13, 30), ElementsAre("-fast@13[raised 11]"));
  ASSERT_EQ(e.last.size(), 2u);
  EXPECT_EQ(e.last[0].value, 31.0);
  EXPECT_EQ(e.last[1].value, 30.0);
  EXPECT_EQ(e.last[0].severity, "warning");
}

TEST(RuleEngineTest, ForMsRaisesOnceTheConditionHeldThatLong) {
  // Overspeed for 5 s: true from 10 s on, raised at 15 s (the first row 5 s after the first true).
  Engine e({Rule("overspeed", "speed > 38.9", 5000)});
  for (int64_t s = 10; s < 15; ++s) EXPECT_THAT(e.Speed(s, 40), IsEmpty()) << s;
  EXPECT_THAT(e.Speed(15, 40), ElementsAre("+overspeed@15"));
  EXPECT_THAT(e.Speed(16, 30), ElementsAre("-overspeed@16[raised 15]"));
  // Interrupted: starts over.
  for (int64_t s = 20; s < 24; ++s) EXPECT_THAT(e.Speed(s, 40), IsEmpty());
  EXPECT_THAT(e.Speed(24, 10), IsEmpty());
  for (int64_t s = 25; s < 30; ++s) EXPECT_THAT(e.Speed(s, 40), IsEmpty()) << s;
  EXPECT_THAT(e.Speed(30, 40), ElementsAre("+overspeed@30"));
}

TEST(RuleEngineTest, AClearConditionGivesHysteresis) {
  Engine e({Rule("low_soc", "soc < 15", 0, "soc > 20")});
  EXPECT_THAT(e.Speed(10, 0, 14), ElementsAre("+low_soc@10"));
  EXPECT_THAT(e.Speed(11, 0, 18), IsEmpty()) << "no longer below 15, not yet above 20";
  EXPECT_THAT(e.Speed(12, 0, 14), IsEmpty());
  EXPECT_THAT(e.Speed(13, 0, 21), ElementsAre("-low_soc@13[raised 10]"));
}

TEST(RuleEngineTest, PreviousRowAndDtGiveRatesOfChange) {
  // Harsh braking: speed falling by more than 4 m/s per second.
  Engine e({Rule("harsh_braking", "(prev_speed - speed) / dt > 4")});
  EXPECT_THAT(e.Speed(10, 30), IsEmpty()) << "no previous row: prev_speed is NULL";
  EXPECT_THAT(e.Speed(11, 28), IsEmpty());
  EXPECT_THAT(e.Speed(12, 20), ElementsAre("+harsh_braking@12"));
  EXPECT_THAT(e.Speed(13, 19), ElementsAre("-harsh_braking@13[raised 12]"));
  // A gap: the rows ended, so the next one has no previous row.
  EXPECT_THAT(e.Speed(20, 5), IsEmpty());
}

TEST(RuleEngineTest, AVehicleWhoseRowsEndClearsItsAlarms) {
  Engine e({Rule("fast", "speed > 30")});
  EXPECT_THAT(e.Window(10, {{"v1", {40, 50}}, {"v2", {40, 50}}}),
              ElementsAre("+fast@10", "v2:+fast@10"));
  EXPECT_THAT(e.engine.ActiveByRule(), ElementsAre(2));
  // v1 has no row at 11 s (off, or silent): its alarm clears at 11 s, the first window without it.
  EXPECT_THAT(e.Window(11, {{"v2", {40, 50}}}), ElementsAre("-fast@11[raised 10]"));
  // A window without any row (the join emits it) ends v2 as well.
  EXPECT_THAT(e.Window(12, {}), ElementsAre("v2:-fast@12[raised 10]"));
  EXPECT_THAT(e.engine.ActiveByRule(), ElementsAre(0));
  // Back later: raised again, a new alarm.
  EXPECT_THAT(e.Window(20, {{"v1", {40, 50}}}), ElementsAre("+fast@20"));
  // Rows resuming after a gap end the alarm at the first missing window, then go on.
  EXPECT_THAT(e.Window(24, {{"v1", {40, 50}}}), ElementsAre("-fast@21[raised 20]", "+fast@24"));
}

TEST(RuleEngineTest, AWindowEmittedAgainIsNotEvaluatedTwice) {
  Engine e({Rule("fast", "speed > 30")});
  EXPECT_THAT(e.Speed(10, 40), ElementsAre("+fast@10"));
  EXPECT_THAT(e.Speed(11, 20), ElementsAre("-fast@11[raised 10]"));
  EXPECT_THAT(e.Speed(10, 40), IsEmpty()) << "a correction of 10 s";
  EXPECT_THAT(e.Speed(11, 20), IsEmpty());
  EXPECT_EQ(e.engine.rows_skipped(), 2u);
  EXPECT_EQ(e.engine.rows_evaluated(), 2u);
}

TEST(RuleEngineTest, NullsAndFailuresNeitherRaiseNorClear) {
  Engine e({Rule("ratio", "speed / soc > 2")});
  size_t errors = 0;
  e.engine.on_error = [&](size_t) { ++errors; };
  EXPECT_THAT(e.Speed(10, 30, 10), ElementsAre("+ratio@10"));
  EXPECT_THAT(e.Speed(11, 30, 0), IsEmpty()) << "30 / 0: an error, no change";
  EXPECT_EQ(errors, 1u);
  EXPECT_THAT(e.Speed(12, 30, kNull), ElementsAre("-ratio@12[raised 10]"))
      << "NULL: the condition is false";
  EXPECT_EQ(errors, 1u);
}

TEST(RuleEngineTest, StateHandedOverGivesTheSameEventsAsOneRun) {
  const std::vector<RuleSpec> rules = {Rule("overspeed", "speed > 38.9", 3000),
                                       Rule("low_soc", "soc < 15", 0, "soc > 20")};
  const std::vector<double> speed = {10, 40, 41, 42, 43, 44, 20, 40, 40, 40, 40, 10};
  const std::vector<double> soc = {30, 20, 14, 13, 16, 18, 21, 22, 14, 14, 30, 30};
  Engine one(rules);
  std::vector<std::string> whole;
  for (size_t i = 0; i < speed.size(); ++i) {
    for (auto& x : one.Speed(static_cast<int64_t>(i), speed[i], soc[i])) whole.push_back(x);
  }
  for (size_t cut = 1; cut < speed.size(); ++cut) {
    Engine a(rules), b(rules);
    std::vector<std::string> got;
    for (size_t i = 0; i < cut; ++i) {
      for (auto& x : a.Speed(static_cast<int64_t>(i), speed[i], soc[i])) got.push_back(x);
    }
    ASSERT_TRUE(b.engine.DecodePartition(0, a.engine.EncodePartition(0)));
    EXPECT_EQ(b.engine.ActiveByRule(), a.engine.ActiveByRule()) << "restored as they were";
    a.engine.Drop(0);
    EXPECT_THAT(a.engine.ActiveByRule(), ElementsAre(0, 0)) << "gone with the partition";
    // The next owner may see the last windows again (restored from the samples): skipped.
    for (size_t i = cut > 2 ? cut - 2 : 0; i < speed.size(); ++i) {
      for (auto& x : b.Speed(static_cast<int64_t>(i), speed[i], soc[i])) got.push_back(x);
    }
    EXPECT_EQ(got, whole) << "handed over after " << cut << " rows";
  }
  EXPECT_THAT(whole, ElementsAre("+low_soc@2", "+overspeed@4", "-overspeed@6[raised 4]",
                                 "-low_soc@6[raised 2]", "+low_soc@8", "+overspeed@10",
                                 "-low_soc@10[raised 8]", "-overspeed@11[raised 10]"));
}

TEST(RuleEngineTest, BadRulesAreRefusedWithTheirPointers) {
  std::vector<ConfigProblem> problems;
  std::vector<RuleSpec> rules = {Rule("a", "sped > 3"), Rule("a", "speed > 3"),
                                 Rule("c", "speed > 3", 0, "prev_sped < 1")};
  rules[1].on_raise = "rate gps fast";
  rules[2].on_clear = "reboot";
  CheckRules(Engine::Columns({"speed", "dt"}), rules, problems);
  std::vector<std::string> pointers;
  for (const auto& p : problems) pointers.push_back(p.pointer);
  EXPECT_THAT(pointers, ElementsAre("/columns/1/name", "/rules/0/when", "/rules/1/name",
                                    "/rules/1/on_raise", "/rules/2/clear", "/rules/2/on_clear"));
  EXPECT_THAT(problems[1].message, ::testing::HasSubstr("did you mean 'speed'"));
  EXPECT_THAT(problems[5].message, ::testing::HasSubstr("unknown command 'reboot'"));
}

}  // namespace
}  // namespace fleetflow::alarms
