#include "utc_time.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace fleetflow {

namespace {
constexpr int64_t kSecond = 1'000'000'000;
}  // namespace

std::string FormatUtc(int64_t ns) { return FormatUtc(ns, 3); }

std::string FormatUtc(int64_t ns, int digits) {
  digits = digits < 0 ? 0 : digits > 9 ? 9 : digits;
  const int64_t frac = (ns % kSecond + kSecond) % kSecond;
  const auto s = static_cast<std::time_t>((ns - frac) / kSecond);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (digits > 0) {
    int64_t scaled = frac;  // truncated to `digits`, as the millisecond form always was
    for (int i = digits; i < 9; ++i) scaled /= 10;
    n += std::snprintf(buf + n, sizeof buf - n, ".%0*lld", digits, static_cast<long long>(scaled));
  }
  std::snprintf(buf + n, sizeof buf - n, "Z");
  return buf;
}

std::optional<int64_t> ParseRfc3339(std::string_view text) {
  const std::string s(text);
  std::tm tm{};
  char sep = 0;
  int used = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%c%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &sep, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 7 ||
      (sep != 'T' && sep != 't' && sep != ' ')) {
    return std::nullopt;
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  int64_t ns = static_cast<int64_t>(timegm(&tm)) * kSecond;
  size_t i = static_cast<size_t>(used);
  if (i < s.size() && s[i] == '.') {
    int64_t scale = kSecond / 10;
    const size_t digits = ++i;
    for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
      ns += (s[i] - '0') * scale;
      scale /= 10;
    }
    if (i == digits) return std::nullopt;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int hh = 0, mm = 0, n = 0;
    if (std::sscanf(s.c_str() + i + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || hh > 23 || mm > 59) {
      return std::nullopt;
    }
    const int64_t offset = (hh * 3600 + mm * 60) * kSecond;
    ns += s[i] == '+' ? -offset : offset;
    i += 1 + static_cast<size_t>(n);
  }
  if (i != s.size()) return std::nullopt;
  return ns;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e15) return "?";
  const auto t = static_cast<int64_t>(std::llround(seconds));
  const auto n = [](int64_t v) { return static_cast<long long>(v); };
  char buf[48];
  if (t >= 86400) {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh%02lldm", n(t / 86400), n(t / 3600 % 24),
                  n(t / 60 % 60));
  } else if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", n(t / 3600), n(t / 60 % 60), n(t % 60));
  } else if (t >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", n(t / 60), n(t % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", n(t));
  }
  return buf;
}

}  // namespace fleetflow
