// Record and replay with real components: fleet-sim (fixed seed) publishes over a real nats-server
// while `fleetflow run pipelines/default.json` writes rows and `fleetflow record` captures the
// messages; `fleetflow replay` of that recording into a fresh table must give the live rows
// (byte-identical), twice, and the rows recomputed from the simulator's model. Damaged and
// unknown-version files are reported. The committed recording in tests/data/ is replayed against
// its golden rows, and `fleetflow test` of it must give the rows its replay wrote to PostgreSQL, as
// must `fleetflow test` of the shipped pipeline tests' inputs. Several files (a rotated set, as
// `record --max-bytes --rotate` writes it) replay as one, gaps and overlaps between them are
// reported, and --speed paces the replay on the recorded span. `record --stream` reads ranges of
// a JetStream stream, leaving its consumers as they were.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <thread>
#include <tuple>

#include "build_paths.hpp"
#include "builtin.hpp"
#include "fleet_check.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "recording.hpp"
#include "test_runner.hpp"
#include "utc_time.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/default.json";
const std::string kGoldenRecording =
    ::fleetflow::testing::SourceDir() + "/tests/data/fleet_seed42.ffrc";
const std::string kGoldenRows =
    ::fleetflow::testing::SourceDir() + "/tests/data/fleet_seed42_rows.csv";

const std::string kTableHash =
    "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY vehicle_id, time)), 'empty') "
    "FROM vehicle_telemetry t";

std::vector<char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteBytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The records of a recording (all of them: it must be undamaged).
std::vector<recording::Record> ReadRecords(const std::string& path) {
  recording::Reader reader;
  EXPECT_TRUE(reader.Open(path)) << reader.error();
  std::vector<recording::Record> out;
  recording::Record r;
  recording::Reader::Status status;
  while ((status = reader.Next(r)) == recording::Reader::Status::kRecord) out.push_back(r);
  EXPECT_EQ(status, recording::Reader::Status::kEnd) << path << ": " << reader.error();
  return out;
}

/// Writes records [from, to) of `records` as a recording at `path`; returns path.
std::string WriteRecords(const std::vector<recording::Record>& records, size_t from, size_t to,
                         const std::string& path) {
  recording::Writer writer;
  EXPECT_TRUE(writer.Open(path)) << writer.error();
  for (size_t i = from; i < to; ++i) writer.Append(records[i]);
  EXPECT_TRUE(writer.Close()) << writer.error();
  return path;
}

/// Replays `files` (in order) into a fresh vehicle_telemetry table.
CommandResult ReplayInto(const PostgresServer& pg, const std::vector<std::string>& files,
                         std::vector<std::string> extra = {}) {
  pg.Psql("DROP TABLE IF EXISTS vehicle_telemetry");
  std::vector<std::string> argv = {kFleetflow, "replay"};
  argv.insert(argv.end(), files.begin(), files.end());
  argv.insert(argv.end(), {"--pipeline", kPipeline});
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunCommand(argv, 120s, pg.env());
}

CommandResult ReplayInto(const PostgresServer& pg, const std::string& file,
                         std::vector<std::string> extra = {}) {
  return ReplayInto(pg, std::vector<std::string>{file}, std::move(extra));
}

/// The table as CSV lines: vehicle_id, window time in ms since the epoch, then the columns
/// (empty for NULL), ordered by vehicle and time.
std::string TableCsv(const PostgresServer& pg) {
  std::string rows = pg.Psql(
      "SELECT vehicle_id, (extract(epoch FROM time) * 1000)::bigint, lat, lon, speed, soc, torque "
      "FROM vehicle_telemetry ORDER BY vehicle_id, time");
  for (char& c : rows) {
    if (c == '|') c = ',';
  }
  return "vehicle_id,time_ms,lat,lon,speed,soc,torque\n" + rows + "\n";
}

TEST(ReplayE2E, ReplayOfALiveRecordingGivesTheLiveRowsDeterministically) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-replay-e2e");

  Engine engine(kPipeline, s.nats, s.pg, s.dir.File("engine.log"));
  const std::string recording = s.dir.File("live.ffrc");
  Process recorder({kFleetflow, "record", "--url", s.nats.url(), "--out", recording},
                   s.dir.File("record.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();
  ASSERT_TRUE(
      WaitFor([&] { return recorder.ReadLog().find("recording") != std::string::npos; }, 30s))
      << recorder.ReadLog();

  const SimRun sim = RunFleetSim(s.nats, 10, 6);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  const auto& expected = sim.expected;
  ASSERT_TRUE(WaitForRows(s.pg, expected.size()))
      << "rows: " << Rows(s.pg) << ", expected " << expected.size() << "\n"
      << engine.process().ReadLog();
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
  EXPECT_EQ(recorder.Stop(SIGINT, 10s), 0) << recorder.ReadLog();
  EXPECT_NE(recorder.ReadLog().find("recorded "), std::string::npos) << recorder.ReadLog();
  const CheckResult live_check = CheckRows(s.pg, expected);
  ASSERT_TRUE(live_check.ok()) << live_check.Summary() << "\n" << live_check.first_problems;
  const std::string live_hash = s.pg.Psql(kTableHash);

  // Replayed twice into fresh tables: the live rows, byte for byte, both times.
  const CommandResult first = ReplayInto(s.pg, recording);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.err.find("replayed "), std::string::npos) << first.err;
  const CheckResult replay_check = CheckRows(s.pg, expected);
  EXPECT_TRUE(replay_check.ok()) << replay_check.Summary() << "\n" << replay_check.first_problems;
  EXPECT_EQ(s.pg.Psql(kTableHash), live_hash);
  const CommandResult second = ReplayInto(s.pg, recording);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(s.pg.Psql(kTableHash), live_hash);

  // A file cut in its middle replays up to the damage and says where it stopped.
  const auto bytes = ReadBytes(recording);
  const std::string cut = s.dir.File("cut.ffrc");
  WriteBytes(cut,
             std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)));
  const CommandResult damaged = ReplayInto(s.pg, cut);
  EXPECT_EQ(damaged.exit_code, 0) << damaged.err;
  EXPECT_NE(damaged.err.find("stopped at a damaged record at byte offset"), std::string::npos)
      << damaged.err;
  const int rows_before_damage = Rows(s.pg);
  EXPECT_GT(rows_before_damage, 0);
  EXPECT_LT(rows_before_damage, static_cast<int>(expected.size()));
  EXPECT_EQ(ReplayInto(s.pg, cut, {"--strict"}).exit_code, 3);

  // An unknown format version is refused before anything runs.
  auto future = bytes;
  future[4] = 7;
  const std::string v7 = s.dir.File("v7.ffrc");
  WriteBytes(v7, future);
  const CommandResult refused = ReplayInto(s.pg, v7);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("recording format version 7 is not supported"), std::string::npos)
      << refused.err;
}

// The committed recording (fleet-sim --seed 42, see docs/recording.md) against its golden rows:
// an operator change that alters any row fails here. FF_UPDATE_GOLDEN=1 rewrites the CSV.
TEST(ReplayE2E, CommittedRecordingGivesTheGoldenRows) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  const CommandResult r = ReplayInto(pg, kGoldenRecording);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string csv = TableCsv(pg);
  if (std::getenv("FF_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(kGoldenRows, std::ios::trunc) << csv;
    GTEST_SKIP() << "rewrote " << kGoldenRows;
  }
  const auto golden = ReadBytes(kGoldenRows);
  ASSERT_FALSE(golden.empty()) << kGoldenRows << " is missing";
  EXPECT_EQ(csv, std::string(golden.begin(), golden.end()))
      << "replay rows differ from " << kGoldenRows;
  const std::string hash = pg.Psql(kTableHash);
  ASSERT_EQ(ReplayInto(pg, kGoldenRecording).exit_code, 0);
  EXPECT_EQ(pg.Psql(kTableHash), hash);
}

// `fleetflow test` (replay on the engine, rows computed by the sink's row computation, no
// PostgreSQL) must give exactly the rows `fleetflow replay` writes to PostgreSQL through the real
// timescale_sink: the table is the test's expected CSV.
TEST(ReplayE2E, PipelineTestRunnerGivesTheRowsWrittenToPostgres) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-test-runner-e2e");
  const CommandResult r = ReplayInto(pg, kGoldenRecording);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string csv = TableCsv(pg);
  ASSERT_GT(std::count(csv.begin(), csv.end(), '\n'), 10) << csv;
  std::ofstream(dir.File("rows.csv")) << csv;
  const std::string test_file = dir.File("replay.test.json");
  std::ofstream(test_file) << R"({ "pipeline": ")" << kPipeline << R"(", "tests": [ {)"
                           << R"( "name": "replayed rows", "recording": ")" << kGoldenRecording
                           << R"(", "expect_csv": "rows.csv", "tolerance": 0 } ] })";
  const CommandResult t = RunCommand({kFleetflow, "test", test_file}, 60s);
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;
  EXPECT_NE(t.out.find("PASS replayed rows"), std::string::npos) << t.out << t.err;
}

// The worked examples of pipelines/default.test.json (interpolation, a late sample, a gap beyond
// max_gap_ms, status off): their inputs, replayed into PostgreSQL by `fleetflow replay`, give
// every column of every row that `fleetflow test` computes from the same inputs.
TEST(ReplayE2E, ShippedPipelineTestsGiveTheRowsReplayWritesToPostgres) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-test-runner-e2e");
  Registry registry;
  RegisterBuiltinOperators(registry);
  const std::string shipped = ::fleetflow::testing::SourceDir() + "/pipelines/default.test.json";
  const auto text = ReadBytes(shipped);
  rapidjson::Document doc;
  doc.Parse(std::string(text.begin(), text.end()).c_str());
  ASSERT_FALSE(doc.HasParseError());
  auto& alloc = doc.GetAllocator();
  auto& tests = doc["tests"];
  ASSERT_GE(tests.Size(), 4u);
  for (rapidjson::SizeType i = 0; i < tests.Size(); ++i) {
    const std::string name = tests[i]["name"].GetString();
    const std::string recording = dir.File(std::to_string(i) + ".ffrc");
    std::ostringstream err;
    ASSERT_TRUE(WriteTestInputs(registry, shipped, name, recording, err)) << err.str();
    const CommandResult r = ReplayInto(pg, recording);
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
    const std::string csv = dir.File(std::to_string(i) + ".csv");
    std::ofstream(csv) << TableCsv(pg);
    tests[i].RemoveMember("expect");
    tests[i].RemoveMember("tolerance");
    tests[i].AddMember("expect_csv", rapidjson::Value(csv.c_str(), alloc), alloc);
    tests[i].AddMember("tolerance", 0, alloc);
  }
  doc["pipeline"].SetString(kPipeline.c_str(), alloc);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  const std::string test_file = dir.File("shipped.test.json");
  std::ofstream(test_file) << sb.GetString();
  const CommandResult t = RunCommand({kFleetflow, "test", test_file}, 60s);
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;
  EXPECT_NE(t.out.find(std::to_string(tests.Size()) + " tests: " + std::to_string(tests.Size()) +
                       " passed"),
            std::string::npos)
      << t.out << t.err;
}

// Several files replay as one stream: the committed recording cut in three (as `record --rotate`
// names them) gives the rows of the whole file, without a warning; out of order the files
// overlap, and without the middle one there is a gap: both are reported, naming the files.
TEST(ReplayE2E, ARotatedSetReplaysAsOneFileAndGapsAndOverlapsAreReported) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-replay-files-e2e");
  const auto records = ReadRecords(kGoldenRecording);
  ASSERT_GT(records.size(), 300u);
  const size_t third = records.size() / 3;
  const std::string base = dir.File("fleet.ffrc");
  const std::vector<std::string> parts = {
      WriteRecords(records, 0, third, base), WriteRecords(records, third, 2 * third, base + ".1"),
      WriteRecords(records, 2 * third, records.size(), base + ".2")};
  ASSERT_GT(records[2 * third].recv_ns - records[third - 1].recv_ns, 1'000'000'000)
      << "the middle part must span more than the gap threshold";

  ASSERT_EQ(ReplayInto(pg, kGoldenRecording).exit_code, 0);
  const std::string whole = pg.Psql(kTableHash);
  const CommandResult rotated = ReplayInto(pg, base, {"--rotated"});
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  EXPECT_EQ(pg.Psql(kTableHash), whole) << rotated.err;
  EXPECT_NE(rotated.err.find("replaying " + parts[0] + ", " + parts[1] + ", " + parts[2]),
            std::string::npos)
      << rotated.err;
  EXPECT_EQ(rotated.err.find("gap:"), std::string::npos) << rotated.err;
  EXPECT_EQ(rotated.err.find("overlap:"), std::string::npos) << rotated.err;
  const CommandResult listed = ReplayInto(pg, parts);
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(pg.Psql(kTableHash), whole) << listed.err;

  const CommandResult overlap = ReplayInto(pg, {parts[1], parts[0]});
  ASSERT_EQ(overlap.exit_code, 0) << overlap.err;
  EXPECT_NE(overlap.err.find("overlap: " + parts[0] + " starts at "), std::string::npos)
      << overlap.err;
  EXPECT_NE(overlap.err.find("before " + parts[1] + " ended at "), std::string::npos)
      << overlap.err;
  EXPECT_EQ(overlap.err.find("gap:"), std::string::npos) << overlap.err;

  const CommandResult gap = ReplayInto(pg, {parts[0], parts[2]});
  ASSERT_EQ(gap.exit_code, 0) << gap.err;
  EXPECT_NE(gap.err.find("gap: " + parts[2] + " starts at "), std::string::npos) << gap.err;
  EXPECT_NE(gap.err.find("after " + parts[0] + " ended at "), std::string::npos) << gap.err;
  EXPECT_EQ(gap.err.find("overlap:"), std::string::npos) << gap.err;
  // A threshold above the silence: no report.
  const CommandResult tolerated =
      ReplayInto(pg, {parts[0], parts[2]}, {"--max-file-gap-ms", "60000"});
  ASSERT_EQ(tolerated.exit_code, 0) << tolerated.err;
  EXPECT_EQ(tolerated.err.find("gap:"), std::string::npos) << tolerated.err;
}

// --speed N paces the replay at N times the recorded pace: the run takes at least the recorded
// span / N (as fast as possible, the same file takes a fraction of it).
TEST(ReplayE2E, SpeedPacesTheReplayOnTheRecordedSpan) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  const auto records = ReadRecords(kGoldenRecording);
  ASSERT_FALSE(records.empty());
  const double span_s = static_cast<double>(records.back().recv_ns - records.front().recv_ns) / 1e9;
  ASSERT_GT(span_s, 3.0);
  constexpr double kSpeed = 2.5;
  const auto timed = [&](std::vector<std::string> extra) {
    const auto start = std::chrono::steady_clock::now();
    const CommandResult r = ReplayInto(pg, kGoldenRecording, std::move(extra));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const double fast_s = timed({});
  const std::string hash = pg.Psql(kTableHash);
  {  // Without a terminal the progress is a line of its own, the last one at 100 %.
    const CommandResult r = ReplayInto(pg, kGoldenRecording);
    EXPECT_NE(r.err.find("replay: 100.0% " + std::to_string(records.size()) + " records, "),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find('\r'), std::string::npos) << "no bar redrawn in place";
  }
  const double paced_s = timed({"--speed", "2.5"});
  EXPECT_EQ(pg.Psql(kTableHash), hash);
  EXPECT_GE(paced_s, span_s / kSpeed) << "recorded span " << span_s << " s";
  EXPECT_LE(paced_s, span_s / kSpeed + fast_s + 5) << "recorded span " << span_s << " s";
  EXPECT_LT(fast_s, span_s / kSpeed) << "as fast as possible";
  std::printf("replay of %.2f s recorded: %.2f s as fast as possible, %.2f s at --speed 2.5\n",
              span_s, fast_s, paced_s);
}

// On a terminal (tmux) the progress of a replay is a bar redrawn in place while it runs (paced:
// --speed 2), full with the totals when it ends.
TEST(ReplayE2E, ProgressIsABarRedrawnInPlaceOnATerminal) {
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_TMUX();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-replay-progress-e2e");
  const auto records = ReadRecords(kGoldenRecording);
  std::string command = "env";
  for (const auto& [name, value] : pg.env()) command += " " + name + "=" + value;
  // The shell stays after the replay: tmux may drop a dead pane's last output.
  command += " " + kFleetflow + " replay " + kGoldenRecording + " --pipeline " + kPipeline +
             " --speed 2; echo exit=$?; exec sleep 600";
  Tmux tmux(dir, command);
  // "[####..........]  42.0% ..." with as many # as the percentage fills of 30.
  const std::regex bar(R"(\[(#*)(\.*)\]\s+([0-9.]+)% ([0-9]+) records)");
  const auto bars = [&](const std::string& screen) {
    std::vector<std::smatch> out;
    for (auto it = std::sregex_iterator(screen.begin(), screen.end(), bar);
         it != std::sregex_iterator(); ++it) {
      out.push_back(*it);
    }
    return out;
  };
  std::string screen;
  ASSERT_TRUE(WaitFor(
      [&] {
        screen = tmux.Screen();
        const auto found = bars(screen);
        if (found.size() != 1) return false;
        const double percent = std::stod(found[0][3].str());
        return percent > 0 && percent < 100;
      },
      60s))
      << screen;
  {
    const auto found = bars(screen);
    const double percent = std::stod(found[0][3].str());
    EXPECT_EQ(found[0][1].length() + found[0][2].length(), 30u) << screen;
    EXPECT_NEAR(static_cast<double>(found[0][1].length()), percent / 100 * 30, 1) << screen;
    EXPECT_LT(std::stoul(found[0][4].str()), records.size()) << screen;
  }
  ASSERT_TRUE(
      WaitFor([&] { return (screen = tmux.Screen()).find("exit=") != std::string::npos; }, 60s))
      << screen;
  EXPECT_NE(screen.find("exit=0"), std::string::npos) << screen;
  const auto found = bars(screen);
  ASSERT_EQ(found.size(), 1u) << "one bar, redrawn in place:\n" << screen;
  EXPECT_EQ(found[0][1].length(), 30u) << screen;
  EXPECT_EQ(found[0][3].str(), "100.0") << screen;
  EXPECT_EQ(found[0][4].str(), std::to_string(records.size())) << screen;
  EXPECT_NE(screen.find("replayed " + std::to_string(records.size()) + " records"),
            std::string::npos)
      << screen;
}

// `record --max-bytes N --rotate` cuts a live recording into complete files of about N bytes
// (FILE, FILE.1, ...) that together hold every message, in order, and replay (--rotated) to the
// rows computed from the fleet's model; without --rotate the recorder stops after FILE.
TEST(ReplayE2E, RecordMaxBytesRotatesIntoCompleteFilesThatReplayAsOne) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-record-rotate-e2e");
  constexpr uint64_t kMaxBytes = 40'000;
  const std::string rotated = s.dir.File("rotated.ffrc");
  const std::string single = s.dir.File("single.ffrc");
  const auto recorder = [&](const std::string& out, bool rotate, const std::string& log) {
    std::vector<std::string> argv = {
        kFleetflow, "record", "--url",       s.nats.url(),
        "--out",    out,      "--max-bytes", std::to_string(kMaxBytes)};
    if (rotate) argv.push_back("--rotate");
    return Process(argv, s.dir.File(log));
  };
  Process rotating = recorder(rotated, true, "rotate.log");
  Process stopping = recorder(single, false, "single.log");
  for (Process* p : {&rotating, &stopping}) {
    ASSERT_TRUE(WaitFor([&] { return p->ReadLog().find("recording") != std::string::npos; }, 30s))
        << p->ReadLog();
  }
  constexpr int kVehicles = 10, kDurationS = 4;
  const SimRun sim = RunFleetSim(s.nats, kVehicles, kDurationS);
  ASSERT_EQ(sim.result.exit_code, 0) << sim.result.err;
  EXPECT_EQ(stopping.Wait(10s), std::optional<int>(0)) << stopping.ReadLog();
  EXPECT_EQ(rotating.Stop(SIGINT, 10s), 0) << rotating.ReadLog();

  // Without --rotate: one file of at least N bytes, and the recorder stopped by itself.
  EXPECT_GE(std::filesystem::file_size(single), kMaxBytes);
  EXPECT_FALSE(std::filesystem::exists(single + ".1"));
  const auto first_only = ReadRecords(single);

  // With --rotate: complete files of about N bytes each (the last one smaller), every message.
  std::vector<std::string> files = {rotated};
  while (std::filesystem::exists(rotated + "." + std::to_string(files.size()))) {
    files.push_back(rotated + "." + std::to_string(files.size()));
  }
  ASSERT_GE(files.size(), 3u);
  std::vector<recording::Record> all;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto size = std::filesystem::file_size(files[i]);
    if (i + 1 < files.size()) {
      EXPECT_GE(size, kMaxBytes) << files[i];
    }
    EXPECT_LT(size, kMaxBytes + 16'384) << files[i];
    const auto records = ReadRecords(files[i]);
    EXPECT_FALSE(records.empty()) << files[i];
    all.insert(all.end(), records.begin(), records.end());
  }
  EXPECT_NE(rotating.ReadLog().find("recorded " + std::to_string(all.size()) + " messages"),
            std::string::npos)
      << rotating.ReadLog();
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                             [](const auto& a, const auto& b) { return a.recv_ns < b.recv_ns; }));
  ASSERT_LT(first_only.size(), all.size());
  for (size_t i = 0; i < first_only.size(); ++i) {
    ASSERT_EQ(first_only[i].subject, all[i].subject) << i;
    ASSERT_EQ(first_only[i].payload, all[i].payload) << i;
  }

  const CommandResult replay = ReplayInto(s.pg, rotated, {"--rotated"});
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_EQ(replay.err.find("gap:"), std::string::npos) << replay.err;
  const CheckResult check = CheckRows(s.pg, sim.expected);
  EXPECT_TRUE(check.ok()) << check.Summary() << "\n" << check.first_problems;
  std::printf("record --max-bytes %llu --rotate: %zu files, %zu messages; replayed as one: %s\n",
              static_cast<unsigned long long>(kMaxBytes), files.size(), all.size(),
              check.Summary().c_str());
}

/// A time with every digit of its nanoseconds, as --from takes it.
std::string Rfc3339Ns(int64_t ns) {
  const int64_t frac = ns % kSecond;
  const std::string ms = FormatUtc(ns - frac);  // ...:SS.000Z
  char digits[16];
  std::snprintf(digits, sizeof digits, ".%09lld", static_cast<long long>(frac));
  return ms.substr(0, ms.size() - 5) + digits + "Z";
}

// `fleetflow record --stream`: ranges by sequence, by time and by time ago, a subject filter, an
// empty range and bad bounds, on a stream that a production consumer reads; the records hold
// the stream's messages in order with the times the stream stored them, and the consumer's
// position and the stream's consumers are as they were.
TEST(RecordStreamE2E, RangesOfTheStreamAreRecordedWithStoredTimesLeavingItsConsumersAlone) {
  FF_REQUIRE_NATS_SERVER();
  NatsServer server;
  server.Start();
  TempDir dir("fleetflow-record-stream-e2e");
  nats::ConnectOptions o;
  o.url = server.url();
  auto conn = nats::Connection::Connect(o);
  nats::JetStream js(*conn);
  nats::StreamOptions stream;  // TELEMETRY on vehicle.*.*
  js.EnsureStream(stream);
  nats::ConsumerOptions production;  // durable "fleetflow"
  js.EnsureConsumer(production);

  constexpr int kMessages = 200;
  const auto subject_of = [](int i) { return "vehicle.v" + std::to_string(i % 4) + ".speed"; };
  const auto payload_of = [](int i) { return "m" + std::to_string(i); };
  const int64_t begin_ns = NowNs();
  int64_t middle_ns = 0;
  for (int i = 1; i <= kMessages; ++i) {
    const std::string payload = payload_of(i);
    ASSERT_EQ(js.Publish(subject_of(i), payload.data(), payload.size(), {}, 5000),
              static_cast<uint64_t>(i));
    if (i == kMessages / 2) middle_ns = NowNs();  // after the first half was stored
  }
  const int64_t end_ns = NowNs();
  // The production consumer has taken and acknowledged the first 50.
  {
    nats::PullConsumer pull(*conn, stream.name, production.durable);
    int taken = 0;
    while (taken < 50) {
      auto batch = pull.Fetch(50 - taken, 5000);
      ASSERT_FALSE(batch.empty());
      for (auto& m : batch) m->Ack();
      taken += static_cast<int>(batch.size());
    }
    pull.Release();
  }
  conn->Flush(5000);
  const auto pending = js.ConsumerPending(stream.name, production.durable);
  ASSERT_EQ(pending, std::make_pair(uint64_t{150}, uint64_t{0}));

  int run = 0;
  const auto record = [&](std::vector<std::string> args) {
    const std::string out = dir.File("range" + std::to_string(++run) + ".ffrc");
    std::vector<std::string> argv = {kFleetflow, "record", "--url", server.url(), "--out", out};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_pair(RunCommand(argv, 60s), out);
  };
  // The messages `first`..`last` (every `step`-th from `first`), in order, with stored times.
  const auto expect_messages = [&](const std::string& file, std::vector<int> numbers) {
    const auto records = ReadRecords(file);
    ASSERT_EQ(records.size(), numbers.size()) << file;
    for (size_t k = 0; k < records.size(); ++k) {
      const int i = numbers[k];
      EXPECT_EQ(records[k].subject, subject_of(i)) << file << " #" << k;
      EXPECT_EQ(std::string(records[k].payload.begin(), records[k].payload.end()), payload_of(i))
          << file << " #" << k;
      EXPECT_GE(records[k].recv_ns, i > kMessages / 2 ? middle_ns : begin_ns) << i;
      EXPECT_LE(records[k].recv_ns, i <= kMessages / 2 ? middle_ns : end_ns) << i;
      if (k > 0) {
        EXPECT_GE(records[k].recv_ns, records[k - 1].recv_ns) << i;
      }
    }
  };
  const auto range = [](int first, int last, int step = 1) {
    std::vector<int> out;
    for (int i = first; i <= last; i += step) out.push_back(i);
    return out;
  };

  {  // By sequence: from included, to not.
    const auto [r, out] = record({"--stream", "TELEMETRY", "--from", "101", "--to", "151"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("recorded 50 messages"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("up to --to 151"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("record: 50.0% 50 of 100 messages, at sequence 150"), std::string::npos)
        << "the last progress line: of the 100 from 101 on, read up to --to\n"
        << r.err;
    expect_messages(out, range(101, 150));
  }
  {  // By time, to the end of the stream.
    const auto [r, out] = record({"--stream", "TELEMETRY", "--from", Rfc3339Ns(middle_ns)});
    SCOPED_TRACE(r.err);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("up to the end of the stream"), std::string::npos) << r.err;
    expect_messages(out, range(kMessages / 2 + 1, kMessages));
  }
  {  // A time ago up to a time; only one vehicle's subjects.
    const auto [r, out] = record({"--stream", "TELEMETRY", "--subject", "vehicle.v1.*", "--from",
                                  "-1h", "--to", Rfc3339Ns(middle_ns)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_messages(out, range(1, kMessages / 2, 4));
  }
  {  // The whole stream by default.
    const auto [r, out] = record({"--stream", "TELEMETRY"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_messages(out, range(1, kMessages));
  }
  {  // Nothing from there on: an empty recording.
    const auto [r, out] = record({"--stream", "TELEMETRY", "--from", "201"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("recorded 0 messages"), std::string::npos) << r.err;
    expect_messages(out, {});
  }
  // Bad input, told apart: the exit status and what the message says.
  const std::tuple<std::vector<std::string>, int, std::string> refused[] = {
      {{"--stream", "TELEMETRY", "--from", "yesterday"},
       2,
       "'yesterday' is neither a stream sequence"},
      {{"--from", "1"}, 2, "name it with --stream"},
      {{"--stream", "TELEMETRY", "--duration", "5"}, 2, "--duration is for live capture"},
      {{"--stream", "TELEMETRY", "--from", "-1m", "--to", "-2m"},
       2,
       "--to -2m is not after --from -1m"},
      {{"--stream", "NOPE"}, 1, "no stream 'NOPE'"},
  };
  for (const auto& [args, status, message] : refused) {
    const auto [r, unused] = record(args);
    EXPECT_EQ(r.exit_code, status) << args[1];
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }

  // While the stream grows, the reading ends at its last message when it started.
  std::atomic<bool> stop{false};
  std::atomic<int> published{kMessages};
  std::thread publisher([&] {
    auto c = nats::Connection::Connect(o);
    while (!stop) {
      const int i = ++published;
      c->Publish(subject_of(i), payload_of(i));
      if (i % 100 == 0) c->Flush(5000);
    }
    c->Flush(5000);
  });
  ASSERT_TRUE(
      WaitFor([&] { return js.FindStream(stream.name)->messages > kMessages + 1000; }, 30s));
  const auto [growing, out] = record({"--stream", "TELEMETRY"});
  stop = true;
  publisher.join();
  ASSERT_EQ(growing.exit_code, 0) << growing.err;
  const auto records = ReadRecords(out);
  ASSERT_GE(records.size(), size_t{kMessages + 1000});
  for (size_t k = 0; k < records.size(); ++k) {
    ASSERT_EQ(std::string(records[k].payload.begin(), records[k].payload.end()),
              payload_of(static_cast<int>(k) + 1));
  }

  // The production consumer is where it was, and no other consumer is left on the stream.
  EXPECT_EQ(js.ConsumerPending(stream.name, production.durable).second, 0u);
  EXPECT_TRUE(WaitFor([&] { return js.FindStream(stream.name)->consumers == 1; }, 10s))
      << js.FindStream(stream.name)->consumers << " consumers";
  nats::PullConsumer pull(*conn, stream.name, production.durable);
  const auto next = pull.Fetch(1, 5000);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]->stream_sequence(), 51u) << "the consumer's next message";
  pull.Release();
  std::printf("record --stream: %zu messages of a growing stream read in order\n", records.size());
}

}  // namespace
}  // namespace fleetflow::testing
