#pragma once
/// Pipeline files: loading, `${VAR}` substitution, validation (JSON Schema, then graph) and the
/// JSON Schema of the file format itself.
///
/// A pipeline file:
///   { "name": "...", "description": "...",
///     "nodes": [ { "id": "in", "type": "nats_source", "config": { ... } },
///                { "id": "state", "type": "keyed_last_value", "inputs": ["in"] }, ... ] }

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "registry.hpp"

namespace fleetflow {

/// One problem in a pipeline file, with where it is and what to change.
struct Diagnostic {
  std::string file;
  std::string pointer;  // JSON pointer, e.g. /nodes/2/config/every_ms
  std::string node;     // node id, when the problem is inside a node
  std::string message;
  /// 1-based position in the file of the value `pointer` names (of the nearest enclosing value
  /// when that one is not in the file, e.g. a missing field: its object); 0 when there is none
  /// (the file cannot be read). The column counts characters (UTF-8 code points), not bytes.
  size_t line = 0;
  size_t column = 0;
  /// "file:3:17: /nodes/2/config/every_ms (node 'join'): message" (without ":line:col" when
  /// there is no position).
  std::string Format() const;
  /// "file:3:17: error: /nodes/2/config/every_ms (node 'join'): message", the form compilers
  /// print and editors and CI annotators parse (vim's %f:%l:%c:, GitHub's problem matchers).
  std::string FormatGcc() const;
  /// The name a "did you mean 'x'?" in the message proposes; empty when it proposes none.
  std::string Suggestion() const;

 private:
  /// Format with `severity` ("", "error: ") after the position.
  std::string FormatWith(std::string_view severity) const;
};

struct NodeDecl {
  std::string id;
  std::string type;
  std::vector<std::string> inputs;
  std::string pointer;  // /nodes/<i>
  const OperatorInfo* info = nullptr;
  Config config;
};

struct Pipeline {
  std::string file;
  std::string name;
  std::string description;
  std::vector<NodeDecl> nodes;  // topological order: every node after all of its inputs
};

struct LoadResult {
  std::optional<Pipeline> pipeline;
  std::vector<Diagnostic> errors;
  bool ok() const { return pipeline.has_value(); }
};

/// Returns the value of an environment variable, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup ProcessEnv();

/// Loads and validates a pipeline file.
LoadResult LoadPipelineFile(const std::string& path, const Registry& registry,
                            const EnvLookup& env = ProcessEnv());
/// Same, from text; `file` names it in diagnostics.
LoadResult ParsePipeline(const std::string& text, const std::string& file, const Registry& registry,
                         const EnvLookup& env = ProcessEnv());

/// Validates one operator's config (JSON text, `${VAR}` expanded) and applies its defaults,
/// exactly as the loader does for a node. Returns the problems; on success `out` is set.
std::vector<Diagnostic> ParseOperatorConfig(const OperatorInfo& op, const std::string& json,
                                            Config& out, const EnvLookup& env = ProcessEnv());

/// Expands `${VAR}` and `${VAR:-default}` in `in`; `$${` stands for a literal `${`.
/// Returns false and sets `error` for an unset variable without a default or bad syntax.
bool ExpandEnv(const std::string& in, const EnvLookup& env, std::string& out, std::string& error);

/// The pipeline as a Graphviz digraph: a box per node labelled with its id and operator, an edge
/// per input labelled with what it carries (samples, rows).
std::string PipelineDot(const Pipeline& pipeline);

/// The `$id` of the pipeline files' JSON Schema.
inline constexpr const char* kPipelineSchemaId = "urn:fleetflow:schema:pipeline";

/// The JSON Schema of pipeline files, generated from the registry's config specs (pretty JSON).
std::string PipelineJsonSchema(const Registry& registry);

}  // namespace fleetflow
