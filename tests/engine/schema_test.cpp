// The committed JSON Schema is what the operators' config specs generate, and it accepts the
// shipped pipelines.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "pipeline.hpp"
#include "servers.hpp"

namespace fleetflow {
namespace {

TEST(SchemaTest, CommittedSchemaMatchesTheConfigSpecs) {
  Registry registry;
  RegisterBuiltinOperators(registry);
  const std::string committed =
      testing::ReadFile(::fleetflow::testing::SourceDir() + "/schemas/pipeline.schema.json");
  EXPECT_EQ(committed, PipelineJsonSchema(registry))
      << "schemas/pipeline.schema.json is stale: regenerate it with\n"
         "  build/apps/fleetflow schema > schemas/pipeline.schema.json";
}

TEST(SchemaTest, SchemaAcceptsShippedPipelinesAndRejectsABadOne) {
  Registry registry;
  RegisterBuiltinOperators(registry);
  rapidjson::Document schema_doc;
  schema_doc.Parse(PipelineJsonSchema(registry).c_str());
  ASSERT_FALSE(schema_doc.HasParseError());
  rapidjson::SchemaDocument schema(schema_doc);

  rapidjson::Document pipeline;
  pipeline.Parse(
      testing::ReadFile(::fleetflow::testing::SourceDir() + "/pipelines/default.json").c_str());
  ASSERT_FALSE(pipeline.HasParseError());
  rapidjson::SchemaValidator ok(schema);
  EXPECT_TRUE(pipeline.Accept(ok));

  pipeline["nodes"][2]["config"].AddMember("evry_ms", 5, pipeline.GetAllocator());
  rapidjson::SchemaValidator bad(schema);
  EXPECT_FALSE(pipeline.Accept(bad));
}

}  // namespace
}  // namespace fleetflow
