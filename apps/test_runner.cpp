#include "test_runner.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "clock.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "record_replay.hpp"
#include "recording.hpp"
#include "row_capture.hpp"
#include "runtime.hpp"
#include "schema_check.hpp"
#include "timescale_sink.hpp"
#include "utc_time.hpp"
#include "wire.hpp"

namespace fleetflow {

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitInvalid = 2;
constexpr int64_t kMs = 1'000'000;

constexpr char kSchema[] = R"({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "title": "fleetflow pipeline test file",
  "description": "Tests of a pipeline run by `fleetflow test` (docs/cli.md): input messages, fed in arrival order without NATS, and the rows its timescale_sink nodes must write, computed without PostgreSQL.",
  "type": "object",
  "additionalProperties": false,
  "required": ["pipeline", "tests"],
  "properties": {
    "$schema": { "type": "string", "description": "Path of this schema, for editors." },
    "pipeline": { "type": "string", "minLength": 1, "description": "The pipeline file, relative to the test file." },
    "tolerance": { "type": "number", "minimum": 0, "default": 1e-9, "description": "Largest absolute difference between an expected and a computed value that still matches." },
    "tests": { "type": "array", "minItems": 1, "items": { "$ref": "#/definitions/test" } }
  },
  "definitions": {
    "time": {
      "description": "Milliseconds since the Unix epoch, or an RFC 3339 time (2026-01-01T00:00:01.250Z).",
      "oneOf": [
        { "type": "integer" },
        { "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$" }
      ]
    },
    "test": {
      "type": "object",
      "additionalProperties": false,
      "required": ["name"],
      "properties": {
        "name": { "type": "string", "minLength": 1 },
        "description": { "type": "string" },
        "inputs": { "type": "array", "items": { "$ref": "#/definitions/input" }, "description": "Messages, fed in arrival order (file order among equal arrivals)." },
        "recording": { "type": "string", "minLength": 1, "description": "Instead of inputs: a recording (fleetflow record), relative to the test file." },
        "tolerance": { "type": "number", "minimum": 0, "description": "Overrides the file's tolerance." },
        "expect": {
          "type": ["array", "object"],
          "items": { "$ref": "#/definitions/row" },
          "minProperties": 1,
          "additionalProperties": { "type": "array", "items": { "$ref": "#/definitions/row" } },
          "description": "Every row the sink must write, and no other: the list of rows when the pipeline has one timescale_sink; with several, an object from sink node id to its list of rows."
        },
        "expect_csv": {
          "type": ["string", "object"],
          "minLength": 1,
          "minProperties": 1,
          "additionalProperties": { "type": "string", "minLength": 1 },
          "description": "Instead of expect: a CSV file relative to the test file, header vehicle_id,time_ms,<columns>, an empty cell for NULL; with several sinks, an object from sink node id to its file."
        },
        "expect_alarms": { "type": "array", "items": { "$ref": "#/definitions/alarm" }, "description": "Every alarm event the pipeline's rule nodes raise or clear, and no other (in any order). Without it alarms are not compared; with it alone (no expect), rows are not." },
        "ignore_sinks": { "type": "array", "items": { "type": "string", "minLength": 1 }, "uniqueItems": true, "description": "Sink node ids whose rows this test does not compare. Every other timescale_sink of the pipeline must be in expect (or expect_csv)." }
      },
      "allOf": [
        { "oneOf": [ { "required": ["inputs"] }, { "required": ["recording"] } ] },
        { "anyOf": [ { "required": ["expect"] }, { "required": ["expect_csv"] }, { "required": ["expect_alarms"] } ] },
        { "not": { "required": ["expect", "expect_csv"] } }
      ]
    },
    "input": {
      "type": "object",
      "additionalProperties": false,
      "required": ["subject"],
      "properties": {
        "subject": { "type": "string", "pattern": "^vehicle[.][A-Za-z0-9_-]{1,64}[.][A-Za-z0-9_-]{1,64}$", "description": "vehicle.<id>.<sensor> with samples, or vehicle.<id>.status with status." },
        "arrival": { "$ref": "#/definitions/time", "description": "When the engine receives the message. Default: the newest sample's ts; required for a status." },
        "samples": { "type": "array", "minItems": 1, "items": { "$ref": "#/definitions/sample" } },
        "status": { "enum": ["on", "off"] }
      },
      "oneOf": [ { "required": ["samples"] }, { "required": ["status", "arrival"] } ]
    },
    "sample": {
      "type": "object",
      "additionalProperties": false,
      "required": ["ts"],
      "properties": {
        "ts": { "$ref": "#/definitions/time", "description": "Event time." },
        "seq": { "type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0 },
        "value": { "type": "number" },
        "lat": { "type": "number" },
        "lon": { "type": "number" }
      },
      "oneOf": [ { "required": ["value"] }, { "required": ["lat", "lon"] } ]
    },
    "alarm": {
      "type": "object",
      "additionalProperties": false,
      "required": ["vehicle", "rule", "event", "time"],
      "properties": {
        "vehicle": { "type": "string", "minLength": 1 },
        "rule": { "type": "string", "minLength": 1 },
        "event": { "enum": ["raised", "cleared"] },
        "time": { "$ref": "#/definitions/time", "description": "The window time of the row that raised or cleared it." },
        "raised": { "$ref": "#/definitions/time", "description": "A clear's alarm: when it was raised. Not compared when absent." },
        "value": { "type": ["number", "null"], "description": "The rule's value at the event. Not compared when absent." }
      }
    },
    "row": {
      "type": "object",
      "additionalProperties": false,
      "required": ["vehicle", "time", "values"],
      "properties": {
        "vehicle": { "type": "string", "minLength": 1 },
        "time": { "$ref": "#/definitions/time", "description": "The window time." },
        "values": { "type": "object", "additionalProperties": { "type": ["number", "null", "string"] }, "description": "Column name to value: a number, null for NULL; a first_time or last_time column takes a time, written as the row's time. Columns not listed are not compared." }
      }
    }
  }
})";

struct Input {
  std::string subject;
  int64_t arrival_ns = 0;
  std::vector<wire::Point> points;
  std::optional<bool> on;  // a status message
};

/// A timescale_sink node of the pipeline, whose rows the tests compare.
struct Sink {
  std::string node;
  std::vector<RowColumn> columns;
};

struct Expected {
  std::string vehicle;
  int64_t time_ns = 0;
  std::vector<std::pair<size_t, std::optional<double>>> values;  // by index in the sink's columns
  std::string pointer;                                           // where it is, for errors
};

struct ExpectedAlarm {
  AlarmEvent event;
  bool raised_given = false;
  bool value_given = false;
  std::string pointer;
};

struct TestCase {
  std::string name;
  std::vector<Input> inputs;
  std::string recording;
  std::map<std::string, std::vector<Expected>> expect;  // by sink node id; no ignored sink
  std::optional<std::vector<ExpectedAlarm>> alarms;     // expect_alarms
  double tolerance = 1e-9;
};

using RowKey = CapturedRowKey;
using Rows = CapturedRows;
using RowsBySink = std::map<std::string, Rows>;
using AlarmsByNode = std::map<std::string, std::vector<AlarmEvent>>;

std::string Slurp(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  ok = static_cast<bool>(in);
  return ss.str();
}

std::optional<int64_t> ParseTime(const rapidjson::Value& v) {
  if (v.IsInt64()) return v.GetInt64() * kMs;
  if (v.IsString()) return ParseRfc3339(v.GetString());
  return std::nullopt;
}

/// A first_time / last_time column, whose values are times (Microseconds() since the epoch).
bool IsTime(const RowColumn& column) { return ColumnType(column) == "timestamptz"; }

std::string FormatValue(const RowColumn& column, const std::optional<double>& v) {
  if (!v) return "NULL";
  if (IsTime(column)) {
    const auto us = static_cast<int64_t>(*v);
    std::string text = FormatUtc(us * 1000);
    // FormatUtc stops at the millisecond; two times that differ below it must not read the same.
    if (const int64_t below = (us % 1000 + 1000) % 1000; below != 0) {
      char digits[4];
      std::snprintf(digits, sizeof digits, "%03d", static_cast<int>(below));
      text.insert(text.size() - 1, digits);
    }
    return text;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, *v);
  return std::string(buf, r.ptr);
}

std::vector<std::string> ColumnNames(const std::vector<RowColumn>& columns) {
  std::vector<std::string> names;
  for (const auto& c : columns) names.push_back(c.name);
  return names;
}

/// The index of column `name` in `columns`; columns.size() when there is none.
size_t ColumnIndex(const std::vector<RowColumn>& columns, const std::string& name) {
  const auto it = std::find_if(columns.begin(), columns.end(),
                               [&](const RowColumn& c) { return c.name == name; });
  return static_cast<size_t>(it - columns.begin());
}

/// `v` read as the expected value of `column`: a number or null; for a time column, a time
/// written as a row's time is, then rounded as the sink writes it (Microseconds()). False, with
/// the reason in `problem`, when it is neither.
bool ExpectedValue(const RowColumn& column, const rapidjson::Value& v, std::optional<double>& out,
                   std::string& problem) {
  out.reset();
  if (v.IsNull()) return true;
  if (IsTime(column)) {
    const auto ns = ParseTime(v);
    if (ns) {
      out = static_cast<double>(Microseconds(*ns));
    } else {
      problem = "column '" + column.name +
                "' is a time: milliseconds since the Unix epoch or an RFC 3339 time, found " +
                DescribeJson(v);
    }
    return ns.has_value();
  }
  if (v.IsNumber()) {
    out = v.GetDouble();
    return true;
  }
  problem = "column '" + column.name + "' takes a number or null, found " + DescribeJson(v);
  return false;
}

/// A CSV cell as the JSON value it stands for in a row's values: empty is null, a number a number
/// (for a time column an integer, milliseconds), anything else a string. `text` must outlive it.
rapidjson::Value CsvCell(const std::string& text, bool time) {
  rapidjson::Value v;
  if (text.empty()) return v;
  char* end = nullptr;
  if (time) {
    const long long ms = std::strtoll(text.c_str(), &end, 10);
    if (*end == '\0') return rapidjson::Value(static_cast<int64_t>(ms));
  } else {
    const double number = std::strtod(text.c_str(), &end);
    if (*end == '\0') return rapidjson::Value(number);
  }
  v.SetString(rapidjson::StringRef(text.c_str(), text.size()));
  return v;
}

/// The file's problems, in the form of pipeline diagnostics.
class Problems {
 public:
  explicit Problems(std::string file) : file_(std::move(file)) {}
  void Add(const std::string& pointer, const std::string& message) {
    list_.push_back({file_, pointer, "", message});
  }
  bool empty() const { return list_.empty(); }
  int Print(std::ostream& err) const {
    for (const auto& d : list_) err << d.Format() << '\n';
    err << file_ << ": " << list_.size() << (list_.size() == 1 ? " error\n" : " errors\n");
    return kExitInvalid;
  }

 private:
  std::string file_;
  std::vector<Diagnostic> list_;
};

std::string Resolve(const std::string& test_file, const std::string& path) {
  const std::filesystem::path p(path);
  if (p.is_absolute()) return path;
  return (std::filesystem::path(test_file).parent_path() / p).string();
}

/// Reads a golden CSV (vehicle_id,time_ms,<columns of `sink`>; empty cell: NULL) as expected rows.
bool ReadCsv(const std::string& path, const std::string& pointer, const Sink& sink,
             std::vector<Expected>& out, Problems& problems) {
  bool ok = false;
  const std::string text = Slurp(path, ok);
  if (!ok) {
    problems.Add(pointer, "cannot read " + path);
    return false;
  }
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> header;
  std::vector<size_t> columns;  // of the header's cells from the third on
  auto split = [](const std::string& l) {
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream s(l);
    while (std::getline(s, cell, ',')) cells.push_back(cell);
    if (!l.empty() && l.back() == ',') cells.emplace_back();
    return cells;
  };
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto cells = split(line);
    const std::string where = path + ":" + std::to_string(n);
    if (header.empty()) {
      if (cells.size() < 2 || cells[0] != "vehicle_id" || cells[1] != "time_ms") {
        problems.Add(pointer, where + ": the header must start with vehicle_id,time_ms");
        return false;
      }
      header = cells;
      for (size_t c = 2; c < cells.size(); ++c) {
        columns.push_back(ColumnIndex(sink.columns, cells[c]));
        if (columns.back() == sink.columns.size()) {
          problems.Add(
              pointer,
              where + ": " + UnknownNameMessage("column", cells[c], ColumnNames(sink.columns)));
          return false;
        }
      }
      continue;
    }
    if (cells.size() != header.size()) {
      problems.Add(pointer, where + ": " + std::to_string(cells.size()) +
                                " cells, the header has " + std::to_string(header.size()));
      return false;
    }
    Expected row;
    row.vehicle = cells[0];
    row.pointer = where;
    char* end = nullptr;
    row.time_ns = std::strtoll(cells[1].c_str(), &end, 10) * kMs;
    if (cells[1].empty() || *end != '\0') {
      problems.Add(pointer, where + ": time_ms '" + cells[1] + "' is not an integer");
      return false;
    }
    for (size_t c = 2; c < cells.size(); ++c) {
      const RowColumn& column = sink.columns[columns[c - 2]];
      std::optional<double> value;
      std::string problem;
      if (!ExpectedValue(column, CsvCell(cells[c], IsTime(column)), value, problem)) {
        problems.Add(pointer, where + ": " + problem);
        return false;
      }
      row.values.emplace_back(columns[c - 2], value);
    }
    out.push_back(std::move(row));
  }
  return true;
}

/// Reads the rows a test expects of `sink`: `rows` is the `expect` list, or the sink's list in the
/// `expect` object.
void ReadRows(const rapidjson::Value& rows, const std::string& at, const Sink& sink,
              std::vector<Expected>& out, Problems& problems) {
  for (rapidjson::SizeType j = 0; j < rows.Size(); ++j) {
    const auto& r = rows[j];
    Expected e;
    e.pointer = at + "/" + std::to_string(j);
    e.vehicle = r["vehicle"].GetString();
    const auto time = ParseTime(r["time"]);
    if (!time) {
      problems.Add(e.pointer + "/time", "not a valid time");
      continue;
    }
    e.time_ns = *time;
    for (const auto& v : r["values"].GetObject()) {
      const std::string name = v.name.GetString();
      const size_t column = ColumnIndex(sink.columns, name);
      if (column == sink.columns.size()) {
        problems.Add(e.pointer, UnknownNameMessage("column", name, ColumnNames(sink.columns)));
        continue;
      }
      std::optional<double> value;
      std::string problem;
      if (!ExpectedValue(sink.columns[column], v.value, value, problem)) {
        problems.Add(e.pointer + "/values/" + JsonPointerToken(name), problem);
        continue;
      }
      e.values.emplace_back(column, value);
    }
    out.push_back(std::move(e));
  }
}

/// Adds a problem for every row of one sink expected a second time.
void CheckRowsOnce(const std::vector<Expected>& rows, Problems& problems) {
  std::map<RowKey, std::string> seen;
  for (const auto& e : rows) {
    const auto [it, inserted] = seen.emplace(RowKey{e.vehicle, e.time_ns}, e.pointer);
    if (!inserted) {
      problems.Add(e.pointer, "row " + e.vehicle + " " + FormatUtc(e.time_ns) +
                                  " is expected already at " + it->second);
    }
  }
}

/// Reads what `test` (at `at`) expects of each sink into `expect`: `expect` or `expect_csv`, the
/// rows (file) of the one sink, or an object by sink node id. Every sink must be compared or
/// named in `ignore_sinks`, so that a sink added to the pipeline is not left untested unnoticed.
void ParseExpectations(const std::string& file, const rapidjson::Value& test, const std::string& at,
                       const Pipeline& pipeline, const std::vector<Sink>& sinks,
                       std::map<std::string, std::vector<Expected>>& expect, Problems& problems) {
  const bool csv = test.HasMember("expect_csv");
  const std::string key = csv ? "expect_csv" : "expect";
  const rapidjson::Value& given = test[key.c_str()];
  const std::string given_at = at + "/" + key;
  std::vector<std::string> sink_ids;
  for (const Sink& s : sinks) sink_ids.push_back(s.node);
  const std::string sink_list = fmt::format("{}", fmt::join(sink_ids, ", "));

  // The sink `id` names; nullptr, with the problem added at `pointer`, when it names none.
  auto find_sink = [&](const std::string& id, const std::string& pointer) -> const Sink* {
    for (const Sink& s : sinks) {
      if (s.node == id) return &s;
    }
    const auto node = std::find_if(pipeline.nodes.begin(), pipeline.nodes.end(),
                                   [&](const NodeDecl& n) { return n.id == id; });
    problems.Add(pointer, node == pipeline.nodes.end()
                              ? UnknownNameMessage("sink", id, sink_ids)
                              : "node '" + id + "' is a " + node->type +
                                    ", not a timescale_sink; the sinks: " + sink_list);
    return nullptr;
  };
  auto read = [&](const Sink& sink, const rapidjson::Value& rows, const std::string& pointer) {
    std::vector<Expected>& out = expect[sink.node];
    if (csv) {
      ReadCsv(Resolve(file, rows.GetString()), pointer, sink, out, problems);
    } else {
      ReadRows(rows, pointer, sink, out, problems);
    }
    CheckRowsOnce(out, problems);
  };

  if (!given.IsObject()) {
    if (sinks.size() != 1) {
      problems.Add(given_at, "the pipeline has " + std::to_string(sinks.size()) +
                                 " timescale_sink nodes (" + sink_list + "): give " + key +
                                 " as an object from sink node id to its " +
                                 (csv ? "CSV file" : "rows") + ", e.g. { \"" + sink_ids[0] +
                                 "\": " + (csv ? "\"rows.csv\"" : "[ ... ]") + " }");
      return;
    }
    read(sinks[0], given, given_at);
  } else {
    for (const auto& m : given.GetObject()) {
      const std::string id = m.name.GetString();
      const std::string pointer = given_at + "/" + JsonPointerToken(id);
      if (const Sink* sink = find_sink(id, pointer)) read(*sink, m.value, pointer);
    }
  }
  std::vector<std::string> ignored;
  if (test.HasMember("ignore_sinks")) {
    const auto& list = test["ignore_sinks"];
    for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
      const std::string id = list[i].GetString();
      const std::string pointer = at + "/ignore_sinks/" + std::to_string(i);
      if (find_sink(id, pointer) == nullptr) continue;
      if (expect.count(id) != 0) {
        problems.Add(pointer, "sink '" + id + "' is both in " + key +
                                  " and ignored; remove it from one of them");
      }
      ignored.push_back(id);
    }
  }
  for (const Sink& s : sinks) {
    if (expect.count(s.node) != 0 ||
        std::find(ignored.begin(), ignored.end(), s.node) != ignored.end()) {
      continue;
    }
    problems.Add(given_at, "sink '" + s.node + "' is not compared: add its " +
                               (csv ? "CSV file" : "rows (an empty list when it writes none)") +
                               " to " + key + ", or name it in ignore_sinks");
  }
}

/// Reads a test's expect_alarms (schema-valid).
void ParseAlarms(const rapidjson::Value& list, const std::string& at, TestCase& tc,
                 Problems& problems) {
  tc.alarms.emplace();
  for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
    const auto& a = list[i];
    ExpectedAlarm e;
    e.pointer = at + "/" + std::to_string(i);
    e.event.vehicle = a["vehicle"].GetString();
    e.event.rule = a["rule"].GetString();
    e.event.raised = std::string(a["event"].GetString()) == "raised";
    const auto time = ParseTime(a["time"]);
    if (!time) problems.Add(e.pointer + "/time", "not a valid time");
    e.event.time_ns = time.value_or(0);
    e.event.raised_ns = e.event.raised ? e.event.time_ns : 0;
    if (a.HasMember("raised")) {
      const auto raised = ParseTime(a["raised"]);
      if (!raised) problems.Add(e.pointer + "/raised", "not a valid time");
      e.raised_given = true;
      e.event.raised_ns = raised.value_or(0);
    }
    if (a.HasMember("value")) {
      e.value_given = true;
      if (a["value"].IsNumber()) e.event.value = a["value"].GetDouble();
    }
    tc.alarms->push_back(std::move(e));
  }
}

void ParseTests(const std::string& file, const rapidjson::Document& doc, double tolerance,
                const Pipeline& pipeline, const std::vector<Sink>& sinks,
                std::vector<TestCase>& tests, Problems& problems) {
  const auto& list = doc["tests"];
  for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
    const auto& t = list[i];
    const std::string at = "/tests/" + std::to_string(i);
    TestCase tc;
    tc.name = t["name"].GetString();
    tc.tolerance = t.HasMember("tolerance") ? t["tolerance"].GetDouble() : tolerance;
    if (t.HasMember("recording")) tc.recording = Resolve(file, t["recording"].GetString());
    if (t.HasMember("inputs")) {
      const auto& inputs = t["inputs"];
      for (rapidjson::SizeType j = 0; j < inputs.Size(); ++j) {
        const auto& m = inputs[j];
        const std::string in_at = at + "/inputs/" + std::to_string(j);
        Input input;
        input.subject = m["subject"].GetString();
        const wire::Subject subject = wire::ParseSubject(input.subject);
        const bool status = subject.kind == wire::SubjectKind::kStatus;
        if (status != m.HasMember("status")) {
          problems.Add(in_at, status ? "vehicle.<id>.status takes status (on or off), not samples"
                                     : "vehicle.<id>.<sensor> takes samples, not status");
          continue;
        }
        if (status) input.on = std::string(m["status"].GetString()) == "on";
        if (m.HasMember("samples")) {
          const auto& samples = m["samples"];
          for (rapidjson::SizeType k = 0; k < samples.Size(); ++k) {
            const auto& s = samples[k];
            wire::Point p;
            const auto ts = ParseTime(s["ts"]);
            if (!ts) {
              problems.Add(in_at + "/samples/" + std::to_string(k) + "/ts", "not a valid time");
              continue;
            }
            p.ts_ns = *ts;
            if (s.HasMember("seq")) p.seq = static_cast<uint32_t>(s["seq"].GetUint64());
            if (s.HasMember("value")) p.value = s["value"].GetDouble();
            if (s.HasMember("lat")) {
              p.has_position = true;
              p.lat = s["lat"].GetDouble();
              p.lon = s["lon"].GetDouble();
            }
            input.arrival_ns = input.points.empty() ? p.ts_ns : std::max(input.arrival_ns, p.ts_ns);
            input.points.push_back(p);
          }
        }
        if (m.HasMember("arrival")) {
          const auto arrival = ParseTime(m["arrival"]);
          if (!arrival) {
            problems.Add(in_at + "/arrival", "not a valid time");
            continue;
          }
          input.arrival_ns = *arrival;
        }
        tc.inputs.push_back(std::move(input));
      }
    }
    // A test of alarms alone compares no rows.
    if (t.HasMember("expect") || t.HasMember("expect_csv")) {
      ParseExpectations(file, t, at, pipeline, sinks, tc.expect, problems);
    }
    if (t.HasMember("expect_alarms"))
      ParseAlarms(t["expect_alarms"], at + "/expect_alarms", tc, problems);
    tests.push_back(std::move(tc));
  }
}

/// Writes `inputs` as a recording at `path`, in arrival order (file order among equal arrivals).
/// Throws std::runtime_error when it cannot.
void WriteRecording(std::vector<Input> inputs, const std::string& path) {
  std::stable_sort(inputs.begin(), inputs.end(),
                   [](const Input& a, const Input& b) { return a.arrival_ns < b.arrival_ns; });
  recording::Writer writer;
  if (!writer.Open(path)) throw std::runtime_error(writer.error());
  for (const Input& in : inputs) {
    recording::Record r;
    r.recv_ns = in.arrival_ns;
    r.subject = in.subject;
    if (in.on) {
      const std::string text = *in.on ? "on" : "off";
      r.payload.assign(text.begin(), text.end());
    } else {
      r.payload = wire::EncodeBatch(in.points);
    }
    writer.Append(r);
  }
  if (!writer.Close()) throw std::runtime_error(writer.error());
}

/// A recording of `inputs` in a temporary file removed on destruction.
class InputRecording {
 public:
  explicit InputRecording(std::vector<Input> inputs) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fleetflow-test-XXXXXX").string();
    const int fd = mkstemp(tmpl.data());
    if (fd < 0) throw std::runtime_error("cannot create a temporary file in " + tmpl);
    close(fd);
    path_ = tmpl;
    WriteRecording(std::move(inputs), path_);
  }
  ~InputRecording() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  InputRecording(const InputRecording&) = delete;
  InputRecording& operator=(const InputRecording&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// What one test's pipeline wrote: every sink's rows, every rule node's alarm events.
struct Outcome {
  RowsBySink rows;
  AlarmsByNode alarms;
};

/// Runs one test: the pipeline on the replay clock until its input ended, then drained.
Outcome RunOne(const Registry& registry, const Pipeline& loaded, const TestCase& tc) {
  std::optional<InputRecording> recording;
  if (tc.recording.empty()) recording.emplace(tc.inputs);
  const std::string& file = tc.recording.empty() ? recording->path() : tc.recording;

  Captures captures;
  Pipeline pipeline = loaded;
  CaptureInstead(pipeline, registry, captures);
  std::vector<Diagnostic> errors;
  std::vector<std::string> replaced;
  IsolateForReplay(pipeline, registry, ReplayInput{{file}}, errors, replaced);
  if (!errors.empty()) throw std::runtime_error(errors.front().Format());

  Metrics metrics;
  ReplayClock clock;
  RuntimeOptions options;
  options.tick_ms = 0;  // the replay source ticks on recorded time
  options.clock_driver = &clock;
  Runtime runtime(pipeline, metrics, clock, options);
  runtime.Start();
  runtime.WaitInputEnded();
  runtime.Stop();
  return {std::move(captures.rows), std::move(captures.alarms)};
}

std::string Describe(const AlarmEvent& e) {
  std::string s = e.vehicle + " " + e.rule + " " + (e.raised ? "raised" : "cleared") + " at " +
                  FormatUtc(e.time_ns);
  if (!e.raised) s += " (raised " + FormatUtc(e.raised_ns) + ")";
  if (e.value) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, *e.value);
    s += " value " + std::string(buf, r.ptr);
  }
  return s;
}

/// The differences between the alarm events of every rule node (`got`) and `expect`.
std::vector<std::string> CompareAlarms(const std::vector<ExpectedAlarm>& expect, double tolerance,
                                       const AlarmsByNode& got) {
  std::vector<AlarmEvent> left;
  for (const auto& [_, events] : got) left.insert(left.end(), events.begin(), events.end());
  std::vector<std::string> out;
  for (const ExpectedAlarm& x : expect) {
    const auto it = std::find_if(left.begin(), left.end(), [&](const AlarmEvent& e) {
      return e.vehicle == x.event.vehicle && e.rule == x.event.rule && e.raised == x.event.raised &&
             e.time_ns == x.event.time_ns;
    });
    if (it == left.end()) {
      out.push_back("missing alarm " + Describe(x.event) + " (" + x.pointer + ")");
      continue;
    }
    if (x.raised_given && it->raised_ns != x.event.raised_ns) {
      out.push_back("alarm " + Describe(*it) + ": expected raised " + FormatUtc(x.event.raised_ns) +
                    " (" + x.pointer + ")");
    }
    const bool value_ok = x.event.value && it->value
                              ? std::abs(*x.event.value - *it->value) <= tolerance
                              : x.event.value.has_value() == it->value.has_value();
    if (x.value_given && !value_ok) {
      out.push_back("alarm " + Describe(*it) + ": expected value " +
                    (x.event.value ? FormatValue(RowColumn{}, x.event.value) : "null") + " (" +
                    x.pointer + ")");
    }
    left.erase(it);
  }
  for (const AlarmEvent& e : left) out.push_back("unexpected alarm " + Describe(e));
  return out;
}

/// The differences between the rows a sink with `columns` wrote (`got`) and `expect`, one line
/// each; empty when they match.
std::vector<std::string> Compare(const std::vector<Expected>& expect,
                                 const std::vector<RowColumn>& columns, double tolerance,
                                 Rows got) {
  std::vector<std::string> out;
  auto cell = [&](size_t column, const std::optional<double>& v) {
    return columns[column].name + "=" + FormatValue(columns[column], v);
  };
  for (const Expected& e : expect) {
    const std::string where = e.vehicle + " " + FormatUtc(e.time_ns);
    const auto it = got.find({e.vehicle, e.time_ns});
    if (it == got.end()) {
      std::string s;
      for (const auto& [column, v] : e.values) s += (s.empty() ? "" : ", ") + cell(column, v);
      out.push_back("missing row " + where + ": " + s);
      continue;
    }
    for (const auto& [column, want] : e.values) {
      const auto& have = it->second[column];
      // Times are whole microseconds, as in the table: equal or not.
      const bool same =
          want && have
              ? (IsTime(columns[column]) ? *want == *have : std::fabs(*want - *have) <= tolerance)
              : want.has_value() == have.has_value();
      if (!same) {
        out.push_back(where + " " + columns[column].name + ": expected " +
                      FormatValue(columns[column], want) + ", got " +
                      FormatValue(columns[column], have));
      }
    }
    got.erase(it);
  }
  for (const auto& [key, values] : got) {
    std::string s;
    for (size_t i = 0; i < columns.size() && i < values.size(); ++i) {
      s += (i ? ", " : "") + cell(i, values[i]);
    }
    out.push_back("unexpected row " + key.first + " " + FormatUtc(key.second) + ": " + s);
  }
  return out;
}

struct TestFile {
  Pipeline pipeline;
  std::vector<Sink> sinks;  // in the pipeline's order
  std::vector<TestCase> tests;
};

/// Reads, checks and parses a test file and its pipeline; nullopt once the problems are printed
/// to `err`.
std::optional<TestFile> LoadTestFile(const Registry& registry, const std::string& file,
                                     std::ostream& err) {
  Problems problems(file);
  bool ok = false;
  const std::string text = Slurp(file, ok);
  if (!ok) {
    problems.Add("", "cannot read the file");
    problems.Print(err);
    return std::nullopt;
  }
  rapidjson::Document doc;
  doc.Parse(text.c_str());
  if (doc.HasParseError()) {
    problems.Add("", std::string("invalid JSON at byte ") + std::to_string(doc.GetErrorOffset()) +
                         ": " + rapidjson::GetParseError_En(doc.GetParseError()));
    problems.Print(err);
    return std::nullopt;
  }
  rapidjson::Document schema;
  schema.Parse(kSchema);
  for (const auto& v : SchemaChecker(schema).Check(doc)) problems.Add(v.pointer, v.message);
  if (!problems.empty()) {
    problems.Print(err);
    return std::nullopt;
  }

  const std::string pipeline_file = Resolve(file, doc["pipeline"].GetString());
  LoadResult loaded = LoadPipelineFile(pipeline_file, registry);
  if (!loaded.ok()) {
    for (const auto& d : loaded.errors) err << d.Format() << '\n';
    problems.Add("/pipeline", "the pipeline " + pipeline_file + " is invalid");
    problems.Print(err);
    return std::nullopt;
  }
  TestFile out{std::move(*loaded.pipeline), {}, {}};
  for (const NodeDecl& n : out.pipeline.nodes) {
    if (n.type == "timescale_sink") out.sinks.push_back({n.id, SinkColumns(n.config)});
  }
  const bool rules = std::any_of(out.pipeline.nodes.begin(), out.pipeline.nodes.end(),
                                 [](const NodeDecl& n) { return n.type == "rule"; });
  if (out.sinks.empty() && !rules) {
    problems.Add("/pipeline", "the pipeline " + pipeline_file +
                                  " has no timescale_sink node, whose rows the tests compare, nor "
                                  "a rule node, whose alarms they compare");
    problems.Print(err);
    return std::nullopt;
  }
  const double tolerance = doc.HasMember("tolerance") ? doc["tolerance"].GetDouble() : 1e-9;
  ParseTests(file, doc, tolerance, out.pipeline, out.sinks, out.tests, problems);
  if (!problems.empty()) {
    problems.Print(err);
    return std::nullopt;
  }
  return out;
}

/// Runs one file's tests; counts into passed / failed. Returns 0, kExitFailed or kExitInvalid.
int RunFile(const Registry& registry, const std::string& file, std::ostream& out, std::ostream& err,
            int& passed, int& failed) {
  const auto loaded = LoadTestFile(registry, file, err);
  if (!loaded) return kExitInvalid;
  int rc = 0;
  for (const TestCase& tc : loaded->tests) {
    std::vector<std::string> diffs;
    try {
      Outcome outcome = RunOne(registry, loaded->pipeline, tc);
      RowsBySink& got = outcome.rows;
      if (tc.alarms) {
        for (auto& d : CompareAlarms(*tc.alarms, tc.tolerance, outcome.alarms)) {
          diffs.push_back(std::move(d));
        }
      }
      for (const Sink& sink : loaded->sinks) {
        const auto expect = tc.expect.find(sink.node);
        if (expect == tc.expect.end()) continue;  // in ignore_sinks
        for (auto& d :
             Compare(expect->second, sink.columns, tc.tolerance, std::move(got.at(sink.node)))) {
          diffs.push_back(loaded->sinks.size() > 1 ? sink.node + ": " + d : std::move(d));
        }
      }
    } catch (const std::exception& e) {
      diffs = {std::string("could not run: ") + e.what()};
    }
    out << (diffs.empty() ? "PASS " : "FAIL ") << tc.name << " (" << file << ")\n";
    for (const auto& d : diffs) out << "  " << d << '\n';
    (diffs.empty() ? passed : failed)++;
    if (!diffs.empty()) rc = kExitFailed;
  }
  return rc;
}

}  // namespace

std::string TestFileJsonSchema() {
  rapidjson::Document d;
  d.Parse(kSchema);
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  d.Accept(w);
  return std::string(sb.GetString()) + "\n";
}

int RunPipelineTests(const Registry& registry, const std::vector<std::string>& files,
                     std::ostream& out, std::ostream& err) {
  // The operators' start and stop messages would drown the results.
  if (spdlog::get_level() < spdlog::level::warn) spdlog::set_level(spdlog::level::warn);
  int rc = 0, passed = 0, failed = 0;
  for (const auto& file : files) {
    rc = std::max(rc, RunFile(registry, file, out, err, passed, failed));
  }
  out << passed + failed << (passed + failed == 1 ? " test: " : " tests: ") << passed << " passed, "
      << failed << " failed" << (rc == kExitInvalid ? ", invalid files" : "") << '\n';
  return rc;
}

bool WriteTestInputs(const Registry& registry, const std::string& test_file,
                     const std::string& test_name, const std::string& out, std::ostream& err) {
  const auto loaded = LoadTestFile(registry, test_file, err);
  if (!loaded) return false;
  for (const TestCase& tc : loaded->tests) {
    if (tc.name != test_name || !tc.recording.empty()) continue;
    try {
      WriteRecording(tc.inputs, out);
      return true;
    } catch (const std::exception& e) {
      err << out << ": " << e.what() << '\n';
      return false;
    }
  }
  err << test_file << ": no test '" << test_name << "' with inputs\n";
  return false;
}

}  // namespace fleetflow
