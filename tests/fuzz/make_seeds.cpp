// Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/seed-*) with our own
// encoders: valid FLT1 batches and FFRC recordings, the shipped pipelines, and broken variants
// of each. Deterministic; run by tests/fuzz/make_seeds.sh. Files not named seed-* (inputs the
// fuzzer found) are left alone.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "recording.hpp"
#include "wire.hpp"

namespace fs = std::filesystem;
using fleetflow::wire::Point;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // the wire target's fixed "now"

void Write(const fs::path& dir, const std::string& name, const Bytes& data) {
  std::ofstream(dir / ("seed-" + name), std::ios::binary)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}
void Write(const fs::path& dir, const std::string& name, const std::string& text) {
  Write(dir, name, Bytes(text.begin(), text.end()));
}
Bytes ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

Point Scalar(int64_t ts, uint32_t seq, double v) {
  return Point{.ts_ns = ts, .seq = seq, .value = v};
}
Point Gps(int64_t ts, uint32_t seq, double lat, double lon) {
  return Point{.ts_ns = ts, .seq = seq, .lat = lat, .lon = lon, .has_position = true};
}
Bytes Batch(const std::vector<Point>& points) { return fleetflow::wire::EncodeBatch(points); }

/// The wire target's input: subject length, subject, payload.
Bytes Message(const std::string& subject, const Bytes& payload) {
  Bytes out;
  out.reserve(1 + subject.size() + payload.size());
  out.push_back(static_cast<uint8_t>(subject.size()));
  out.insert(out.end(), subject.begin(), subject.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}
Bytes Text(const std::string& s) { return Bytes(s.begin(), s.end()); }

void WireSeeds(const fs::path& dir) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const Bytes speed = Batch({Scalar(kT0 - 3'000'000, 1, 12.5), Scalar(kT0 - 2'000'000, 2, 13.0),
                             Scalar(kT0 - 1'000'000, 3, 13.25)});
  const Bytes gps = Batch({Gps(kT0 - 1'000'000, 7, 48.137, 11.575), Gps(kT0, 8, 48.138, 11.576)});
  Write(dir, "speed", Message("vehicle.v001.speed", speed));
  Write(dir, "gps", Message("vehicle.v001.gps", gps));
  Write(dir, "soc-one", Message("vehicle.truck-17.soc", Batch({Scalar(kT0, 0, 81.0)})));
  Write(dir, "empty-batch", Message("vehicle.v001.speed", Batch({})));
  std::vector<Point> many;
  for (uint32_t i = 0; i < 100; ++i)
    many.push_back(Scalar(kT0 - 100'000'000 + i * 1'000'000, i, i));
  Write(dir, "hundred", Message("vehicle.v002.torque", Batch(many)));
  Write(dir, "mixed-invalid",
        Message(
            "vehicle.v001.speed",
            Batch({Scalar(kT0, 1, nan), Scalar(kT0, 2, inf), Scalar(0, 3, 1.0), Scalar(-5, 4, 1.0),
                   Scalar(kT0 + 3'600'000'000'000, 5, 1.0), Scalar(kT0, 6, 2.0)})));
  Write(dir, "gps-out-of-range",
        Message("vehicle.v001.gps", Batch({Gps(kT0, 1, 91.0, 0.0), Gps(kT0, 2, 0.0, -180.5),
                                           Gps(kT0, 3, nan, 1.0), Gps(kT0, 4, -inf, 1.0)})));
  Write(dir, "status-on", Message("vehicle.v001.status", Text("on")));
  Write(dir, "status-off-ws", Message("vehicle.v001.status", Text(" off\r\n")));
  Write(dir, "status-bad", Message("vehicle.v001.status", Text("maybe")));
  Write(dir, "status-empty", Message("vehicle.v001.status", {}));
  Write(dir, "empty-payload", Message("vehicle.v001.speed", {}));
  Write(dir, "bad-identifier", Message("vehicle.v001.speed", Text("not a flatbuffer at all")));
  Bytes truncated = speed;
  truncated.resize(truncated.size() - 9);
  Write(dir, "truncated", Message("vehicle.v001.speed", truncated));
  Bytes corrupt = gps;
  corrupt[0] = 0xF0;  // root offset past the end
  Write(dir, "bad-root-offset", Message("vehicle.v001.gps", corrupt));
  Write(dir, "subject-short", Message("vehicle.v001", speed));
  Write(dir, "subject-long", Message("vehicle.v001.speed.extra", speed));
  Write(dir, "subject-empty-token", Message("vehicle..speed", speed));
  Write(dir, "subject-root", Message("car.v001.speed", speed));
  Write(dir, "subject-token-65", Message("vehicle." + std::string(65, 'a') + ".speed", speed));
  Write(dir, "subject-bad-char", Message("vehicle.v 1.speed", speed));
  Write(dir, "no-subject", speed);  // the whole input is also decoded as one payload
}

void PipelineSeeds(const fs::path& dir, const fs::path& source_dir) {
  for (const auto& e : fs::directory_iterator(source_dir / "pipelines")) {
    if (e.path().extension() != ".json") continue;
    const Bytes text = ReadFile(e.path());
    const std::string stem = e.path().stem().string();
    Write(dir, "pipeline-" + stem, text);
    Write(dir, "pipeline-" + stem + "-cut", Bytes(text.begin(), text.begin() + text.size() / 2));
  }
  const std::string src =
      R"({"id": "in", "type": "nats_source", "config": {"url": "${NATS_URL}", "subject": "vehicle.*.*"}})";
  const std::string klv = R"({"id": "state", "type": "keyed_last_value", "inputs": ["in"]})";
  const std::string join =
      R"({"id": "join", "type": "window_join", "inputs": ["state"], "config": {"every_ms": 1000, "sensors": ["speed"]}})";
  const std::string sink =
      R"({"id": "db", "type": "timescale_sink", "inputs": ["join"], "config": {"conninfo": "${FLEETFLOW_PG}", "table": "t", "columns": [{"name": "speed", "sensor": "speed"}]}})";
  auto pipeline = [](const std::string& nodes) {
    return R"({"name": "fuzz", "nodes": [)" + nodes + "]}";
  };
  Write(dir, "minimal", pipeline(src + "," + klv + "," + join + "," + sink));
  // What strict JSON refuses (docs/pipelines.md), and the byte order mark it skips.
  Write(dir, "comment",
        R"({"name": "fuzz", /* comment */ "nodes": [)" + src + "," + klv + "," + join + "," + sink +
            "]}");
  Write(dir, "duplicate-key",
        R"({"name": "fuzz", "name": "again", "nodes": [)" + src + "," + klv + "," + join + "," +
            sink + "]}");
  Write(dir, "bom", "\xEF\xBB\xBF" + pipeline(src + "," + klv + "," + join + "," + sink));
  Write(dir, "invalid-utf8", pipeline(R"({"id": "\xFF\xFE", "type": "nats_source"})"));
  const std::string replay =
      R"({"id": "in", "type": "replay_source", "config": {"file": "x.ffrc", "max_future_ms": 300000, "max_past_ms": 86400000, "max_payload_bytes": 4096, "sensors": ["speed", "gps"]}})";
  Write(dir, "replay-limits", pipeline(replay + "," + klv + "," + join + "," + sink));
  Write(dir, "trailing-comma", pipeline(src + "," + klv + "," + join + "," + sink + ","));
  Write(dir, "unknown-type", pipeline(R"({"id": "x", "type": "nats_sauce"})"));
  Write(dir, "duplicate-id", pipeline(src + "," + src));
  Write(dir, "cycle", pipeline(R"({"id": "a", "type": "keyed_last_value", "inputs": ["b"]},
                                  {"id": "b", "type": "keyed_last_value", "inputs": ["a"]})"));
  Write(dir, "no-sink", pipeline(src + "," + klv));
  Write(dir, "unknown-input",
        pipeline(src + R"(, {"id": "s", "type": "keyed_last_value", "inputs": ["nope"]})"));
  Write(dir, "env-unset",
        pipeline(R"({"id": "in", "type": "nats_source", "config": {"url": "${UNSET_VAR}"}})"));
  Write(
      dir, "env-default",
      pipeline(
          R"({"id": "in", "type": "nats_source", "config": {"url": "${UNSET:-nats://h:1}", "subject": "$${x}"}})"));
  Write(dir, "env-bad-name",
        pipeline(R"({"id": "in", "type": "nats_source", "config": {"url": "${a-b}"}})"));
  Write(dir, "env-unterminated",
        pipeline(R"({"id": "in", "type": "nats_source", "config": {"url": "${NATS_URL"}})"));
  Write(dir, "env-in-number-field",
        pipeline(R"({"id": "j", "type": "window_join", "config": {"every_ms": "${N}"}})"));
  Write(dir, "wrong-types", pipeline(R"({"id": 5, "type": ["x"], "inputs": "in", "config": []})"));
  Write(dir, "extra-fields", R"({"name": "x", "nodes": [], "extra": true})");
  Write(dir, "nodes-not-array", R"({"name": "x", "nodes": {"a": 1}})");
  Write(dir, "not-object", "[1, 2, 3]");
  Write(dir, "empty", "");
  Write(dir, "invalid-json", "{\"name\": \"x\",\n \"nodes\": [\n {\"id\": }]}");
  Write(dir, "config-only", R"({"every_ms": 250, "sensors": ["gps", "speed"], "url": "nats://x"})");
  Write(dir, "unicode-escapes",
        R"({"name": "\u00e9\ud83d\ude00", "nodes": [{"id": "\u0000", "type": "x"}]})");
}

Bytes Recording(const std::vector<fleetflow::recording::Record>& records) {
  Bytes out = fleetflow::recording::EncodeHeader();
  for (const auto& r : records) fleetflow::recording::EncodeRecord(r, out);
  return out;
}

void RecordingSeeds(const fs::path& dir, const fs::path& source_dir) {
  using fleetflow::recording::Record;
  const std::vector<Record> records = {
      {kT0, "vehicle.v001.speed", Batch({Scalar(kT0 - 1'000'000, 1, 12.5)})},
      {kT0 + 1'000'000, "vehicle.v001.status", Text("on")},
      {kT0 + 2'000'000, "vehicle.v001.gps", Batch({Gps(kT0, 2, 48.1, 11.5)})},
      {kT0 + 3'000'000, "bad subject", Text("x")},
  };
  const Bytes good = Recording(records);
  Write(dir, "records", good);
  Write(dir, "header-only", fleetflow::recording::EncodeHeader());
  Write(dir, "empty", Bytes{});
  Write(dir, "cut-in-record", Bytes(good.begin(), good.end() - 5));
  Write(dir, "cut-in-header", Bytes(good.begin(), good.begin() + 5));
  Bytes bad_crc = good;
  bad_crc[8 + 4] ^= 0xFF;
  Write(dir, "bad-crc", bad_crc);
  Bytes version = good;
  version[4] = 2;
  Write(dir, "version-2", version);
  Bytes magic = good;
  magic[0] = 'X';
  Write(dir, "bad-magic", magic);
  Bytes huge = good;
  huge[8 + 3] = 0x7F;  // body length far beyond kMaxBody
  Write(dir, "huge-length", huge);
  Bytes subject_len = good;
  subject_len[8 + 8 + 8] = 0xFF;  // subject longer than the body (CRC fixed up by the target)
  subject_len[8 + 8 + 9] = 0xFF;
  Write(dir, "subject-too-long", subject_len);
  // The first records of the committed replay fixture (a real fleet-sim recording).
  fleetflow::recording::Reader reader;
  const fs::path fixture = source_dir / "tests/data/fleet_seed42.ffrc";
  if (!reader.Open(fixture.string())) throw std::runtime_error(reader.error());
  std::vector<Record> head;
  Record r;
  while (head.size() < 12 && reader.Next(r) == fleetflow::recording::Reader::Status::kRecord) {
    head.push_back(r);
  }
  Write(dir, "fixture-head", Recording(head));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <repository root> <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path source_dir = argv[1];
  const fs::path corpus = argv[2];
  try {
    for (const char* target : {"wire", "pipeline", "recording"}) {
      fs::create_directories(corpus / target);
      for (const auto& e : fs::directory_iterator(corpus / target)) {
        if (e.path().filename().string().rfind("seed-", 0) == 0) fs::remove(e.path());
      }
    }
    WireSeeds(corpus / "wire");
    PipelineSeeds(corpus / "pipeline", source_dir);
    RecordingSeeds(corpus / "recording", source_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
