#include "alarm.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

namespace fleetflow {

std::string AlarmJson(const AlarmEvent& e) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  const auto str = [&w](const char* key, const std::string& v) {
    w.Key(key);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  };
  w.StartObject();
  str("vehicle", e.vehicle);
  str("rule", e.rule);
  str("event", e.raised ? "raised" : "cleared");
  str("severity", e.severity);
  w.Key("time_ns");
  w.Int64(e.time_ns);
  w.Key("raised_ns");
  w.Int64(e.raised_ns);
  w.Key("value");
  if (e.value && std::isfinite(*e.value)) {
    w.Double(*e.value);
  } else {
    w.Null();
  }
  if (!e.message.empty()) str("message", e.message);
  w.EndObject();
  return {sb.GetString(), sb.GetSize()};
}

std::optional<AlarmEvent> ParseAlarmJson(std::string_view json, std::string* error) {
  const auto fail = [error](std::string why) -> std::optional<AlarmEvent> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) return fail("not a JSON object");
  AlarmEvent e;
  const auto text = [&](const char* key, std::string& out) {
    const auto it = d.FindMember(key);
    if (it == d.MemberEnd() || !it->value.IsString()) return false;
    out.assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  const auto integer = [&](const char* key, int64_t& out) {
    const auto it = d.FindMember(key);
    if (it == d.MemberEnd() || !it->value.IsInt64()) return false;
    out = it->value.GetInt64();
    return true;
  };
  std::string event;
  if (!text("vehicle", e.vehicle) || !text("rule", e.rule) || !text("event", event) ||
      !text("severity", e.severity) || !integer("time_ns", e.time_ns) ||
      !integer("raised_ns", e.raised_ns)) {
    return fail(
        "vehicle, rule, event, severity (strings) and time_ns, raised_ns (integers) are "
        "required");
  }
  if (event != "raised" && event != "cleared") return fail("event is neither raised nor cleared");
  e.raised = event == "raised";
  if (const auto it = d.FindMember("value"); it != d.MemberEnd() && it->value.IsNumber()) {
    e.value = it->value.GetDouble();
  }
  text("message", e.message);
  return e;
}

}  // namespace fleetflow
