#include "figures.hpp"

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace fleetflow::bench {

std::string TodayUtc() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

std::string ShortCommit() {
  FILE* p = ::popen("git rev-parse --short HEAD 2>/dev/null", "r");
  if (p == nullptr) return "";
  char buf[64] = {};
  const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
  ::pclose(p);
  if (!got) return "";
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

namespace {

double Round4(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  const double scale = std::pow(10.0, 3 - static_cast<int>(std::floor(std::log10(std::fabs(v)))));
  return std::round(v * scale) / scale;
}

std::string Str(const rapidjson::Value& o, const char* key) {
  return o.HasMember(key) && o[key].IsString() ? o[key].GetString() : "";
}

}  // namespace

void MergeFigures(const std::string& path, const std::vector<Figure>& figures) {
  std::map<std::string, Figure> all;
  std::ifstream in(path);
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    rapidjson::Document d;
    d.Parse(text.str().c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("figures") || !d["figures"].IsArray()) {
      throw std::runtime_error(path + ": not a figures file (an object with an array 'figures')");
    }
    for (const auto& f : d["figures"].GetArray()) {
      if (!f.IsObject() || !f.HasMember("value") || !f["value"].IsNumber()) continue;
      Figure x{Str(f, "name"), f["value"].GetDouble(), Str(f, "unit"), Str(f, "bench"),
               Str(f, "date"), Str(f, "commit"),       Str(f, "note")};
      if (!x.name.empty()) all[x.name] = x;
    }
  }
  for (const Figure& f : figures) all[f.name] = f;

  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  w.SetFormatOptions(rapidjson::kFormatSingleLineArray);
  w.StartObject();
  w.Key("version");
  w.Int(1);
  w.Key("about");
  w.String(
      "Storage figures measured by the benchmarks (docs/BENCHMARKS.md sections 10 and 13), "
      "read by `fleetflow estimate` (compiled in; --figures FILE for a fresh one). Written by "
      "ff-bench-storage --figures and ff-bench-archive --figures.");
  w.Key("figures");
  w.StartArray();
  for (const auto& [name, f] : all) {
    w.StartObject();
    w.Key("name");
    w.String(f.name.c_str());
    w.Key("value");
    w.Double(Round4(f.value));
    w.Key("unit");
    w.String(f.unit.c_str());
    w.Key("bench");
    w.String(f.bench.c_str());
    w.Key("date");
    w.String(f.date.c_str());
    w.Key("commit");
    w.String(f.commit.c_str());
    w.Key("note");
    w.String(f.note.c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << sb.GetString() << '\n';
}

}  // namespace fleetflow::bench
