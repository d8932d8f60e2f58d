// `fleetflow validate --connect` against a real nats-server and a real PostgreSQL: unreachable
// servers, fresh servers (what the engine creates at start is a note, and the check creates
// nothing), servers a worker has prepared (all there), and what would make a worker fail: a
// server without the partition mapping, NATS permissions refused, a role without UPDATE, a
// table without one of the columns.
#include <gtest/gtest.h>

#include <fstream>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kJetStreamPipeline =
    ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";
const std::string kCorePipeline = ::fleetflow::testing::SourceDir() + "/pipelines/default.json";
const std::string kTiersPipeline =
    ::fleetflow::testing::SourceDir() + "/pipelines/jetstream-tiers.json";

CommandResult Validate(const std::string& pipeline, const std::map<std::string, std::string>& env) {
  return RunCommand(
      {::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "validate", "--connect", pipeline},
      120s, env);
}

bool Has(const CommandResult& r, const std::string& text) {
  return r.out.find(text) != std::string::npos;
}

/// The check found problems (exit status 1) and printed each of `texts`.
void ExpectProblems(const CommandResult& r, const std::vector<std::string>& texts) {
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  for (const std::string& text : texts) EXPECT_TRUE(Has(r, text)) << text << "\nnot in:\n" << r.out;
}

TEST(ValidateConnectE2E, UnreachableServersAreProblems) {
  const std::string nats_url = "nats://127.0.0.1:" + std::to_string(FreePort());
  const CommandResult r =
      Validate(kJetStreamPipeline,
               {{"NATS_URL", nats_url},
                {"FLEETFLOW_PG", "host=127.0.0.1 port=" + std::to_string(FreePort()) +
                                     " user=postgres dbname=fleetflow connect_timeout=2"}});
  ExpectProblems(r, {"telemetry (nats_source): PROBLEM: cannot connect to NATS at " + nats_url,
                     "last_values (keyed_last_value): PROBLEM: cannot connect to NATS",
                     "database (timescale_sink): PROBLEM: cannot connect to PostgreSQL",
                     "jetstream.json: 3 problems on the servers"});
}

TEST(ValidateConnectE2E, NotesWhatAWorkerCreatesCreatesNothingThenFindsWhatItMade) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  NatsServer nats;
  nats.MapPartitions(16);
  nats.Start();
  PostgresServer pg;
  pg.Start();
  auto env = pg.env();
  env["NATS_URL"] = nats.url();
  env["FLEETFLOW_PG"] = pg.conninfo();

  // Fresh servers: what the engine creates at start is a note, not a problem.
  for (int round = 0; round < 2; ++round) {  // the second round sees that nothing was created
    const CommandResult r = Validate(kJetStreamPipeline, env);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(Has(r, "telemetry (nats_source): ok: connected to NATS at " + nats.url())) << r.out;
    EXPECT_TRUE(Has(r,
                    "note: stream TELEMETRY does not exist: created at start on "
                    "telemetry.*.*.*"))
        << r.out;
    EXPECT_TRUE(Has(r, "note: bucket fleetflow_members (membership) does not exist")) << r.out;
    EXPECT_TRUE(Has(r,
                    "last_values (keyed_last_value): note: bucket telemetry (state) does not "
                    "exist: created at start"))
        << r.out;
    EXPECT_TRUE(Has(r, "ok: the server maps vehicle.*.* into 16 partitions")) << r.out;
    EXPECT_TRUE(Has(r,
                    "database (timescale_sink): note: table vehicle_telemetry does not exist: "
                    "created at start in schema public"))
        << r.out;
    EXPECT_FALSE(Has(r, "PROBLEM")) << r.out;
  }
  // The tiers' aggregates keep their open windows in the same bucket.
  const CommandResult tiers = Validate(kTiersPipeline, env);
  EXPECT_EQ(tiers.exit_code, 0) << tiers.out << tiers.err;
  for (const char* node : {"minutes", "hours"}) {
    EXPECT_TRUE(Has(tiers, std::string(node) +
                               " (window_aggregate): note: bucket telemetry (open windows) does "
                               "not exist: created at start"))
        << tiers.out;
  }
  EXPECT_EQ(pg.Psql("SELECT to_regclass('vehicle_telemetry') IS NULL"), "t");

  // A worker ran once: everything is there.
  const int port = FreePort();
  TempDir dir("fleetflow-validate-connect");
  Process engine({::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "run", kJetStreamPipeline,
                  "--metrics-port", std::to_string(port), "--metrics-host", "127.0.0.1"},
                 dir.File("engine.log"), env);
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto r = RunCommand({::fleetflow::testing::BinaryDir() + "/apps/fleetflow", "health",
                                   "--ready", "--port", std::to_string(port)},
                                  10s);
        return r.exit_code == 0;
      },
      60s))
      << engine.ReadLog();
  ASSERT_EQ(engine.Stop(SIGTERM, 30s), 0) << engine.ReadLog();
  CommandResult r = Validate(kJetStreamPipeline, env);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(Has(r, "ok: stream TELEMETRY (0 messages) captures telemetry.*.*.*")) << r.out;
  EXPECT_TRUE(Has(r, "ok: the 16 durable consumers fleetflow-<n> exist")) << r.out;
  EXPECT_TRUE(Has(r, "ok: bucket telemetry (state)")) << r.out;
  EXPECT_TRUE(Has(r,
                  "ok: table vehicle_telemetry: every column, the key the upsert needs, and "
                  "SELECT, INSERT and UPDATE granted"))
      << r.out;
  for (const char* created : {"note: stream", "note: durable", "note: bucket", "note: table"}) {
    EXPECT_FALSE(Has(r, created)) << r.out;
  }
  EXPECT_FALSE(Has(r, "PROBLEM")) << r.out;
  EXPECT_TRUE(Has(Validate(kTiersPipeline, env),
                  "minutes (window_aggregate): ok: bucket telemetry (open windows)"));

  // A pipeline that asks for 3 replicas where the worker made 1 (one server): each is a problem.
  const std::string r3 = WritePipelineVariant(kJetStreamPipeline, "telemetry",
                                              R"({"stream_replicas": 3})", dir.File("r3.json"));
  WritePipelineVariant(r3, "last_values", R"({"bucket_replicas": 3})", r3);
  const std::string tiers_r3 = WritePipelineVariant(
      kTiersPipeline, "hours", R"({"bucket_replicas": 3})", dir.File("tiers_r3.json"));
  ExpectProblems(Validate(tiers_r3, env),
                 {"hours (window_aggregate): PROBLEM: bucket telemetry has 1 replica, the pipeline "
                  "asks for 3",
                  "tiers_r3.json: 1 problem on the servers"});
  ExpectProblems(Validate(r3, env),
                 {"PROBLEM: stream TELEMETRY has 1 replica, the pipeline asks for 3",
                  "PROBLEM: bucket fleetflow_members has 1 replica, the pipeline asks for 3",
                  "PROBLEM: bucket fleetflow_handover has 1 replica, the pipeline asks for 3",
                  "PROBLEM: bucket telemetry has 1 replica, the pipeline asks for 3",
                  "r3.json: 4 problems on the servers"});

  // A role that may not update and a table without one of the columns: the worker would fail.
  pg.Psql("ALTER TABLE vehicle_telemetry DROP COLUMN torque");
  pg.Psql("CREATE ROLE writer LOGIN");
  pg.Psql("GRANT SELECT, INSERT ON vehicle_telemetry TO writer");
  env["FLEETFLOW_PG"] =
      "host=127.0.0.1 port=" + std::to_string(pg.port()) + " user=writer dbname=fleetflow";
  ExpectProblems(Validate(kJetStreamPipeline, env),
                 {"PROBLEM: table vehicle_telemetry lacks the columns torque and role writer does "
                  "not own it",
                  "PROBLEM: role writer lacks UPDATE on table vehicle_telemetry",
                  "jetstream.json: 2 problems on the servers"});
}

TEST(ValidateConnectE2E, AMissingMappingAndRefusedPermissionsAreProblems) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  TempDir dir("fleetflow-validate-perm");
  // Two users: one may not use the JetStream API, one may not subscribe to the vehicles.
  const std::string conf = dir.File("users.conf");
  std::ofstream(conf) << R"(authorization {
  users = [
    { user: "nojs", password: "pw", permissions: { publish: { deny: ["$JS.API.>"] } } }
    { user: "nosub", password: "pw", permissions: { subscribe: { deny: ["vehicle.>"] } } }
  ]
}
)";
  NatsServer nats({}, conf);  // no partition mapping either
  nats.Start();
  PostgresServer pg;
  pg.Start();
  auto env = pg.env();
  env["FLEETFLOW_PG"] = pg.conninfo();
  const std::string at = "@127.0.0.1:" + std::to_string(nats.port());

  env["NATS_URL"] = "nats://nojs:pw" + at;
  const CommandResult r = Validate(kJetStreamPipeline, env);
  // Passwords stay out of what is printed.
  ExpectProblems(r, {"ok: connected to NATS at nats://nojs:***" + at,
                     "telemetry (nats_source): PROBLEM: stream TELEMETRY:",
                     "Permissions Violation for Publish to \"$JS.API.STREAM.INFO.TELEMETRY\"",
                     "last_values (keyed_last_value): PROBLEM: bucket telemetry (state):"});
  EXPECT_FALSE(Has(r, "pw@")) << r.out;

  env["NATS_URL"] = "nats://nosub:pw" + at;
  ExpectProblems(Validate(kCorePipeline, env),
                 {"telemetry (nats_source): PROBLEM: may not subscribe to vehicle.*.*: ",
                  "Permissions Violation for Subscription to \"vehicle.*.*\""});
  // The same user may use JetStream: a server without the mapping is the only problem there.
  ExpectProblems(Validate(kJetStreamPipeline, env),
                 {"PROBLEM: partitions: the NATS server does not map vehicle.<id>.<sensor> into "
                  "partitions",
                  "nats-server 2.10 or later", "jetstream.json: 1 problem on the servers"});
}

}  // namespace
}  // namespace fleetflow::testing
