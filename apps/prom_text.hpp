#pragma once
/// A reader of the Prometheus text exposition format, version 0.0.4 (what GET /metrics serves):
/// one sample per line, `name{label="value",...} value [timestamp]`; `#` lines (HELP, TYPE and
/// other comments) and empty lines are skipped.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fleetflow::prom {

struct Sample {
  std::string name;
  /// In the order of the line; values unescaped (`\\`, `\"` and `\n`).
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;  ///< NaN, +Inf and -Inf included
  std::optional<int64_t> timestamp_ms;

  /// The value of label `key`; nullopt when the sample does not have it.
  std::optional<std::string> Label(std::string_view key) const;
};

struct ParseResult {
  std::vector<Sample> samples;
  /// One per line that is not a valid sample: "line N: what is wrong". Such lines are skipped.
  std::vector<std::string> errors;
};

/// Reads every sample of `text`. Never throws: a bad line is reported and the rest is read.
ParseResult ParseText(std::string_view text);

/// Reads one sample line (no newline); nullopt with `error` set when it is not one.
std::optional<Sample> ParseSampleLine(std::string_view line, std::string& error);

/// A float as the format writes it: decimal or exponent notation, `NaN`, `+Inf`, `-Inf` (also
/// `Inf`, any case); nullopt when `text` is anything else or has more characters.
std::optional<double> ParseValue(std::string_view text);

}  // namespace fleetflow::prom
