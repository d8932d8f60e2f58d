// Operating the engine, end to end with a real nats-server and a real PostgreSQL: /readyz stays
// 503 until the engine is connected to both, /metrics counts exactly what was published and
// agrees with the rows in the database, every metric is documented in docs/metrics.md, and a
// flood of bad messages gives a handful of JSON log lines, not one per message.
#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "nats_client.hpp"
#include "servers.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kVehicles = 3;
constexpr int kBadMessages = 20;

int Status(httplib::Client& http, const char* path) {
  auto res = http.Get(path);
  return res ? res->status : 0;
}

TEST(MetricsE2E, ReadinessFollowsTheConnectionsAndCountersAgreeWithTheDatabase) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  NatsServer nats;
  nats.Start();
  PostgresServer pg;
  pg.Start();  // initialise and learn the port, then take it away until the engine runs
  pg.Stop();
  TempDir dir("fleetflow-metrics-e2e");

  const int port = FreePort();
  auto env = pg.env();
  env["NATS_URL"] = nats.url();
  Process engine({::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "--log-format", "json",
                  "run", ::fleetflow::testing::SourceDir() + "/pipelines/default.json",
                  "--metrics-port", std::to_string(port), "--metrics-host", "127.0.0.1"},
                 dir.File("engine.log"), env);
  httplib::Client http("127.0.0.1", port);

  // Alive as soon as it serves; never ready while PostgreSQL is down.
  int ready_while_pg_down = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        ready_while_pg_down += Status(http, "/readyz") == 200 ? 1 : 0;
        return Status(http, "/healthz") == 200;
      },
      30s))
      << engine.ReadLog();
  ASSERT_TRUE(WaitFor([&] { return Status(http, "/metrics") == 200; }, 5s));
  for (int i = 0; i < 10; ++i) ready_while_pg_down += Status(http, "/readyz") == 200 ? 1 : 0;
  EXPECT_EQ(ready_while_pg_down, 0);
  EXPECT_EQ(Status(http, "/readyz"), 503);
  // `fleetflow health` (the container's HEALTHCHECK) says the same, by its exit code.
  const auto health = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {::fleetflow::testing::BinaryDir() + "/apps/fleetflow",
                                     "health", "--port", std::to_string(port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv, 10s);
  };
  CommandResult h = health({});
  EXPECT_EQ(h.exit_code, 0) << h.out << h.err;
  EXPECT_NE(h.out.find("/healthz: 200 ok"), std::string::npos) << h.out;
  h = health({"--ready"});
  EXPECT_EQ(h.exit_code, 1) << h.out << h.err;
  EXPECT_NE(h.out.find("/readyz: 503 not ready"), std::string::npos) << h.out;
  h = RunCommand({::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "health", "--port",
                  std::to_string(FreePort()), "--timeout-ms", "500"},
                 10s);
  EXPECT_EQ(h.exit_code, 1) << "nobody listens there: " << h.out << h.err;
  EXPECT_NE(h.out.find("no answer"), std::string::npos) << h.out;

  // Taps are off unless the worker was started with --tap.
  h = RunCommand({::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "tap", "telemetry",
                  "--port", std::to_string(port), "--timeout-ms", "100"},
                 10s);
  EXPECT_EQ(h.exit_code, 1) << h.out << h.err;
  EXPECT_NE(h.err.find("answered 404: taps are off on this worker"), std::string::npos) << h.err;

  pg.Start();
  ASSERT_TRUE(WaitFor([&] { return Status(http, "/readyz") == 200; }, 30s)) << engine.ReadLog();
  h = health({"--ready"});
  EXPECT_EQ(h.exit_code, 0) << h.out << h.err;

  // Known input, in event-time order, a little ahead of the clock so no window has closed yet:
  // samples at S+0.25 s ... S+1.15 s give every vehicle the windows S+1, S+2 and S+3.
  const int64_t start_ns = StartNs();
  int messages = PublishKnownSamples(nats.url(), "m", kVehicles, start_ns);
  nats::ConnectOptions options;
  options.url = nats.url();
  auto conn = nats::Connection::Connect(options);
  for (int i = 0; i < kBadMessages; ++i) conn->Publish("vehicle.m0.speed", "not a batch");
  conn->Flush(5000);
  const int samples = messages;
  messages += kBadMessages;
  const int expected_rows = kVehicles * 3;

  std::string metrics;
  auto scrape = [&] {
    auto res = http.Get("/metrics");
    metrics = res && res->status == 200 ? res->body : "";
    return !metrics.empty();
  };
  // A message is counted in before it is rejected: both counts are waited for.
  ASSERT_TRUE(WaitFor(
      [&] {
        return scrape() && Scrape(metrics, "fleetflow_messages_in_total") == messages &&
               Scrape(metrics, "fleetflow_input_rejected_total") == kBadMessages;
      },
      10s))
      << metrics;
  EXPECT_EQ(Scrape(metrics, "fleetflow_samples_in_total"), samples);
  EXPECT_EQ(Scrape(metrics, "fleetflow_input_rejected_total"), kBadMessages);

  // Once the windows have closed and the sink flushed, the counters equal the database.
  const std::string count_sql = "SELECT count(*) FROM vehicle_telemetry";
  ASSERT_TRUE(WaitFor(
      [&] {
        return pg.TryPsql(count_sql) == std::to_string(expected_rows) && scrape() &&
               Scrape(metrics, "fleetflow_sink_rows_written_total") == expected_rows;
      },
      30s))
      << "rows: " << pg.TryPsql(count_sql).value_or("?") << "\n"
      << metrics << engine.ReadLog();
  EXPECT_EQ(Scrape(metrics, "fleetflow_rows_emitted_total"), expected_rows);
  EXPECT_EQ(Scrape(metrics, "fleetflow_samples_accepted_total"), samples);
  EXPECT_EQ(Scrape(metrics, "fleetflow_late_samples_total"), 0);
  EXPECT_EQ(Scrape(metrics, "fleetflow_sink_pending_rows"), 0);
  EXPECT_GE(Scrape(metrics, "fleetflow_sink_batches_total"), 1);
  // The standard process metrics, unprefixed as Prometheus client libraries export them.
  EXPECT_GT(Scrape(metrics, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(Scrape(metrics, "process_cpu_seconds_total"), 0);
  EXPECT_GT(Scrape(metrics, "process_start_time_seconds"), 1.7e9);
  EXPECT_GT(Scrape(metrics, "process_open_fds"), 3);
  EXPECT_EQ(Scrape(metrics, "fleetflow_build_info"), 1);
  // Histograms: every row written was timed from its window to its commit, and every
  // transaction that wrote them.
  EXPECT_EQ(Scrape(metrics, "fleetflow_row_latency_seconds_count"), expected_rows);
  EXPECT_EQ(Scrape(metrics, "fleetflow_sink_write_seconds_count"),
            Scrape(metrics, "fleetflow_sink_batches_total"));
  EXPECT_NE(metrics.find("fleetflow_row_latency_seconds_bucket{node=\"database\",operator="
                         "\"timescale_sink\",le=\"+Inf\"} " +
                         std::to_string(expected_rows) + "\n"),
            std::string::npos)
      << metrics;

  // Every metric the engine exposes is documented, with its type.
  const std::string docs = ReadFile(::fleetflow::testing::SourceDir() + "/docs/metrics.md");
  std::istringstream lines(metrics);
  int families = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    ++families;
    const size_t end = line.find(' ', 7);
    const std::string name = line.substr(7, end - 7);
    const std::string type = line.substr(end + 1);
    // Base units only: seconds and bytes.
    EXPECT_FALSE(std::regex_search(name, std::regex("_(ns|us|ms|nanoseconds|milliseconds|minutes|"
                                                    "hours|kb|mb|kib|mib)(_|$)")))
        << name << " is not in a base unit";
    EXPECT_NE(docs.find("| `" + name + "` | " + type + " |"), std::string::npos)
        << name << " (" << type << ") is not documented in docs/metrics.md";
  }
  EXPECT_GE(families, 20);

  // SIGHUP (a closed terminal, some supervisors) drains like SIGTERM: exit 0 after the drain.
  EXPECT_EQ(engine.Stop(SIGHUP, 30s), 0) << engine.ReadLog();

  // JSON lines only, and the flood of bad messages logged a few times, not once per message.
  std::istringstream log(engine.ReadLog());
  int rejected_lines = 0;
  bool drained_on_sighup = false;
  for (std::string line; std::getline(log, line);) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    ASSERT_TRUE(!d.HasParseError() && d.IsObject() && d.HasMember("msg")) << line;
    drained_on_sighup |= std::string_view(d["msg"].GetString()) == "SIGHUP: draining";
    if (std::string_view(d["msg"].GetString()) == "rejected input") {
      ++rejected_lines;
      EXPECT_STREQ(d["reason"].GetString(), "bad_identifier") << line;
    }
  }
  EXPECT_GE(rejected_lines, 1);
  EXPECT_TRUE(drained_on_sighup) << engine.ReadLog();
  EXPECT_LE(rejected_lines, 6);
}

}  // namespace
}  // namespace fleetflow::testing
