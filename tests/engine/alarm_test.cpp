// The alarm event's JSON (engine/alarm.hpp) is what schemas/alarm.schema.json describes, the
// contract fleet-sensor and any consumer of the stream ALARMS read, and reads back as written.
#include "alarm.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include <fstream>
#include <sstream>

#include "build_paths.hpp"

namespace fleetflow {
namespace {

rapidjson::Document Schema() {
  std::ifstream in(testing::SourceDir() + "/schemas/alarm.schema.json");
  std::stringstream ss;
  ss << in.rdbuf();
  rapidjson::Document d;
  d.Parse(ss.str().c_str());
  EXPECT_FALSE(d.HasParseError());
  return d;
}

bool Valid(const std::string& json, std::string* why = nullptr) {
  static const rapidjson::Document schema_doc = Schema();
  static const rapidjson::SchemaDocument schema(schema_doc);
  rapidjson::Document d;
  d.Parse(json.c_str());
  rapidjson::SchemaValidator v(schema);
  const bool ok = d.Accept(v);
  if (!ok && why != nullptr) *why = v.GetInvalidSchemaKeyword();
  return ok;
}

TEST(AlarmJsonTest, WhatTheEngineWritesIsTheSchemasAndReadsBack) {
  AlarmEvent e;
  e.vehicle = "v-001";
  e.rule = "overspeed";
  e.raised = false;
  e.severity = "critical";
  e.time_ns = 1'767'225'609'000'000'000;
  e.raised_ns = 1'767'225'606'000'000'000;
  e.value = 32.5;
  e.message = "above \"130\" km/h";
  const std::string json = AlarmJson(e);
  std::string why;
  EXPECT_TRUE(Valid(json, &why)) << json << ": " << why;
  const auto back = ParseAlarmJson(json);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->vehicle, e.vehicle);
  EXPECT_FALSE(back->raised);
  EXPECT_EQ(back->time_ns, e.time_ns);
  EXPECT_EQ(back->raised_ns, e.raised_ns);
  EXPECT_EQ(back->value, 32.5);
  EXPECT_EQ(back->message, e.message);

  e.value.reset();
  e.message.clear();
  EXPECT_TRUE(Valid(AlarmJson(e))) << AlarmJson(e);
  EXPECT_FALSE(ParseAlarmJson(AlarmJson(e))->value.has_value());
}

TEST(AlarmJsonTest, TheSchemaAndTheReaderRefuseWhatIsNotAnEvent) {
  for (
      const char* bad :
      {R"({"vehicle":"v1","rule":"r","event":"up","severity":"info","time_ns":1,"raised_ns":1})",
       R"({"vehicle":"v1","rule":"r","event":"raised","severity":"info","time_ns":"1","raised_ns":1})",
       R"({"rule":"r","event":"raised","severity":"info","time_ns":1,"raised_ns":1})"}) {
    EXPECT_FALSE(Valid(bad)) << bad;
    std::string why;
    EXPECT_FALSE(ParseAlarmJson(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty());
  }
}

}  // namespace
}  // namespace fleetflow
