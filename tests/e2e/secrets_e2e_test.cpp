// Secrets never leak: the engine runs pipelines/jetstream.json against a nats-server that
// requires a user and password (read from a file) and a PostgreSQL conninfo carrying a password;
// neither secret appears in its output, its /metrics, or the errors of failed runs (wrong
// password, unreachable database). An unauthenticated client is refused.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "nats_client.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";
constexpr char kNatsPassword[] = "nats-Secret-7Q2vX9";
constexpr char kWrongPassword[] = "wrong-Secret-K3pL8";
constexpr char kPgPassword[] = "pg-Secret-M4nB6";

class SecretsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    FF_REQUIRE_POSTGRES();
    std::ofstream(dir_.File("nats.conf"))
        << "authorization {\n  users = [\n    {user: engine, password: \"" << kNatsPassword
        << "\"}\n  ]\n}\n"
        << "mappings = { \"vehicle.*.*\": "
           "\"telemetry.{{partition(16,1)}}.{{wildcard(1)}}.{{wildcard(2)}}\" }\n";
    std::ofstream(dir_.File("password")) << kNatsPassword << "\n";
    std::ofstream(dir_.File("wrong-password")) << kWrongPassword << "\n";
    nats_ = std::make_unique<NatsServer>(std::vector<std::string>{}, dir_.File("nats.conf"));
    nats_->Start();
    pg_.Start();
  }

  /// The engine's environment: NATS user and password file, and a conninfo with a password.
  std::map<std::string, std::string> Env(const std::string& password_file, int pg_port) const {
    return {{"NATS_URL", nats_->url()},
            {"NATS_USER", "engine"},
            {"NATS_PASSWORD_FILE", password_file},
            {"FLEETFLOW_PG", "host=127.0.0.1 port=" + std::to_string(pg_port) +
                                 " user=postgres dbname=fleetflow password=" + kPgPassword}};
  }

  static void ExpectNoSecret(const std::string& what, const std::string& text) {
    for (const char* secret : {kNatsPassword, kWrongPassword, kPgPassword}) {
      EXPECT_EQ(text.find(secret), std::string::npos) << what << " shows a secret:\n" << text;
    }
  }

  TempDir dir_{"fleetflow-secrets-e2e"};
  std::unique_ptr<NatsServer> nats_;
  PostgresServer pg_;
};

TEST_F(SecretsE2E, AnUnauthenticatedClientIsRefused) {
  nats::ConnectOptions anonymous;
  anonymous.url = nats_->url();
  EXPECT_THROW(nats::Connection::Connect(anonymous), nats::Error);
}

TEST_F(SecretsE2E, ARunWithSecretsShowsNoneInItsLogsOrMetrics) {
  Engine engine(kPipeline, Env(dir_.File("password"), pg_.port()), dir_.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();

  nats::ConnectOptions o;
  o.url = nats_->url();
  o.user = "engine";
  o.password_file = dir_.File("password");
  auto pub = nats::Connection::Connect(o);
  const int64_t t0 = NowNs() - 3'000'000'000;
  for (int i = 0; i < 30; ++i) {
    const auto bytes = wire::EncodeBatch(std::vector<wire::Point>{
        wire::Point{t0 + i * 100'000'000LL, static_cast<uint32_t>(i), 10.0 + i}});
    pub->Publish("vehicle.s1.speed", bytes.data(), bytes.size());
  }
  pub->Publish("vehicle.s1.speed", "not a batch");  // an error line in the log too
  pub->Flush(2000);
  ASSERT_TRUE(WaitFor([&] { return Rows(pg_) > 0; }, 30s)) << engine.process().ReadLog();

  const auto metrics = engine.Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  ExpectNoSecret("/metrics", *metrics);
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
  ExpectNoSecret("the engine's output", engine.process().ReadLog());
}

TEST_F(SecretsE2E, FailedRunsNameTheProblemButNotTheSecret) {
  // A wrong password: the engine cannot start, and says why.
  Engine wrong(kPipeline, Env(dir_.File("wrong-password"), pg_.port()), dir_.File("wrong.log"));
  const auto status = wrong.process().Wait(60s);
  ASSERT_TRUE(status.has_value()) << "the engine kept running with a wrong password";
  EXPECT_NE(*status, 0);
  const std::string wrong_log = wrong.process().ReadLog();
  EXPECT_NE(wrong_log.find("uthorization"), std::string::npos) << wrong_log;
  ExpectNoSecret("a run with a wrong NATS password", wrong_log);

  // PostgreSQL unreachable: the sink retries and logs, without the conninfo's password.
  Engine no_db(kPipeline, Env(dir_.File("password"), FreePort()), dir_.File("no-db.log"));
  ASSERT_TRUE(WaitFor([&] { return no_db.Metric("fleetflow_sink_retries_total") >= 2; }, 60s))
      << no_db.process().ReadLog();
  EXPECT_FALSE(no_db.Get("/readyz").has_value());
  EXPECT_EQ(no_db.process().Stop(SIGTERM, 60s), 0) << no_db.process().ReadLog();
  const std::string no_db_log = no_db.process().ReadLog();
  EXPECT_NE(no_db_log.find("cannot connect to PostgreSQL"), std::string::npos) << no_db_log;
  ExpectNoSecret("a run with PostgreSQL unreachable", no_db_log);
}

}  // namespace
}  // namespace fleetflow::testing
