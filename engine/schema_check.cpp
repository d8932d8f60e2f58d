#include "schema_check.hpp"

#include <rapidjson/pointer.h>
#include <rapidjson/schema.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/fmt/ranges.h>

#include <algorithm>

#include "config.hpp"

namespace fleetflow {

namespace {

std::string PointerText(const rapidjson::Pointer& p) {
  rapidjson::StringBuffer sb;
  p.Stringify(sb);
  return sb.GetString();
}

std::string Number(const rapidjson::Value& v) {
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsUint64()) return std::to_string(v.GetUint64());
  return FormatNumber(v.GetDouble());
}

std::string Text(const rapidjson::Value& v) {
  if (v.IsString()) return v.GetString();
  if (v.IsNumber()) return Number(v);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return sb.GetString();
}

std::string Join(const std::vector<std::string>& items) {
  return fmt::format("{}", fmt::join(items, ", "));
}

const rapidjson::Value* Member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

/// "integer", "array of strings", "string or null".
std::string TypeWord(const rapidjson::Value& schema) {
  const rapidjson::Value* type = Member(schema, "type");
  if (type == nullptr) return "something else";
  if (type->IsArray()) {
    std::vector<std::string> names;
    for (const auto& t : type->GetArray()) names.push_back(Text(t));
    return Join(names);
  }
  const std::string name = Text(*type);
  const rapidjson::Value* items = Member(schema, "items");
  if (name == "array" && items != nullptr && Member(*items, "type") != nullptr) {
    return "array of " + TypeWord(*items) + "s";
  }
  return name;
}

bool AllowsType(const rapidjson::Value& schema, const char* name) {
  const rapidjson::Value* type = Member(schema, "type");
  if (type == nullptr) return true;
  if (type->IsString()) return name == std::string_view(type->GetString());
  if (!type->IsArray()) return false;
  return std::any_of(type->Begin(), type->End(), [&](const rapidjson::Value& t) {
    return t.IsString() && name == std::string_view(t.GetString());
  });
}

std::string Range(const rapidjson::Value& schema) {
  const rapidjson::Value* min = Member(schema, "minimum");
  const rapidjson::Value* max = Member(schema, "maximum");
  if (min == nullptr || max == nullptr) return "";
  return " (allowed: " + Number(*min) + " to " + Number(*max) + ")";
}

/// The message for `value`, which violates `keyword` of `schema`.
std::string Explain(const std::string& keyword, const rapidjson::Value& schema,
                    const rapidjson::Value& value) {
  const std::string found = ", found " + DescribeJson(value);
  const rapidjson::Value* arg = Member(schema, keyword.c_str());
  if (keyword == "type") return "must be " + TypeWord(schema) + found;
  if (keyword == "enum" && arg != nullptr && arg->IsArray()) {
    std::vector<std::string> allowed;
    for (const auto& v : arg->GetArray()) allowed.push_back(Text(v));
    return "must be one of " + Join(allowed) + found;
  }
  if (keyword == "minimum" && arg != nullptr) {
    return "must be at least " + Number(*arg) + found + Range(schema);
  }
  if (keyword == "maximum" && arg != nullptr) {
    return "must be at most " + Number(*arg) + found + Range(schema);
  }
  if (keyword == "pattern" && arg != nullptr) {
    if (const rapidjson::Value* words = Member(schema, "patternDescription")) {
      return "must be " + Text(*words) + found;
    }
    const rapidjson::Value* description = Member(schema, "description");
    return "must match " + Text(*arg) + found +
           (description != nullptr ? " (" + Text(*description) + ")" : "");
  }
  if (keyword == "minLength" && arg != nullptr) {
    if (arg->IsUint64() && arg->GetUint64() == 1) {
      const rapidjson::Value* examples = Member(schema, "examples");
      const bool example = examples != nullptr && examples->IsArray() && !examples->Empty();
      if (!example) return "must not be empty";
      const rapidjson::Value& e = (*examples)[0];
      return "must not be empty, e.g. " + (e.IsString() ? "\"" + Text(e) + "\"" : Text(e));
    }
    return "must have at least " + Number(*arg) + " character(s)" + found;
  }
  if (keyword == "uniqueItems" && !value.IsArray()) {
    // The validator points at the item that repeats an earlier one.
    return "repeats an earlier item; list each item once" + found;
  }
  if ((keyword == "minItems" || keyword == "maxItems") && arg != nullptr && value.IsArray()) {
    return "must have " + std::string(keyword == "minItems" ? "at least " : "at most ") +
           Number(*arg) + " item(s), found " + std::to_string(value.Size());
  }
  return "violates the schema keyword '" + keyword + "'" + found;
}

}  // namespace

struct SchemaChecker::Compiled {
  rapidjson::Document doc;
  std::unique_ptr<rapidjson::SchemaDocument> schema;
};

SchemaChecker::SchemaChecker(const rapidjson::Value& schema) {
  root_.CopyFrom(schema, root_.GetAllocator());
}

SchemaChecker::~SchemaChecker() = default;

std::vector<SchemaViolation> SchemaChecker::Check(const rapidjson::Value& value) const {
  std::vector<SchemaViolation> out;
  CheckValue(value, root_, "", out);
  return out;
}

const rapidjson::Value& SchemaChecker::Resolve(const rapidjson::Value& schema) const {
  const rapidjson::Value* s = &schema;
  for (int depth = 0; depth < 8; ++depth) {
    const rapidjson::Value* ref = Member(*s, "$ref");
    if (ref == nullptr || !ref->IsString() || ref->GetString()[0] != '#') break;
    const rapidjson::Value* target = rapidjson::Pointer(ref->GetString() + 1).Get(root_);
    if (target == nullptr) break;
    s = target;
  }
  return *s;
}

/// A validator for one sub-schema: a copy of it that carries the root's definitions, so the
/// `$ref`s inside it still resolve.
const SchemaChecker::Compiled& SchemaChecker::Compile(const rapidjson::Value& schema) const {
  auto& slot = compiled_[&schema];
  if (slot) return *slot;
  slot = std::make_unique<Compiled>();
  auto& a = slot->doc.GetAllocator();
  slot->doc.CopyFrom(schema, a);
  const rapidjson::Value* defs = Member(root_, "definitions");
  if (&schema != &root_ && defs != nullptr && slot->doc.IsObject() &&
      !slot->doc.HasMember("definitions")) {
    slot->doc.AddMember("definitions", rapidjson::Value(*defs, a), a);
  }
  slot->schema = std::make_unique<rapidjson::SchemaDocument>(slot->doc);
  return *slot;
}

void SchemaChecker::CheckValue(const rapidjson::Value& value, const rapidjson::Value& schema,
                               const std::string& pointer,
                               std::vector<SchemaViolation>& out) const {
  const rapidjson::Value& s = Resolve(schema);
  const Compiled& compiled = Compile(s);
  rapidjson::SchemaValidator validator(*compiled.schema);
  if (value.Accept(validator)) return;

  const size_t before = out.size();
  const rapidjson::Value* items = Member(s, "items");
  if (value.IsObject() && AllowsType(s, "object")) {
    CheckMembers(value, s, pointer, out);
  } else if (value.IsArray() && AllowsType(s, "array") && items != nullptr && items->IsObject()) {
    for (rapidjson::SizeType i = 0; i < value.Size(); ++i) {
      CheckValue(value[i], *items, pointer + "/" + std::to_string(i), out);
    }
  }
  if (out.size() != before) return;

  // A leaf, or a violation of a keyword of this level: explain the validator's first error.
  const std::string sub = PointerText(validator.GetInvalidDocumentPointer());
  const rapidjson::Value* here = rapidjson::Pointer(sub.c_str()).Get(value);
  const rapidjson::Value* rule =
      validator.GetInvalidSchemaPointer().Get(static_cast<const rapidjson::Value&>(compiled.doc));
  out.push_back(
      {pointer + sub, Explain(validator.GetInvalidSchemaKeyword(), rule != nullptr ? *rule : s,
                              here != nullptr ? *here : value)});
}

void SchemaChecker::CheckMembers(const rapidjson::Value& object, const rapidjson::Value& schema,
                                 const std::string& pointer,
                                 std::vector<SchemaViolation>& out) const {
  const rapidjson::Value* props = Member(schema, "properties");
  std::vector<std::string> known;
  if (props != nullptr && props->IsObject()) {
    for (const auto& p : props->GetObject()) known.emplace_back(p.name.GetString());
  }
  const rapidjson::Value* additional = Member(schema, "additionalProperties");
  const bool closed = additional != nullptr && additional->IsFalse();
  for (const auto& m : object.GetObject()) {
    const std::string name = m.name.GetString();
    const std::string at = pointer + "/" + JsonPointerToken(name);
    const rapidjson::Value* sub = props != nullptr ? Member(*props, name.c_str()) : nullptr;
    if (sub != nullptr) {
      CheckValue(m.value, *sub, at, out);
    } else if (closed) {
      out.push_back({at, UnknownNameMessage("field", name, known)});
    } else if (additional != nullptr && additional->IsObject()) {
      CheckValue(m.value, *additional, at, out);  // a map: every other member has this schema
    }
  }
  const rapidjson::Value* required = Member(schema, "required");
  if (required == nullptr || !required->IsArray()) return;
  for (const auto& r : required->GetArray()) {
    if (!r.IsString() || object.HasMember(r.GetString())) continue;
    std::string what;
    if (const rapidjson::Value* sub = props != nullptr ? Member(*props, r.GetString()) : nullptr) {
      const rapidjson::Value& s = Resolve(*sub);
      const rapidjson::Value* description = Member(s, "description");
      what = " (" + TypeWord(s) + (description != nullptr ? ": " + Text(*description) : "") + ")";
    }
    out.push_back({pointer, "missing required field '" + std::string(r.GetString()) + "'" + what});
  }
}

size_t EditDistance(std::string_view a, std::string_view b) {
  // Optimal string alignment: a swap of two neighbouring letters counts as one edit.
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string ClosestName(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    // An edit changes the length by one at most: a name that much longer or shorter is not
    // closer, and its distance from a long word (an unknown key of thousands of characters) costs
    // their lengths' product.
    if (std::max(word.size(), c.size()) - std::min(word.size(), c.size()) >= best_d) continue;
    const size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string guess = ClosestName(word, candidates);
  return guess.empty() ? "" : "; did you mean '" + guess + "'?";
}

std::string UnknownNameMessage(std::string_view what, std::string_view name,
                               const std::vector<std::string>& known) {
  const std::string guess = DidYouMean(name, known);
  return "unknown " + std::string(what) + " '" + std::string(name) + "'" +
         (guess.empty() ? "." : guess) + " Known " + std::string(what) + "s: " + Join(known) + ".";
}

std::string DescribeJson(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return v.GetBool() ? "the boolean true" : "the boolean false";
  if (v.IsInt64() || v.IsUint64()) return "the integer " + Number(v);
  if (v.IsNumber()) return "the number " + Number(v);
  if (v.IsString()) {
    std::string s = v.GetString();
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return "the string \"" + s + "\"";
  }
  if (v.IsArray()) return "an array of " + std::to_string(v.Size()) + " item(s)";
  return "an object";
}

std::string JsonPointerToken(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace fleetflow
