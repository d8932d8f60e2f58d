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
      if (!f.pattern.empty()) {
        items.AddMember("pattern", Str(f.pattern, a), a);
        items.AddMember("patternDescription", Str(f.pattern_text, a), a);
      }
      out.AddMember("items", items, a);
      break;
    }
    case FieldType::kObjectArray:
      break;  // handled by the caller, which has the nested spec
  }
  if (f.type == FieldType::kString && !f.pattern.empty()) {
    out.AddMember("pattern", Str(f.pattern, a), a);
    // Not a JSON Schema keyword (editors ignore it): the pattern in words, for messages.
    out.AddMember("patternDescription", Str(f.pattern_text, a), a);
  }
  if (f.min_length) out.AddMember("minLength", static_cast<uint64_t>(*f.min_length), a);
  if (f.min_items) out.AddMember("minItems", static_cast<uint64_t>(*f.min_items), a);
  if (f.unique_items) out.AddMember("uniqueItems", true, a);
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

ConfigSpec& ConfigSpec::Rule(std::string description, ConfigCheck check) {
  rules_.push_back({std::move(description), std::move(check)});
  return *this;
}

void ConfigSpec::Include(const ConfigSpec& group) {
  for (const Field& f : group.fields_) Add(f.name, f.type, f.description) = f;
  rules_.insert(rules_.end(), group.rules_.begin(), group.rules_.end());
}

ConfigSpec ConfigSpec::Items(const Field& field) const {
  if (field.type != FieldType::kObjectArray) {
    throw std::logic_error("config spec: field " + field.name + " is not an array of objects");
  }
  ConfigSpec items;
  items.fields_ = field.item_fields;
  return items;
}

void ConfigSpec::CheckComplete(const std::string& owner) const {
  for (const auto& f : fields_) {
    if (!f.required && f.default_json.empty()) {
      throw std::logic_error("config spec of " + owner + ": field " + f.name +
                             " is optional without a default; give it one or make it required");
    }
    if (f.type == FieldType::kObjectArray) Items(f).CheckComplete(owner + "." + f.name + "[]");
  }
}

std::vector<ConfigProblem> ConfigSpec::CheckRules(const Config& config) const {
  std::vector<ConfigProblem> out;
  for (const auto& r : rules_) r.check(config, out);
  return out;
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

Config::Config()
    : value_(nullptr), spec_(std::make_shared<const ConfigSpec>()), owner_name_("(no operator)") {
  auto doc = std::make_shared<rapidjson::Document>();
  doc->SetObject();
  value_ = doc.get();
  owner_ = std::move(doc);
}

Config::Config(std::shared_ptr<const rapidjson::Document> owner, const rapidjson::Value* value,
               std::shared_ptr<const ConfigSpec> spec, std::string owner_name)
    : owner_(std::move(owner)),
      value_(value),
      spec_(std::move(spec)),
      owner_name_(std::move(owner_name)) {}

Config Config::Parse(const std::string& json, const ConfigSpec& spec,
                     const std::string& owner_name) {
  auto doc = std::make_shared<rapidjson::Document>();
  doc->Parse(json.c_str());
  if (doc->HasParseError() || !doc->IsObject()) throw std::invalid_argument("not a JSON object");
  spec.ApplyDefaults(*doc, doc->GetAllocator());
  const rapidjson::Value* v = doc.get();
  return Config(std::move(doc), v, std::make_shared<const ConfigSpec>(spec), owner_name);
}

void Config::Misuse(const char* name, const std::string& what) const {
  throw std::logic_error("config of " + owner_name_ + ": field '" + name + "' " + what);
}

const rapidjson::Value& Config::Get(const char* name, FieldType type) const {
  const Field* f = spec_->Find(name);
  if (f == nullptr) Misuse(name, "is not declared in its spec");
  if (f->type != type && !(type == FieldType::kNumber && f->type == FieldType::kInteger)) {
    Misuse(name, "is declared as " + std::string(ToString(f->type)) + ", read as " +
                     std::string(ToString(type)));
  }
  auto it = value_->FindMember(name);
  // Absent only when the config was not made by validation (which applies the defaults).
  if (it == value_->MemberEnd()) Misuse(name, "is missing and has no default");
  return it->value;
}

std::string Config::String(const char* name) const {
  const auto& v = Get(name, FieldType::kString);
  if (!v.IsString()) Misuse(name, "is not a string");
  return v.GetString();
}

int64_t Config::Integer(const char* name) const {
  const auto& v = Get(name, FieldType::kInteger);
  if (!v.IsInt64()) Misuse(name, "is not an integer");
  return v.GetInt64();
}

double Config::Number(const char* name) const {
  const auto& v = Get(name, FieldType::kNumber);
  if (!v.IsNumber()) Misuse(name, "is not a number");
  return v.GetDouble();
}

bool Config::Boolean(const char* name) const {
  const auto& v = Get(name, FieldType::kBoolean);
  if (!v.IsBool()) Misuse(name, "is not a boolean");
  return v.GetBool();
}

std::vector<std::string> Config::StringArray(const char* name) const {
  const auto& v = Get(name, FieldType::kStringArray);
  if (!v.IsArray()) Misuse(name, "is not an array");
  std::vector<std::string> out;
  for (const auto& e : v.GetArray()) {
    if (!e.IsString()) Misuse(name, "has an item that is not a string");
    out.emplace_back(e.GetString());
  }
  return out;
}

std::vector<Config> Config::Objects(const char* name) const {
  const auto& v = Get(name, FieldType::kObjectArray);
  if (!v.IsArray()) Misuse(name, "is not an array");
  auto items = std::make_shared<const ConfigSpec>(spec_->Items(*spec_->Find(name)));
  const std::string items_name = owner_name_ + "." + name + "[]";
  std::vector<Config> out;
  for (const auto& e : v.GetArray()) {
    if (!e.IsObject()) Misuse(name, "has an item that is not an object");
    out.emplace_back(owner_, &e, items, items_name);
  }
  return out;
}

}  // namespace fleetflow
