#include "control.hpp"

#include <gtest/gtest.h>

namespace fleetflow::control {
namespace {

VehicleStatus Sample() {
  VehicleStatus s;
  s.vehicle = "truck-7";
  s.active = true;
  s.sensors = {{"gps", 10}, {"speed", 30}, {"soc", 0.5}, {"torque", 33.25}};
  s.last_publish_ns = 1'795'353'326'956'738'041;  // beyond double precision
  s.counters = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  return s;
}

TEST(Control, CommandSubjects) {
  EXPECT_EQ(CommandSubject("v1", kSleep), "vehicle.v1.cmd.sleep");
  EXPECT_EQ(CommandSubject("v1", "*"), "vehicle.v1.cmd.*");
  EXPECT_EQ(CommandVerb("vehicle.v1.cmd.rate"), "rate");
  EXPECT_EQ(CommandVerb(kFleetStatusSubject), "status");
  EXPECT_EQ(CommandVerb("vehicle.v1.speed"), "");
  EXPECT_EQ(CommandVerb("vehicle.v1.cmd"), "");
  EXPECT_EQ(CommandVerb("vehicle.v1.data.rate"), "");
  EXPECT_EQ(CommandVerb("fleet.v1.cmd.rate"), "");
}

TEST(Control, RateArguments) {
  std::string sensor;
  double hz = 0;
  EXPECT_EQ(ParseRateArgs("speed 12.5", sensor, hz), "");
  EXPECT_EQ(sensor, "speed");
  EXPECT_EQ(hz, 12.5);
  EXPECT_NE(ParseRateArgs("speed", sensor, hz), "");
  EXPECT_NE(ParseRateArgs("speed 0", sensor, hz), "");
  EXPECT_NE(ParseRateArgs("speed 1001", sensor, hz), "");
  EXPECT_NE(ParseRateArgs("speed fast", sensor, hz), "");
}

TEST(Control, StatusRoundTripsThroughJson) {
  const VehicleStatus s = Sample();
  const std::string json = ToJson(s);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  const auto back = ParseStatusJson(json);
  ASSERT_TRUE(back.has_value()) << json;
  EXPECT_EQ(*back, s) << json;
}

TEST(Control, RefusalRoundTripsWithEscapedError) {
  VehicleStatus s;
  s.ok = false;
  s.vehicle = "v1";
  s.error = "unknown sensor \"x\\y\"\n";
  const auto back = ParseStatusJson(ToJson(s));
  ASSERT_TRUE(back.has_value()) << ToJson(s);
  EXPECT_FALSE(back->ok);
  EXPECT_EQ(back->error, s.error);
}

TEST(Control, ParsingIgnoresUnknownKeysAndRejectsOtherJson) {
  const auto s = ParseStatusJson(
      R"({"ok":true,"vehicle":"v1","future":{"a":[1,2,{"b":null}]},"active":false,"sensors":[]})");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->vehicle, "v1");
  EXPECT_FALSE(s->active);
  EXPECT_FALSE(ParseStatusJson(R"({"stream":"TELEMETRY","seq":5})"));  // a JetStream ack
  EXPECT_FALSE(ParseStatusJson(""));
  EXPECT_FALSE(ParseStatusJson("{\"vehicle\":\"v1\""));
  EXPECT_FALSE(ParseStatusJson(R"({"vehicle":"v1","active":"yes"})"));
  EXPECT_FALSE(ParseStatusJson(R"({"vehicle":"v1"} trailing)"));
}

}  // namespace
}  // namespace fleetflow::control
