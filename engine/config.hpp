#pragma once
/// Operator configuration: one ConfigSpec per operator is the single source for validation, the
/// defaults, the JSON Schema (schemas/pipeline.schema.json) and the reference docs.

#include <rapidjson/document.h>

#include <cstdint>
#include <functional>
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
  std::vector<std::string> one_of;   // allowed values of a string field
  std::string pattern;               // ECMAScript regex a string (or each string item) matches
  std::string pattern_text;          // the pattern in words, for messages and docs
  std::optional<size_t> min_length;  // of a string
  std::optional<size_t> min_items;   // of an array
  bool unique_items = false;         // of a string array
  std::vector<Field> item_fields;    // fields of each object of a kObjectArray
  std::string example_json;          // JSON text shown in the docs

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
  /// A string (each item of a string array) must match `regex`; `words` says it for people,
  /// e.g. "1 to 64 of A-Z a-z 0-9 _ -".
  Field& Pattern(std::string regex, std::string words) {
    pattern = std::move(regex);
    pattern_text = std::move(words);
    return *this;
  }
  Field& MinLength(size_t n) {
    min_length = n;
    return *this;
  }
  Field& MinItems(size_t n) {
    min_items = n;
    return *this;
  }
  Field& UniqueItems() {
    unique_items = true;
    return *this;
  }
};

class Config;

/// A problem a cross-field rule found; `pointer` is relative to the config object.
struct ConfigProblem {
  std::string pointer;  ///< e.g. /max_pending_rows, /columns/2/name
  std::string message;
};

/// A check across fields that JSON Schema cannot express. It reads the config (schema-valid,
/// defaults applied) and appends what is wrong; an operator with typed options writes it on its
/// options struct instead (OptionsSpec::Rule in options.hpp).
using ConfigCheck = std::function<void(const Config&, std::vector<ConfigProblem>&)>;

struct ConfigRule {
  std::string description;  ///< one sentence for the schema and the docs
  ConfigCheck check;
};

class ConfigSpec {
 public:
  Field& String(std::string name, std::string description);
  Field& Integer(std::string name, std::string description);
  Field& Number(std::string name, std::string description);
  Field& Boolean(std::string name, std::string description);
  Field& StringArray(std::string name, std::string description);
  Field& ObjectArray(std::string name, std::string description, ConfigSpec items);
  /// A cross-field rule, checked by validation after the JSON Schema and the defaults, before
  /// any operator is built; its problems carry JSON pointers like schema violations.
  ConfigSpec& Rule(std::string description, ConfigCheck check);
  /// Appends the fields and rules of `group` (a set of settings shared by several operators),
  /// in its order; throws std::logic_error for a field declared twice.
  void Include(const ConfigSpec& group);

  const std::vector<Field>& fields() const { return fields_; }
  const std::vector<ConfigRule>& rules() const { return rules_; }
  const Field* Find(std::string_view name) const;
  /// The spec of each object of the object array `field` (which must be one).
  ConfigSpec Items(const Field& field) const;

  /// Throws std::logic_error for a field that is neither required nor has a default (a getter
  /// could not answer for it when absent), naming `owner` (e.g. the operator).
  void CheckComplete(const std::string& owner) const;
  /// The problems the rules find in `config` (valid against the schema, defaults applied).
  std::vector<ConfigProblem> CheckRules(const Config& config) const;

  /// The JSON Schema (draft-04, as RapidJSON validates) of a config object of this spec.
  void ToJsonSchema(rapidjson::Value& out, rapidjson::Document::AllocatorType& alloc) const;
  /// Sets every missing field that has a default, recursively into object arrays.
  void ApplyDefaults(rapidjson::Value& config, rapidjson::Document::AllocatorType& alloc) const;

 private:
  Field& Add(std::string name, FieldType type, std::string description);
  std::vector<Field> fields_;
  std::vector<ConfigRule> rules_;
};

/// Read access to a validated config object (defaults applied), bound to its spec: the spec is
/// the only truth about which fields exist and what they default to.
///  - A getter for a field the spec does not declare, or of another type than declared, throws
///    std::logic_error naming the operator and the field (a programming error).
///  - A declared field that is absent gives the spec's default (every field has a default or is
///    required; ConfigSpec::CheckComplete).
class Config {
 public:
  /// An empty config of an operator without settings: every getter throws.
  Config();
  Config(std::shared_ptr<const rapidjson::Document> owner, const rapidjson::Value* value,
         std::shared_ptr<const ConfigSpec> spec, std::string owner_name);
  /// A config of `spec` holding a copy of `json` with the spec's defaults applied, not validated
  /// (for tests and tools); `owner_name` names it in errors.
  static Config Parse(const std::string& json, const ConfigSpec& spec,
                      const std::string& owner_name);

  std::string String(const char* name) const;
  int64_t Integer(const char* name) const;
  double Number(const char* name) const;
  bool Boolean(const char* name) const;
  std::vector<std::string> StringArray(const char* name) const;
  std::vector<Config> Objects(const char* name) const;
  const rapidjson::Value& json() const { return *value_; }
  const ConfigSpec& spec() const { return *spec_; }

 private:
  /// The value of the declared field `name` of type `type` (its default when absent).
  const rapidjson::Value& Get(const char* name, FieldType type) const;
  [[noreturn]] void Misuse(const char* name, const std::string& what) const;

  std::shared_ptr<const rapidjson::Document> owner_;
  const rapidjson::Value* value_;
  std::shared_ptr<const ConfigSpec> spec_;
  std::string owner_name_;  // e.g. timescale_sink, timescale_sink.columns[]
};

}  // namespace fleetflow
