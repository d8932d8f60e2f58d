#include "servers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace fleetflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

bool ProcessGone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

TEST(SupportTest, FreePortIsBindableAndClosed) {
  const int port = FreePort();
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
  EXPECT_FALSE(PortAcceptsConnections(port));
}

TEST(SupportTest, WaitForSeesConditionAndRespectsDeadline) {
  std::atomic<int> calls{0};
  EXPECT_TRUE(WaitFor([&] { return ++calls >= 3; }, seconds(5), milliseconds(1)));
  EXPECT_EQ(calls.load(), 3);

  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(WaitFor([] { return false; }, milliseconds(100), milliseconds(10)));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, milliseconds(100));
  EXPECT_LT(took, seconds(5));
}

TEST(SupportTest, FindServerBinaryFindsShAndRejectsUnknown) {
  EXPECT_THAT(FindServerBinary("sh"), HasSubstr("/sh"));
  EXPECT_EQ(FindServerBinary("no-such-binary-fleetflow"), "");
}

TEST(SupportTest, TempDirIsCreatedAndRemoved) {
  std::string path;
  {
    TempDir dir("ff-support-test");
    path = dir.path();
    EXPECT_EQ(path.rfind("/tmp/ff-support-test-", 0), 0u) << path;
    ASSERT_TRUE(std::filesystem::is_directory(path));
    std::filesystem::create_directories(dir.File("a/b"));
    TempDir moved(std::move(dir));
    EXPECT_EQ(moved.path(), path);
  }
  if (std::getenv("FF_KEEP_TEST_DIRS")) GTEST_SKIP() << "FF_KEEP_TEST_DIRS is set";
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(RunCommandTest, CapturesOutputErrorAndStatus) {
  const auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; echo $FF_X; exit 3"}, seconds(10),
                            {{"FF_X", "from-env"}});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "out\nfrom-env\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST(RunCommandTest, KillsOnTimeout) {
  const auto r = RunCommand({"sleep", "30"}, milliseconds(200));
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
}

TEST(RunCommandTest, MissingExecutableThrows) {
  EXPECT_THROW(RunCommand({"no-such-binary-fleetflow"}), std::runtime_error);
}

TEST(ProcessTest, ExitStatusLogAndEnv) {
  TempDir dir;
  Process p({"sh", "-c", "echo out; echo err >&2; echo $FF_X; exit 7"}, dir.File("log"),
            {{"FF_X", "hello"}});
  EXPECT_GT(p.pid(), 0);
  EXPECT_EQ(p.Wait(seconds(10)), 7);
  EXPECT_FALSE(p.Running());
  EXPECT_EQ(p.ReadLog(), "out\nerr\nhello\n");
}

TEST(ProcessTest, SignalGives128PlusSignal) {
  TempDir dir;
  Process p({"sleep", "30"}, dir.File("log"));
  EXPECT_TRUE(p.Running());
  EXPECT_EQ(p.Wait(milliseconds(0)), std::nullopt);
  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(seconds(10)), 128 + SIGTERM);
}

TEST(ProcessTest, StopEscalatesToSigkill) {
  TempDir dir;
  Process p({"sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.05; done"},
            dir.File("log"));
  ASSERT_TRUE(WaitFor([&] { return p.ReadLog() == "armed\n"; }, seconds(10)));
  EXPECT_EQ(p.Stop(SIGTERM, milliseconds(200)), 128 + SIGKILL);
}

TEST(ProcessTest, MissingExecutableThrows) {
  TempDir dir;
  try {
    Process p({"no-such-binary-fleetflow"}, dir.File("log"));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no-such-binary-fleetflow"));
  }
}

TEST(ProcessTest, DestructorKillsTheProcessGroup) {
  TempDir dir;
  pid_t pid = 0;
  {
    Process p({"sh", "-c", "sleep 30 & sleep 30"}, dir.File("log"));
    pid = p.pid();
  }
  EXPECT_TRUE(ProcessGone(pid));
  // The background sleep was in the same process group.
  EXPECT_TRUE(WaitFor([&] { return ::kill(-pid, 0) != 0; }, seconds(5)));
}

TEST(ProcessTest, ChildDiesWithTheThreadThatStartedIt) {
  TempDir dir;
  std::optional<Process> p;
  std::thread([&] { p.emplace(std::vector<std::string>{"sleep", "30"}, dir.File("log")); }).join();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->Wait(seconds(10)), 128 + SIGKILL);
}

TEST(NatsServerTest, StartRestartKillStop) {
  FF_REQUIRE_NATS_SERVER();
  NatsServer nats;
  nats.Start();
  ASSERT_TRUE(nats.running());
  const int port = nats.port();
  EXPECT_EQ(nats.url(), "nats://127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(PortAcceptsConnections(port));
  EXPECT_TRUE(std::filesystem::is_directory(nats.store_dir()));
  const auto up_on_the_same_port = [&] {
    EXPECT_TRUE(nats.running());
    EXPECT_EQ(nats.port(), port);
    EXPECT_TRUE(PortAcceptsConnections(port));
  };
  const auto down = [&] {
    EXPECT_FALSE(nats.running());
    EXPECT_FALSE(PortAcceptsConnections(port));
  };

  nats.Restart();
  up_on_the_same_port();
  nats.Kill();
  down();
  nats.Start();
  up_on_the_same_port();
  nats.Stop();
  down();
  EXPECT_THAT(nats.ReadLog(), HasSubstr("Server is ready"));
}

TEST(NatsServerTest, TwoServersGetDifferentPorts) {
  FF_REQUIRE_NATS_SERVER();
  NatsServer a, b({"-n", "second"});
  a.Start();
  b.Start();
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.store_dir(), b.store_dir());
  EXPECT_THAT(b.ReadLog(), HasSubstr("second"));
}

TEST(PostgresServerTest, StartQueryRestartStop) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg;
  pg.Start();
  const int port = pg.port();
  EXPECT_EQ(pg.conninfo(),
            "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=fleetflow");
  EXPECT_EQ(pg.env().at("PGPORT"), std::to_string(port));
  EXPECT_EQ(pg.Psql("SELECT 1"), "1");
  EXPECT_EQ(pg.Psql("SELECT current_database()"), "fleetflow");
  EXPECT_EQ(pg.TryPsql("SELECT count(*) FROM t"), std::nullopt);

  pg.Psql(
      "CREATE TABLE t (id int PRIMARY KEY, name text); INSERT INTO t VALUES (1, 'a'), (2, 'b')");
  EXPECT_EQ(pg.Psql("SELECT id, name FROM t ORDER BY id"), "1|a\n2|b");
  try {
    pg.Psql("SELECT * FROM no_such_table");
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no_such_table"));
  }

  pg.Restart();
  EXPECT_EQ(pg.port(), port);
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM t"), "2");

  pg.Stop();
  EXPECT_FALSE(pg.running());
  EXPECT_FALSE(PortAcceptsConnections(port));
  EXPECT_THROW(pg.Psql("SELECT 1"), std::runtime_error);
}

TEST(PostgresServerTest, RecoversAfterKill) {
  FF_REQUIRE_POSTGRES();
  PostgresServer pg({"max_connections=20"});
  pg.Start();
  EXPECT_EQ(pg.Psql("SHOW max_connections"), "20");
  pg.Psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
  pg.Kill();
  EXPECT_FALSE(pg.running());
  EXPECT_FALSE(PortAcceptsConnections(pg.port()));
  pg.Start();
  EXPECT_EQ(pg.Psql("SELECT count(*) FROM t"), "1");
}

/// The port of the server libpq connects to with `conninfo` (psql, not PostgresServer::Psql,
/// which names one server), or psql's error.
std::string ConnectedPort(const std::string& conninfo) {
  const CommandResult r = RunCommand({FindServerBinary("psql"), "-X", "-A", "-t", "-q", "-d",
                                      conninfo, "-c", "SELECT inet_server_port()"},
                                     seconds(30), {{"PGCONNECT_TIMEOUT", "5"}});
  return r.exit_code == 0 ? r.out.substr(0, r.out.find_last_not_of(" \n") + 1) : r.err;
}

TEST(PostgresPairTest, TheStandbyStreamsRefusesWritesAndTakesThemOncePromoted) {
  FF_REQUIRE_POSTGRES();
  PostgresPair pair;
  pair.Start();
  PostgresServer& primary = pair.primary();
  PostgresServer& standby = pair.standby();
  const std::string primary_port = std::to_string(primary.port());
  const std::string standby_port = std::to_string(standby.port());
  EXPECT_NE(primary_port, standby_port);
  EXPECT_EQ(pair.conninfo(), "host=127.0.0.1,127.0.0.1 port=" + primary_port + "," + standby_port +
                                 " user=postgres dbname=fleetflow target_session_attrs=read-write");
  EXPECT_FALSE(primary.InRecovery());
  EXPECT_TRUE(standby.InRecovery());
  EXPECT_EQ(primary.Psql("SELECT sync_state FROM pg_stat_replication"), "sync");

  // A synchronous standby has every acknowledged commit (applied a moment later).
  primary.Psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
  EXPECT_TRUE(
      WaitFor([&] { return standby.TryPsql("SELECT count(*) FROM t") == "1"; }, seconds(10)));
  try {
    standby.Psql("INSERT INTO t VALUES (2)");
    FAIL() << "a standby took a write";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("read-only transaction"));
  }
  // libpq skips the standby, whatever the order of the hosts.
  EXPECT_EQ(ConnectedPort(pair.conninfo()), primary_port);
  EXPECT_EQ(ConnectedPort("host=127.0.0.1,127.0.0.1 port=" + standby_port + "," + primary_port +
                          " user=postgres dbname=fleetflow target_session_attrs=read-write"),
            primary_port);

  primary.Kill();
  EXPECT_THAT(ConnectedPort(pair.conninfo()), HasSubstr("session is read-only"));
  standby.Promote();
  EXPECT_FALSE(standby.InRecovery());
  standby.Psql("INSERT INTO t VALUES (2)");
  EXPECT_EQ(standby.Psql("SELECT count(*) FROM t"), "2");
  EXPECT_EQ(ConnectedPort(pair.conninfo()), standby_port);
}

TEST(PostgresPairTest, AStandbyNeedsAPrimaryAndAFreshServer) {
  FF_REQUIRE_POSTGRES();
  PostgresServer primary;  // not started: nothing to copy
  PostgresServer standby;
  EXPECT_THROW(standby.StartStandbyOf(primary), std::runtime_error);
  PostgresServer used;
  used.Start();
  EXPECT_THROW(used.StartStandbyOf(primary), std::runtime_error);
}

TEST(PrometheusServerTest, StartStopAndABadConfigurationThrowsWithTheLog) {
  FF_REQUIRE_PROMETHEUS();
  PrometheusServer prom("global:\n  scrape_interval: 1s\n");
  prom.Start();
  EXPECT_TRUE(PortAcceptsConnections(prom.port()));
  prom.Stop();
  EXPECT_FALSE(PortAcceptsConnections(prom.port()));

  PrometheusServer bad("scrape_configs: [{job_name: x, no_such_field: 1}]\n");
  try {
    bad.Start();
    ADD_FAILURE() << "a configuration prometheus rejects must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no_such_field"));
  }
}

}  // namespace
}  // namespace fleetflow::testing
