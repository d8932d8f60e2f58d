#include "pipeline.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <spdlog/fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>

#include "json_positions.hpp"
#include "schema_check.hpp"

namespace fleetflow {

namespace {

using Alloc = rapidjson::Document::AllocatorType;
constexpr const char* kIdPattern = "^[A-Za-z_][A-Za-z0-9_-]{0,63}$";

rapidjson::Value Str(const std::string& s, Alloc& a) { return rapidjson::Value(s.c_str(), a); }

/// The envelope (everything but operator configs); `for_editors` adds the per-type config
/// schemas so an editor can check a whole file.
/// Gives the object schema `object` its `properties`, the names in `required`, and no others.
void CloseObject(rapidjson::Value& object, rapidjson::Value& properties,
                 std::initializer_list<const char*> required, Alloc& a) {
  object.AddMember("properties", properties, a);
  rapidjson::Value names(rapidjson::kArrayType);
  for (const char* name : required) names.PushBack(rapidjson::StringRef(name), a);
  object.AddMember("required", names, a);
  object.AddMember("additionalProperties", false, a);
}

void BuildSchema(const Registry& registry, bool for_editors, rapidjson::Document& d) {
  Alloc& a = d.GetAllocator();
  d.SetObject();
  d.AddMember("$schema", "http://json-schema.org/draft-04/schema#", a);
  // A name, not an address: stable across versions and hosts, and never fetched; an editor maps
  // it (or a file's "$schema") to the installed file (docs/pipelines.md, "Editors").
  if (for_editors) d.AddMember("$id", rapidjson::StringRef(kPipelineSchemaId), a);
  d.AddMember("title", "fleetflow pipeline", a);
  d.AddMember(
      "description",
      "A fleetflow pipeline: a graph of operator nodes (see docs/operators/README.md). Generated "
      "by `fleetflow schema` from the operators' config specs; do not edit by hand.",
      a);
  d.AddMember("type", "object", a);

  rapidjson::Value props(rapidjson::kObjectType);
  auto string_prop = [&](const char* name, const char* desc) {
    rapidjson::Value p(rapidjson::kObjectType);
    p.AddMember("type", "string", a);
    p.AddMember("description", rapidjson::StringRef(desc), a);
    props.AddMember(rapidjson::StringRef(name), p, a);
  };
  string_prop("$schema", "Path or URL of this schema, for editors.");
  string_prop("name", "Name of the pipeline, used in logs and metrics.");
  string_prop("description", "What the pipeline does.");
  rapidjson::Value nodes(rapidjson::kObjectType);
  nodes.AddMember("type", "array", a);
  nodes.AddMember("minItems", 1, a);
  nodes.AddMember("description", "The operator nodes; edges are given by each node's inputs.", a);
  rapidjson::Value ref(rapidjson::kObjectType);
  ref.AddMember("$ref", "#/definitions/node", a);
  nodes.AddMember("items", ref, a);
  props.AddMember("nodes", nodes, a);
  CloseObject(d, props, {"name", "nodes"}, a);

  rapidjson::Value defs(rapidjson::kObjectType);
  rapidjson::Value node(rapidjson::kObjectType);
  node.AddMember("type", "object", a);
  rapidjson::Value np(rapidjson::kObjectType);
  {
    rapidjson::Value id(rapidjson::kObjectType);
    id.AddMember("type", "string", a);
    id.AddMember("pattern", rapidjson::StringRef(kIdPattern), a);
    id.AddMember("description", "Unique id of the node: a letter or _, then letters, digits, _ -.",
                 a);
    np.AddMember("id", id, a);
    rapidjson::Value type(rapidjson::kObjectType);
    type.AddMember("type", "string", a);
    type.AddMember("description", "The operator this node runs.", a);
    if (for_editors) {
      rapidjson::Value e(rapidjson::kArrayType);
      for (const auto& n : registry.Names()) e.PushBack(Str(n, a), a);
      type.AddMember("enum", e, a);
    }
    np.AddMember("type", type, a);
    rapidjson::Value inputs(rapidjson::kObjectType);
    inputs.AddMember("type", "array", a);
    rapidjson::Value item(rapidjson::kObjectType);
    item.AddMember("type", "string", a);
    inputs.AddMember("items", item, a);
    inputs.AddMember("description", "Ids of the nodes whose output this node consumes.", a);
    np.AddMember("inputs", inputs, a);
    rapidjson::Value config(rapidjson::kObjectType);
    config.AddMember("type", "object", a);
    config.AddMember("description", "The operator's settings; see docs/operators/.", a);
    np.AddMember("config", config, a);
    rapidjson::Value desc(rapidjson::kObjectType);
    desc.AddMember("type", "string", a);
    np.AddMember("description", desc, a);
  }
  CloseObject(node, np, {"id", "type"}, a);
  if (for_editors) {
    rapidjson::Value one_of(rapidjson::kArrayType);
    for (const auto& op : registry.all()) {
      rapidjson::Value variant(rapidjson::kObjectType);
      rapidjson::Value vp(rapidjson::kObjectType);
      rapidjson::Value t(rapidjson::kObjectType);
      rapidjson::Value e(rapidjson::kArrayType);
      e.PushBack(Str(op.name, a), a);
      t.AddMember("enum", e, a);
      vp.AddMember("type", t, a);
      rapidjson::Value c(rapidjson::kObjectType);
      c.AddMember("$ref", Str("#/definitions/" + op.name, a), a);
      vp.AddMember("config", c, a);
      variant.AddMember("properties", vp, a);
      one_of.PushBack(variant, a);
      rapidjson::Value cs;
      op.config.ToJsonSchema(cs, a);
      std::string description = op.summary;
      for (const auto& rule : op.config.rules()) description += " " + rule.description;
      cs.AddMember("description", Str(description, a), a);
      defs.AddMember(Str(op.name, a), cs, a);
    }
    node.AddMember("oneOf", one_of, a);
  }
  defs.AddMember("node", node, a);
  d.AddMember("definitions", defs, a);
}

/// Deepest nesting of arrays and objects a pipeline file may have: far more than the format
/// needs, and a bound for the recursive checks that follow the (iterative) parse.
constexpr int kMaxDepth = 64;

/// Unknown inputs that get a "did you mean": each is compared with the id of every node, and
/// thousands of them in a pipeline of hundreds of nodes took seconds (under the sanitizers).
constexpr size_t kSuggestedInputs = 20;

/// True when `v` nests arrays/objects more than `levels` deep.
bool DeeperThan(const rapidjson::Value& v, int levels) {
  if (!v.IsArray() && !v.IsObject()) return false;
  if (levels == 0) return true;
  if (v.IsArray()) {
    for (const auto& e : v.GetArray()) {
      if (DeeperThan(e, levels - 1)) return true;
    }
  } else {
    for (const auto& m : v.GetObject()) {
      if (DeeperThan(m.value, levels - 1)) return true;
    }
  }
  return false;
}

/// The id of the node a pointer /nodes/<i>/... lies in, when that node has a string id.
std::string NodeIdAt(const rapidjson::Value& doc, const std::string& pointer) {
  if (pointer.rfind("/nodes/", 0) != 0) return "";
  const size_t end = pointer.find('/', 7);
  const auto* n = rapidjson::Pointer(pointer.substr(0, end).c_str()).Get(doc);
  if (n == nullptr || !n->IsObject()) return "";
  auto id = n->FindMember("id");
  return id != n->MemberEnd() && id->value.IsString() ? id->value.GetString() : "";
}

const rapidjson::Value* StringMember(const rapidjson::Value& object, const char* name) {
  auto it = object.FindMember(name);
  return it != object.MemberEnd() && it->value.IsString() ? &it->value : nullptr;
}

rapidjson::Document EnvelopeSchema(const Registry& registry) {
  rapidjson::Document d;
  BuildSchema(registry, false, d);
  return d;
}

class Loader {
 public:
  Loader(std::string file, const Registry& registry, const EnvLookup& env)
      : file_(std::move(file)),
        registry_(registry),
        env_(env),
        envelope_(EnvelopeSchema(registry)) {}

  LoadResult Load(const std::string& text) {
    Pipeline p;
    std::vector<NodeDecl> decls;
    if (LoadNodes(text, decls, &p)) CheckGraph(decls, p.nodes);
    if (result_.errors.empty()) result_.pipeline = std::move(p);
    return std::move(result_);
  }

  /// Parses, substitutes and validates the file and every node's config, reporting every
  /// problem (not the graph's). Appends a decl for every node of a known operator. Returns true
  /// when the nodes are sound enough to check the graph: a valid envelope, known operators and
  /// unique ids (bad configs or unset variables do not hide graph errors).
  bool LoadNodes(const std::string& text, std::vector<NodeDecl>& decls,
                 Pipeline* header = nullptr) {
    auto doc = std::make_shared<rapidjson::Document>();
    text_ = text;
    lines_ = std::make_unique<TextPositions>(text_);
    // A UTF-8 byte order mark (some Windows editors write one) is not JSON, but says nothing
    // wrong about the file: skipped.
    const size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
    // Strict JSON: no comments, no trailing commas (other tools read pipeline files too, and
    // refuse them), and valid UTF-8 (a name or id with broken bytes would pass the patterns).
    // Bounded by the text's length, not by its NUL: RapidJSON's UTF-8 check reads past the NUL
    // when the text ends inside a multi-byte sequence (found by the fuzzer).
    doc->Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
        text.data() + start, text.size() - start);
    if (doc->HasParseError()) {
      ParseError(doc->GetParseError(), start + doc->GetErrorOffset());
      return false;
    }
    positions_ = std::make_unique<JsonPositions>(text, start);
    for (const DuplicateKey& d : positions_->duplicates()) {
      const TextPosition first = lines_->Of(d.first_offset);
      ErrorAt(d.offset, d.pointer, NodeId(*doc, d.pointer),
              "duplicate key '" + d.key + "' (first at line " + std::to_string(first.line) +
                  ", column " + std::to_string(first.column) +
                  "): JSON tools disagree on which one counts (jq, Python and JavaScript keep "
                  "the last); keep one");
    }
    if (DeeperThan(*doc, kMaxDepth)) {
      Error("", "",
            "the JSON nests arrays and objects more than " + std::to_string(kMaxDepth) +
                " levels deep; a pipeline file needs far fewer");
      return false;
    }
    std::string root;
    Substitute(*doc, root, doc->GetAllocator());
    node_ids_.clear();  // an id may have had a ${VAR}
    const auto violations = envelope_.Check(*doc);
    bool sound = true;
    for (const auto& v : violations) {
      Report(v.pointer, NodeId(*doc, v.pointer), v.message);
      sound = sound && !HidesTheGraph(v.pointer);
    }
    if (!doc->IsObject() || !doc->HasMember("nodes") || !(*doc)["nodes"].IsArray()) return false;

    if (header != nullptr) {
      header->file = file_;
      if (const auto* name = StringMember(*doc, "name")) header->name = name->GetString();
      if (const auto* d = StringMember(*doc, "description")) header->description = d->GetString();
    }
    auto& nodes = (*doc)["nodes"];
    std::set<std::string> ids;
    for (rapidjson::SizeType i = 0; i < nodes.Size(); ++i) {
      auto& n = nodes[i];
      const rapidjson::Value* id = n.IsObject() ? StringMember(n, "id") : nullptr;
      const rapidjson::Value* type = n.IsObject() ? StringMember(n, "type") : nullptr;
      if (id == nullptr || type == nullptr) continue;  // reported by the envelope check
      NodeDecl decl;
      decl.pointer = "/nodes/" + std::to_string(i);
      decl.id = id->GetString();
      decl.type = type->GetString();
      if (!ids.insert(decl.id).second) {
        Error(decl.pointer + "/id", decl.id,
              "duplicate node id '" + decl.id + "'; give every node a unique id");
        sound = false;
        continue;
      }
      if (n.HasMember("inputs") && n["inputs"].IsArray()) {
        for (const auto& in : n["inputs"].GetArray()) {
          if (in.IsString()) decl.inputs.emplace_back(in.GetString());
        }
      }
      decl.info = registry_.Find(decl.type);
      if (decl.info == nullptr) {
        Error(decl.pointer + "/type", decl.id,
              UnknownNameMessage("operator", decl.type, registry_.Names()));
        sound = false;
        continue;
      }
      if (!n.HasMember("config")) {
        n.AddMember("config", rapidjson::Value(rapidjson::kObjectType), doc->GetAllocator());
      }
      auto& config = n["config"];
      if (config.IsObject() && CheckConfig(decl, config)) {
        decl.info->config.ApplyDefaults(config, doc->GetAllocator());
        Config bound(doc, &config, Spec(*decl.info), decl.info->name);
        if (CheckRules(decl, bound)) decl.config = std::move(bound);
      }
      decls.push_back(std::move(decl));
    }
    return sound;
  }

  const std::vector<Diagnostic>& errors() const { return result_.errors; }

 private:
  /// At the value `pointer` names (or its nearest enclosing one) once the text has parsed.
  void Error(const std::string& pointer, const std::string& node, const std::string& message) {
    result_.errors.push_back({file_, pointer, node, message});
    if (positions_) Place(result_.errors.back(), positions_->OffsetOf(pointer));
  }

  /// At byte `offset` of the text.
  void ErrorAt(size_t offset, const std::string& pointer, const std::string& node,
               const std::string& message) {
    result_.errors.push_back({file_, pointer, node, message});
    Place(result_.errors.back(), offset);
  }

  void Place(Diagnostic& d, size_t offset) const {
    const TextPosition p = lines_->Of(offset);
    d.line = p.line;
    d.column = p.column;
  }

  /// A parse error in words, at its place: the strict rules (no comments, no trailing commas,
  /// UTF-8) say why, since most JSON a person writes by hand breaks one of them.
  void ParseError(rapidjson::ParseErrorCode code, size_t offset) {
    const std::string_view t = text_;
    const auto at = [&](size_t i) { return i < t.size() ? t[i] : '\0'; };
    size_t before = offset;  // the last character before the error that is not white space
    while (before > 0 && std::isspace(static_cast<unsigned char>(at(before - 1)))) --before;
    if (code == rapidjson::kParseErrorDocumentEmpty) {
      ErrorAt(offset, "", "",
              "the file is empty (or only white space); a pipeline is a JSON object: "
              "{\"name\": \"...\", \"nodes\": [...]}");
    } else if (at(offset) == '/' && (at(offset + 1) == '/' || at(offset + 1) == '*')) {
      ErrorAt(offset, "", "",
              "comments are not JSON: pipeline files are read by other tools too (jq, Python), "
              "which refuse them; say it in a \"description\" (of the pipeline or of a node)");
    } else if ((at(offset) == '}' || at(offset) == ']') && before > 0 && at(before - 1) == ',') {
      ErrorAt(before - 1, "", "",
              std::string("trailing comma before '") + at(offset) +
                  "': JSON allows no comma after the last " +
                  (at(offset) == '}' ? "member" : "item") + "; remove it");
    } else if (code == rapidjson::kParseErrorStringInvalidEncoding) {
      ErrorAt(offset, "", "",
              "invalid UTF-8 in a string (bytes that are no character); save the file as UTF-8");
    } else {
      ErrorAt(offset, "", "", std::string("invalid JSON: ") + rapidjson::GetParseError_En(code));
    }
  }

  /// A violation of the envelope after which the graph cannot be checked without misleading
  /// errors: the document, the nodes array, a node itself or its id, type or inputs. Others
  /// (an unknown field of a node, a bad name) leave the graph to be checked, so that every
  /// problem shows at once.
  static bool HidesTheGraph(const std::string& pointer) {
    if (pointer.empty() || pointer == "/nodes") return true;
    if (pointer.rfind("/nodes/", 0) != 0) return false;
    const size_t slash = pointer.find('/', 7);
    if (slash == std::string::npos) return true;  // /nodes/<i>
    const std::string member = pointer.substr(slash + 1, pointer.find('/', slash + 1) - slash - 1);
    return member == "id" || member == "type" || member == "inputs";
  }

  /// A schema violation, unless the value there already failed `${VAR}` substitution.
  void Report(const std::string& pointer, const std::string& node, const std::string& message) {
    if (unexpanded_.count(pointer) == 0) Error(pointer, node, message);
  }

  /// NodeIdAt, looked up once per node: a node with thousands of members (and as many problems)
  /// made a lookup for each of them a scan of them all.
  std::string NodeId(const rapidjson::Value& doc, const std::string& pointer) {
    if (pointer.rfind("/nodes/", 0) != 0) return "";
    const std::string node = pointer.substr(0, pointer.find('/', 7));
    const auto [it, fresh] = node_ids_.emplace(node, "");
    if (fresh) it->second = NodeIdAt(doc, node);
    return it->second;
  }

  /// `pointer` is that of `v`, extended and restored on the way down: a copy for every value
  /// cost the square of the text under a long key (thousands of items below it).
  void Substitute(rapidjson::Value& v, std::string& pointer, Alloc& a) {
    if (v.IsString()) {
      std::string out, err;
      if (!ExpandEnv(v.GetString(), env_, out, err)) {
        Error(pointer, "", err);
        unexpanded_.insert(pointer);
      } else if (out != v.GetString()) {
        v.SetString(out.c_str(), static_cast<rapidjson::SizeType>(out.size()), a);
      }
    } else if (v.IsArray()) {
      const size_t length = pointer.size();
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        pointer += "/" + std::to_string(i);
        Substitute(v[i], pointer, a);
        pointer.resize(length);
      }
    } else if (v.IsObject()) {
      const size_t length = pointer.size();
      for (auto& m : v.GetObject()) {
        pointer += "/" + JsonPointerToken(m.name.GetString());
        Substitute(m.value, pointer, a);
        pointer.resize(length);
      }
    }
  }

  bool CheckConfig(const NodeDecl& decl, const rapidjson::Value& config) {
    auto& checker = configs_[decl.info->name];
    if (!checker) {
      rapidjson::Document schema;
      decl.info->config.ToJsonSchema(schema, schema.GetAllocator());
      checker = std::make_unique<SchemaChecker>(schema);
    }
    const auto violations = checker->Check(config);
    for (const auto& v : violations)
      Report(decl.pointer + "/config" + v.pointer, decl.id, v.message);
    return violations.empty();
  }

  /// The cross-field rules of the operator, on a config that passed the schema (defaults
  /// applied).
  bool CheckRules(const NodeDecl& decl, const Config& config) {
    const auto problems = decl.info->config.CheckRules(config);
    for (const auto& p : problems) Report(decl.pointer + "/config" + p.pointer, decl.id, p.message);
    return problems.empty();
  }

  /// The operator's spec, shared by the configs of its nodes (which outlive the registry entry
  /// of ParseOperatorConfig).
  std::shared_ptr<const ConfigSpec> Spec(const OperatorInfo& info) {
    auto& spec = specs_[info.name];
    if (!spec) spec = std::make_shared<const ConfigSpec>(info.config);
    return spec;
  }

  /// Checks the edges, then (when they are sound) cycles and sinks; on success appends the
  /// nodes to `ordered` in topological order.
  bool CheckGraph(std::vector<NodeDecl>& decls, std::vector<NodeDecl>& ordered) {
    const size_t errors_before = result_.errors.size();
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < decls.size(); ++i) index[decls[i].id] = i;
    std::vector<std::vector<size_t>> successors(decls.size());
    std::vector<size_t> indegree(decls.size(), 0);
    std::vector<std::string> ids;  // for "did you mean", once there is an unknown input
    size_t suggested = 0;          // unknown inputs that got one
    for (size_t i = 0; i < decls.size(); ++i) {
      const NodeDecl& d = decls[i];
      const bool is_source = d.info->input == PortKind::kNone;
      if (is_source && !d.inputs.empty()) {
        Error(d.pointer + "/inputs", d.id,
              "'" + d.type + "' is a source and takes no inputs; remove \"inputs\"");
        continue;
      }
      if (!is_source && d.inputs.empty()) {
        Error(d.pointer, d.id,
              "'" + d.type + "' needs an input: add \"inputs\": [\"<id of a node producing " +
                  std::string(ToString(d.info->input)) + ">\"]");
        continue;
      }
      std::set<std::string> seen;
      for (size_t k = 0; k < d.inputs.size(); ++k) {
        const std::string& in = d.inputs[k];
        const std::string ptr = d.pointer + "/inputs/" + std::to_string(k);
        auto it = index.find(in);
        if (it == index.end()) {
          std::string guess;
          if (suggested++ < kSuggestedInputs) {
            if (ids.empty()) {
              for (const auto& x : decls) ids.push_back(x.id);
            }
            guess = DidYouMean(in, ids);
          }
          Error(ptr, d.id, "input '" + in + "' is not a node of this pipeline" + guess);
          continue;
        }
        if (!seen.insert(in).second) {
          Error(ptr, d.id, "input '" + in + "' is listed twice; list it once");
          continue;
        }
        const NodeDecl& up = decls[it->second];
        if (up.info->output != d.info->input) {
          Error(ptr, d.id,
                "'" + up.id + "' (" + up.type + ") produces " +
                    std::string(ToString(up.info->output)) + " but '" + d.type + "' consumes " +
                    std::string(ToString(d.info->input)) + "; connect it to a node that produces " +
                    std::string(ToString(d.info->input)));
          continue;
        }
        successors[it->second].push_back(i);
        ++indegree[i];
      }
    }
    if (result_.errors.size() != errors_before) return false;
    // Kahn's algorithm keeps the file's order among ready nodes.
    std::vector<size_t> order;
    std::vector<size_t> deg = indegree;
    std::vector<bool> done(decls.size(), false);
    for (bool progress = true; progress;) {
      progress = false;
      for (size_t i = 0; i < decls.size(); ++i) {
        if (done[i] || deg[i] != 0) continue;
        done[i] = true;
        progress = true;
        order.push_back(i);
        for (size_t s : successors[i]) --deg[s];
      }
    }
    if (order.size() != decls.size()) {
      ReportCycles(decls, index, done);
      return false;
    }
    bool has_sink = false;
    for (size_t i = 0; i < decls.size(); ++i) {
      const NodeDecl& d = decls[i];
      if (d.info->output == PortKind::kNone) {
        has_sink = true;
      } else if (successors[i].empty()) {
        Error(d.pointer, d.id,
              "the output of '" + d.id + "' (" + std::string(ToString(d.info->output)) +
                  ") goes nowhere; add '" + d.id + "' to the inputs of a node, or remove it");
      }
    }
    if (!has_sink) {
      Error("/nodes", "",
            "the pipeline has no sink; add a node that writes the rows, e.g. "
            "{\"id\": \"db\", \"type\": \"timescale_sink\", \"inputs\": [\"<window join id>\"]}");
    }
    if (result_.errors.size() != errors_before) return false;
    // Only on configs that passed their own checks (a failed one is not bound to its spec).
    if (result_.errors.empty()) CheckUpstream(decls, order);
    if (result_.errors.size() != errors_before) return false;
    for (size_t i : order) ordered.push_back(std::move(decls[i]));
    return true;
  }

  /// The cycles among the nodes Kahn's algorithm left (`done` false): each of them has an input
  /// among them, so following inputs from one always ends in a cycle. Each cycle once, named in
  /// the direction the data flows (a -> b -> a: b reads a, a reads b), from its node first in the
  /// file, at the input that closes it; nodes merely downstream of a cycle are not named.
  void ReportCycles(const std::vector<NodeDecl>& decls, const std::map<std::string, size_t>& index,
                    const std::vector<bool>& done) {
    std::vector<bool> seen(decls.size(), false);  // in a reported cycle, or led to one
    for (size_t start = 0; start < decls.size(); ++start) {
      if (done[start] || seen[start]) continue;
      std::vector<size_t> path;  // each node an input of the one before it
      std::map<size_t, size_t> on_path;
      size_t at = start;
      while (!seen[at] && on_path.count(at) == 0) {
        on_path[at] = path.size();
        path.push_back(at);
        for (const auto& in : decls[at].inputs) {
          const size_t k = index.at(in);
          if (!done[k]) {
            at = k;
            break;
          }
        }
      }
      for (size_t k : path) seen[k] = true;
      if (on_path.count(at) == 0) continue;  // led into a cycle already reported
      // path[on_path[at]..] is the cycle against the flow; turn it and begin at its first node.
      std::vector<size_t> cycle(path.begin() + static_cast<std::ptrdiff_t>(on_path[at]),
                                path.end());
      std::reverse(cycle.begin(), cycle.end());
      std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());
      std::string names;
      for (size_t k : cycle) names += decls[k].id + " -> ";
      names += decls[cycle.front()].id;
      // The input of the first node that closes the cycle: the last node's id.
      const NodeDecl& first = decls[cycle.front()];
      const auto& ins = first.inputs;
      const size_t closing = static_cast<size_t>(
          std::find(ins.begin(), ins.end(), decls[cycle.back()].id) - ins.begin());
      Error(first.pointer + "/inputs/" + std::to_string(closing), first.id,
            "the inputs form a cycle: " + names +
                "; a pipeline must be acyclic (remove one of these inputs)");
    }
  }

  /// Runs each operator's check_upstream with the nodes its node reads from.
  void CheckUpstream(const std::vector<NodeDecl>& decls, const std::vector<size_t>& order) {
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < decls.size(); ++i) index[decls[i].id] = i;
    for (size_t i : order) {
      const NodeDecl& d = decls[i];
      if (!d.info->check_upstream) continue;
      // Every ancestor once, in topological order (nearest last).
      std::set<size_t> ancestors;
      std::vector<size_t> todo;
      for (const auto& in : d.inputs) todo.push_back(index.at(in));
      while (!todo.empty()) {
        const size_t a = todo.back();
        todo.pop_back();
        if (!ancestors.insert(a).second) continue;
        for (const auto& in : decls[a].inputs) todo.push_back(index.at(in));
      }
      std::vector<UpstreamNode> upstream;
      for (size_t k : order) {
        if (ancestors.count(k) == 0) continue;
        const OperatorInfo& info = *decls[k].info;
        upstream.push_back({decls[k].id, decls[k].type,
                            info.facts ? info.facts(decls[k].config) : NodeFacts{},
                            decls[k].inputs});
      }
      for (const UpstreamProblem& p : d.info->check_upstream(d.config, d.id, upstream)) {
        const auto it = index.find(p.node);
        const std::string at =
            it == index.end() ? d.pointer : decls[it->second].pointer + "/config";
        Error(at + p.pointer, p.node, p.message);
      }
    }
  }

  std::string file_;
  std::string text_;
  std::unique_ptr<TextPositions> lines_;      // of text_
  std::unique_ptr<JsonPositions> positions_;  // once the text has parsed
  const Registry& registry_;
  const EnvLookup& env_;
  LoadResult result_;
  SchemaChecker envelope_;
  std::map<std::string, std::unique_ptr<SchemaChecker>> configs_;   // by operator
  std::map<std::string, std::shared_ptr<const ConfigSpec>> specs_;  // by operator
  std::set<std::string> unexpanded_;             // pointers of strings whose ${VAR} failed
  std::map<std::string, std::string> node_ids_;  // NodeId's: /nodes/<i> -> id
};

}  // namespace

std::string Diagnostic::FormatWith(std::string_view severity) const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  out += severity;
  std::string where = pointer;
  if (!node.empty()) where += (where.empty() ? "" : " ") + std::string("(node '") + node + "')";
  return out + (where.empty() ? "" : where + ": ") + message;
}

std::string Diagnostic::Format() const { return FormatWith(""); }

std::string Diagnostic::FormatGcc() const { return FormatWith("error: "); }

std::string Diagnostic::Suggestion() const {
  static const std::string kMark = "did you mean '";
  const size_t at = message.find(kMark);
  if (at == std::string::npos) return "";
  const size_t begin = at + kMark.size();
  const size_t end = message.find("'?", begin);
  return end == std::string::npos ? "" : message.substr(begin, end - begin);
}

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

bool ExpandEnv(const std::string& in, const EnvLookup& env, std::string& out, std::string& error) {
  out.clear();
  for (size_t i = 0; i < in.size();) {
    if (in.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (in.compare(i, 2, "${") != 0) {
      out += in[i++];
      continue;
    }
    const size_t close = in.find('}', i + 2);
    if (close == std::string::npos) {
      error = "unterminated ${ in \"" + in + "\"; close it with } (write $${ for a literal ${)";
      return false;
    }
    const std::string expr = in.substr(i + 2, close - i - 2);
    const size_t dash = expr.find(":-");
    const std::string name = expr.substr(0, dash);
    bool ok = !name.empty();
    for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) {
      error = "bad variable name in ${" + expr + "}: use letters, digits and _";
      return false;
    }
    if (auto v = env(name); v && !v->empty()) {
      out += *v;
    } else if (dash != std::string::npos) {
      out += expr.substr(dash + 2);
    } else {
      error = "environment variable " + name + " is not set; set it, or give a default: ${" + name +
              ":-value}";
      return false;
    }
    i = close + 1;
  }
  return true;
}

std::vector<Diagnostic> ParseOperatorConfig(const OperatorInfo& op, const std::string& json,
                                            Config& out, const EnvLookup& env) {
  const std::string text = R"({"name":"config","nodes":[{"id":"op","type":")" + op.name +
                           R"(","config":)" + json + "}]}";
  Registry one;
  one.Add(op);
  Loader loader("<config>", one, env);
  std::vector<NodeDecl> decls;
  loader.LoadNodes(text, decls);
  if (loader.errors().empty()) out = decls.front().config;
  std::vector<Diagnostic> errors = loader.errors();
  for (Diagnostic& e : errors) e.line = e.column = 0;  // places in the wrapper, not in `json`
  return errors;
}

LoadResult ParsePipeline(const std::string& text, const std::string& file, const Registry& registry,
                         const EnvLookup& env) {
  return Loader(file, registry, env).Load(text);
}

LoadResult LoadPipelineFile(const std::string& path, const Registry& registry,
                            const EnvLookup& env) {
  const auto fail = [&](const std::string& why) {
    LoadResult r;
    r.errors.push_back({path, "", "", why});
    return r;
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return fail("is a directory; give the pipeline files in it (e.g. " + path + "/*.json)");
  }
  // stdio, for the system's reason when the file cannot be read (errno).
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return fail(std::string("cannot read the file: ") + std::strerror(errno));
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f.get())) > 0;) text.append(buf, n);
  if (std::ferror(f.get()))
    return fail(std::string("cannot read the file: ") + std::strerror(errno));
  return ParsePipeline(text, path, registry, env);
}

std::string PipelineDot(const Pipeline& pipeline) {
  std::string name;
  for (char c : pipeline.name) name += (c == '"' || c == '\\' ? "\\" : "") + std::string(1, c);
  std::string out =
      "digraph \"" + name + "\" {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n";
  for (const auto& n : pipeline.nodes) {
    out += "  \"" + n.id + "\" [label=\"" + n.id + "\\n" + n.type + "\"];\n";
  }
  for (const auto& n : pipeline.nodes) {
    for (const auto& in : n.inputs) {
      out += "  \"" + in + "\" -> \"" + n.id + "\" [label=\"" +
             std::string(ToString(n.info->input)) + "\"];\n";
    }
  }
  return out + "}\n";
}

std::string PipelineJsonSchema(const Registry& registry) {
  rapidjson::Document d;
  BuildSchema(registry, true, d);
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  d.Accept(w);
  return std::string(sb.GetString()) + "\n";
}

}  // namespace fleetflow
