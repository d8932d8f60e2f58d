#include "prom_text.hpp"

#include <charconv>

namespace fleetflow::prom {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t'; }
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

/// Reads the characters of a line left to right.
class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}
  bool done() const { return i_ == s_.size(); }
  char peek() const { return done() ? '\0' : s_[i_]; }
  char take() { return s_[i_++]; }
  bool TakeIf(char c) {
    if (done() || s_[i_] != c) return false;
    ++i_;
    return true;
  }
  void SkipSpace() {
    while (!done() && IsSpace(s_[i_])) ++i_;
  }
  /// A metric name (`colons`) or a label name: [a-zA-Z_:][a-zA-Z0-9_:]*; "" when none starts here.
  std::string_view Name(bool colons) {
    const size_t start = i_;
    if (done() || !IsNameStart(s_[i_]) || (!colons && s_[i_] == ':')) return {};
    ++i_;
    while (!done() && IsNameChar(s_[i_]) && (colons || s_[i_] != ':')) ++i_;
    return s_.substr(start, i_ - start);
  }
  /// Up to the next space or the end.
  std::string_view Token() {
    const size_t start = i_;
    while (!done() && !IsSpace(s_[i_])) ++i_;
    return s_.substr(start, i_ - start);
  }
  size_t pos() const { return i_; }
  size_t column() const { return i_ + 1; }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

/// After the opening quote: the value up to the closing quote, unescaped.
std::optional<std::string> QuotedValue(Cursor& c, std::string& error) {
  std::string value;
  while (!c.done()) {
    const char ch = c.take();
    if (ch == '"') return value;
    if (ch != '\\') {
      value.push_back(ch);
      continue;
    }
    if (c.done()) break;
    const char esc = c.take();
    if (esc == '\\' || esc == '"') {
      value.push_back(esc);
    } else if (esc == 'n') {
      value.push_back('\n');
    } else {
      error =
          std::string("unknown escape \\") + esc + " in a label value (only \\\\, \\\" and \\n)";
      return std::nullopt;
    }
  }
  error = "label value without its closing quote";
  return std::nullopt;
}

/// After `{`: the labels up to and including `}` (a comma may follow the last one).
bool Labels(Cursor& c, Sample& s, std::string& error) {
  for (;;) {
    c.SkipSpace();
    if (c.TakeIf('}')) return true;
    const std::string_view name = c.Name(false);
    if (name.empty()) {
      error = "expected a label name or '}' at column " + std::to_string(c.column());
      return false;
    }
    c.SkipSpace();
    if (!c.TakeIf('=')) {
      error = "expected '=' after label " + std::string(name);
      return false;
    }
    c.SkipSpace();
    if (!c.TakeIf('"')) {
      error = "expected '\"' to open the value of label " + std::string(name);
      return false;
    }
    auto value = QuotedValue(c, error);
    if (!value) return false;
    for (const auto& [k, v] : s.labels) {
      if (k == name) {
        error = "label " + std::string(name) + " given twice";
        return false;
      }
    }
    s.labels.emplace_back(name, std::move(*value));
    c.SkipSpace();
    if (c.TakeIf(',')) continue;
    if (c.TakeIf('}')) return true;
    error = "expected ',' or '}' after the value of label " + std::string(name);
    return false;
  }
}

}  // namespace

std::optional<std::string> Sample::Label(std::string_view key) const {
  for (const auto& [k, v] : labels) {
    if (k == key) return v;
  }
  return std::nullopt;
}

std::optional<double> ParseValue(std::string_view text) {
  // from_chars reads inf/infinity/nan in any case and a leading '-', but not a leading '+'.
  const bool plus = !text.empty() && text.front() == '+';
  if (plus) text.remove_prefix(1);
  if (text.empty() || text.front() == '+' || (plus && text.front() == '-')) return std::nullopt;
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<Sample> ParseSampleLine(std::string_view line, std::string& error) {
  Cursor c(line);
  c.SkipSpace();
  Sample s;
  s.name = std::string(c.Name(true));
  if (s.name.empty()) {
    error = "expected a metric name";
    return std::nullopt;
  }
  // Spaces separate the name (or its labels) from the value.
  const auto skip_space = [&c] {
    const size_t at = c.pos();
    c.SkipSpace();
    return c.pos() > at;
  };
  bool spaced = skip_space();
  if (c.TakeIf('{')) {
    if (!Labels(c, s, error)) return std::nullopt;
    spaced = skip_space();
  }
  if (c.done()) {
    error = "no value after " + s.name;
    return std::nullopt;
  }
  if (!spaced) {
    error = "unexpected '" + std::string(1, c.peek()) + "' at column " + std::to_string(c.column());
    return std::nullopt;
  }
  const std::string_view value = c.Token();
  const auto v = ParseValue(value);
  if (!v) {
    error = "not a number: '" + std::string(value) + "'";
    return std::nullopt;
  }
  s.value = *v;
  c.SkipSpace();
  if (!c.done()) {
    const std::string_view ts = c.Token();
    int64_t t = 0;
    const auto [end, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), t);
    if (ec != std::errc() || end != ts.data() + ts.size()) {
      error = "not a timestamp (integer milliseconds): '" + std::string(ts) + "'";
      return std::nullopt;
    }
    s.timestamp_ms = t;
    c.SkipSpace();
    if (!c.done()) {
      error = "unexpected text after the timestamp at column " + std::to_string(c.column());
      return std::nullopt;
    }
  }
  return s;
}

ParseResult ParseText(std::string_view text) {
  ParseResult r;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = 0;
    while (first < line.size() && IsSpace(line[first])) ++first;
    if (first == line.size() || line[first] == '#') continue;
    std::string error;
    if (auto s = ParseSampleLine(line, error)) {
      r.samples.push_back(std::move(*s));
    } else {
      r.errors.push_back("line " + std::to_string(line_no) + ": " + error);
    }
  }
  return r;
}

}  // namespace fleetflow::prom
