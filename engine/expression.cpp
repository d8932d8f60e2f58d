#include "expression.hpp"

#include <muParser.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <limits>

#include "schema_check.hpp"

namespace fleetflow {

namespace {

double IsNull(double x) { return std::isnan(x) ? 1.0 : 0.0; }

std::string NameList(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

/// A muparser error in words, with our names where it is about a name.
ExpressionError Explain(const mu::Parser::exception_type& e, const std::vector<std::string>& names,
                        const std::string& text) {
  const int pos = e.GetPos();
  const size_t position = pos < 0 ? std::string::npos : static_cast<size_t>(pos);
  const std::string& token = e.GetToken();
  std::string at = position == std::string::npos ? std::string()
                                                 : " at character " + std::to_string(position + 1);
  std::string message;
  switch (e.GetCode()) {
    case mu::ecUNASSIGNABLE_TOKEN:
      if (!token.empty() &&
          (std::isalpha(static_cast<unsigned char>(token[0])) != 0 || token[0] == '_')) {
        message = "unknown name '" + token + "'" + at + DidYouMean(token, names) +
                  " The names are: " + NameList(names) +
                  "; functions: isnull(x), vehicle(\"id\") and muparser's (abs, sqrt, min, max, "
                  "...).";
        return ExpressionError(std::move(message), position, token);
      }
      break;
    case mu::ecUNEXPECTED_EOF:
      at = " at its end";
      break;
    default:
      break;
  }
  message = e.GetMsg();
  // muparser's messages end with "at position N." (0-based): say it once, 1-based.
  if (const size_t p = message.find(" at position "); p != std::string::npos) message.resize(p);
  while (!message.empty() && (message.back() == '.' || message.back() == ' ')) message.pop_back();
  if (message.empty()) message = "cannot compile";
  message += at + " of \"" + text + "\"";
  return ExpressionError(std::move(message), position, token);
}

}  // namespace

double VehicleIs(void* self, const char* id) {
  return static_cast<Expressions*>(self)->vehicle_ == id ? 1.0 : 0.0;
}

struct Expressions::Compiled {
  mu::Parser parser;
  std::vector<size_t> used;
};

Expressions::Expressions(std::vector<std::string> names)
    : names_(std::move(names)), values_(std::make_unique<double[]>(names_.size() + 1)) {
  std::fill_n(values_.get(), names_.size() + 1, std::numeric_limits<double>::quiet_NaN());
}

Expressions::~Expressions() = default;

size_t Expressions::size() const { return compiled_.size(); }

const std::vector<size_t>& Expressions::Used(size_t i) const { return compiled_.at(i)->used; }

size_t Expressions::Add(const std::string& text) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw ExpressionError("the expression is empty", std::string::npos, "");
  }
  auto c = std::make_unique<Compiled>();
  mu::Parser& p = c->parser;
  try {
    for (size_t i = 0; i < names_.size(); ++i) p.DefineVar(names_[i], &values_[i]);
    p.DefineFun("isnull", IsNull, false);
    p.DefineFunUserData("vehicle", VehicleIs, this, false);
    p.SetExpr(text);
    // muparser compiles on the first evaluation: make it now, so that every mistake shows at
    // load time (the values are all NULL then, which nothing minds).
    (void)p.Eval();
    for (const auto& [name, where] : p.GetUsedVar()) {
      c->used.push_back(static_cast<size_t>(where - values_.get()));
    }
  } catch (const mu::Parser::exception_type& e) {
    throw Explain(e, names_, text);
  }
  compiled_.push_back(std::move(c));
  return compiled_.size() - 1;
}

void Expressions::Check(const std::string& text) const {
  Expressions scratch(names_);
  (void)scratch.Add(text);
}

Evaluated Expressions::Evaluate(size_t i) const {
  const Compiled& c = *compiled_[i];
  double v = std::numeric_limits<double>::quiet_NaN();
  // A step that fails (x / 0, sqrt(-1), exp(1000)) raises a floating-point flag even where the
  // result is finite (x / 0 > 3 is 1): the flags tell an error from a NULL input.
  constexpr int kFailed = FE_DIVBYZERO | FE_INVALID | FE_OVERFLOW;
  std::feclearexcept(kFailed);
  try {
    v = c.parser.Eval();
  } catch (const mu::Parser::exception_type&) {
    return Evaluated{std::nullopt, true};
  }
  const bool failed = std::fetestexcept(kFailed) != 0 || !std::isfinite(v);
  if (!failed) return Evaluated{v, false};
  const bool null_input =
      std::any_of(c.used.begin(), c.used.end(), [&](size_t u) { return std::isnan(values_[u]); });
  if (null_input)
    return Evaluated{std::isfinite(v) ? std::optional<double>(v) : std::nullopt, false};
  return Evaluated{std::nullopt, true};
}

}  // namespace fleetflow
