#include "test_runner.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
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
  "description": "Tests of a pipeline run by `fleetflow test` (docs/cli.md): input messages, fed in arrival order without NATS, and the rows its timescale_sink must write, computed without PostgreSQL.",
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
        "expect": { "type": "array", "items": { "$ref": "#/definitions/row" }, "description": "Every row the sink must write, and no other." },
        "expect_csv": { "type": "string", "minLength": 1, "description": "Instead of expect: a CSV file relative to the test file, header vehicle_id,time_ms,<columns>, an empty cell for NULL." }
      },
      "allOf": [
        { "oneOf": [ { "required": ["inputs"] }, { "required": ["recording"] } ] },
        { "oneOf": [ { "required": ["expect"] }, { "required": ["expect_csv"] } ] }
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
    "row": {
      "type": "object",
      "additionalProperties": false,
      "required": ["vehicle", "time", "values"],
      "properties": {
        "vehicle": { "type": "string", "minLength": 1 },
        "time": { "$ref": "#/definitions/time", "description": "The window time." },
        "values": { "type": "object", "additionalProperties": { "type": ["number", "null"] }, "description": "Column name to value, null for NULL. Columns not listed are not compared." }
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

struct Expected {
  std::string vehicle;
  int64_t time_ns = 0;
  std::vector<std::pair<std::string, std::optional<double>>> values;
  std::string pointer;  // where it is, for errors
};

struct TestCase {
  std::string name;
  std::vector<Input> inputs;
  std::string recording;
  std::vector<Expected> expect;
  double tolerance = 1e-9;
};

using RowKey = std::pair<std::string, int64_t>;
using Rows = std::map<RowKey, std::vector<std::optional<double>>>;

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

std::string FormatValue(const std::optional<double>& v) {
  if (!v) return "NULL";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, *v);
  return std::string(buf, r.ptr);
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

/// Reads a golden CSV (vehicle_id,time_ms,<columns>; empty cell: NULL) as expected rows.
bool ReadCsv(const std::string& path, const std::string& pointer, std::vector<Expected>& out,
             Problems& problems) {
  bool ok = false;
  const std::string text = Slurp(path, ok);
  if (!ok) {
    problems.Add(pointer, "cannot read " + path);
    return false;
  }
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> header;
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
      std::optional<double> v;
      if (!cells[c].empty()) {
        v = std::strtod(cells[c].c_str(), &end);
        if (*end != '\0') {
          problems.Add(pointer, where + ": '" + cells[c] + "' is not a number");
          return false;
        }
      }
      row.values.emplace_back(header[c], v);
    }
    out.push_back(std::move(row));
  }
  return true;
}

void ParseTests(const std::string& file, const rapidjson::Document& doc, double tolerance,
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
    if (t.HasMember("expect")) {
      const auto& rows = t["expect"];
      for (rapidjson::SizeType j = 0; j < rows.Size(); ++j) {
        const auto& r = rows[j];
        Expected e;
        e.pointer = at + "/expect/" + std::to_string(j);
        e.vehicle = r["vehicle"].GetString();
        const auto time = ParseTime(r["time"]);
        if (!time) {
          problems.Add(e.pointer + "/time", "not a valid time");
          continue;
        }
        e.time_ns = *time;
        for (const auto& v : r["values"].GetObject()) {
          e.values.emplace_back(
              v.name.GetString(),
              v.value.IsNull() ? std::nullopt : std::optional<double>(v.value.GetDouble()));
        }
        tc.expect.push_back(std::move(e));
      }
    } else {
      ReadCsv(Resolve(file, t["expect_csv"].GetString()), at + "/expect_csv", tc.expect, problems);
    }
    tests.push_back(std::move(tc));
  }
}

/// Checks what needs the pipeline: expected columns exist, no row is expected twice.
void CheckExpectations(const std::vector<TestCase>& tests, const std::vector<SinkColumn>& columns,
                       Problems& problems) {
  std::vector<std::string> names;
  for (const auto& c : columns) names.push_back(c.name);
  for (const auto& tc : tests) {
    std::map<RowKey, std::string> seen;
    for (const auto& e : tc.expect) {
      const auto [it, inserted] = seen.emplace(RowKey{e.vehicle, e.time_ns}, e.pointer);
      if (!inserted) {
        problems.Add(e.pointer, "row " + e.vehicle + " " + FormatUtc(e.time_ns) +
                                    " is expected already at " + it->second);
      }
      for (const auto& [name, value] : e.values) {
        if (std::find(names.begin(), names.end(), name) == names.end()) {
          problems.Add(e.pointer, UnknownNameMessage("column", name, names));
        }
      }
    }
  }
}

/// Stands in for timescale_sink: keeps the rows it would write (the last of a re-emitted window
/// wins, as the upsert does), computed by the sink's own SinkRowValues.
class CaptureSink final : public Operator {
 public:
  CaptureSink(const Config& config, Rows& rows) : columns_(SinkColumns(config)), rows_(rows) {}

  void Process(const Message& in, Emitter& out) override {
    if (const auto* batch = std::get_if<WindowBatch>(in.get())) {
      auto values = SinkRowValues(columns_, *batch);
      for (size_t r = 0; r < values.size(); ++r) {
        rows_[{batch->rows[r].vehicle, batch->window_ns}] = std::move(values[r]);
      }
    } else if (std::holds_alternative<Tick>(*in)) {
      out.Emit(in);
    }
  }

 private:
  std::vector<SinkColumn> columns_;
  Rows& rows_;
};

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

/// Runs one test: the pipeline on the replay clock until its input ended, then drained.
Rows RunOne(const Registry& registry, const Pipeline& loaded, const TestCase& tc) {
  std::optional<InputRecording> recording;
  if (tc.recording.empty()) recording.emplace(tc.inputs);
  const std::string& file = tc.recording.empty() ? recording->path() : tc.recording;

  Rows rows;
  Pipeline pipeline = loaded;
  OperatorInfo capture = *registry.Find("timescale_sink");
  capture.create = [&rows](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<CaptureSink>(ctx.config, rows);
  };
  for (NodeDecl& n : pipeline.nodes) {
    if (n.type == "timescale_sink") n.info = &capture;
  }
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
  return rows;
}

/// The differences between `got` and what `tc` expects, one line each; empty when it passed.
std::vector<std::string> Compare(const TestCase& tc, const std::vector<SinkColumn>& columns,
                                 Rows got) {
  std::vector<std::string> out;
  auto column = [&](const std::string& name) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (columns[i].name == name) return i;
    }
    return columns.size();
  };
  auto row_text = [&](const std::vector<std::optional<double>>& values) {
    std::string s;
    for (size_t i = 0; i < columns.size() && i < values.size(); ++i) {
      s += (i ? ", " : "") + columns[i].name + "=" + FormatValue(values[i]);
    }
    return s;
  };
  for (const Expected& e : tc.expect) {
    const std::string where = e.vehicle + " " + FormatUtc(e.time_ns);
    const auto it = got.find({e.vehicle, e.time_ns});
    if (it == got.end()) {
      std::string s;
      for (const auto& [name, v] : e.values)
        s += (s.empty() ? "" : ", ") + name + "=" + FormatValue(v);
      out.push_back("missing row " + where + ": " + s);
      continue;
    }
    for (const auto& [name, want] : e.values) {
      const auto& have = it->second[column(name)];
      const bool same = want && have ? std::fabs(*want - *have) <= tc.tolerance
                                     : want.has_value() == have.has_value();
      if (!same) {
        out.push_back(where + " " + name + ": expected " + FormatValue(want) + ", got " +
                      FormatValue(have));
      }
    }
    got.erase(it);
  }
  for (const auto& [key, values] : got) {
    out.push_back("unexpected row " + key.first + " " + FormatUtc(key.second) + ": " +
                  row_text(values));
  }
  return out;
}

struct TestFile {
  Pipeline pipeline;
  std::vector<SinkColumn> columns;
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
  int sinks = 0;
  for (const NodeDecl& n : out.pipeline.nodes) {
    if (n.type == "timescale_sink") {
      out.columns = SinkColumns(n.config);
      ++sinks;
    }
  }
  if (sinks != 1) {
    problems.Add("/pipeline", "the pipeline " + pipeline_file +
                                  " must have exactly one timescale_sink node, whose rows the "
                                  "tests compare; it has " +
                                  std::to_string(sinks));
    problems.Print(err);
    return std::nullopt;
  }
  const double tolerance = doc.HasMember("tolerance") ? doc["tolerance"].GetDouble() : 1e-9;
  ParseTests(file, doc, tolerance, out.tests, problems);
  CheckExpectations(out.tests, out.columns, problems);
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
      diffs = Compare(tc, loaded->columns, RunOne(registry, loaded->pipeline, tc));
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
