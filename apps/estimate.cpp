#include "estimate.hpp"

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "estimate_figures.hpp"

namespace fleetflow {
namespace {

constexpr int kExitInvalid = 2;

/// A bad input: its message, and exit 2.
struct Bad {
  std::string message;
};

/// A measured figure as the figures file holds it.
struct Figure {
  std::string name, unit, bench, date, commit, note;
  double value = 0;
};

std::string Str(const rapidjson::Value& o, const char* key) {
  return o.HasMember(key) && o[key].IsString() ? o[key].GetString() : "";
}

std::map<std::string, Figure> ParseFigures(const std::string& json, const std::string& source) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("figures") || !d["figures"].IsArray()) {
    throw Bad{"estimate: " + source +
              " is not a figures file (a JSON object with an array 'figures', as the "
              "benchmarks write docs/bench/storage_figures.json)"};
  }
  std::map<std::string, Figure> out;
  for (const auto& f : d["figures"].GetArray()) {
    if (!f.IsObject() || !f.HasMember("name") || !f["name"].IsString() || !f.HasMember("value") ||
        !f["value"].IsNumber()) {
      throw Bad{"estimate: " + source + ": a figure without a name or a numeric value"};
    }
    Figure x{Str(f, "name"),   Str(f, "unit"), Str(f, "bench"),       Str(f, "date"),
             Str(f, "commit"), Str(f, "note"), f["value"].GetDouble()};
    if (!std::isfinite(x.value) || x.value < 0) {
      throw Bad{"estimate: " + source + ": figure " + x.name + " is negative"};
    }
    out[x.name] = x;
  }
  return out;
}

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, sep)) {
    const auto a = item.find_first_not_of(' ');
    const auto b = item.find_last_not_of(' ');
    out.push_back(a == std::string::npos ? "" : item.substr(a, b - a + 1));
  }
  return out;
}

/// A finite number, all of `text`; nullopt otherwise.
std::optional<double> Number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

/// "7d", "2w", "7y" (365.25 days, rounded to whole days) into days.
int64_t Days(const std::string& option, const std::string& text) {
  const std::string bad = "estimate: " + option + " '" + text +
                          "': a duration is a whole number of days, weeks or years (7d, 2w, "
                          "7y; a year is 365.25 days, rounded: 7y = 2557 days)";
  if (text.size() < 2) throw Bad{bad};
  const char unit = text.back();
  const std::string digits = text.substr(0, text.size() - 1);
  if (digits.find_first_not_of("0123456789") != std::string::npos) {
    throw Bad{digits.starts_with('-')
                  ? "estimate: " + option + " '" + text + "': a retention cannot be negative"
                  : bad};
  }
  if (digits.size() > 6) throw Bad{bad};
  const int64_t n = std::stoll(digits);
  switch (unit) {
    case 'd':
      return n;
    case 'w':
      return 7 * n;
    case 'y':
      return std::llround(static_cast<double>(n) * 365.25);
    default:
      throw Bad{bad};
  }
}

/// 3 significant digits and a decimal (SI) prefix: 12.4 MB.
std::string Bytes(double b) {
  static const char* const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (std::fabs(b) >= 999.5 && u < 6) {
    b /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0 || std::fabs(b) >= 99.95) {
    std::snprintf(buf, sizeof buf, "%.0f %s", b, units[u]);
  } else if (std::fabs(b) >= 9.995) {
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  }
  return buf;
}

/// A count with 3 significant digits at most: 86 400, 1.67, 0.278.
std::string Count(double v) {
  char buf[48];
  if (std::fabs(v) >= 1000) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    std::string s = buf, out;
    const size_t start = s[0] == '-' ? 1 : 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (i > start && (s.size() - i) % 3 == 0) out += ' ';
      out += s[i];
    }
    return out;
  }
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

/// One tier of storage.
struct Tier {
  std::string name;   // "1 s rows"
  std::string where;  // "vehicle_telemetry", "archive"
  std::string unit = "vehicle-day";
  double rows_per_unit = 0;  // rows (samples for the archive) per vehicle-day (cell-day)
  double bytes_per_unit = 0;
  double bytes_per_day = 0;  // the fleet's
  double extra_per_day = 0;  // the archive's summaries
  int64_t kept_days = 0;
  bool database = true;
  double total() const { return bytes_per_day * static_cast<double>(kept_days); }
};

struct Plan {
  std::vector<std::pair<std::string, double>> rates;  // in --rate's order
  std::vector<std::string> archived;
  std::vector<Tier> tiers;
  double db_rows_per_s = 0, db_bytes_per_s = 0;
  double archive_samples_per_s = 0, archive_bytes_per_s = 0;
  double chunks_per_day = 0, cells_per_flush = 0, flushes_per_day = 0;
  bool rows_archived = false;
  double archive_rows_per_s = 0, row_bytes_per_s = 0, row_chunks_per_day = 0;
  std::vector<Figure> used;
};

Plan Compute(const EstimateArgs& a, const std::map<std::string, Figure>& figures,
             const std::string& source) {
  if (a.vehicles < 0) throw Bad{"estimate: --vehicles cannot be negative"};
  if (!(a.hours_per_day > 0 && a.hours_per_day <= 24)) {
    throw Bad{
        "estimate: --hours-per-day is the driving hours of a vehicle a day: more than 0, "
        "at most 24"};
  }
  if (!(a.cells >= 0) || !std::isfinite(a.cells)) {
    throw Bad{"estimate: --cells cannot be negative"};
  }
  if (a.partitions < 1) throw Bad{"estimate: --partitions must be at least 1"};
  if (a.flush_ms < 100) throw Bad{"estimate: --flush-ms must be at least 100 (the archive's)"};

  Plan p;
  std::vector<std::string> known;
  for (const auto& [name, f] : figures) {
    const std::string prefix = "archive.", suffix = ".bytes_per_sample";
    if (name.starts_with(prefix) && name.ends_with(suffix) &&
        name.size() > prefix.size() + suffix.size()) {
      known.push_back(name.substr(prefix.size(), name.size() - prefix.size() - suffix.size()));
    }
  }
  std::string known_list;
  for (const auto& k : known) known_list += (known_list.empty() ? "" : ", ") + k;
  const auto is_known = [&](const std::string& s) {
    return std::find(known.begin(), known.end(), s) != known.end();
  };
  for (const std::string& item : Split(a.rate, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      throw Bad{"estimate: --rate '" + item + "': give sensor=Hz, e.g. gps=10"};
    }
    const std::string name = item.substr(0, eq);
    const auto hz = Number(item.substr(eq + 1));
    if (!is_known(name)) {
      throw Bad{"estimate: unknown sensor '" + name + "' in --rate: the figures (" + source +
                ") know " + known_list};
    }
    if (!hz || *hz < 0) {
      throw Bad{"estimate: --rate " + name + "='" + item.substr(eq + 1) +
                "': a rate is a number of samples per second, not negative"};
    }
    for (const auto& [n, r] : p.rates) {
      if (n == name) throw Bad{"estimate: sensor '" + name + "' given twice in --rate"};
    }
    p.rates.emplace_back(name, *hz);
  }
  if (p.rates.empty()) throw Bad{"estimate: --rate names no sensor"};
  if (a.archive != "none" && !a.archive.empty()) {
    for (const std::string& name : Split(a.archive, ',')) {
      if (!is_known(name)) {
        throw Bad{"estimate: unknown sensor '" + name + "' in --archive: the figures (" + source +
                  ") know " + known_list};
      }
      if (std::none_of(p.rates.begin(), p.rates.end(),
                       [&](const auto& r) { return r.first == name; })) {
        throw Bad{"estimate: sensor '" + name + "' is archived but has no --rate"};
      }
      if (std::find(p.archived.begin(), p.archived.end(), name) != p.archived.end()) {
        throw Bad{"estimate: sensor '" + name + "' given twice in --archive"};
      }
      p.archived.push_back(name);
    }
  }
  const int64_t archive_days = Days("--archive-retention", a.archive_retention);
  p.rows_archived = a.row_archive != "none";
  const int64_t row_days = p.rows_archived ? Days("--row-archive", a.row_archive) : 0;
  const int64_t hot_days = Days("--hot-retention", a.hot_retention);
  const int64_t minute_days = Days("--minute-retention", a.minute_retention);
  const int64_t hour_days = Days("--hour-retention", a.hour_retention);
  const int64_t cell_days = Days("--cell-retention", a.cell_retention);

  const auto figure = [&](const std::string& name) {
    const auto it = figures.find(name);
    if (it == figures.end()) {
      throw Bad{"estimate: the figures (" + source + ") lack " + name +
                " (ff-bench-storage --figures and ff-bench-archive --figures write them)"};
    }
    if (std::none_of(p.used.begin(), p.used.end(),
                     [&](const Figure& f) { return f.name == name; })) {
      p.used.push_back(it->second);
    }
    return it->second.value;
  };

  const double v = static_cast<double>(a.vehicles);
  const double h = a.hours_per_day;
  const auto table = [&](const std::string& tier, const std::string& name, double rows,
                         int64_t days) {
    Tier t;
    t.name = tier;
    t.where = name;
    t.rows_per_unit = rows;
    t.bytes_per_unit = rows * figure("db." + name + ".bytes_per_row");
    t.bytes_per_day = t.bytes_per_unit * v;
    t.kept_days = days;
    p.db_rows_per_s += rows * v / 86'400;
    p.db_bytes_per_s += t.bytes_per_day / 86'400;
    p.tiers.push_back(t);
  };
  table("1 s rows", "vehicle_telemetry", 3600 * h, hot_days);
  table("1 min rows", "vehicle_stats_1m", 60 * h, minute_days);
  table("1 h rows", "vehicle_stats_1h", h, hour_days);
  {
    Tier t;
    t.name = "fleet per cell, 1 min";
    t.where = "fleet_cells_1m";
    t.unit = "cell-day";
    t.rows_per_unit = 1440;
    t.bytes_per_unit = 1440 * figure("db.fleet_cells_1m.bytes_per_row");
    t.bytes_per_day = t.bytes_per_unit * a.cells;
    t.kept_days = cell_days;
    p.db_rows_per_s += 1440 * a.cells / 86'400;
    p.db_bytes_per_s += t.bytes_per_day / 86'400;
    p.tiers.push_back(t);
  }
  // The archived rows: a chunk per partition, hour and cell.
  const double active = v * h / 24 / static_cast<double>(a.partitions);
  const auto cells_of = [&](double vehicles) {
    return a.cells >= 1 ? a.cells * (1 - std::pow(1 - 1 / a.cells, vehicles))
                        : std::min(vehicles, 1.0);
  };
  if (p.rows_archived) {
    Tier t;
    t.name = "archived 1 s rows";
    t.where = "row_archive";
    t.database = false;
    t.kept_days = row_days;
    t.rows_per_unit = 3600 * h;
    t.bytes_per_unit = t.rows_per_unit * figure("archive.rows.bytes_per_row");
    t.bytes_per_day = t.bytes_per_unit * v;
    p.row_chunks_per_day =
        a.vehicles == 0 ? 0 : static_cast<double>(a.partitions) * 24 * cells_of(active);
    if (p.row_chunks_per_day > 0) {
      t.extra_per_day = p.row_chunks_per_day * figure("archive.rows.summary_bytes_per_chunk");
      t.bytes_per_day += t.extra_per_day;
    }
    p.archive_rows_per_s = t.rows_per_unit * v / 86'400;
    p.row_bytes_per_s = t.bytes_per_day / 86'400;
    p.tiers.push_back(t);
  }
  Tier arch;
  arch.name = "archive";
  arch.where = "zstd CSV chunks";
  arch.database = false;
  arch.kept_days = archive_days;
  for (const std::string& s : p.archived) {
    double hz = 0;
    for (const auto& [n, r] : p.rates) {
      if (n == s) hz = r;
    }
    const double samples = hz * 3600 * h;
    arch.rows_per_unit += samples;
    arch.bytes_per_unit += samples * figure("archive." + s + ".bytes_per_sample");
  }
  // Chunks: one per sensor, cell and flush of each partition; the fleet driving evenly over the
  // day, each vehicle in one cell during a flush, the vehicles of a partition spread evenly
  // over the cells (the expected cells n vehicles occupy among C: C (1 - (1 - 1/C)^n)).
  p.flushes_per_day = 86'400'000.0 / static_cast<double>(a.flush_ms);
  p.cells_per_flush = cells_of(active);
  p.chunks_per_day = p.archived.empty() || a.vehicles == 0
                         ? 0
                         : static_cast<double>(a.partitions) * p.flushes_per_day *
                               static_cast<double>(p.archived.size()) * p.cells_per_flush;
  arch.bytes_per_day = arch.bytes_per_unit * v;
  if (p.chunks_per_day > 0) {
    arch.extra_per_day = p.chunks_per_day * figure("archive.summary_bytes_per_chunk");
    arch.bytes_per_day += arch.extra_per_day;
  }
  p.archive_samples_per_s = arch.rows_per_unit * v / 86'400;
  p.archive_bytes_per_s = arch.bytes_per_day / 86'400;
  p.tiers.push_back(arch);
  return p;
}

std::string DaysText(int64_t d) {
  if (d == 0) return "not kept";
  return std::to_string(d) + (d == 1 ? " day" : " days");
}

void PrintTable(const EstimateArgs& a, const Plan& p, const std::string& source,
                std::ostream& out) {
  std::string rates, archived;
  for (const auto& [n, r] : p.rates)
    rates += (rates.empty() ? "" : ", ") + n + " " + Count(r) + " Hz";
  for (const auto& s : p.archived) archived += (archived.empty() ? "" : ", ") + s;
  out << "fleetflow estimate: " << Count(static_cast<double>(a.vehicles)) << " vehicles, driving "
      << Count(a.hours_per_day) << " h a day (24: always on); " << rates
      << "; archived: " << (archived.empty() ? "none" : archived)
      << (p.rows_archived ? " and the 1 s rows" : "") << "; " << Count(a.cells)
      << " occupied cells (fleet_cells_1m)\n\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-38s %16s %13s %10s %15s\n", "tier", "per vehicle-day",
                "fleet per day", "kept", "total kept");
  out << line;
  double db_day = 0, db_total = 0, all_day = 0, all_total = 0;
  for (const Tier& t : p.tiers) {
    const std::string label = t.name + " (" + t.where + ")";
    const std::string per =
        t.unit == "vehicle-day" ? Bytes(t.bytes_per_unit) : Bytes(t.bytes_per_unit) + "/cell";
    std::snprintf(line, sizeof line, "%-38s %16s %13s %10s %15s\n", label.c_str(), per.c_str(),
                  Bytes(t.bytes_per_day).c_str(), DaysText(t.kept_days).c_str(),
                  Bytes(t.total()).c_str());
    out << line;
    if (t.database) {
      db_day += t.bytes_per_day;
      db_total += t.total();
    }
    all_day += t.bytes_per_day;
    all_total += t.total();
  }
  std::snprintf(line, sizeof line, "%-38s %16s %13s %10s %15s\n", "database (the four tables)", "",
                Bytes(db_day).c_str(), "", Bytes(db_total).c_str());
  out << line;
  std::snprintf(line, sizeof line, "%-38s %16s %13s %10s %15s\n", "total", "",
                Bytes(all_day).c_str(), "", Bytes(all_total).c_str());
  out << line;
  const Tier& arch = p.tiers.back();
  out << "\n'total kept': at steady state, once every tier holds its retention. Rows and "
         "samples exist while a vehicle drives: "
      << Count(a.hours_per_day) << " of 24 h a day here (--hours-per-day).\n";
  out << "\nWrite rates (averaged over the day; while every vehicle drives: x 24 / "
         "hours-per-day):\n";
  out << "  database: " << Count(p.db_rows_per_s) << " rows/s (1 s rows "
      << Count(static_cast<double>(a.vehicles) * a.hours_per_day / 24) << ", minutes "
      << Count(static_cast<double>(a.vehicles) * a.hours_per_day / 24 / 60) << ", hours "
      << Count(static_cast<double>(a.vehicles) * a.hours_per_day / 24 / 3600) << ", cells "
      << Count(a.cells / 60) << "), " << Bytes(p.db_bytes_per_s) << "/s on disk\n";
  out << "  archive: " << Count(p.archive_samples_per_s) << " samples/s, "
      << Bytes(p.archive_bytes_per_s) << "/s on disk (summaries " << Bytes(arch.extra_per_day)
      << "/day); " << Count(p.chunks_per_day) << " chunks/day = " << a.partitions
      << " partitions x " << Count(p.flushes_per_day) << " flushes (flush_ms " << a.flush_ms
      << ") x " << p.archived.size() << " sensors x " << Count(p.cells_per_flush)
      << " cells per partition and flush\n"
      << "    (assumed: each vehicle in one cell during a flush, a partition's vehicles spread "
         "evenly over the "
      << Count(a.cells) << " cells, driving spread over the day; hour boundaries ignored)\n";
  if (p.rows_archived) {
    out << "  archived rows: " << Count(p.archive_rows_per_s) << " rows/s, "
        << Bytes(p.row_bytes_per_s) << "/s on disk; " << Count(p.row_chunks_per_day)
        << " chunks/day = " << a.partitions << " partitions x 24 hours x "
        << Count(p.row_chunks_per_day / 24 / static_cast<double>(a.partitions))
        << " cells per partition and hour (each vehicle in one cell an hour: the least)\n";
  }
  out << "\nFigures used (" << source << "):\n";
  for (const Figure& f : p.used) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", f.value);
    out << "  " << f.name << " " << value << " " << f.unit << " (" << f.bench << ", " << f.date
        << (f.commit.empty() ? "" : ", " + f.commit) << ")\n";
  }
  out << "The archive's bytes per sample were measured at the rates gps 10, speed 30, soc 5, "
         "torque 20 Hz; other rates compress differently. Bytes are decimal: 1 kB = 1000 B.\n";
}

void PrintJson(const EstimateArgs& a, const Plan& p, const std::string& source, std::ostream& out) {
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  w.StartObject();
  w.Key("inputs");
  w.StartObject();
  w.Key("vehicles");
  w.Int64(a.vehicles);
  w.Key("hours_per_day");
  w.Double(a.hours_per_day);
  w.Key("rates_hz");
  w.StartObject();
  for (const auto& [n, r] : p.rates) {
    w.Key(n.c_str());
    w.Double(r);
  }
  w.EndObject();
  w.Key("archived");
  w.StartArray();
  for (const auto& s : p.archived) w.String(s.c_str());
  w.EndArray();
  w.Key("cells");
  w.Double(a.cells);
  w.Key("partitions");
  w.Int64(a.partitions);
  w.Key("flush_ms");
  w.Int64(a.flush_ms);
  w.EndObject();
  w.Key("tiers");
  w.StartArray();
  double db_day = 0, db_total = 0, all_day = 0, all_total = 0;
  for (const Tier& t : p.tiers) {
    w.StartObject();
    w.Key("tier");
    w.String(t.name.c_str());
    w.Key(t.database ? "table" : "store");
    w.String(t.where.c_str());
    const bool cell = t.unit == "cell-day";
    w.Key(t.database || t.where == "row_archive"
              ? (cell ? "rows_per_cell_day" : "rows_per_vehicle_day")
              : "samples_per_vehicle_day");
    w.Double(t.rows_per_unit);
    w.Key(cell ? "bytes_per_cell_day" : "bytes_per_vehicle_day");
    w.Double(t.bytes_per_unit);
    w.Key("bytes_per_day");
    w.Double(t.bytes_per_day);
    if (!t.database) {
      w.Key("summary_bytes_per_day");
      w.Double(t.extra_per_day);
    }
    w.Key("kept_days");
    w.Int64(t.kept_days);
    w.Key("bytes_total");
    w.Double(t.total());
    w.EndObject();
    if (t.database) {
      db_day += t.bytes_per_day;
      db_total += t.total();
    }
    all_day += t.bytes_per_day;
    all_total += t.total();
  }
  w.EndArray();
  w.Key("database");
  w.StartObject();
  w.Key("bytes_per_day");
  w.Double(db_day);
  w.Key("bytes_total");
  w.Double(db_total);
  w.Key("rows_per_s");
  w.Double(p.db_rows_per_s);
  w.Key("bytes_per_s");
  w.Double(p.db_bytes_per_s);
  w.EndObject();
  w.Key("archive");
  w.StartObject();
  w.Key("bytes_per_day");
  w.Double(p.tiers.back().bytes_per_day);
  w.Key("bytes_total");
  w.Double(p.tiers.back().total());
  w.Key("samples_per_s");
  w.Double(p.archive_samples_per_s);
  w.Key("bytes_per_s");
  w.Double(p.archive_bytes_per_s);
  w.Key("chunks_per_day");
  w.Double(p.chunks_per_day);
  w.Key("cells_per_partition_flush");
  w.Double(p.cells_per_flush);
  w.Key("assumption");
  w.String(
      "a chunk per partition, flush, archived sensor and cell; each vehicle in one cell during a "
      "flush, a partition's vehicles spread evenly over the cells, driving spread over the day");
  w.EndObject();
  if (p.rows_archived) {
    const Tier& rows = p.tiers[p.tiers.size() - 2];
    w.Key("row_archive");
    w.StartObject();
    w.Key("bytes_per_day");
    w.Double(rows.bytes_per_day);
    w.Key("bytes_total");
    w.Double(rows.total());
    w.Key("rows_per_s");
    w.Double(p.archive_rows_per_s);
    w.Key("bytes_per_s");
    w.Double(p.row_bytes_per_s);
    w.Key("chunks_per_day");
    w.Double(p.row_chunks_per_day);
    w.EndObject();
  }
  w.Key("total");
  w.StartObject();
  w.Key("bytes_per_day");
  w.Double(all_day);
  w.Key("bytes_total");
  w.Double(all_total);
  w.EndObject();
  w.Key("figures_source");
  w.String(source.c_str());
  w.Key("figures");
  w.StartArray();
  for (const Figure& f : p.used) {
    w.StartObject();
    w.Key("name");
    w.String(f.name.c_str());
    w.Key("value");
    w.Double(f.value);
    w.Key("unit");
    w.String(f.unit.c_str());
    w.Key("bench");
    w.String(f.bench.c_str());
    w.Key("date");
    w.String(f.date.c_str());
    w.Key("commit");
    w.String(f.commit.c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  out << sb.GetString() << '\n';
}

}  // namespace

CLI::App* AddEstimateCommand(CLI::App& app, EstimateArgs& args) {
  auto* cmd = app.add_subcommand(
      "estimate",
      "A cost projection from measured figures: storage per vehicle-day, per day and in total "
      "of each tier (1 s rows, 1 min and 1 h statistics, the fleet's rows per cell, the "
      "archived rows, the archive), and the database and archive write rates, from the bytes per "
      "row and per "
      "sample the benchmarks measured (named in the output).");
  cmd->add_option("--vehicles", args.vehicles, "Vehicles of the fleet")->capture_default_str();
  cmd->add_option("--rate", args.rate,
                  "The sensors and their rates in Hz, sensor=Hz comma-separated (the sensors the "
                  "figures know)")
      ->capture_default_str();
  cmd->add_option("--archive", args.archive,
                  "The sensors the archive operator keeps, comma-separated, or none")
      ->capture_default_str();
  cmd->add_option("--archive-retention", args.archive_retention,
                  "The archive's retention: days, weeks or years (7d, 2w, 7y; a year is 365.25 "
                  "days, rounded); pipelines/jetstream-tiers.json: 2557 days")
      ->capture_default_str();
  cmd->add_option("--row-archive", args.row_archive,
                  "The archived 1 s rows' retention (row_archive; jetstream-tiers.json: 2557 "
                  "days), or none")
      ->capture_default_str();
  cmd->add_option("--hot-retention", args.hot_retention,
                  "The 1 s rows' retention (vehicle_telemetry; jetstream-tiers.json: 7 days)")
      ->capture_default_str();
  cmd->add_option("--minute-retention", args.minute_retention,
                  "The 1 min statistics' retention (vehicle_stats_1m; jetstream-tiers.json: 90 "
                  "days)")
      ->capture_default_str();
  cmd->add_option("--hour-retention", args.hour_retention,
                  "The 1 h statistics' retention (vehicle_stats_1h; jetstream-tiers.json sets "
                  "none, kept: counted here as long as the archive's default)")
      ->capture_default_str();
  cmd->add_option("--cell-retention", args.cell_retention,
                  "The fleet's rows per cell and minute: retention (fleet_cells_1m; "
                  "jetstream-tiers.json: 90 days)")
      ->capture_default_str();
  cmd->add_option("--cells", args.cells,
                  "Geohash cells of about 5 km the fleet occupies (rows of fleet_cells_1m a "
                  "minute; also the archive's cells)")
      ->capture_default_str();
  cmd->add_option("--hours-per-day", args.hours_per_day,
                  "Driving hours of a vehicle a day (24: always on, sending all day)")
      ->capture_default_str();
  cmd->add_option("--partitions", args.partitions,
                  "Partitions of the stream (the archive writes a chunk per partition, flush, "
                  "sensor and cell)")
      ->capture_default_str();
  cmd->add_option("--flush-ms", args.flush_ms, "The archive's flush_ms")->capture_default_str();
  cmd->add_option("--figures", args.figures,
                  "A figures file to use instead of the one compiled in "
                  "(docs/bench/storage_figures.json, as ff-bench-storage --figures and "
                  "ff-bench-archive --figures write it)");
  cmd->add_option("--format", args.format, "table or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "json"}));
  cmd->footer(
      "Exit status 0; 2 for a bad input (an unknown sensor, a negative number, a bad duration, "
      "a figures file that cannot be read or lacks a figure).\n\nExample: 100 000 vehicles "
      "driving 10 h a day, 7 years of positions and speed only:\n  fleetflow estimate "
      "--vehicles 100000 --hours-per-day 10 --archive gps,speed \\\n    --archive-retention 7y "
      "--cells 10000");
  return cmd;
}

int Estimate(const EstimateArgs& args, std::ostream& out, std::ostream& err) {
  try {
    std::string json = estimate_figures::kJson;
    std::string source = std::string(estimate_figures::kSource) + ", compiled in";
    if (!args.figures.empty()) {
      std::ifstream in(args.figures);
      if (!in) throw Bad{"estimate: cannot read --figures " + args.figures};
      std::stringstream text;
      text << in.rdbuf();
      json = text.str();
      source = args.figures;
    }
    const auto figures = ParseFigures(json, source);
    if (args.format != "table" && args.format != "json") {
      throw Bad{"estimate: --format is table or json"};
    }
    const Plan plan = Compute(args, figures, source);
    if (args.format == "json") {
      PrintJson(args, plan, source, out);
    } else {
      PrintTable(args, plan, source, out);
    }
    return 0;
  } catch (const Bad& b) {
    err << b.message << '\n';
    return kExitInvalid;
  }
}

}  // namespace fleetflow
