#include "row_columns.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>

namespace fleetflow {
namespace {

constexpr int64_t kS = 1'000'000'000;

wire::Point At(int64_t ts_ns, double value) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.value = value;
  return p;
}

RowColumn Sensor(std::string name, std::string sensor) {
  RowColumn c;
  c.name = std::move(name);
  c.sensor = std::move(sensor);
  return c;
}

RowColumn Derived(std::string name, std::string expression) {
  RowColumn c;
  c.name = std::move(name);
  c.expression = std::move(expression);
  return c;
}

/// One window at 10 s: speed 20 -> 30 between 9 s and 11 s (25 at 10 s), torque 100 held.
WindowBatch Batch(std::optional<double> torque) {
  WindowBatch b;
  b.window_ns = 10 * kS;
  b.sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed", "torque"});
  for (const char* vehicle : {"v1", "v2"}) {
    const std::span<Slot> slots = b.AddRow(vehicle);
    slots[0].before = At(9 * kS, 20);
    slots[0].after = At(11 * kS, 30);
    if (torque) slots[1].before = At(10 * kS, *torque);
  }
  return b;
}

TEST(RowValuesTest, DerivedColumnsComputeFromTheInterpolatedValuesInOrder) {
  RowValues values({Sensor("speed", "speed"), Sensor("torque", "torque"),
                    Derived("power", "torque * speed"), Derived("half", "power / 2"),
                    Derived("mine", "vehicle(\"v2\")")});
  const auto rows = values.Of(Batch(100.0));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(*rows[0][0], 25.0);
  EXPECT_EQ(*rows[0][2], 2500.0);
  EXPECT_EQ(*rows[0][3], 1250.0);
  EXPECT_EQ(*rows[0][4], 0.0);
  EXPECT_EQ(*rows[1][4], 1.0);
}

TEST(RowValuesTest, ANullInputGivesNullAndAFailureIsCountedPerColumn) {
  RowValues values({Sensor("speed", "speed"), Sensor("torque", "torque"),
                    Derived("per_torque", "speed / torque")});
  std::vector<size_t> errors;
  values.on_error = [&](size_t c) { errors.push_back(c); };
  auto rows = values.Of(Batch(std::nullopt));
  EXPECT_FALSE(rows[0][2]) << "torque has no sample";
  EXPECT_TRUE(errors.empty()) << "a NULL input is no error";
  rows = values.Of(Batch(0.0));
  EXPECT_FALSE(rows[0][2]) << "25 / 0";
  EXPECT_THAT(errors, ::testing::ElementsAre(2u, 2u));
}

TEST(RowValuesTest, StatisticsRowsTakeExpressionsToo) {
  StatsBatch b;
  b.sensors = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed"});
  StatsRow r;
  r.vehicle = "v1";
  r.sensors.resize(1);
  r.sensors[0].count = 4;
  r.sensors[0].sum = 100;
  r.sensors[0].max = 40;
  b.rows.push_back(r);
  RowColumn mean = Sensor("mean", "speed");
  mean.stat = ColumnStat::kMean;
  RowColumn max = Sensor("max", "speed");
  max.stat = ColumnStat::kMax;
  RowValues values({mean, max, Derived("peak_ratio", "max / mean")});
  const auto rows = values.Of(b);
  EXPECT_DOUBLE_EQ(*rows[0][2], 1.6);
}

TEST(RowValuesTest, ABadExpressionIsRefusedNamingItsColumn) {
  try {
    RowValues values({Sensor("speed", "speed"), Derived("x", "speed +")});
    FAIL() << "compiled";
  } catch (const ExpressionError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("column 'x'"));
  }
  std::vector<ConfigProblem> problems;
  CheckRowColumns(
      {Sensor("speed", "speed"), Derived("x", "speed +"), Derived("y", "x + z"), Sensor("w", "")},
      problems);
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0].pointer, "/columns/3");
  EXPECT_EQ(problems[1].pointer, "/columns/1/expression");
  EXPECT_EQ(problems[2].pointer, "/columns/2/expression");
  EXPECT_THAT(problems[2].message, ::testing::HasSubstr("unknown name 'z'"));
}

}  // namespace
}  // namespace fleetflow
