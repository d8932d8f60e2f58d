// `fleetflow tap`, end to end with a real nats-server and a real PostgreSQL: a worker started
// with --tap shows the samples leaving its source and the windows leaving its join, with the
// values that were published; a sink, an unknown node and a quiet node are told apart.
#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include <future>
#include <set>
#include <sstream>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kVehicles = 2;

std::vector<rapidjson::Document> JsonLines(const std::string& text) {
  std::vector<rapidjson::Document> docs;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    docs.emplace_back().Parse(line.c_str());
    EXPECT_FALSE(docs.back().HasParseError()) << line;
    if (docs.back().HasParseError()) docs.pop_back();
  }
  return docs;
}

TEST(TapE2E, ShowsTheSamplesAndWindowsOfARunningWorker) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-tap-e2e");
  const std::string fleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
  const int port = FreePort();
  auto env = s.pg.env();
  env["NATS_URL"] = s.nats.url();
  Process engine({fleetflow, "run", ::fleetflow::testing::SourceDir() + "/pipelines/default.json",
                  "--tap", "--metrics-port", std::to_string(port), "--metrics-host", "127.0.0.1"},
                 s.dir.File("engine.log"), env);
  httplib::Client http("127.0.0.1", port);
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto res = http.Get("/readyz");
        return res && res->status == 200;
      },
      30s))
      << engine.ReadLog();

  const auto tap = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {fleetflow, "tap", "--port", std::to_string(port)};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, 60s);
  };
  // Starts `fleetflow tap` of `node` and returns once the worker has armed it: it refuses a second
  // tap of the node then. The probe is such a second tap (of 1 ms): when it came first, the
  // command's own tap was the one refused, and the command is started again.
  const auto armed_tap = [&](const std::string& node, std::vector<std::string> args) {
    args.insert(args.begin(), node);
    for (int attempt = 1;; ++attempt) {
      auto running = std::async(std::launch::async, [&tap, args] { return tap(args); });
      const bool settled = WaitFor(
          [&] {
            if (running.wait_for(0s) == std::future_status::ready) return true;
            const auto res = http.Get("/tap?node=" + node + "&timeout_ms=1");
            return res && res->status == 409;
          },
          30s);
      if (settled && running.wait_for(0s) != std::future_status::ready) return running;
      const CommandResult r = running.get();
      const bool refused = r.err.find("tapped by another client") != std::string::npos;
      if (!settled || !refused || attempt == 10) {
        ADD_FAILURE() << "the tap of '" << node << "' was not armed: " << r.err;
        return std::async(std::launch::deferred, [r] { return r; });
      }
    }
  };
  auto samples = armed_tap("telemetry", {"--count", "4", "--timeout-ms", "30000"});
  auto windows = armed_tap("windows", {"--count", "3", "--timeout-ms", "30000"});

  // Known values, a little ahead of the clock: vehicle v's sample k is 10 v + k.
  const int64_t start_ns = StartNs();
  PublishKnownSamples(s.nats.url(), "t", kVehicles, start_ns);

  // The source: the first four messages, as published.
  const CommandResult sampled = samples.get();
  ASSERT_EQ(sampled.exit_code, 0) << sampled.out << sampled.err;
  const auto sample_lines = JsonLines(sampled.out);
  ASSERT_EQ(sample_lines.size(), 4u) << sampled.out;
  for (const auto& d : sample_lines) {
    EXPECT_STREQ(d["node"].GetString(), "telemetry");
    EXPECT_STREQ(d["kind"].GetString(), "samples");
    const std::string vehicle = d["vehicle"].GetString();
    ASSERT_EQ(d["points"].Size(), 1u);
    const auto& p = d["points"][0];
    EXPECT_EQ(p["ts_ns"].GetInt64(), start_ns + p["seq"].GetInt64() * kKnownPeriodNs);
    EXPECT_DOUBLE_EQ(p["value"].GetDouble(), 10.0 * (vehicle.back() - '0') + p["seq"].GetInt());
  }

  // The join: windows whose rows bracket each window time with published samples.
  const CommandResult w = windows.get();
  ASSERT_EQ(w.exit_code, 0) << w.out << w.err;
  std::set<std::string> vehicles_seen;
  for (const auto& d : JsonLines(w.out)) {
    EXPECT_STREQ(d["kind"].GetString(), "window") << "no ticks unless asked for";
    for (const auto& row : d["rows"].GetArray()) {
      const std::string vehicle = row["vehicle"].GetString();
      vehicles_seen.insert(vehicle);
      const auto& before = row["slots"]["speed"]["before"];
      if (before.IsNull()) continue;
      EXPECT_LE(before["ts_ns"].GetInt64(), d["window_ns"].GetInt64());
      EXPECT_DOUBLE_EQ(before["value"].GetDouble(),
                       10.0 * (vehicle.back() - '0') + before["seq"].GetInt());
    }
  }
  EXPECT_EQ(vehicles_seen, (std::set<std::string>{"t0", "t1"})) << w.out << w.err;

  // A quiet node: fewer lines than asked for, said on stderr, still a success.
  CommandResult r = tap({"telemetry", "--count", "2", "--timeout-ms", "300"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("0 of 2 messages left node 'telemetry' in 300 ms"), std::string::npos)
      << r.err;
  // A sink emits nothing; an unknown node is named with the ones there are; bad options.
  r = tap({"database"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("404: node 'database' (timescale_sink) emits nothing"), std::string::npos)
      << r.err;
  r = tap({"nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("(nodes: telemetry, last_values, windows, database, archive)"),
            std::string::npos)
      << r.err;
  const auto bad = http.Get("/tap?node=windows&count=0");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(bad->body, "count must be a whole number in 1..1000, not '0'\n");

  EXPECT_EQ(engine.Stop(SIGTERM, 30s), 0) << engine.ReadLog();
}

}  // namespace
}  // namespace fleetflow::testing
