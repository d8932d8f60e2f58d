#include "pipeline.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/schema.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace fleetflow {

namespace {

using Alloc = rapidjson::Document::AllocatorType;
constexpr const char* kIdPattern = "^[A-Za-z_][A-Za-z0-9_-]{0,63}$";

rapidjson::Value Str(const std::string& s, Alloc& a) { return rapidjson::Value(s.c_str(), a); }

std::string JsonTypeName(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "a boolean";
  if (v.IsInt64() || v.IsUint64()) return "an integer";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return std::string("the string \"") + v.GetString() + "\"";
  if (v.IsArray()) return "an array";
  return "an object";
}

std::string Closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    const size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

/// The envelope (everything but operator configs); `for_editors` adds the per-type config
/// schemas so an editor can check a whole file.
void BuildSchema(const Registry& registry, bool for_editors, rapidjson::Document& d) {
  Alloc& a = d.GetAllocator();
  d.SetObject();
  d.AddMember("$schema", "http://json-schema.org/draft-04/schema#", a);
  d.AddMember("title", "fleetflow pipeline", a);
  d.AddMember("description",
              "A fleetflow pipeline: a graph of operator nodes (see docs/pipelines.md). Generated "
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
  d.AddMember("properties", props, a);
  rapidjson::Value req(rapidjson::kArrayType);
  req.PushBack("name", a).PushBack("nodes", a);
  d.AddMember("required", req, a);
  d.AddMember("additionalProperties", false, a);

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
  node.AddMember("properties", np, a);
  rapidjson::Value nreq(rapidjson::kArrayType);
  nreq.PushBack("id", a).PushBack("type", a);
  node.AddMember("required", nreq, a);
  node.AddMember("additionalProperties", false, a);
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
      cs.AddMember("description", Str(op.summary, a), a);
      defs.AddMember(Str(op.name, a), cs, a);
    }
    node.AddMember("oneOf", one_of, a);
  }
  defs.AddMember("node", node, a);
  d.AddMember("definitions", defs, a);
}

const Field* FieldAt(const ConfigSpec& spec, const std::vector<std::string>& path) {
  // path: tokens below the config object, e.g. {"columns", "2", "name"}
  const std::vector<Field>* fields = &spec.fields();
  const Field* found = nullptr;
  for (size_t i = 0; i < path.size(); ++i) {
    found = nullptr;
    for (const auto& f : *fields) {
      if (f.name == path[i]) found = &f;
    }
    if (found == nullptr) return nullptr;
    if (found->type == FieldType::kObjectArray && i + 2 < path.size()) {
      fields = &found->item_fields;
      ++i;  // skip the array index
    }
  }
  return found;
}

std::vector<std::string> SplitPointer(const std::string& p) {
  std::vector<std::string> out;
  std::stringstream ss(p);
  std::string tok;
  while (std::getline(ss, tok, '/')) {
    if (!tok.empty()) out.push_back(tok);
  }
  return out;
}

std::vector<std::string> FieldNames(const std::vector<Field>& fields) {
  std::vector<std::string> out;
  for (const auto& f : fields) out.push_back(f.name);
  return out;
}

/// Explains the first schema violation of a config object in terms of the operator's spec.
std::string ExplainConfigError(const rapidjson::SchemaValidator& v, const rapidjson::Value& config,
                               const ConfigSpec& spec, std::string& pointer_out) {
  rapidjson::StringBuffer sb;
  v.GetInvalidDocumentPointer().Stringify(sb);
  pointer_out = sb.GetString();
  const std::string keyword = v.GetInvalidSchemaKeyword();
  const std::vector<std::string> path = SplitPointer(pointer_out);
  const rapidjson::Value* here = rapidjson::Pointer(pointer_out.c_str()).Get(config);

  if (keyword == "additionalProperties" && !path.empty()) {
    // The pointer names the unknown property; its parent is the top-level config or one item
    // of an object array.
    const std::string name = path.back();
    const std::vector<std::string> parent(path.begin(), path.end() - 1);
    const std::vector<Field>* fields = &spec.fields();
    if (parent.size() >= 2) {
      const Field* array = FieldAt(spec, {parent.begin(), parent.end() - 1});
      if (array != nullptr) fields = &array->item_fields;
    }
    const auto known = FieldNames(*fields);
    const std::string guess = Closest(name, known);
    return "unknown field '" + name + "'" +
           (guess.empty() ? "" : "; did you mean '" + guess + "'?") +
           " Known fields: " + Join(known) + ".";
  }
  if (keyword == "required" && here != nullptr && here->IsObject()) {
    const std::vector<Field>* fields = &spec.fields();
    if (path.size() >= 2) {
      const Field* array = FieldAt(spec, {path.begin(), path.end() - 1});
      if (array != nullptr) fields = &array->item_fields;
    }
    for (const auto& f : *fields) {
      if (f.required && !here->HasMember(f.name.c_str())) {
        return "missing required field '" + f.name + "' (" + std::string(ToString(f.type)) +
               ": " + f.description + ")";
      }
    }
  }
  const Field* f = FieldAt(spec, path);
  const std::string found = here != nullptr ? JsonTypeName(*here) : "nothing";
  if (f != nullptr) {
    if (keyword == "type") {
      return "must be " + std::string(ToString(f->type)) + ", found " + found;
    }
    if (keyword == "minimum" && f->minimum) {
      std::ostringstream m;
      m << "must be at least " << *f->minimum << ", found " << found;
      if (f->maximum) m << " (allowed: " << *f->minimum << " to " << *f->maximum << ")";
      return m.str();
    }
    if (keyword == "maximum" && f->maximum) {
      std::ostringstream m;
      m << "must be at most " << *f->maximum << ", found " << found;
      return m.str();
    }
    if (keyword == "enum") {
      return "must be one of " + Join(f->one_of) + ", found " + found;
    }
  }
  return "violates the schema keyword '" + keyword + "' (found " + found + ")";
}

class Loader {
 public:
  Loader(std::string file, const Registry& registry, const EnvLookup& env)
      : file_(std::move(file)), registry_(registry), env_(env) {}

  LoadResult Load(const std::string& text) {
    Pipeline p;
    std::vector<NodeDecl> decls;
    if (!LoadNodes(text, decls, &p).empty()) return std::move(result_);
    if (!CheckGraph(decls, p.nodes)) return std::move(result_);
    result_.pipeline = std::move(p);
    return std::move(result_);
  }

  /// Parses, substitutes and validates the file and every node's config (not the graph).
  std::vector<Diagnostic> LoadNodes(const std::string& text, std::vector<NodeDecl>& decls,
                                    Pipeline* header = nullptr) {
    auto doc = std::make_shared<rapidjson::Document>();
    doc->Parse<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag>(text.c_str());
    if (doc->HasParseError()) {
      const size_t off = doc->GetErrorOffset();
      const size_t line = 1 + std::count(text.begin(), text.begin() + std::min(off, text.size()), '\n');
      const size_t nl = text.rfind('\n', off == 0 ? 0 : off - 1);
      const size_t col = nl == std::string::npos ? off + 1 : off - nl;
      Error("", "", "invalid JSON at line " + std::to_string(line) + ", column " +
                        std::to_string(col) + ": " +
                        rapidjson::GetParseError_En(doc->GetParseError()));
      return result_.errors;
    }
    Substitute(*doc, "", doc->GetAllocator());
    if (!result_.errors.empty()) return result_.errors;
    if (!CheckEnvelope(*doc)) return result_.errors;

    if (header != nullptr) {
      header->file = file_;
      header->name = (*doc)["name"].GetString();
      if (doc->HasMember("description")) header->description = (*doc)["description"].GetString();
    }
    auto& nodes = (*doc)["nodes"];
    std::set<std::string> ids;
    for (rapidjson::SizeType i = 0; i < nodes.Size(); ++i) {
      auto& n = nodes[i];
      NodeDecl decl;
      decl.pointer = "/nodes/" + std::to_string(i);
      decl.id = n["id"].GetString();
      decl.type = n["type"].GetString();
      if (!ids.insert(decl.id).second) {
        Error(decl.pointer + "/id", decl.id,
              "duplicate node id '" + decl.id + "'; give every node a unique id");
        continue;
      }
      if (n.HasMember("inputs")) {
        for (const auto& in : n["inputs"].GetArray()) decl.inputs.emplace_back(in.GetString());
      }
      decl.info = registry_.Find(decl.type);
      if (decl.info == nullptr) {
        const auto names = registry_.Names();
        const std::string guess = Closest(decl.type, names);
        Error(decl.pointer + "/type", decl.id,
              "unknown operator '" + decl.type + "'" +
                  (guess.empty() ? "" : "; did you mean '" + guess + "'?") +
                  " Known operators: " + Join(names) + ".");
        continue;
      }
      if (!n.HasMember("config")) n.AddMember("config", rapidjson::Value(rapidjson::kObjectType),
                                              doc->GetAllocator());
      auto& config = n["config"];
      if (!CheckConfig(decl, config)) continue;
      decl.info->config.ApplyDefaults(config, doc->GetAllocator());
      decl.config = Config(doc, &config);
      decls.push_back(std::move(decl));
    }
    return result_.errors;
  }

 private:
  void Error(const std::string& pointer, const std::string& node, const std::string& message) {
    result_.errors.push_back({file_, pointer, node, message});
  }

  void Substitute(rapidjson::Value& v, const std::string& pointer, Alloc& a) {
    if (v.IsString()) {
      std::string out, err;
      if (!ExpandEnv(v.GetString(), env_, out, err)) {
        Error(pointer, "", err);
      } else if (out != v.GetString()) {
        v.SetString(out.c_str(), static_cast<rapidjson::SizeType>(out.size()), a);
      }
    } else if (v.IsArray()) {
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        Substitute(v[i], pointer + "/" + std::to_string(i), a);
      }
    } else if (v.IsObject()) {
      for (auto& m : v.GetObject()) Substitute(m.value, pointer + "/" + m.name.GetString(), a);
    }
  }

  bool CheckEnvelope(const rapidjson::Document& doc) {
    rapidjson::Document schema_doc;
    BuildSchema(registry_, false, schema_doc);
    rapidjson::SchemaDocument schema(schema_doc);
    rapidjson::SchemaValidator validator(schema);
    if (doc.Accept(validator)) return true;
    rapidjson::StringBuffer sb;
    validator.GetInvalidDocumentPointer().Stringify(sb);
    std::string pointer = sb.GetString();
    const std::string keyword = validator.GetInvalidSchemaKeyword();
    const rapidjson::Value* here = rapidjson::Pointer(pointer.c_str()).Get(doc);
    std::string msg;
    std::string node;
    const auto path = SplitPointer(pointer);
    if (path.size() >= 2 && path[0] == "nodes") {
      const auto* n = rapidjson::Pointer(("/nodes/" + path[1]).c_str()).Get(doc);
      if (n != nullptr && n->IsObject() && n->HasMember("id") && (*n)["id"].IsString()) {
        node = (*n)["id"].GetString();
      }
    }
    const bool unknown_field = keyword == "additionalProperties" && !path.empty();
    const size_t depth = unknown_field ? path.size() - 1 : path.size();
    const bool at_node = depth == 2 && path[0] == "nodes";
    const std::vector<std::string> node_fields = {"id", "type", "inputs", "config", "description"};
    const std::vector<std::string> top_fields = {"$schema", "name", "description", "nodes"};
    const auto& known = at_node ? node_fields : top_fields;
    if (unknown_field) {
      const std::string& name = path.back();
      const std::string guess = Closest(name, known);
      msg = "unknown field '" + name + "'" +
            (guess.empty() ? "" : "; did you mean '" + guess + "'?") +
            " Known fields: " + Join(known) + ".";
    } else if (keyword == "required" && here != nullptr && here->IsObject()) {
      for (const char* f : at_node ? std::vector<const char*>{"id", "type"}
                                   : std::vector<const char*>{"name", "nodes"}) {
        if (!here->HasMember(f)) {
          msg = std::string("missing required field '") + f + "'";
          break;
        }
      }
    } else if (keyword == "pattern" && path.size() == 3 && path[2] == "id") {
      msg = "node id " + (here ? JsonTypeName(*here) : std::string("?")) +
            " is not valid: use a letter or _, then letters, digits, _ or - (at most 64)";
    } else if (keyword == "minItems") {
      msg = "a pipeline needs at least one node";
    } else if (keyword == "type") {
      msg = "has the wrong type: found " + (here ? JsonTypeName(*here) : std::string("nothing")) +
            "; see schemas/pipeline.schema.json";
    }
    if (msg.empty()) {
      msg = "violates the schema keyword '" + keyword + "'; see schemas/pipeline.schema.json";
    }
    Error(pointer, node, msg);
    return false;
  }

  bool CheckConfig(const NodeDecl& decl, const rapidjson::Value& config) {
    auto& schema = ConfigSchema(*decl.info);
    rapidjson::SchemaValidator validator(schema);
    if (config.Accept(validator)) return true;
    std::string sub;
    const std::string msg = ExplainConfigError(validator, config, decl.info->config, sub);
    Error(decl.pointer + "/config" + sub, decl.id, msg);
    return false;
  }

  rapidjson::SchemaDocument& ConfigSchema(const OperatorInfo& op) {
    auto it = schemas_.find(op.name);
    if (it != schemas_.end()) return *it->second.second;
    auto d = std::make_unique<rapidjson::Document>();
    op.config.ToJsonSchema(*d, d->GetAllocator());
    auto sd = std::make_unique<rapidjson::SchemaDocument>(*d);
    auto& ref = *sd;
    schemas_.emplace(op.name, std::make_pair(std::move(d), std::move(sd)));
    return ref;
  }

  bool CheckGraph(std::vector<NodeDecl>& decls, std::vector<NodeDecl>& ordered) {
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < decls.size(); ++i) index[decls[i].id] = i;
    std::vector<std::vector<size_t>> successors(decls.size());
    std::vector<size_t> indegree(decls.size(), 0);
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
          std::vector<std::string> ids;
          for (const auto& x : decls) ids.push_back(x.id);
          const std::string guess = Closest(in, ids);
          Error(ptr, d.id,
                "input '" + in + "' is not a node of this pipeline" +
                    (guess.empty() ? "" : "; did you mean '" + guess + "'?"));
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
                    std::string(ToString(d.info->input)) +
                    "; connect it to a node that produces " +
                    std::string(ToString(d.info->input)));
          continue;
        }
        successors[it->second].push_back(i);
        ++indegree[i];
      }
    }
    if (!result_.errors.empty()) return false;
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
      std::vector<std::string> cyc;
      for (size_t i = 0; i < decls.size(); ++i) {
        if (!done[i]) cyc.push_back(decls[i].id);
      }
      Error("/nodes", cyc.front(),
            "the inputs form a cycle through " + Join(cyc) +
                "; a pipeline must be acyclic (remove one of these inputs)");
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
    if (!result_.errors.empty()) return false;
    for (size_t i : order) ordered.push_back(std::move(decls[i]));
    return true;
  }

  std::string file_;
  const Registry& registry_;
  const EnvLookup& env_;
  LoadResult result_;
  std::map<std::string, std::pair<std::unique_ptr<rapidjson::Document>,
                                  std::unique_ptr<rapidjson::SchemaDocument>>>
      schemas_;
};

}  // namespace

std::string Diagnostic::Format() const {
  std::string out = file + ":";
  if (!pointer.empty()) out += " " + pointer;
  if (!node.empty()) out += " (node '" + node + "')";
  return out + ": " + message;
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
      error = "environment variable " + name + " is not set; set it, or give a default: ${" +
              name + ":-value}";
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
  auto errors = loader.LoadNodes(text, decls);
  if (errors.empty()) out = decls.front().config;
  return errors;
}

LoadResult ParsePipeline(const std::string& text, const std::string& file,
                         const Registry& registry, const EnvLookup& env) {
  return Loader(file, registry, env).Load(text);
}

LoadResult LoadPipelineFile(const std::string& path, const Registry& registry,
                            const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back({path, "", "", "cannot read the file; check the path"});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParsePipeline(ss.str(), path, registry, env);
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

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace fleetflow
