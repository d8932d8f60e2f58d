#pragma once
/// Expressions over a row's values: the one wrapper of muparser (Debian's libmuparser-dev), which
/// compiles an expression once to byte code and evaluates it at a few tens of nanoseconds.
///
/// The language is muparser's: numbers, + - * / ^, comparisons (== != < > <= >=), && ||, the
/// ternary c ? a : b, functions (abs, sqrt, exp, ln, log10, sin, ..., min, max, sum, avg, rint,
/// sign) and the constants _pi and _e; plus
///  - isnull(x): 1 when x is NULL (no value), else 0;
///  - vehicle("id"): 1 when the row is vehicle `id`'s, else 0.
/// Names are the variables an Expressions set was made with (a row's columns, and what else its
/// owner defines, e.g. prev_<column> and dt). A NULL value is NaN while it is evaluated: a
/// comparison with it is false, arithmetic with it NULL.

#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow {

/// An expression that does not compile: what is wrong, where (0-based character; npos: no
/// place), the offending token (may be empty).
class ExpressionError : public std::runtime_error {
 public:
  ExpressionError(std::string message, size_t position, std::string token)
      : std::runtime_error(std::move(message)), position_(position), token_(std::move(token)) {}
  size_t position() const { return position_; }
  const std::string& token() const { return token_; }

 private:
  size_t position_;
  std::string token_;
};

/// Outcome of one evaluation.
struct Evaluated {
  std::optional<double> value;  ///< empty: NULL (an input was NULL) or an error
  bool error = false;  ///< a step on finite inputs gave no finite number (x / 0, sqrt(-1), ...)
};

/// Compiled expressions over one set of named values. Not thread-safe: one per operator
/// instance (its calls come one at a time).
class Expressions {
 public:
  /// `names`: the variables, in the order of values().
  explicit Expressions(std::vector<std::string> names);
  ~Expressions();
  Expressions(const Expressions&) = delete;
  Expressions& operator=(const Expressions&) = delete;

  /// Compiles `text`; its index for Evaluate. Throws ExpressionError with a message for people
  /// (an unknown name says which names there are, and the closest one).
  size_t Add(const std::string& text);
  /// Throws ExpressionError when `text` does not compile; compiles nothing kept.
  void Check(const std::string& text) const;

  const std::vector<std::string>& names() const { return names_; }
  /// The names expression `i` uses (indexes into names()).
  const std::vector<size_t>& Used(size_t i) const;
  size_t size() const;

  /// Where the values live: set them (NaN for NULL) before Evaluate.
  double* values() { return values_.get(); }
  void SetVehicle(std::string_view vehicle) { vehicle_ = vehicle; }
  /// Expression `i` on the current values: a finite value when every step of it was (x / 0 > 3
  /// is an error, not true); with a NULL input, what it gives (a comparison: 0; arithmetic:
  /// NULL) and never an error; else an error, NULL.
  Evaluated Evaluate(size_t i) const;

 private:
  struct Compiled;
  std::vector<std::string> names_;
  std::unique_ptr<double[]> values_;
  std::string_view vehicle_;
  std::vector<std::unique_ptr<Compiled>> compiled_;
  friend double VehicleIs(void* self, const char* id);
};

}  // namespace fleetflow
