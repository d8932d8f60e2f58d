#include "cli_options.hpp"

#include <gtest/gtest.h>

namespace fleetflow::firmware {
namespace {

TEST(CliOptions, ParsesRates) {
  std::vector<sim::SensorRate> rates;
  ASSERT_EQ(ParseRates("gps=10,speed=30.5", rates), "");
  ASSERT_EQ(rates.size(), 2u);
  EXPECT_EQ(rates[0].name, "gps");
  EXPECT_EQ(rates[1].hz, 30.5);
}

TEST(CliOptions, RejectsBadRatesWithAReason) {
  std::vector<sim::SensorRate> rates;
  EXPECT_NE(ParseRates("gps", rates).find("not SENSOR=HZ"), std::string::npos);
  EXPECT_NE(ParseRates("gps=0", rates).find("(0, 1000]"), std::string::npos);
  EXPECT_NE(ParseRates("gps=1,gps=2", rates).find("twice"), std::string::npos);
  EXPECT_NE(ParseRates("status=1", rates).find("not a sensor name"), std::string::npos);
  EXPECT_NE(ParseRates("cmd=1", rates).find("not a sensor name"), std::string::npos);
  EXPECT_NE(ParseRates("a.b=1", rates).find("not a sensor name"), std::string::npos);
}

}  // namespace
}  // namespace fleetflow::firmware
