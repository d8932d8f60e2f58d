#include "layout.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <zstd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>

namespace fleetflow::archive {
namespace {

constexpr std::string_view kBase32 = "0123456789bcdefghjkmnpqrstuvwxyz";
constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kNsPerDay = 86'400 * kNsPerSecond;

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/// Civil date of a day number since 1970-01-01 (Howard Hinnant's days_from_civil inverse).
void CivilFromDays(int64_t z, int& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int>(yoe + era * 400 + (m <= 2));
}

int64_t DaysFromCivil(int y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

/// Parses exactly `n` decimal digits.
bool Digits(std::string_view s, size_t at, size_t n, int& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

/// "key=value" → value, when the segment has that key.
std::optional<std::string_view> Hive(std::string_view segment, std::string_view key) {
  if (segment.size() <= key.size() + 1 || segment.substr(0, key.size()) != key ||
      segment[key.size()] != '=') {
    return std::nullopt;
  }
  return segment.substr(key.size() + 1);
}

/// "YYYY-MM-DD" → ns of its midnight UTC; nullopt for a day that is not in the calendar
/// (2026-02-29).
std::optional<int64_t> ParseDay(std::string_view s) {
  static constexpr int kDaysInMonth[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y = 0, m = 0, d = 0;
  if (s.size() != 10 || !Digits(s, 0, 4, y) || s[4] != '-' || !Digits(s, 5, 2, m) || s[7] != '-' ||
      !Digits(s, 8, 2, d) || m < 1 || m > 12 || d < 1) {
    return std::nullopt;
  }
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d > kDaysInMonth[m - 1] + (m == 2 && leap ? 1 : 0)) return std::nullopt;
  return DaysFromCivil(y, static_cast<unsigned>(m), static_cast<unsigned>(d)) * kNsPerDay;
}

}  // namespace

std::string Geohash(double lat, double lon, int precision) {
  double lat_lo = -90, lat_hi = 90, lon_lo = -180, lon_hi = 180;
  std::string hash;
  bool even = true;  // longitude first
  int bit = 0, ch = 0;
  while (static_cast<int>(hash.size()) < precision) {
    double& lo = even ? lon_lo : lat_lo;
    double& hi = even ? lon_hi : lat_hi;
    const double v = even ? lon : lat;
    const double mid = (lo + hi) / 2;
    ch <<= 1;
    if (v >= mid) {
      ch |= 1;
      lo = mid;
    } else {
      hi = mid;
    }
    even = !even;
    if (++bit == 5) {
      hash += kBase32[static_cast<size_t>(ch)];
      bit = 0;
      ch = 0;
    }
  }
  return hash;
}

std::optional<Box> GeohashBox(std::string_view hash) {
  if (hash.empty() || hash.size() > 12) return std::nullopt;
  Box b{-90, 90, -180, 180};
  bool even = true;
  for (const char c : hash) {
    const size_t v = kBase32.find(c);
    if (v == std::string_view::npos) return std::nullopt;
    for (int i = 4; i >= 0; --i) {
      const bool one = (v >> i) & 1;
      double& lo = even ? b.min_lon : b.min_lat;
      double& hi = even ? b.max_lon : b.max_lat;
      const double mid = (lo + hi) / 2;
      (one ? lo : hi) = mid;
      even = !even;
    }
  }
  return b;
}

std::string ChunkFolder(std::string_view top, int64_t ts_ns, Period period, std::string_view cell) {
  const int64_t day = FloorDiv(ts_ns, kNsPerDay);
  int y = 0;
  unsigned m = 0, d = 0;
  CivilFromDays(day, y, m, d);
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "/day=%04d-%02u-%02u", y, m, d);
  std::string folder = std::string(top) + std::string(buf, static_cast<size_t>(n));
  if (period == Period::kHour) {
    n = std::snprintf(buf, sizeof buf, "/hour=%02d",
                      static_cast<int>((ts_ns - day * kNsPerDay) / (3600 * kNsPerSecond)));
    folder.append(buf, static_cast<size_t>(n));
  }
  return folder + "/cell=" + std::string(cell);
}

std::optional<ChunkPlace> ParseChunkPath(std::string_view relative) {
  std::vector<std::string_view> parts;
  for (size_t at = 0; at <= relative.size();) {
    const size_t slash = relative.find('/', at);
    const size_t end = slash == std::string_view::npos ? relative.size() : slash;
    parts.push_back(relative.substr(at, end - at));
    at = end + 1;
  }
  if (parts.size() != 4 && parts.size() != 5) return std::nullopt;
  ChunkPlace place;
  const auto sensor = Hive(parts[0], "sensor");
  const auto row_set = Hive(parts[0], "rows");
  const auto day = Hive(parts[1], "day");
  const auto cell = Hive(parts[parts.size() - 2], "cell");
  const std::string_view name = parts.back();
  if ((!sensor && !row_set) || !day || !cell || name.size() <= kChunkSuffix.size() ||
      name.substr(name.size() - kChunkSuffix.size()) != kChunkSuffix) {
    return std::nullopt;
  }
  const auto start = ParseDay(*day);
  if (!start) return std::nullopt;
  if (sensor) {
    place.sensor = std::string(*sensor);
  } else {
    place.row_set = std::string(*row_set);
  }
  place.period_start_ns = *start;
  place.period_ns = PeriodNs(Period::kDay);
  if (parts.size() == 5) {
    const auto hour = Hive(parts[2], "hour");
    int h = 0;
    if (!hour || hour->size() != 2 || !Digits(*hour, 0, 2, h) || h > 23) return std::nullopt;
    place.period_start_ns += h * 3600 * kNsPerSecond;
    place.period_ns = PeriodNs(Period::kHour);
  }
  if (*cell != kNoCell && !GeohashBox(*cell)) return std::nullopt;
  place.cell = std::string(*cell);
  place.name = std::string(name);
  return place;
}

std::optional<int64_t> DayOf(std::string_view folder) {
  const auto day = Hive(folder, "day");
  return day ? ParseDay(*day) : std::nullopt;
}

std::string ToJson(const Summary& s) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("version");
  w.Int(s.version);
  const bool rows = !s.row_set.empty();
  w.Key(rows ? "row_set" : "sensor");
  const std::string& series = rows ? s.row_set : s.sensor;
  w.String(series.c_str(), static_cast<rapidjson::SizeType>(series.size()));
  w.Key("columns");
  if (rows) {
    w.String(s.columns.c_str(), static_cast<rapidjson::SizeType>(s.columns.size()));
  } else {
    w.String(s.positions ? "vehicle_id,ts,lat,lon" : "vehicle_id,ts,value");
  }
  std::string t;
  AppendTime(t, s.first_ns);
  w.Key("first_ts");
  w.String(t.c_str(), static_cast<rapidjson::SizeType>(t.size()));
  t.clear();
  AppendTime(t, s.last_ns);
  w.Key("last_ts");
  w.String(t.c_str(), static_cast<rapidjson::SizeType>(t.size()));
  if (s.box) {
    w.Key("bbox");  // [min_lon, min_lat, max_lon, max_lat], GeoJSON's order
    w.StartArray();
    w.Double(s.box->min_lon);
    w.Double(s.box->min_lat);
    w.Double(s.box->max_lon);
    w.Double(s.box->max_lat);
    w.EndArray();
  }
  w.Key(rows ? "rows" : "samples");
  w.Uint64(s.samples);
  w.Key("bytes");
  w.Uint64(s.bytes);
  w.Key("partition");
  w.Uint(s.partition);
  w.Key("first_sequence");
  w.Uint64(s.first_sequence);
  w.Key("last_sequence");
  w.Uint64(s.last_sequence);
  w.Key("vehicles");
  w.StartArray();
  for (const std::string& v : s.vehicles) {
    w.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
  }
  w.EndArray();
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize()) + "\n";
}

std::optional<Summary> ParseSummary(std::string_view json, std::string* why) {
  const auto fail = [&](const std::string& reason) -> std::optional<Summary> {
    if (why) *why = reason;
    return std::nullopt;
  };
  rapidjson::Document d;
  // Full precision: the bbox reads back as the doubles written, which a finder compares with
  // an area (the default parsing may be off by a unit in the last place).
  d.Parse<rapidjson::kParseFullPrecisionFlag>(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) return fail("not a JSON object");
  const auto str = [&](const char* k) -> std::optional<std::string> {
    if (!d.HasMember(k) || !d[k].IsString()) return std::nullopt;
    return std::string(d[k].GetString(), d[k].GetStringLength());
  };
  const auto u64 = [&](const char* k) -> std::optional<uint64_t> {
    if (!d.HasMember(k) || !d[k].IsUint64()) return std::nullopt;
    return d[k].GetUint64();
  };
  if (!d.HasMember("version") || !d["version"].IsInt() || d["version"].GetInt() != 1) {
    return fail("not a summary of version 1");
  }
  Summary s;
  const bool rows = d.HasMember("row_set");
  const auto series = str(rows ? "row_set" : "sensor"), columns = str("columns"),
             first = str("first_ts"), last = str("last_ts");
  const auto samples = u64(rows ? "rows" : "samples"), bytes = u64("bytes"),
             partition = u64("partition"), first_seq = u64("first_sequence"),
             last_seq = u64("last_sequence");
  if (!series || !columns || !first || !last || !samples || !bytes || !partition || !first_seq ||
      !last_seq) {
    return fail("a field is missing or of the wrong type");
  }
  const auto first_ns = ParseTime(*first), last_ns = ParseTime(*last);
  if (!first_ns || !last_ns) return fail("first_ts or last_ts is not a time");
  if (rows) {
    s.row_set = *series;
    s.columns = *columns;
    s.positions = d.HasMember("bbox");
  } else {
    s.sensor = *series;
    s.positions = *columns == "vehicle_id,ts,lat,lon";
    if (!s.positions && *columns != "vehicle_id,ts,value") return fail("unknown columns");
  }
  s.first_ns = *first_ns;
  s.last_ns = *last_ns;
  s.samples = *samples;
  s.bytes = *bytes;
  s.partition = static_cast<uint32_t>(*partition);
  s.first_sequence = *first_seq;
  s.last_sequence = *last_seq;
  if (d.HasMember("bbox")) {
    const auto& b = d["bbox"];
    if (!b.IsArray() || b.Size() != 4 || !b[0].IsNumber() || !b[1].IsNumber() || !b[2].IsNumber() ||
        !b[3].IsNumber()) {
      return fail("bbox is not four numbers");
    }
    s.box = Box{b[1].GetDouble(), b[3].GetDouble(), b[0].GetDouble(), b[2].GetDouble()};
  }
  if (!d.HasMember("vehicles") || !d["vehicles"].IsArray()) return fail("vehicles is missing");
  for (const auto& v : d["vehicles"].GetArray()) {
    if (!v.IsString()) return fail("a vehicle is not a string");
    s.vehicles.emplace_back(v.GetString(), v.GetStringLength());
  }
  return s;
}

std::string SummaryPathOf(std::string_view chunk_path) {
  std::string_view base = chunk_path;
  if (base.size() >= kChunkSuffix.size() &&
      base.substr(base.size() - kChunkSuffix.size()) == kChunkSuffix) {
    base.remove_suffix(kChunkSuffix.size());
  }
  return std::string(base) + std::string(kSummarySuffix);
}

std::string_view CsvHeader(bool positions) {
  return positions ? "vehicle_id,ts,lat,lon\n" : "vehicle_id,ts,value\n";
}

void AppendTime(std::string& out, int64_t ns) {
  // Consecutive samples mostly share their second: its text is kept (per thread) and only the
  // microseconds are written for each (the archive writes a time per line).
  struct Second {
    int64_t second = INT64_MIN;
    char text[20];  // "2026-11-28T10:00:00."
  };
  thread_local Second cache;
  const int64_t second = FloorDiv(ns, kNsPerSecond);
  if (second != cache.second) {
    const int64_t day = FloorDiv(second, 86'400);
    const int64_t s = second - day * 86'400;
    int y = 0;
    unsigned m = 0, d = 0;
    CivilFromDays(day, y, m, d);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.", y, m, d,
                  static_cast<int>(s / 3600), static_cast<int>(s / 60 % 60),
                  static_cast<int>(s % 60));
    std::memcpy(cache.text, buf, sizeof cache.text);
    cache.second = second;
  }
  auto us = static_cast<uint32_t>((ns - second * kNsPerSecond) / 1000);
  char tail[7] = {'0', '0', '0', '0', '0', '0', 'Z'};
  for (int i = 5; i >= 0; --i, us /= 10) tail[i] = static_cast<char>('0' + us % 10);
  out.append(cache.text, sizeof cache.text);
  out.append(tail, sizeof tail);
}

std::optional<int64_t> ParseTime(std::string_view t) {
  // 2026-11-28T10:00:00.123456Z
  int hh = 0, mm = 0, ss = 0, us = 0;
  if (t.size() != 27 || t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' ||
      t[26] != 'Z' || !Digits(t, 11, 2, hh) || !Digits(t, 14, 2, mm) || !Digits(t, 17, 2, ss) ||
      !Digits(t, 20, 6, us) || hh > 23 || mm > 59 || ss > 60) {
    return std::nullopt;
  }
  const auto day = ParseDay(t.substr(0, 10));
  if (!day) return std::nullopt;
  return *day + (int64_t{hh} * 3600 + mm * 60 + ss) * kNsPerSecond + int64_t{us} * 1000;
}

void AppendFixed(std::string& out, double v, int decimals) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals);
  if (r.ec != std::errc()) {
    // Too long for the fixed form (|v| above about 1e55): its shortest text.
    const auto shortest = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, static_cast<size_t>(shortest.ptr - buf));
    return;
  }
  char* end = r.ptr;
  if (decimals > 0) {
    while (end[-1] == '0') --end;
    if (end[-1] == '.') --end;
  }
  std::string_view text(buf, static_cast<size_t>(end - buf));
  if (text == "-0") text = "0";
  out.append(text);
}

void AppendSignificant(std::string& out, double v, int digits) {
  char buf[64];
  // The value rounded to `digits` significant digits, then its shortest round-trip text.
  const auto r1 = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific,
                                std::max(0, digits - 1));
  double rounded = 0;
  std::from_chars(buf, r1.ptr, rounded);
  if (rounded == 0) rounded = 0;  // -0 as 0, as AppendFixed writes it
  const auto r2 = std::to_chars(buf, buf + sizeof buf, rounded);
  out.append(buf, static_cast<size_t>(r2.ptr - buf));
}

std::string Compress(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::optional<std::string> Decompress(std::string_view data, std::string* why) {
  const auto fail = [&](const std::string& reason) -> std::optional<std::string> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const unsigned long long size = ZSTD_getFrameContentSize(data.data(), data.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) return fail("not a zstd frame");
  // A header may claim any size (a corrupt one, a terabyte): room is made at once only for what
  // CSV compresses to, else the output grows as the blocks are decompressed.
  constexpr unsigned long long kAtOnceRatio = 256;
  if (size != ZSTD_CONTENTSIZE_UNKNOWN && size <= data.size() * kAtOnceRatio + (1u << 20)) {
    std::string out(size, '\0');
    const size_t n = ZSTD_decompress(out.data(), out.size(), data.data(), data.size());
    if (ZSTD_isError(n)) return fail(std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n != size) return fail("zstd: the frame is shorter than it says");
    return out;
  }
  // A frame written by a streaming compressor (another tool), or one claiming much: decompress
  // in steps.
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  size_t last = 0;
  for (;;) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    last = ZSTD_decompressStream(ctx.get(), &o, &in);
    if (ZSTD_isError(last)) return fail(std::string("zstd: ") + ZSTD_getErrorName(last));
    out.append(buf.data(), o.pos);
    // With all the input read, the decoder may still hold output: it is done when it no longer
    // fills the buffer.
    if (in.pos == in.size && o.pos < o.size) break;
  }
  if (last != 0) return fail("zstd: the frame is cut short");
  if (size != ZSTD_CONTENTSIZE_UNKNOWN && out.size() != size) {
    return fail("zstd: the frame is not of the size it says");
  }
  return out;
}

}  // namespace fleetflow::archive
