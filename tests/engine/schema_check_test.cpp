// SchemaChecker: every violation of a schema, each explained as expected vs found.
#include "schema_check.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fleetflow {
namespace {

using ::testing::HasSubstr;

rapidjson::Document Json(const char* text) {
  rapidjson::Document d;
  d.Parse(text);
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

const char* kSchema = R"({
  "type": "object",
  "properties": {
    "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/item"}},
    "mode": {"type": "string", "enum": ["a", "b"]}
  },
  "required": ["items"],
  "additionalProperties": false,
  "definitions": {
    "item": {
      "type": "object",
      "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9},
                     "tags": {"type": "array", "items": {"type": "string"}}},
      "required": ["n"],
      "additionalProperties": false
    }
  }
})";

TEST(SchemaCheckerTest, ValidValueHasNoViolations) {
  SchemaChecker checker(Json(kSchema));
  EXPECT_TRUE(checker.Check(Json(R"({"items": [{"n": 3, "tags": ["x"]}], "mode": "a"})")).empty());
}

TEST(SchemaCheckerTest, EveryViolationThroughReferencesAndArrays) {
  SchemaChecker checker(Json(kSchema));
  const auto v = checker.Check(Json(
      R"({"items": [{"n": 0}, {"n": 2, "tags": ["x", true], "tag": 1}, {}], "mode": "c", "x": 1})"));
  ASSERT_EQ(v.size(), 6u);
  EXPECT_EQ(v[0].pointer, "/items/0/n");
  EXPECT_EQ(v[0].message, "must be at least 1, found the integer 0 (allowed: 1 to 9)");
  EXPECT_EQ(v[1].pointer, "/items/1/tags/1");
  EXPECT_EQ(v[1].message, "must be string, found the boolean true");
  EXPECT_EQ(v[2].pointer, "/items/1/tag");
  EXPECT_THAT(v[2].message, HasSubstr("unknown field 'tag'; did you mean 'tags'?"));
  EXPECT_EQ(v[3].pointer, "/items/2");
  EXPECT_EQ(v[3].message, "missing required field 'n' (integer)");
  EXPECT_EQ(v[4].pointer, "/mode");
  EXPECT_EQ(v[4].message, "must be one of a, b, found the string \"c\"");
  EXPECT_EQ(v[5].pointer, "/x");
  EXPECT_EQ(v[5].message, "unknown field 'x'. Known fields: items, mode.");
}

TEST(SchemaCheckerTest, LevelKeywordsAndWrongTypes) {
  SchemaChecker checker(Json(kSchema));
  auto v = checker.Check(Json(R"({"items": []})"));
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].pointer, "/items");
  EXPECT_EQ(v[0].message, "must have at least 1 item(s), found 0");
  v = checker.Check(Json(R"([1])"));
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].pointer, "");
  EXPECT_EQ(v[0].message, "must be object, found an array of 1 item(s)");
}

// An object whose members are free names with one schema (a map, as a test file's expected rows
// by vehicle): each member is checked against it, and each bad one is a violation of its own.
TEST(SchemaCheckerTest, MembersOfAMapAreEachCheckedAgainstItsSchema) {
  SchemaChecker checker(Json(R"({
    "type": "object",
    "properties": {"by_name": {"type": "object",
                               "additionalProperties": {"type": "integer", "minimum": 0}}}
  })"));
  EXPECT_TRUE(checker.Check(Json(R"({"by_name": {"a": 1, "b": 0}})")).empty());
  const auto v = checker.Check(Json(R"({"by_name": {"a": -1, "b": 2, "c": "x"}})"));
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].pointer, "/by_name/a");
  EXPECT_THAT(v[0].message, HasSubstr("must be at least 0"));
  EXPECT_EQ(v[1].pointer, "/by_name/c");
  EXPECT_EQ(v[1].message, "must be integer, found the string \"x\"");
}

TEST(SchemaCheckTest, SuggestionsAndDescriptions) {
  EXPECT_EQ(EditDistance("jion", "join"), 1u);
  EXPECT_EQ(EditDistance("evry_ms", "every_ms"), 1u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(ClosestName("jion", {"in", "join"}), "join");
  EXPECT_EQ(ClosestName("database", {"in", "join"}), "");
  EXPECT_EQ(DidYouMean("kep", {"keep"}), "; did you mean 'keep'?");
  EXPECT_EQ(DescribeJson(Json("1.5")), "the number 1.5");
  EXPECT_EQ(DescribeJson(Json("null")), "null");
  EXPECT_EQ(DescribeJson(Json("{}")), "an object");
  EXPECT_EQ(JsonPointerToken("a/b~c"), "a~1b~0c");
}

}  // namespace
}  // namespace fleetflow
