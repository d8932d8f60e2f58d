#pragma once
/// Logging on spdlog: text or JSON lines on stderr, key-value fields, and a rate limit for
/// messages that repeat (a flood of bad input must not flood the log).
///
///   text: 2024-05-01T12:00:00.123+0000 warning rejected input node=in reason=bad_magic total=6
///   json: {"ts":"2024-05-01T12:00:00.123Z","level":"warning","msg":"rejected input",
///          "node":"in","reason":"bad_magic","total":6}
///
/// Plain spdlog calls (spdlog::info(...)) keep working and give lines without fields.

#include <spdlog/formatter.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fleetflow {

enum class LogFormat { kText, kJson };

/// "text" or "json"; nullopt for anything else.
std::optional<LogFormat> ParseLogFormat(std::string_view name);

/// The formatter of `format` lines, for a logger of your own (tests, other sinks).
std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format);

/// Replaces the default spdlog logger by one writing `format` lines to stderr at `level`.
/// Call once at startup, before other threads log.
void SetupLogging(LogFormat format, spdlog::level::level_enum level);

/// One key-value field of a log line: text lines append key=value, JSON lines get a member
/// (a number for integers, a string otherwise).
struct LogField {
  LogField(std::string k, std::string_view v) : key(std::move(k)), value(v) {}
  LogField(std::string k, const char* v) : LogField(std::move(k), std::string_view(v)) {}
  LogField(std::string k, const std::string& v) : LogField(std::move(k), std::string_view(v)) {}
  template <std::integral T>
  LogField(std::string k, T v) : key(std::move(k)), value(std::to_string(v)), number(true) {}

  std::string key;
  std::string value;
  bool number = false;
};
using LogFields = std::vector<LogField>;

/// Logs `msg` with `fields` through the default logger.
void Log(spdlog::level::level_enum level, std::string_view msg, const LogFields& fields = {});

/// Per key, logs the first `burst` messages, then at most one per `interval`; a line logged
/// after some were dropped carries the field suppressed=<how many>. Thread-safe. Keys should
/// come from a small set (a node and a reason), never from the input itself; past 1024 keys,
/// new keys share one limit.
class RateLimitedLog {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  explicit RateLimitedLog(uint64_t burst = 5,
                          std::chrono::milliseconds interval = std::chrono::seconds(10),
                          Clock clock = std::chrono::steady_clock::now);

  /// Logs `msg` unless the key is over its limit; returns true when it logged.
  bool Log(std::string_view key, spdlog::level::level_enum level, std::string_view msg,
           LogFields fields = {});

 private:
  struct KeyState {
    uint64_t logged = 0;
    uint64_t suppressed = 0;
    std::chrono::steady_clock::time_point last;
  };

  const uint64_t burst_;
  const std::chrono::milliseconds interval_;
  const Clock clock_;
  std::mutex mu_;
  std::unordered_map<std::string, KeyState> keys_;
};

}  // namespace fleetflow
