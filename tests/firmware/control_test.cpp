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
  s.counters = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  s.active_alarms = {"low_soc", "over\"speed"};
  return s;
}

TEST(Control, CommandSubjects) {
  EXPECT_EQ(CommandSubject("v1", kSleep), "vehicle.v1.cmd.sleep");
  EXPECT_EQ(CommandSubject("v1", "*"), "vehicle.v1.cmd.*");
  EXPECT_EQ(CommandVerb("vehicle.v1.cmd.rate"), "rate");
  EXPECT_EQ(CommandVerb(CommandSubject("v-001", kAlarm)), "alarm");
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
  EXPECT_FALSE(ParseStatusJson(R"({"vehicle":"v1","active_alarms":"overspeed"})"));
  EXPECT_FALSE(ParseStatusJson(R"({"vehicle":"v1","active_alarms":[1]})"));
}

// Firmware from before the alarms answers without them; it still parses, with none.
TEST(Control, StatusWithoutAlarmsParses) {
  const auto s =
      ParseStatusJson(R"({"ok":true,"vehicle":"v1","active":true,"sensors":[],"last_publish_ns":0,)"
                      R"("counters":{"samples":3,"ack_errors":1}})");
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->active_alarms.empty());
  EXPECT_EQ(s->counters.samples, 3u);
  EXPECT_EQ(s->counters.alarms_raised, 0u);
}

TEST(Control, StatusCarriesRatesExactly) {
  VehicleStatus s = Sample();
  s.sensors = {{"a", 0.1}, {"b", 1.0 / 3}, {"c", 999.999999999999}};
  const auto back = ParseStatusJson(ToJson(s));
  ASSERT_TRUE(back.has_value()) << ToJson(s);
  EXPECT_EQ(back->sensors, s.sensors) << ToJson(s);
  EXPECT_NE(ToJson(s).find("\"hz\":0.1}"), std::string::npos) << ToJson(s);
}

// The example of schemas/alarm.schema.json.
constexpr char kRaised[] =
    R"({"vehicle":"v-001","rule":"overspeed","event":"raised","severity":"warning",)"
    R"("time_ns":1700000005000000000,"raised_ns":1700000005000000000,"value":41.7,)"
    R"("message":"speed above 38.9 m/s for 5 s"})";

TEST(Control, AlarmParses) {
  const auto a = ParseAlarmJson(kRaised);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->vehicle, "v-001");
  EXPECT_EQ(a->rule, "overspeed");
  EXPECT_TRUE(a->raised);
  EXPECT_EQ(a->severity, AlarmSeverity::kWarning);
  EXPECT_EQ(a->time_ns, 1'700'000'005'000'000'000);
  EXPECT_EQ(a->raised_ns, 1'700'000'005'000'000'000);
  EXPECT_EQ(a->value, 41.7);
  EXPECT_EQ(a->message, "speed above 38.9 m/s for 5 s");
}

TEST(Control, AlarmRoundTripsThroughJson) {
  AlarmEvent a;
  a.vehicle = "truck-7";
  a.rule = "low_soc";
  a.raised = false;
  a.severity = AlarmSeverity::kCritical;
  a.time_ns = 1'795'353'326'956'738'041;  // beyond double precision
  a.raised_ns = 1'795'353'300'000'000'001;
  a.value = 1.0 / 3;
  a.message =
      "soc \"low\"\\\n\t\x01 50 \xc2\xb0"
      "C";
  for (const std::optional<double> value : {std::optional<double>(1.0 / 3), std::optional<double>(),
                                            std::optional<double>(-0.5e-300)}) {
    a.value = value;
    const std::string json = ToJson(a);
    EXPECT_EQ(json.find('\n'), std::string::npos) << json;
    const auto back = ParseAlarmJson(json);
    ASSERT_TRUE(back.has_value()) << json;
    EXPECT_EQ(*back, a) << json;
  }
  a.message.clear();
  a.raised = true;
  a.severity = AlarmSeverity::kInfo;
  EXPECT_EQ(ToJson(a).find("message"), std::string::npos) << ToJson(a);
  EXPECT_EQ(ParseAlarmJson(ToJson(a)), a);
}

TEST(Control, AlarmKeysInAnyOrderUnknownKeysIgnoredEscapesDecoded) {
  const auto a = ParseAlarmJson(R"( {
      "future": {"nested": [1, {"x": null}], "s": "\"}"},
      "raised_ns": 5, "value": null, "severity": "critical", "event": "cleared",
      "message": "\u00b0C \ud83d\ude97 \ud800 \/ \"q\" \\",
      "rule": "r\u0031", "time_ns": 7, "vehicle": "v1", "threshold": 38.9 } )");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->vehicle, "v1");
  EXPECT_EQ(a->rule, "r1");
  EXPECT_FALSE(a->raised);
  EXPECT_EQ(a->severity, AlarmSeverity::kCritical);
  EXPECT_EQ(a->time_ns, 7);
  EXPECT_EQ(a->raised_ns, 5);
  EXPECT_FALSE(a->value.has_value());
  // UTF-8: the degree sign, a surrogate pair (U+1F697), a lone surrogate as U+FFFD.
  EXPECT_EQ(a->message,
            "\xc2\xb0"
            "C \xf0\x9f\x9a\x97 \xef\xbf\xbd / \"q\" \\");
}

TEST(Control, AlarmMissingOrInvalidFieldsAreRejectedWithAReason) {
  // kRaised's members, raw, with `key`'s value replaced by `value` (removed when it is empty).
  const auto with = [](const std::string& key, const std::string& value) {
    const std::vector<std::pair<std::string, std::string>> members = {
        {"vehicle", R"("v-001")"},
        {"rule", R"("overspeed")"},
        {"event", R"("raised")"},
        {"severity", R"("warning")"},
        {"time_ns", "1700000005000000000"},
        {"raised_ns", "1700000005000000000"},
        {"value", "41.7"},
        {"message", R"("speed above 38.9 m/s for 5 s")"}};
    std::string json;
    for (const auto& [k, v] : members) {
      if (k == key && value.empty()) continue;
      json += (json.empty() ? "{\"" : ",\"") + k + "\":" + (k == key ? value : v);
    }
    return json + "}";
  };
  const std::string good = with("", "");
  ASSERT_EQ(good, kRaised);
  const auto negative = ParseAlarmJson(with("value", "-3"));
  const auto no_message = ParseAlarmJson(with("message", ""));  // optional
  const auto no_value = ParseAlarmJson(with("value", ""));      // optional
  ASSERT_TRUE(negative && no_message && no_value);
  EXPECT_EQ(negative->value, -3.0);
  EXPECT_EQ(no_message->message, "");
  EXPECT_FALSE(no_value->value.has_value());

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"vehicle", ""},        {"rule", ""},
      {"event", ""},          {"severity", ""},
      {"time_ns", ""},        {"raised_ns", ""},
      {"vehicle", "7"},       {"vehicle", "\"\""},
      {"rule", "null"},       {"rule", "\"\""},
      {"event", "\"raise\""}, {"event", "\"RAISED\""},
      {"event", "true"},      {"severity", "\"major\""},
      {"severity", "2"},      {"time_ns", "\"1700\""},
      {"time_ns", "1.7e18"},  {"time_ns", "-1"},
      {"raised_ns", "null"},  {"raised_ns", "12.5"},
      {"value", "\"41.7\""},  {"value", "true"},
      {"value", "[1]"},       {"message", "3"},
      {"message", "null"},
  };
  for (const auto& [key, value] : bad) {
    const std::string json = with(key, value);
    ASSERT_NE(json, good) << key;
    std::string why;
    EXPECT_FALSE(ParseAlarmJson(json, &why).has_value()) << json;
    EXPECT_NE(why.find(key), std::string::npos) << json << ": " << why;
  }
  std::string why;
  for (const char* json : {"", "garbage", "[]", "null", "{\"vehicle\":\"v1\"", R"("raised")"}) {
    EXPECT_FALSE(ParseAlarmJson(json, &why).has_value()) << json;
    EXPECT_FALSE(why.empty()) << json;
  }
  EXPECT_FALSE(ParseAlarmJson(good + " x"));
  EXPECT_FALSE(ParseAlarmJson(R"({"stream":"ALARMS","seq":5})"));  // a JetStream ack
}

}  // namespace
}  // namespace fleetflow::control
