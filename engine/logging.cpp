#include "logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <string_view>
#include <utility>

namespace fleetflow {

namespace {

// Fields travel inside the spdlog payload: msg, then per field kSep key kString|kNumber value.
constexpr char kNumber = '\x1d';
constexpr char kString = '\x1e';
constexpr char kSep = '\x1f';
constexpr const char* kTextPattern = "%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v";

void AppendClean(std::string& out, std::string_view s) {
  for (char c : s) out += (c == kNumber || c == kString || c == kSep) ? ' ' : c;
}

/// Calls `field(key, value, is_number)` for each field of an encoded payload; returns the message.
template <typename F>
std::string_view Decode(std::string_view payload, F&& field) {
  size_t sep = payload.find(kSep);
  const std::string_view msg = payload.substr(0, sep);
  while (sep != std::string_view::npos) {
    const size_t next = payload.find(kSep, sep + 1);
    const std::string_view f = payload.substr(sep + 1, next - sep - 1);
    const size_t mark = f.find_first_of(std::string_view("\x1d\x1e", 2));
    if (mark != std::string_view::npos) {
      field(f.substr(0, mark), f.substr(mark + 1), f[mark] == kNumber);
    }
    sep = next;
  }
  return msg;
}

/// JSON's short escape of `c`, or "" (other control characters are written as \u00XX).
std::string_view ShortEscape(unsigned char c) {
  static constexpr std::pair<char, std::string_view> kEscapes[] = {
      {'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\r', "\\r"}, {'\t', "\\t"}};
  for (const auto& [ch, escaped] : kEscapes) {
    if (static_cast<unsigned char>(ch) == c) return escaped;
  }
  return {};
}

void AppendJsonString(spdlog::memory_buf_t& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    if (const std::string_view escaped = ShortEscape(c); !escaped.empty()) {
      out.append(escaped);
    } else if (c < 0x20) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

/// {"ts":"...Z","level":"info","msg":"...",<fields>}
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& m, spdlog::memory_buf_t& out) override {
    const auto since_epoch = m.time.time_since_epoch();
    const std::time_t secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    fmt::format_to(std::back_inserter(out),
                   "{{\"ts\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    out.append(std::string_view(",\"level\":"));
    const auto level = spdlog::level::to_string_view(m.level);
    AppendJsonString(out, std::string_view(level.data(), level.size()));
    spdlog::memory_buf_t fields;
    const std::string_view payload(m.payload.data(), m.payload.size());
    const std::string_view msg = Decode(payload, [&](auto key, auto value, bool number) {
      fields.push_back(',');
      AppendJsonString(fields, key);
      fields.push_back(':');
      if (number) {
        fields.append(value);
      } else {
        AppendJsonString(fields, value);
      }
    });
    out.append(std::string_view(",\"msg\":"));
    AppendJsonString(out, msg);
    out.append(fields);
    out.append(std::string_view("}\n"));
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

/// spdlog's pattern with the fields appended to the message as key=value.
class TextFormatter final : public spdlog::formatter {
 public:
  TextFormatter() : pattern_(kTextPattern) {}

  void format(const spdlog::details::log_msg& m, spdlog::memory_buf_t& out) override {
    const std::string_view payload(m.payload.data(), m.payload.size());
    if (payload.find(kSep) == std::string_view::npos) return pattern_.format(m, out);
    std::string fields;
    const std::string_view msg = Decode(payload, [&](auto key, auto value, bool number) {
      const bool quote = !number && (value.empty() || value.find_first_of(" =\"") != value.npos);
      fields.append(" ").append(key).append(quote ? "=\"" : "=").append(value);
      if (quote) fields.append("\"");
    });
    const std::string line = std::string(msg) + fields;
    spdlog::details::log_msg copy = m;
    copy.payload = line;
    pattern_.format(copy, out);
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }

 private:
  spdlog::pattern_formatter pattern_;
};

}  // namespace

std::optional<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return std::nullopt;
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format) {
  if (format == LogFormat::kJson) return std::make_unique<JsonFormatter>();
  return std::make_unique<TextFormatter>();
}

void SetupLogging(LogFormat format, spdlog::level::level_enum level) {
  spdlog::sink_ptr sink;
  if (format == LogFormat::kJson) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  }
  auto logger = std::make_shared<spdlog::logger>("", std::move(sink));
  logger->set_formatter(MakeLogFormatter(format));
  logger->set_level(level);
  spdlog::set_default_logger(std::move(logger));
}

void Log(spdlog::level::level_enum level, std::string_view msg, const LogFields& fields) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  std::string payload;
  AppendClean(payload, msg);
  for (const auto& f : fields) {
    payload += kSep;
    AppendClean(payload, f.key);
    payload += f.number ? kNumber : kString;
    AppendClean(payload, f.value);
  }
  logger->log(level, "{}", payload);
}

RateLimitedLog::RateLimitedLog(uint64_t burst, std::chrono::milliseconds interval, Clock clock)
    : burst_(burst), interval_(interval), clock_(std::move(clock)) {}

bool RateLimitedLog::Log(std::string_view key, spdlog::level::level_enum level,
                         std::string_view msg, LogFields fields) {
  constexpr size_t kMaxKeys = 1024;
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(mu_);
    const auto now = clock_();
    auto it = keys_.find(std::string(key));
    if (it == keys_.end()) {
      it = keys_.emplace(keys_.size() < kMaxKeys ? std::string(key) : "(other)", KeyState{}).first;
    }
    KeyState& k = it->second;
    if (k.logged >= burst_ && now - k.last < interval_) {
      ++k.suppressed;
      return false;
    }
    ++k.logged;
    k.last = now;
    suppressed = k.suppressed;
    k.suppressed = 0;
  }
  if (suppressed > 0) fields.emplace_back("suppressed", suppressed);
  fleetflow::Log(level, msg, fields);
  return true;
}

}  // namespace fleetflow
