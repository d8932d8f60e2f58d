#pragma once
/// Operator configuration: one ConfigSpec per operator is the single source for validation, the
/// defaults, the JSON Schema (schemas/pipeline.schema.json) and the reference docs.

#include <rapidjson/document.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fleetflow {

enum class FieldType { kString, kInteger, kNumber, kBoolean, kStringArray, kObjectArray };

std::string_view ToString(FieldType t);

/// A number as people write it: 3600000, not 3.6e+06; 0.25 stays 0.25.
std::string FormatNumber(double v);

/// One setting of an operator. Built fluently: spec.Integer("every_ms", "...").Default(1000).
struct Field {
  std::string name;
  FieldType type = FieldType::kString;
  std::string description;
  std::string default_json;  // JSON text of the default; empty: no default
  bool required = false;
  std::optional<double> minimum;
  std::optional<double> maximum;
  std::vector<std::string> one_of;  // allowed values of a string field
  std::vector<Field> item_fields;   // fields of each object of a kObjectArray
  std::string example_json;         // JSON text shown in the docs

  Field& Default(int64_t v);
  Field& Default(double v);
  Field& Default(bool v);
  Field& Default(const char* v);
  Field& DefaultJson(std::string json) {
    default_json = std::move(json);
    return *this;
  }
  Field& Required() {
    required = true;
    return *this;
  }
  Field& Min(double v) {
    minimum = v;
    return *this;
  }
  Field& Max(double v) {
    maximum = v;
    return *this;
  }
  Field& OneOf(std::vector<std::string> values) {
    one_of = std::move(values);
    return *this;
  }
  Field& Example(std::string json) {
    example_json = std::move(json);
    return *this;
  }
};

class ConfigSpec {
 public:
  Field& String(std::string name, std::string description);
  Field& Integer(std::string name, std::string description);
  Field& Number(std::string name, std::string description);
  Field& Boolean(std::string name, std::string description);
  Field& StringArray(std::string name, std::string description);
  Field& ObjectArray(std::string name, std::string description, ConfigSpec items);

  const std::vector<Field>& fields() const { return fields_; }
  const Field* Find(std::string_view name) const;

  /// The JSON Schema (draft-04, as RapidJSON validates) of a config object of this spec.
  void ToJsonSchema(rapidjson::Value& out, rapidjson::Document::AllocatorType& alloc) const;
  /// Sets every missing field that has a default, recursively into object arrays.
  void ApplyDefaults(rapidjson::Value& config, rapidjson::Document::AllocatorType& alloc) const;

 private:
  Field& Add(std::string name, FieldType type, std::string description);
  std::vector<Field> fields_;
};

/// Read access to a validated config object (defaults applied). Getters of a field the spec
/// declares never fail after validation; asking for an absent optional field returns the
/// fallback.
class Config {
 public:
  /// An empty config object.
  Config();
  Config(std::shared_ptr<const rapidjson::Document> owner, const rapidjson::Value* value)
      : owner_(std::move(owner)), value_(value) {}
  /// A config holding a copy of `json` (for tests and tools).
  static Config Parse(const std::string& json);

  bool Has(const char* name) const;
  std::string String(const char* name, const std::string& fallback = "") const;
  int64_t Integer(const char* name, int64_t fallback = 0) const;
  double Number(const char* name, double fallback = 0) const;
  bool Boolean(const char* name, bool fallback = false) const;
  std::vector<std::string> StringArray(const char* name) const;
  std::vector<Config> Objects(const char* name) const;
  const rapidjson::Value& json() const { return *value_; }

 private:
  std::shared_ptr<const rapidjson::Document> owner_;
  const rapidjson::Value* value_;
};

}  // namespace fleetflow
