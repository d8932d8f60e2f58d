// Recordings without servers: `fleetflow dump` prints each record of a recording as a JSON line
// (decoded samples, status, or why a record does not decode; a damaged tail said last, exit 3),
// and `fleetflow replay --out` writes the rows a pipeline's sinks would write as CSV, contacting
// no server: the committed recording gives its golden rows byte for byte, several sinks give a
// directory of CSV files, a corrected window appears once with its final value. The built
// binary is run, as a user runs it; the NATS URL and PostgreSQL conninfo of the pipelines point
// at a socket this test listens on, which must accept no connection.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "alarm.hpp"
#include "build_paths.hpp"
#include "dump.hpp"
#include "recording.hpp"
#include "row_capture.hpp"
#include "servers.hpp"
#include "utc_time.hpp"
#include "wire.hpp"

namespace fleetflow {
namespace {

using namespace std::chrono_literals;
using ::fleetflow::testing::CommandResult;
using ::fleetflow::testing::RunCommand;
using ::fleetflow::testing::TempDir;

const std::string kSource = ::fleetflow::testing::SourceDir();
const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
const std::string kRecording = kSource + "/tests/data/fleet_seed42.ffrc";
const std::string kGoldenRows = kSource + "/tests/data/fleet_seed42_rows.csv";
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kT0 = 1'767'225'600'000 * kMs;  // 2026-01-01T00:00:00Z

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

/// Every line of `text` parsed as a JSON object (a failure for any that is not).
std::vector<rapidjson::Document> JsonLines(const std::string& text) {
  std::vector<rapidjson::Document> out;
  for (const std::string& line : Lines(text)) {
    out.emplace_back();
    out.back().Parse<rapidjson::kParseFullPrecisionFlag>(line.c_str());
    EXPECT_FALSE(out.back().HasParseError()) << line;
    EXPECT_TRUE(out.back().IsObject()) << line;
  }
  return out;
}

std::vector<recording::Record> ReadRecords(const std::string& path) {
  recording::Reader reader;
  EXPECT_TRUE(reader.Open(path)) << reader.error();
  std::vector<recording::Record> out;
  recording::Record r;
  while (reader.Next(r) == recording::Reader::Status::kRecord) out.push_back(r);
  return out;
}

void WriteRecords(const std::string& path, const std::vector<recording::Record>& records) {
  recording::Writer w;
  ASSERT_TRUE(w.Open(path)) << w.error();
  for (const auto& r : records) w.Append(r);
  ASSERT_TRUE(w.Close()) << w.error();
}

recording::Record Samples(int64_t recv_ns, const std::string& subject,
                          const std::vector<wire::Point>& points) {
  return {recv_ns, subject, wire::EncodeBatch(points)};
}

recording::Record Text(int64_t recv_ns, const std::string& subject, const std::string& payload) {
  return {recv_ns, subject, std::vector<uint8_t>(payload.begin(), payload.end())};
}

CommandResult Fleetflow(std::vector<std::string> args,
                        const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), kFleetflow);
  return RunCommand(args, 120s, env);
}

/// A TCP socket listening on 127.0.0.1 that nothing should connect to: the address given to the
/// pipelines as their NATS server and PostgreSQL. (The kernel completes a connection's handshake
/// for the backlog, so any attempt shows in Attempts() without an accept loop.)
class Tripwire {
 public:
  Tripwire() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(fd_, 16) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len)) {
      throw std::runtime_error(std::string("tripwire: ") + std::strerror(errno));
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Tripwire() { ::close(fd_); }
  Tripwire(const Tripwire&) = delete;
  Tripwire& operator=(const Tripwire&) = delete;

  /// The environment that points the shipped pipelines at this socket.
  std::map<std::string, std::string> Env(const std::string& archive_dir) const {
    return {
        {"NATS_URL", Url()}, {"FLEETFLOW_PG", Conninfo()}, {"FLEETFLOW_ARCHIVE_DIR", archive_dir}};
  }
  std::string Url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  std::string Conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " connect_timeout=1";
  }
  /// Connections made to it so far.
  int Attempts() {
    while (true) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return attempts_;
      ::close(c);
      ++attempts_;
    }
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  int attempts_ = 0;
};

TEST(Tripwire, CountsTheConnectionsMadeToIt) {
  Tripwire t;
  EXPECT_EQ(t.Attempts(), 0);
  const int c = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(t.Url().substr(t.Url().rfind(':') + 1))));
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  EXPECT_EQ(t.Attempts(), 1);
  ::close(c);
}

// --- dump ------------------------------------------------------------------------------------

TEST(Dump, EveryRecordOfTheCommittedRecordingIsOneLineWithItsDecodedSamples) {
  const auto records = ReadRecords(kRecording);
  ASSERT_GT(records.size(), 100u);
  const CommandResult r = Fleetflow({"dump", kRecording});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), records.size());
  uint64_t offset = recording::kHeaderSize;
  size_t samples = 0, statuses = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& line = lines[i];
    const auto& rec = records[i];
    SCOPED_TRACE(rec.subject + " record " + std::to_string(i));
    EXPECT_EQ(line["file"].GetString(), kRecording);
    EXPECT_EQ(line["record"].GetUint64(), i);
    EXPECT_EQ(line["offset"].GetUint64(), offset);
    offset += recording::kRecordOverhead + rec.subject.size() + rec.payload.size();
    EXPECT_EQ(line["subject"].GetString(), rec.subject);
    EXPECT_EQ(line["received_ns"].GetInt64(), rec.recv_ns);
    EXPECT_EQ(ParseRfc3339(line["received"].GetString()), rec.recv_ns)
        << line["received"].GetString();
    const wire::Subject subject = wire::ParseSubject(rec.subject);
    ASSERT_NE(subject.kind, wire::SubjectKind::kInvalid);
    EXPECT_EQ(line["vehicle"].GetString(), std::string(subject.vehicle));
    EXPECT_FALSE(line.HasMember("error"));
    if (subject.kind == wire::SubjectKind::kStatus) {
      ++statuses;
      EXPECT_STREQ(line["kind"].GetString(), "status");
      EXPECT_EQ(line["status"].GetString(), std::string(rec.payload.begin(), rec.payload.end()));
      continue;
    }
    ++samples;
    EXPECT_STREQ(line["kind"].GetString(), "samples");
    EXPECT_EQ(line["sensor"].GetString(), std::string(subject.sensor));
    std::vector<wire::Point> points;
    ASSERT_EQ(wire::DecodeBatch(rec.payload.data(), rec.payload.size(), points),
              wire::DecodeError::kNone);
    const auto& got = line["samples"];
    ASSERT_EQ(got.Size(), points.size());
    for (rapidjson::SizeType k = 0; k < got.Size(); ++k) {
      EXPECT_EQ(got[k]["ts_ns"].GetInt64(), points[k].ts_ns);
      EXPECT_EQ(got[k]["seq"].GetUint(), points[k].seq);
      if (points[k].has_position) {
        EXPECT_EQ(got[k]["lat"].GetDouble(), points[k].lat);  // shortest round trip: exact
        EXPECT_EQ(got[k]["lon"].GetDouble(), points[k].lon);
        EXPECT_FALSE(got[k].HasMember("value"));
      } else {
        EXPECT_EQ(got[k]["value"].GetDouble(), points[k].value);
      }
    }
  }
  EXPECT_GT(samples, 0u);
  EXPECT_EQ(statuses, 8u) << "fleet-sim's 4 vehicles say on, then off";
}

TEST(Dump, RecordsThatDoNotDecodeSayWhyAndADamagedTailIsTheLastLine) {
  TempDir dir("ff-dump");
  const std::string file = dir.File("bad.ffrc");
  const wire::Point speed{kT0, 7, 12.5};
  wire::Point gps{kT0, 8};
  gps.has_position = true;
  gps.lat = 48.5;
  gps.lon = 2.25;
  WriteRecords(
      file, {Samples(kT0 + 1, "vehicle.v1.speed", {speed}), Samples(kT0 + 2, "vehicle.v1", {speed}),
             Text(kT0 + 3, "vehicle.v1.status", "maybe"), Text(kT0 + 4, "vehicle.v1.soc", ""),
             Text(kT0 + 5, "vehicle.v1.soc", "hello, world"),
             Samples(kT0 + 6, "telemetry.3.v2.gps", {gps})});
  // A record cut short, as a crash leaves it.
  std::vector<uint8_t> tail;
  recording::EncodeRecord(Samples(kT0 + 7, "vehicle.v1.speed", {speed}), tail);
  const std::string whole = Read(file);
  WriteFile(file, whole + std::string(tail.begin(), tail.begin() + 20));

  const CommandResult r = Fleetflow({"dump", file});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 7u) << r.out;
  EXPECT_STREQ(lines[0]["kind"].GetString(), "samples");
  EXPECT_EQ(lines[0]["samples"][0]["value"].GetDouble(), 12.5);
  EXPECT_EQ(lines[0]["samples"][0]["seq"].GetUint(), 7u);
  EXPECT_STREQ(lines[0]["received"].GetString(), "2026-01-01T00:00:00.000000001Z");
  const std::vector<std::pair<std::string, uint64_t>> errors = {
      {"bad_subject", 0}, {"bad_status", 5}, {"empty", 0}, {"bad_identifier", 12}};
  for (size_t i = 0; i < errors.size(); ++i) {
    const auto& line = lines[i + 1];
    SCOPED_TRACE(line["subject"].GetString());
    EXPECT_EQ(line["error"].GetString(), errors[i].first);
    EXPECT_STRNE(line["message"].GetString(), "");
    EXPECT_FALSE(line.HasMember("samples"));
    if (errors[i].second > 0) {
      EXPECT_EQ(line["payload_bytes"].GetUint64(), errors[i].second);
    }
  }
  EXPECT_STREQ(lines[4]["payload_head_hex"].GetString(), "68656c6c6f2c20776f726c64");
  EXPECT_STREQ(lines[2]["payload_head_hex"].GetString(), "6d61796265");
  // A partitioned server's subject is read as the vehicle's own, as the replay reads it.
  EXPECT_EQ(lines[5]["partition"].GetUint(), 3u);
  EXPECT_STREQ(lines[5]["vehicle"].GetString(), "v2");
  EXPECT_STREQ(lines[5]["sensor"].GetString(), "gps");
  EXPECT_EQ(lines[5]["samples"][0]["lat"].GetDouble(), 48.5);
  EXPECT_EQ(lines[5]["samples"][0]["lon"].GetDouble(), 2.25);
  const auto& last = lines[6];
  EXPECT_STREQ(last["damaged"].GetString(), "truncated");
  EXPECT_EQ(last["offset"].GetUint64(), whole.size());
  EXPECT_EQ(last["records_before"].GetUint64(), 6u);
  EXPECT_NE(std::string(last["error"].GetString()).find("truncated record"), std::string::npos);

  // A corrupt record (a flipped byte in the middle of the committed recording): the records
  // before it, then the line saying where; exit 3 too.
  std::string bytes = Read(kRecording);
  const size_t middle = bytes.size() / 2;
  bytes[middle] = static_cast<char>(bytes[middle] ^ 0x40);
  const std::string corrupt = dir.File("corrupt.ffrc");
  WriteFile(corrupt, bytes);
  const CommandResult c = Fleetflow({"dump", corrupt});
  EXPECT_EQ(c.exit_code, 3) << c.err;
  const auto clines = JsonLines(c.out);
  ASSERT_GT(clines.size(), 10u);
  const auto& damaged = clines.back();
  EXPECT_STREQ(damaged["damaged"].GetString(), "corrupt");
  EXPECT_LE(damaged["offset"].GetUint64(), middle);
  EXPECT_EQ(damaged["records_before"].GetUint64(), clines.size() - 1);
  for (size_t i = 0; i + 1 < clines.size(); ++i) EXPECT_FALSE(clines[i].HasMember("error"));
}

TEST(Dump, SubjectFilterLimitRotatedSetsAndFilesItCannotRead) {
  TempDir dir("ff-dump");
  const auto records = ReadRecords(kRecording);
  const CommandResult status = Fleetflow({"dump", kRecording, "--subject", "vehicle.*.status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const auto statuses = JsonLines(status.out);
  EXPECT_EQ(statuses.size(), 8u);
  for (const auto& l : statuses) EXPECT_STREQ(l["kind"].GetString(), "status");
  const CommandResult gps = Fleetflow({"dump", kRecording, "--subject", "vehicle.v00002.>"});
  for (const auto& l : JsonLines(gps.out)) EXPECT_STREQ(l["vehicle"].GetString(), "v00002");
  const CommandResult limited = Fleetflow({"dump", kRecording, "--limit", "5"});
  EXPECT_EQ(limited.exit_code, 0);
  EXPECT_EQ(Lines(limited.out).size(), 5u);

  // A rotated set, as `record --rotate` writes it: one stream, record indexes by file.
  const std::string base = dir.File("rot.ffrc");
  WriteRecords(base, {records.begin(), records.begin() + 300});
  WriteRecords(base + ".1", {records.begin() + 300, records.end()});
  const CommandResult rotated = Fleetflow({"dump", base, "--rotated"});
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  const auto rlines = JsonLines(rotated.out);
  ASSERT_EQ(rlines.size(), records.size());
  EXPECT_EQ(rlines[300]["file"].GetString(), base + ".1");
  EXPECT_EQ(rlines[300]["record"].GetUint64(), 0u);
  EXPECT_EQ(rlines[300]["received_ns"].GetInt64(), records[300].recv_ns);

  // Files it cannot read: the system's reason, exit 2, and the other files are still dumped.
  WriteFile(dir.File("notes.txt"), "not a recording at all");
  std::string v9 = Read(kRecording);
  v9[4] = 9;
  WriteFile(dir.File("v9.ffrc"), v9);
  const CommandResult bad =
      Fleetflow({"dump", dir.File("missing.ffrc"), dir.path(), dir.File("notes.txt"),
                 dir.File("v9.ffrc"), kRecording, "--limit", "2"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("missing.ffrc: cannot open: No such file or directory"), std::string::npos)
      << bad.err;
  EXPECT_NE(bad.err.find(dir.path() + ": cannot read: Is a directory"), std::string::npos)
      << bad.err;
  EXPECT_NE(bad.err.find("not a fleetflow recording"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("recording format version 9 is not supported"), std::string::npos)
      << bad.err;
  EXPECT_EQ(Lines(bad.out).size(), 2u);
  EXPECT_EQ(Fleetflow({"dump"}).exit_code, 2) << "a file is required";
}

TEST(Dump, SubjectPatternsAsNatsMatchesThem) {
  EXPECT_TRUE(SubjectMatches("vehicle.*.*", "vehicle.v1.speed"));
  EXPECT_TRUE(SubjectMatches("vehicle.>", "vehicle.v1.speed"));
  EXPECT_TRUE(SubjectMatches("vehicle.v1.speed", "vehicle.v1.speed"));
  EXPECT_FALSE(SubjectMatches("vehicle.>", "vehicle"));
  EXPECT_FALSE(SubjectMatches("vehicle.*", "vehicle.v1.speed"));
  EXPECT_FALSE(SubjectMatches("vehicle.*.status", "vehicle.v1.speed"));
  EXPECT_FALSE(SubjectMatches("vehicle.v1.speed.x", "vehicle.v1.speed"));
}

// --- replay --out ----------------------------------------------------------------------------

TEST(ReplayOut, DoublesAreWrittenAsPostgresqlPrintsThem) {
  EXPECT_EQ(PostgresDoubleText(0), "0");
  EXPECT_EQ(PostgresDoubleText(-2.5), "-2.5");
  EXPECT_EQ(PostgresDoubleText(48.91265561638422), "48.91265561638422");
  EXPECT_EQ(PostgresDoubleText(0.0001), "0.0001");
  EXPECT_EQ(PostgresDoubleText(0.00012), "0.00012");
  EXPECT_EQ(PostgresDoubleText(0.00001), "1e-05");
  EXPECT_EQ(PostgresDoubleText(1.25e-7), "1.25e-07");
  EXPECT_EQ(PostgresDoubleText(123456789012345.0), "123456789012345");
  EXPECT_EQ(PostgresDoubleText(1e15), "1e+15");
  EXPECT_EQ(PostgresDoubleText(1.5e15), "1.5e+15");
  EXPECT_EQ(PostgresDoubleText(1e100), "1e+100");
  EXPECT_EQ(PostgresDoubleText(100), "100");
  EXPECT_EQ(PostgresDoubleText(0.1 + 0.2), "0.30000000000000004");
}

TEST(ReplayOut, CommittedRecordingGivesTheGoldenRowsWithoutAnyServer) {
  TempDir dir("ff-replay-out");
  Tripwire tripwire;
  const auto env = tripwire.Env(dir.File("archive"));
  const std::string out = dir.File("rows.csv");
  const CommandResult r = Fleetflow(
      {"replay", kRecording, "--pipeline", kSource + "/pipelines/default.json", "--out", out}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Byte for byte what ReplayE2E.CommittedRecordingGivesTheGoldenRows reads from PostgreSQL.
  EXPECT_EQ(Read(out), Read(kGoldenRows));
  EXPECT_NE(r.err.find("16 rows to " + out), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("timescale_sink by a capture of its rows"), std::string::npos) << r.err;
  const CommandResult stdout_run = Fleetflow(
      {"replay", kRecording, "--pipeline", kSource + "/pipelines/default.json", "--out", "-"}, env);
  ASSERT_EQ(stdout_run.exit_code, 0) << stdout_run.err;
  EXPECT_EQ(stdout_run.out, Read(kGoldenRows));
  EXPECT_EQ(tripwire.Attempts(), 0) << "a server was contacted";
  EXPECT_FALSE(std::filesystem::exists(dir.File("archive"))) << "the archive is left out";

  const CommandResult unwritable =
      Fleetflow({"replay", kRecording, "--pipeline", kSource + "/pipelines/default.json", "--out",
                 dir.File("missing/rows.csv")},
                env);
  EXPECT_EQ(unwritable.exit_code, 1);
  EXPECT_NE(unwritable.err.find("missing/rows.csv: cannot create: No such file or directory"),
            std::string::npos)
      << unwritable.err;

  // The CSV is what `fleetflow test` reads as expect_csv.
  const std::string test = dir.File("t.test.json");
  WriteFile(test, R"({"pipeline": ")" + kSource + R"(/pipelines/default.json", "tests": [)" +
                      R"({"name": "replayed", "recording": ")" + kRecording +
                      R"(", "expect_csv": ")" + out + R"(", "tolerance": 0}]})");
  const CommandResult t = Fleetflow({"test", test}, env);
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;

  // A damaged file: the rows of the records before the damage, then replay's exit status.
  std::string bytes = Read(kRecording);
  WriteFile(dir.File("cut.ffrc"), bytes.substr(0, bytes.size() / 2));
  const std::string cut_rows = dir.File("cut.csv");
  const CommandResult cut =
      Fleetflow({"replay", dir.File("cut.ffrc"), "--pipeline", kSource + "/pipelines/default.json",
                 "--out", cut_rows, "--strict"},
                env);
  EXPECT_EQ(cut.exit_code, 3) << cut.err;
  const size_t cut_lines = Lines(Read(cut_rows)).size();
  EXPECT_GT(cut_lines, 1u);
  EXPECT_LT(cut_lines, Lines(Read(kGoldenRows)).size());
  EXPECT_EQ(tripwire.Attempts(), 0) << "a server was contacted";
}

/// A pipeline with two sinks on the 1 s rows (one of them with a derived column), a sink of
/// 1 s statistics and a rule; every server address is the tripwire's.
std::string SeveralSinksPipeline(const Tripwire& t) {
  return R"({
  "name": "several",
  "nodes": [
    { "id": "in", "type": "nats_source", "config": { "url": ")" +
         t.Url() + R"(", "subject": "vehicle.*.*" } },
    { "id": "last", "type": "keyed_last_value", "inputs": ["in"], "config": { "keep": 4 } },
    { "id": "join", "type": "window_join", "inputs": ["last"],
      "config": { "every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                  "sensors": ["speed", "soc"] } },
    { "id": "stats", "type": "window_aggregate", "inputs": ["in"],
      "config": { "every_ms": 1000, "allowed_lateness_ms": 500, "sensors": ["speed"] } },
    { "id": "rows", "type": "timescale_sink", "inputs": ["join"],
      "config": { "conninfo": ")" +
         t.Conninfo() + R"(", "table": "rows",
        "columns": [ { "name": "speed", "sensor": "speed", "interpolation": "linear" },
                     { "name": "kmh", "expression": "speed * 3.6" } ] } },
    { "id": "soc_only", "type": "timescale_sink", "inputs": ["join"],
      "config": { "conninfo": ")" +
         t.Conninfo() + R"(", "table": "soc",
        "columns": [ { "name": "soc", "sensor": "soc", "interpolation": "previous" } ] } },
    { "id": "speed_stats", "type": "timescale_sink", "inputs": ["stats"],
      "config": { "conninfo": ")" +
         t.Conninfo() + R"(", "table": "speed_stats",
        "columns": [ { "name": "n", "sensor": "speed", "stat": "count" },
                     { "name": "mean", "sensor": "speed", "stat": "mean" },
                     { "name": "first_at", "sensor": "speed", "stat": "first_time" } ] } },
    { "id": "alarms", "type": "rule", "inputs": ["join"],
      "config": { "url": ")" +
         t.Url() + R"(", "conninfo": ")" + t.Conninfo() + R"(", "backend": "memory",
        "columns": [ { "name": "speed", "sensor": "speed", "interpolation": "linear" } ],
        "rules": [ { "name": "fast", "when": "speed > 15", "clear": "speed < 14",
                     "severity": "warning", "value": "speed" } ] } }
  ]
})";
}

/// A CSV file as rows of cells (the header first).
std::vector<std::vector<std::string>> Csv(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  for (const std::string& line : Lines(text)) {
    out.emplace_back();
    std::string cell;
    std::istringstream s(line);
    while (std::getline(s, cell, ',')) out.back().push_back(cell);
    if (!line.empty() && line.back() == ',') out.back().emplace_back();
  }
  return out;
}

TEST(ReplayOut, SeveralSinksGiveADirectoryOfCsvFilesAndTheRulesAlarms) {
  TempDir dir("ff-replay-out");
  Tripwire tripwire;
  const std::string pipeline = dir.File("several.json");
  WriteFile(pipeline, SeveralSinksPipeline(tripwire));
  const std::string out = dir.File("csv");  // created
  const std::string alarms = dir.File("alarms.jsonl");
  const CommandResult r = Fleetflow(
      {"replay", kRecording, "--pipeline", pipeline, "--out", out, "--alarms-out", alarms});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(tripwire.Attempts(), 0) << "a server was contacted";
  const auto rows = Csv(Read(out + "/rows.csv"));
  const auto soc = Csv(Read(out + "/soc_only.csv"));
  const auto stats = Csv(Read(out + "/speed_stats.csv"));
  ASSERT_EQ(rows.size(), 17u) << "a header and the 16 rows of the golden CSV";
  EXPECT_EQ(rows[0], (std::vector<std::string>{"vehicle_id", "time_ms", "speed", "kmh"}));
  EXPECT_EQ(soc[0], (std::vector<std::string>{"vehicle_id", "time_ms", "soc"}));
  EXPECT_EQ(stats[0], (std::vector<std::string>{"vehicle_id", "time_ms", "n", "mean", "first_at"}));
  // The same keys and values as the golden rows of pipelines/default.json, the derived column
  // computed from them.
  const auto golden = Csv(Read(kGoldenRows));
  ASSERT_EQ(golden.size(), rows.size());
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i][0], golden[i][0]);
    EXPECT_EQ(rows[i][1], golden[i][1]);
    EXPECT_EQ(rows[i][2], golden[i][4]) << "speed";
    EXPECT_NEAR(std::stod(rows[i][3]), std::stod(golden[i][4]) * 3.6, 1e-9);
    EXPECT_EQ(soc[i][2], golden[i][5]) << "soc";
  }
  // Each statistic row against the recording itself: the speed samples of its vehicle in
  // [time, time + 1 s).
  std::map<std::pair<std::string, int64_t>, std::vector<wire::Point>> windows;
  for (const auto& rec : ReadRecords(kRecording)) {
    const wire::Subject s = wire::ParseSubject(rec.subject);
    if (s.kind != wire::SubjectKind::kSample || s.sensor != "speed") continue;
    std::vector<wire::Point> points;
    wire::DecodeBatch(rec.payload.data(), rec.payload.size(), points);
    for (const auto& p : points) {
      windows[{std::string(s.vehicle), p.ts_ns / 1000 / kMs * 1000}].push_back(p);
    }
  }
  ASSERT_GT(stats.size(), 4u);
  for (size_t i = 1; i < stats.size(); ++i) {
    SCOPED_TRACE(stats[i][0] + " " + stats[i][1]);
    const auto& points = windows[{stats[i][0], std::stoll(stats[i][1])}];
    ASSERT_FALSE(points.empty());
    EXPECT_EQ(stats[i][2], std::to_string(points.size())) << "a count is an integer";
    double sum = 0;
    for (const auto& p : points) sum += p.value;
    EXPECT_NEAR(std::stod(stats[i][3]), sum / static_cast<double>(points.size()), 1e-9);
    EXPECT_EQ(ParseRfc3339(stats[i][4]), points.front().ts_ns / 1000 * 1000)
        << "a time in microseconds, as PostgreSQL keeps it";
  }
  // The rule's events, as the rule node would publish them.
  const auto events = Lines(Read(alarms));
  ASSERT_FALSE(events.empty());
  for (const std::string& line : events) {
    std::string error;
    const auto e = ParseAlarmJson(line, &error);
    ASSERT_TRUE(e.has_value()) << error << ": " << line;
    EXPECT_EQ(e->rule, "fast");
    if (e->raised) {
      EXPECT_GT(e->value.value_or(0), 15) << line;
    }
  }

  // The directory is what `fleetflow test` reads as expect_csv by sink (times included).
  const std::string test = dir.File("t.test.json");
  WriteFile(test, R"({"pipeline": ")" + pipeline + R"(", "tests": [{"name": "replayed", )" +
                      R"("recording": ")" + kRecording + R"(", "tolerance": 0, "expect_csv": {)" +
                      R"("rows": ")" + out + R"(/rows.csv", "soc_only": ")" + out +
                      R"(/soc_only.csv", "speed_stats": ")" + out + R"(/speed_stats.csv"}}]})");
  const CommandResult t = Fleetflow({"test", test});
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;

  // One file to stdout: --sink chooses it; several to stdout is refused.
  const CommandResult one =
      Fleetflow({"replay", kRecording, "--pipeline", pipeline, "--out", "-", "--sink", "soc_only"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, Read(out + "/soc_only.csv"));
  const CommandResult several =
      Fleetflow({"replay", kRecording, "--pipeline", pipeline, "--out", "-"});
  EXPECT_EQ(several.exit_code, 2);
  EXPECT_NE(several.err.find("has 3 timescale_sink nodes (rows, soc_only, speed_stats): --out "
                             "names a directory"),
            std::string::npos)
      << several.err;
  const CommandResult unknown =
      Fleetflow({"replay", kRecording, "--pipeline", pipeline, "--out", "-", "--sink", "nope"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("--sink nope"), std::string::npos) << unknown.err;
  WriteFile(dir.File("a-file"), "");
  const CommandResult not_dir =
      Fleetflow({"replay", kRecording, "--pipeline", pipeline, "--out", dir.File("a-file")});
  EXPECT_EQ(not_dir.exit_code, 2);
  EXPECT_NE(not_dir.err.find("this is none"), std::string::npos) << not_dir.err;
  EXPECT_EQ(Fleetflow({"replay", kRecording, "--pipeline", pipeline, "--sink", "rows"}).exit_code,
            2)
      << "--sink without --out";
  EXPECT_EQ(tripwire.Attempts(), 0) << "a server was contacted";
}

TEST(ReplayOut, ACorrectedWindowIsOneLineWithItsFinalValues) {
  TempDir dir("ff-replay-out");
  Tripwire tripwire;
  // docs/semantics.md, Example 4b: window 1 s is emitted at 1.5 s with the sample 0.5 s as its
  // before sample; the sample 0.95 s arrives at 1.6 s and, with correction_horizon_ms, emits
  // window 1 s again. The sink's upsert keeps the second; so does the CSV.
  const std::string pipeline = dir.File("corrected.json");
  WriteFile(pipeline, R"({ "name": "corrected", "nodes": [
    { "id": "in", "type": "nats_source", "config": { "url": ")" +
                          tripwire.Url() + R"(" } },
    { "id": "join", "type": "window_join", "inputs": ["in"],
      "config": { "every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                  "sensors": ["speed"], "correction_horizon_ms": 5000 } },
    { "id": "sink", "type": "timescale_sink", "inputs": ["join"],
      "config": { "conninfo": ")" +
                          tripwire.Conninfo() + R"(", "table": "t",
        "columns": [ { "name": "speed", "sensor": "speed", "interpolation": "previous" } ] } } ] })");
  auto at = [](int64_t ms) { return kT0 + ms * kMs; };
  std::vector<recording::Record> records = {
      Samples(at(500), "vehicle.v1.speed", {{at(500), 0, 1.0}}),
      Samples(at(1200), "vehicle.v1.speed", {{at(1200), 1, 3.0}}),
      Samples(at(1600), "vehicle.v1.speed", {{at(950), 2, 2.0}}),  // late for window 1 s
      Samples(at(3000), "vehicle.v1.speed", {{at(3000), 3, 4.0}})};
  WriteRecords(dir.File("late.ffrc"), records);
  records.erase(records.begin() + 2);
  WriteRecords(dir.File("in-time.ffrc"), records);
  const CommandResult late =
      Fleetflow({"replay", dir.File("late.ffrc"), "--pipeline", pipeline, "--out", "-"});
  ASSERT_EQ(late.exit_code, 0) << late.err;
  const CommandResult in_time =
      Fleetflow({"replay", dir.File("in-time.ffrc"), "--pipeline", pipeline, "--out", "-"});
  ASSERT_EQ(in_time.exit_code, 0) << in_time.err;
  const std::string w1 = std::to_string(at(1000) / kMs);
  EXPECT_NE(in_time.out.find("v1," + w1 + ",1\n"), std::string::npos) << in_time.out;
  EXPECT_NE(late.out.find("v1," + w1 + ",2\n"), std::string::npos) << late.out;
  EXPECT_EQ(late.out.find("v1," + w1 + ",1\n"), std::string::npos) << late.out;
  EXPECT_EQ(Lines(late.out).size(), Lines(in_time.out).size()) << late.out;
  EXPECT_EQ(tripwire.Attempts(), 0) << "a server was contacted";
}

}  // namespace
}  // namespace fleetflow
