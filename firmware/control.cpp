#include "control.hpp"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>

#include "wire.hpp"

namespace fleetflow::control {
namespace {

// Appends `v` with up to 15 significant digits, or 17 when 15 do not read back as `v`.
// snprintf, not std::to_chars: the shortest-form double formatting of libstdc++ brings about
// 110 KB of tables into the statically linked fleet-sensor.
void AppendDouble(std::string& out, double v) {
  char text[32];
  int n = std::snprintf(text, sizeof text, "%.15g", v);
  double back = 0;
  const auto [end, ec] = std::from_chars(text, text + n, back);
  if (ec != std::errc() || end != text + n || back != v) {
    n = std::snprintf(text, sizeof text, "%.17g", v);
  }
  out.append(text, n > 0 ? static_cast<size_t>(n) : 0);
}

void AppendUtf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else if (code < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
}

// A JSON value, just enough of it for the status replies and alarm events: numbers keep their text
// so 64-bit integers (nanosecond times) survive.
struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // number text or string contents
  std::vector<Value> items;
  std::map<std::string, Value, std::less<>> members;

  const Value* Get(std::string_view key) const {
    const auto it = members.find(key);
    return it == members.end() ? nullptr : &it->second;
  }
};

class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in) {}

  bool Document(Value& out) {
    if (!Parse(out, 0)) return false;
    SkipSpace();
    return pos_ == in_.size();
  }

 private:
  static constexpr int kMaxDepth = 16;

  void SkipSpace() {
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\n' || in_[pos_] == '\r' || in_[pos_] == '\t')) {
      ++pos_;
    }
  }
  bool Eat(char c) {
    SkipSpace();
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool Hex4(uint32_t& code) {
    if (pos_ + 4 > in_.size()) return false;
    const auto [end, ec] = std::from_chars(in_.data() + pos_, in_.data() + pos_ + 4, code, 16);
    if (ec != std::errc() || end != in_.data() + pos_ + 4) return false;
    pos_ += 4;
    return true;
  }
  bool Literal(std::string_view word) {
    if (in_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  bool String(std::string& out) {
    if (!Eat('"')) return false;
    out.clear();
    while (pos_ < in_.size()) {
      const char c = in_[pos_++];
      if (c == '"') return true;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= in_.size()) return false;
      const char e = in_[pos_++];
      if (e == 'u') {
        uint32_t code = 0;
        if (!Hex4(code)) return false;
        // A surrogate pair is one character; a lone surrogate becomes U+FFFD.
        if (code >= 0xD800 && code < 0xDC00 && in_.substr(pos_, 2) == "\\u") {
          const size_t at = pos_;
          pos_ += 2;
          uint32_t low = 0;
          if (Hex4(low) && low >= 0xDC00 && low < 0xE000) {
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else {
            pos_ = at;
          }
        }
        AppendUtf8(out, code >= 0xD800 && code < 0xE000 ? 0xFFFD : code);
      } else {
        const std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
        const size_t i = from.find(e);
        if (i == std::string_view::npos) return false;
        out.push_back(to[i]);
      }
    }
    return false;
  }
  bool Parse(Value& out, int depth) {
    if (depth > kMaxDepth) return false;
    SkipSpace();
    if (pos_ >= in_.size()) return false;
    const char c = in_[pos_];
    if (c == '{') {
      out.kind = Value::Kind::kObject;
      ++pos_;
      if (Eat('}')) return true;
      do {
        std::string key;
        if (!String(key) || !Eat(':') || !Parse(out.members[key], depth + 1)) return false;
      } while (Eat(','));
      return Eat('}');
    }
    if (c == '[') {
      out.kind = Value::Kind::kArray;
      ++pos_;
      if (Eat(']')) return true;
      do {
        if (!Parse(out.items.emplace_back(), depth + 1)) return false;
      } while (Eat(','));
      return Eat(']');
    }
    if (c == '"') {
      out.kind = Value::Kind::kString;
      return String(out.text);
    }
    if (Literal("true") || Literal("false")) {
      out.kind = Value::Kind::kBool;
      out.boolean = c == 't';
      return true;
    }
    if (Literal("null")) return true;
    const size_t start = pos_;
    while (pos_ < in_.size() &&
           std::string_view("+-0123456789.eE").find(in_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
    out.kind = Value::Kind::kNumber;
    out.text = in_.substr(start, pos_ - start);
    return pos_ > start;
  }

  std::string_view in_;
  size_t pos_ = 0;
};

template <typename T>
bool NumberOf(const Value* v, T& out) {
  if (v == nullptr || v->kind != Value::Kind::kNumber) return v == nullptr;  // absent: default
  const auto [end, ec] = std::from_chars(v->text.data(), v->text.data() + v->text.size(), out);
  return ec == std::errc() && end == v->text.data() + v->text.size();
}

bool StringOf(const Value* v, std::string& out) {
  if (v == nullptr) return true;
  if (v->kind != Value::Kind::kString) return false;
  out = v->text;
  return true;
}

bool BoolOf(const Value* v, bool& out) {
  if (v == nullptr) return true;
  if (v->kind != Value::Kind::kBool) return false;
  out = v->boolean;
  return true;
}

// The counters in JSON order, with their keys.
template <typename C, typename F>
void ForEachCounter(C& c, F&& f) {
  f("samples", c.samples);
  f("published_samples", c.published_samples);
  f("published_messages", c.published_messages);
  f("dropped_samples", c.dropped_samples);
  f("dropped_messages", c.dropped_messages);
  f("buffered_bytes", c.buffered_bytes);
  f("buffer_bytes", c.buffer_bytes);
  f("reconnects", c.reconnects);
  f("skipped_ticks", c.skipped_ticks);
  f("resent_messages", c.resent_messages);
  f("ack_errors", c.ack_errors);
  f("alarms_raised", c.alarms_raised);
  f("alarms_cleared", c.alarms_cleared);
  f("alarms_duplicate", c.alarms_duplicate);
  f("alarms_invalid", c.alarms_invalid);
}

constexpr std::string_view kSeverityNames[] = {"info", "warning", "critical"};

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out.append(buf);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

std::string FormatUtcTime(int64_t ns) {
  int64_t secs = ns / 1'000'000'000, rest = ns % 1'000'000'000;
  if (rest < 0) {
    --secs;
    rest += 1'000'000'000;
  }
  const time_t t = static_cast<time_t>(secs);
  tm utc{};
  gmtime_r(&t, &utc);
  char buf[48];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(rest / 1'000'000));
  return buf;
}

std::string CommandSubject(std::string_view vehicle, std::string_view verb) {
  std::string s = wire::SampleSubject(vehicle, kCommandToken);
  s.append(".").append(verb);
  return s;
}

std::string_view CommandVerb(std::string_view subject) {
  if (subject == kFleetStatusSubject) return kStatus;
  const size_t last = subject.rfind('.');
  if (last == std::string_view::npos) return {};
  const wire::Subject prefix = wire::ParseSubject(subject.substr(0, last));
  if (prefix.kind != wire::SubjectKind::kSample || prefix.sensor != kCommandToken) return {};
  const std::string_view verb = subject.substr(last + 1);
  return wire::IsValidToken(verb) ? verb : std::string_view();
}

std::string ParseRateArgs(std::string_view payload, std::string& sensor, double& hz) {
  while (!payload.empty() && payload.back() == '\n') payload.remove_suffix(1);
  const size_t space = payload.find(' ');
  if (space == std::string_view::npos)
    return "rate needs '<sensor> <hz>', got '" + std::string(payload) + "'";
  sensor = payload.substr(0, space);
  const std::string_view text = payload.substr(space + 1);
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), hz);
  if (ec != std::errc() || end != text.data() + text.size() || !(hz > 0 && hz <= 1000)) {
    return "rate must be a number of Hz in (0, 1000], got '" + std::string(text) + "'";
  }
  return "";
}

std::string ToJson(const VehicleStatus& s) {
  std::string out = "{\"ok\":";
  out += s.ok ? "true" : "false";
  out += ",\"vehicle\":";
  AppendJsonString(out, s.vehicle);
  if (!s.ok) {
    out += ",\"error\":";
    AppendJsonString(out, s.error);
    return out + "}";
  }
  out += ",\"active\":";
  out += s.active ? "true" : "false";
  out += ",\"sensors\":[";
  for (size_t i = 0; i < s.sensors.size(); ++i) {
    out += i == 0 ? "{\"name\":" : ",{\"name\":";
    AppendJsonString(out, s.sensors[i].name);
    out += ",\"hz\":";
    AppendDouble(out, s.sensors[i].hz);
    out += "}";
  }
  out += "],\"active_alarms\":[";
  for (size_t i = 0; i < s.active_alarms.size(); ++i) {
    if (i > 0) out += ",";
    AppendJsonString(out, s.active_alarms[i]);
  }
  out += "],\"last_publish_ns\":" + std::to_string(s.last_publish_ns) + ",\"counters\":{";
  bool first = true;
  ForEachCounter(s.counters, [&](const char* key, uint64_t v) {
    out.append(first ? "\"" : ",\"").append(key).append("\":").append(std::to_string(v));
    first = false;
  });
  return out + "}}";
}

std::optional<VehicleStatus> ParseStatusJson(std::string_view json) {
  Value doc;
  if (!Parser(json).Document(doc) || doc.kind != Value::Kind::kObject) return std::nullopt;
  VehicleStatus s;
  const Value* vehicle = doc.Get("vehicle");
  if (vehicle == nullptr || !StringOf(vehicle, s.vehicle) || !BoolOf(doc.Get("ok"), s.ok) ||
      !StringOf(doc.Get("error"), s.error) || !BoolOf(doc.Get("active"), s.active) ||
      !NumberOf(doc.Get("last_publish_ns"), s.last_publish_ns)) {
    return std::nullopt;
  }
  if (const Value* sensors = doc.Get("sensors")) {
    if (sensors->kind != Value::Kind::kArray) return std::nullopt;
    for (const Value& item : sensors->items) {
      SensorState st;
      if (!StringOf(item.Get("name"), st.name) || !NumberOf(item.Get("hz"), st.hz)) {
        return std::nullopt;
      }
      s.sensors.push_back(st);
    }
  }
  if (const Value* alarms = doc.Get("active_alarms")) {
    if (alarms->kind != Value::Kind::kArray) return std::nullopt;
    for (const Value& item : alarms->items) {
      if (item.kind != Value::Kind::kString) return std::nullopt;
      s.active_alarms.push_back(item.text);
    }
  }
  if (const Value* counters = doc.Get("counters")) {
    bool good = counters->kind == Value::Kind::kObject;
    ForEachCounter(s.counters, [&](const char* key, uint64_t& v) {
      good = good && NumberOf(counters->Get(key), v);
    });
    if (!good) return std::nullopt;
  }
  return s;
}

std::string_view SeverityName(AlarmSeverity severity) {
  return kSeverityNames[static_cast<size_t>(severity)];
}

std::string ToJson(const AlarmEvent& a) {
  std::string out = "{\"vehicle\":";
  AppendJsonString(out, a.vehicle);
  out += ",\"rule\":";
  AppendJsonString(out, a.rule);
  out += a.raised ? ",\"event\":\"raised\",\"severity\":" : ",\"event\":\"cleared\",\"severity\":";
  AppendJsonString(out, SeverityName(a.severity));
  out += ",\"time_ns\":" + std::to_string(a.time_ns);
  out += ",\"raised_ns\":" + std::to_string(a.raised_ns) + ",\"value\":";
  if (a.value && std::isfinite(*a.value)) {
    AppendDouble(out, *a.value);
  } else {
    out += "null";
  }
  if (!a.message.empty()) {
    out += ",\"message\":";
    AppendJsonString(out, a.message);
  }
  return out + "}";
}

std::optional<AlarmEvent> ParseAlarmJson(std::string_view json, std::string* why) {
  const auto fail = [&](std::string reason) -> std::optional<AlarmEvent> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  Value doc;
  if (!Parser(json).Document(doc) || doc.kind != Value::Kind::kObject) {
    return fail("not a JSON object");
  }
  for (const char* key : {"vehicle", "rule", "event", "severity", "time_ns", "raised_ns"}) {
    if (doc.Get(key) == nullptr) return fail(std::string("no '") + key + "'");
  }
  AlarmEvent a;
  std::string event, severity;
  if (!StringOf(doc.Get("vehicle"), a.vehicle) || a.vehicle.empty()) {
    return fail("'vehicle' must be a non-empty string");
  }
  if (!StringOf(doc.Get("rule"), a.rule) || a.rule.empty()) {
    return fail("'rule' must be a non-empty string");
  }
  if (!StringOf(doc.Get("event"), event) || (event != "raised" && event != "cleared")) {
    return fail("'event' must be \"raised\" or \"cleared\"");
  }
  a.raised = event == "raised";
  const auto* known = std::end(kSeverityNames);
  if (StringOf(doc.Get("severity"), severity)) {
    known = std::find(std::begin(kSeverityNames), std::end(kSeverityNames), severity);
  }
  if (known == std::end(kSeverityNames)) {
    return fail("'severity' must be \"info\", \"warning\" or \"critical\"");
  }
  a.severity = static_cast<AlarmSeverity>(known - std::begin(kSeverityNames));
  const auto time = [&](const char* key, int64_t& ns) {
    return NumberOf(doc.Get(key), ns) && ns >= 0;
  };
  if (!time("time_ns", a.time_ns)) {
    return fail("'time_ns' must be an integer >= 0 (ns since the epoch)");
  }
  if (!time("raised_ns", a.raised_ns)) {
    return fail("'raised_ns' must be an integer >= 0 (ns since the epoch)");
  }
  if (const Value* value = doc.Get("value");
      value != nullptr && value->kind != Value::Kind::kNull) {
    double v = 0;
    if (value->kind != Value::Kind::kNumber || !NumberOf(value, v)) {
      return fail("'value' must be a number or null");
    }
    a.value = v;
  }
  if (!StringOf(doc.Get("message"), a.message)) return fail("'message' must be a string");
  return a;
}

}  // namespace fleetflow::control
