#include "config.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace fleetflow {

namespace {

using Alloc = rapidjson::Document::AllocatorType;

rapidjson::Value Str(const std::string& s, Alloc& a) { return rapidjson::Value(s.c_str(), a); }

std::string ToJson(const rapidjson::Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return buf.GetString();
}

rapidjson::Value ParseJson(const std::string& json, Alloc& a) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError()) throw std::logic_error("config spec: bad JSON literal: " + json);
  return rapidjson::Value(d, a);
}

void FieldSchema(const Field& f, rapidjson::Value& out, Alloc& a) {
  out.SetObject();
  switch (f.type) {
    case FieldType::kString:
      out.AddMember("type", "string", a);
      if (!f.one_of.empty()) {
        rapidjson::Value e(rapidjson::kArrayType);
        for (const auto& v : f.one_of) e.PushBack(Str(v, a), a);
        out.AddMember("enum", e, a);
      }
      break;
    case FieldType::kInteger:
      out.AddMember("type", "integer", a);
      break;
    case FieldType::kNumber:
      out.AddMember("type", "number", a);
      break;
    case FieldType::kBoolean:
      out.AddMember("type", "boolean", a);
      break;
    case FieldType::kStringArray: {
      out.AddMember("type", "array", a);
      rapidjson::Value items(rapidjson::kObjectType);
      items.AddMember("type", "string", a);
      out.AddMember("items", items, a);
      break;
    }
    case FieldType::kObjectArray:
      break;  // handled by the caller, which has the nested spec
  }
  if (f.minimum) out.AddMember("minimum", *f.minimum, a);
  if (f.maximum) out.AddMember("maximum", *f.maximum, a);
  out.AddMember("description", Str(f.description, a), a);
  if (!f.default_json.empty()) out.AddMember("default", ParseJson(f.default_json, a), a);
  if (!f.example_json.empty()) {
    rapidjson::Value ex(rapidjson::kArrayType);
    ex.PushBack(ParseJson(f.example_json, a), a);
    out.AddMember("examples", ex, a);
  }
}

}  // namespace

std::string_view ToString(FieldType t) {
  switch (t) {
    case FieldType::kString:
      return "string";
    case FieldType::kInteger:
      return "integer";
    case FieldType::kNumber:
      return "number";
    case FieldType::kBoolean:
      return "boolean";
    case FieldType::kStringArray:
      return "array of strings";
    case FieldType::kObjectArray:
      return "array of objects";
  }
  return "?";
}

std::string FormatNumber(double v) {
  if (std::abs(v) < 1e15 && v == std::trunc(v)) return std::to_string(static_cast<int64_t>(v));
  std::ostringstream out;
  out << v;
  return out.str();
}

Field& Field::Default(int64_t v) { return DefaultJson(std::to_string(v)); }
Field& Field::Default(double v) {
  rapidjson::Value j(v);
  return DefaultJson(ToJson(j));
}
Field& Field::Default(bool v) { return DefaultJson(v ? "true" : "false"); }
Field& Field::Default(const char* v) {
  rapidjson::Value j(rapidjson::StringRef(v));
  return DefaultJson(ToJson(j));
}

Field& ConfigSpec::Add(std::string name, FieldType type, std::string description) {
  if (Find(name) != nullptr) throw std::logic_error("config spec: duplicate field " + name);
  Field f;
  f.name = std::move(name);
  f.type = type;
  f.description = std::move(description);
  fields_.push_back(std::move(f));
  return fields_.back();
}

Field& ConfigSpec::String(std::string n, std::string d) {
  return Add(std::move(n), FieldType::kString, std::move(d));
}
Field& ConfigSpec::Integer(std::string n, std::string d) {
  return Add(std::move(n), FieldType::kInteger, std::move(d));
}
Field& ConfigSpec::Number(std::string n, std::string d) {
  return Add(std::move(n), FieldType::kNumber, std::move(d));
}
Field& ConfigSpec::Boolean(std::string n, std::string d) {
  return Add(std::move(n), FieldType::kBoolean, std::move(d));
}
Field& ConfigSpec::StringArray(std::string n, std::string d) {
  return Add(std::move(n), FieldType::kStringArray, std::move(d));
}
Field& ConfigSpec::ObjectArray(std::string n, std::string d, ConfigSpec items) {
  Field& f = Add(std::move(n), FieldType::kObjectArray, std::move(d));
  f.item_fields = std::move(items.fields_);
  return f;
}

const Field* ConfigSpec::Find(std::string_view name) const {
  for (const auto& f : fields_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void ConfigSpec::ToJsonSchema(rapidjson::Value& out, Alloc& a) const {
  out.SetObject();
  out.AddMember("type", "object", a);
  rapidjson::Value props(rapidjson::kObjectType);
  rapidjson::Value required(rapidjson::kArrayType);
  for (const auto& f : fields_) {
    rapidjson::Value fs;
    FieldSchema(f, fs, a);
    if (f.type == FieldType::kObjectArray) {
      ConfigSpec nested;
      nested.fields_ = f.item_fields;
      rapidjson::Value items;
      nested.ToJsonSchema(items, a);
      fs.AddMember("type", "array", a);
      fs.AddMember("items", items, a);
    }
    props.AddMember(Str(f.name, a), fs, a);
    if (f.required) required.PushBack(Str(f.name, a), a);
  }
  out.AddMember("properties", props, a);
  if (!required.Empty()) out.AddMember("required", required, a);
  out.AddMember("additionalProperties", false, a);
}

void ConfigSpec::ApplyDefaults(rapidjson::Value& config, Alloc& a) const {
  if (!config.IsObject()) return;
  for (const auto& f : fields_) {
    auto it = config.FindMember(f.name.c_str());
    if (it == config.MemberEnd()) {
      if (!f.default_json.empty()) {
        config.AddMember(Str(f.name, a), ParseJson(f.default_json, a), a);
      }
      continue;
    }
    if (f.type == FieldType::kObjectArray && it->value.IsArray()) {
      ConfigSpec nested;
      nested.fields_ = f.item_fields;
      for (auto& item : it->value.GetArray()) nested.ApplyDefaults(item, a);
    }
  }
}

Config::Config() {
  auto doc = std::make_shared<rapidjson::Document>();
  doc->SetObject();
  value_ = doc.get();
  owner_ = std::move(doc);
}

Config Config::Parse(const std::string& json) {
  auto doc = std::make_shared<rapidjson::Document>();
  doc->Parse(json.c_str());
  if (doc->HasParseError() || !doc->IsObject()) throw std::invalid_argument("not a JSON object");
  const rapidjson::Value* v = doc.get();
  return Config(std::move(doc), v);
}

bool Config::Has(const char* name) const { return value_->HasMember(name); }

std::string Config::String(const char* name, const std::string& fallback) const {
  auto it = value_->FindMember(name);
  return it != value_->MemberEnd() && it->value.IsString() ? it->value.GetString() : fallback;
}

int64_t Config::Integer(const char* name, int64_t fallback) const {
  auto it = value_->FindMember(name);
  return it != value_->MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : fallback;
}

double Config::Number(const char* name, double fallback) const {
  auto it = value_->FindMember(name);
  return it != value_->MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : fallback;
}

bool Config::Boolean(const char* name, bool fallback) const {
  auto it = value_->FindMember(name);
  return it != value_->MemberEnd() && it->value.IsBool() ? it->value.GetBool() : fallback;
}

std::vector<std::string> Config::StringArray(const char* name) const {
  std::vector<std::string> out;
  auto it = value_->FindMember(name);
  if (it == value_->MemberEnd() || !it->value.IsArray()) return out;
  for (const auto& v : it->value.GetArray()) {
    if (v.IsString()) out.emplace_back(v.GetString());
  }
  return out;
}

std::vector<Config> Config::Objects(const char* name) const {
  std::vector<Config> out;
  auto it = value_->FindMember(name);
  if (it == value_->MemberEnd() || !it->value.IsArray()) return out;
  for (const auto& v : it->value.GetArray()) {
    if (v.IsObject()) out.emplace_back(owner_, &v);
  }
  return out;
}

}  // namespace fleetflow
