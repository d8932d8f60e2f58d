#include "expression.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace fleetflow {
namespace {

using ::testing::HasSubstr;

constexpr double kNull = std::numeric_limits<double>::quiet_NaN();

class ExpressionTest : public ::testing::Test {
 protected:
  Expressions e{{"speed", "torque", "soc", "prev_speed", "dt"}};
  void Set(double speed, double torque, double soc, double prev_speed, double dt) {
    double* v = e.values();
    v[0] = speed;
    v[1] = torque;
    v[2] = soc;
    v[3] = prev_speed;
    v[4] = dt;
  }
};

TEST_F(ExpressionTest, ArithmeticComparisonsAndTernary) {
  const size_t power = e.Add("torque * speed / 0.3");
  const size_t over = e.Add("speed > 38.9 && soc >= 10");
  const size_t pick = e.Add("soc < 20 ? 2 : 1");
  Set(30, 150, 15, 29, 1);
  EXPECT_DOUBLE_EQ(*e.Evaluate(power).value, 150 * 30 / 0.3);
  EXPECT_EQ(*e.Evaluate(over).value, 0.0);
  EXPECT_EQ(*e.Evaluate(pick).value, 2.0);
  Set(40, 150, 15, 29, 1);
  EXPECT_EQ(*e.Evaluate(over).value, 1.0);
}

TEST_F(ExpressionTest, NullInputsGiveNullWithoutAnError) {
  const size_t accel = e.Add("(speed - prev_speed) / dt");
  const size_t test = e.Add("speed > 10");
  const size_t isnull = e.Add("isnull(prev_speed) ? 0 : speed - prev_speed");
  Set(20, 0, 0, kNull, 1);
  const Evaluated a = e.Evaluate(accel);
  EXPECT_FALSE(a.value);
  EXPECT_FALSE(a.error);
  EXPECT_EQ(*e.Evaluate(isnull).value, 0.0);
  Set(kNull, 0, 0, 1, 1);
  EXPECT_EQ(*e.Evaluate(test).value, 0.0) << "a comparison with NULL is false";
}

TEST_F(ExpressionTest, DivisionByZeroAndNaNOfFiniteInputsAreErrors) {
  const size_t accel = e.Add("(speed - prev_speed) / dt");
  const size_t root = e.Add("sqrt(soc - 50)");
  Set(20, 0, 10, 19, 0);
  const Evaluated a = e.Evaluate(accel);
  EXPECT_FALSE(a.value);
  EXPECT_TRUE(a.error);
  const Evaluated r = e.Evaluate(root);
  EXPECT_FALSE(r.value);
  EXPECT_TRUE(r.error);
}

TEST_F(ExpressionTest, AFailedStepIsAnErrorEvenWhenTheResultIsFinite) {
  const size_t ratio = e.Add("speed / soc > 2");
  Set(30, 0, 0, 0, 1);
  const Evaluated r = e.Evaluate(ratio);
  EXPECT_FALSE(r.value);
  EXPECT_TRUE(r.error);
  Set(30, 0, 10, 0, 1);
  EXPECT_EQ(*e.Evaluate(ratio).value, 1.0);
  Set(30, 0, kNull, 0, 1);
  const Evaluated n = e.Evaluate(ratio);
  EXPECT_EQ(*n.value, 0.0) << "a comparison with NULL is false";
  EXPECT_FALSE(n.error);
}

TEST_F(ExpressionTest, UsedNamesAndTheVehicleFunction) {
  const size_t i = e.Add("vehicle(\"v-007\") ? speed : torque");
  EXPECT_THAT(e.Used(i), ::testing::UnorderedElementsAre(0u, 1u));
  Set(1, 2, 0, 0, 1);
  e.SetVehicle("v-007");
  EXPECT_EQ(*e.Evaluate(i).value, 1.0);
  e.SetVehicle("v-008");
  EXPECT_EQ(*e.Evaluate(i).value, 2.0);
}

TEST_F(ExpressionTest, UnknownNameSaysWhereAndSuggests) {
  try {
    e.Add("sped > 3");
    FAIL() << "compiled";
  } catch (const ExpressionError& x) {
    EXPECT_EQ(x.position(), 0u);
    EXPECT_EQ(x.token(), "sped");
    EXPECT_THAT(x.what(), HasSubstr("unknown name 'sped' at character 1"));
    EXPECT_THAT(x.what(), HasSubstr("did you mean 'speed'"));
    EXPECT_THAT(x.what(), HasSubstr("speed, torque, soc, prev_speed, dt"));
  }
}

TEST_F(ExpressionTest, SyntaxErrorsAreRefusedAtCompileTime) {
  for (const char* bad : {"speed >", "speed > > 3", "(speed", "speed ? 1", "", "  ", "speed 3",
                          "max(speed,", "\"text\""}) {
    EXPECT_THROW(e.Add(bad), ExpressionError) << bad;
    EXPECT_THROW(e.Check(bad), ExpressionError) << bad;
  }
  EXPECT_EQ(e.size(), 0u);
  EXPECT_NO_THROW(e.Check("speed > 3"));
  EXPECT_EQ(e.size(), 0u) << "Check keeps nothing";
}

}  // namespace
}  // namespace fleetflow
