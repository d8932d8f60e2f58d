#pragma once
/// Every violation of a JSON Schema at once, in words a person editing the JSON understands.
///
/// RapidJSON's SchemaValidator stops at the first error. SchemaChecker keeps it as the authority
/// on validity and localises the problems: below every value the validator rejects it checks the
/// members of an object (unknown and missing fields, then each member against its property's
/// sub-schema) and the items of an array, each again with the validator, so that a value with
/// three mistakes yields three violations, each explained as expected vs found.

#include <rapidjson/document.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow {

struct SchemaViolation {
  std::string pointer;  ///< JSON pointer relative to the checked value, e.g. /every_ms
  std::string message;  ///< e.g. must be integer, found the string "1s"
};

class SchemaChecker {
 public:
  /// `schema` is a draft-04 JSON Schema (copied); `$ref`s of the form "#/..." resolve within it.
  explicit SchemaChecker(const rapidjson::Value& schema);
  ~SchemaChecker();
  SchemaChecker(const SchemaChecker&) = delete;
  SchemaChecker& operator=(const SchemaChecker&) = delete;

  /// The violations of `value` in document order; empty when it is valid. Not thread-safe.
  std::vector<SchemaViolation> Check(const rapidjson::Value& value) const;

 private:
  struct Compiled;
  const rapidjson::Value& Resolve(const rapidjson::Value& schema) const;
  const Compiled& Compile(const rapidjson::Value& schema) const;
  void CheckValue(const rapidjson::Value& value, const rapidjson::Value& schema,
                  const std::string& pointer, std::vector<SchemaViolation>& out) const;
  void CheckMembers(const rapidjson::Value& object, const rapidjson::Value& schema,
                    const std::string& pointer, std::vector<SchemaViolation>& out) const;

  rapidjson::Document root_;
  mutable std::map<const rapidjson::Value*, std::unique_ptr<Compiled>> compiled_;
};

/// Edit distance (insertions, deletions, substitutions, swaps of neighbours), for "did you mean".
size_t EditDistance(std::string_view a, std::string_view b);

/// The candidate closest to `word`, or "" when none is close enough to be a likely typo.
std::string ClosestName(std::string_view word, const std::vector<std::string>& candidates);

/// "; did you mean 'x'?" for an unknown `word`, or "" when no candidate is close.
std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates);

/// "unknown field 'evry_ms'; did you mean 'every_ms'? Known fields: a, b." (`what`: "field").
std::string UnknownNameMessage(std::string_view what, std::string_view name,
                               const std::vector<std::string>& known);

/// A JSON value as a message shows it: `the string "1s"`, `the integer 50`, `an object`.
std::string DescribeJson(const rapidjson::Value& v);

/// `name` escaped as one JSON pointer token (~ and / become ~0 and ~1).
std::string JsonPointerToken(std::string_view name);

}  // namespace fleetflow
