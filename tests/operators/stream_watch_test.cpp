// StreamWatch against real nats-servers: a stream that answers with a leader confirms the quiet;
// one that cannot store (its server gone, or a cluster without a quorum to elect its leader) is
// unavailable until it answers again.
#include "partitioning/stream_watch.hpp"

#include <gtest/gtest.h>

#include "clock.hpp"
#include "fleet_check.hpp"
#include "servers.hpp"

namespace fleetflow {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<nats::Connection> Connect(const std::string& url) {
  nats::ConnectOptions o;
  o.url = url;
  o.max_reconnect = -1;
  o.reconnect_wait_ms = 100;
  return nats::Connection::Connect(o);
}

int64_t WallNs() { return WallClock().NowNs(); }

bool Confirmed(const StreamWatch& w) {
  const int64_t now = SteadyNowNs();
  return !w.Unconfirmed(now) && !w.Unavailable();
}

/// One nats-server with the stream TELEMETRY, and a client of it.
struct OneServer {
  OneServer() {
    server.Start();
    conn = Connect(server.url());
    js = std::make_unique<nats::JetStream>(*conn);
    js->EnsureStream(nats::StreamOptions{});
  }
  testing::NatsServer server;
  std::unique_ptr<nats::Connection> conn;
  std::unique_ptr<nats::JetStream> js;
};

TEST(StreamWatchTest, AQuietStreamIsConfirmedWhileItAnswersAndUnavailableWhileItsServerIsGone) {
  FF_REQUIRE_NATS_SERVER();
  OneServer one;
  testing::NatsServer& server = one.server;
  StreamWatch watch(*one.js, "TELEMETRY", "telemetry", 200);
  // Quiet and never asked: unknown (held back), not cut off.
  EXPECT_TRUE(watch.Unconfirmed(SteadyNowNs() + 1'000'000'000));
  EXPECT_FALSE(watch.Unavailable());
  watch.Start();
  ASSERT_TRUE(testing::WaitFor([&] { return Confirmed(watch); }, 5s));
  // Messages delivered: not quiet, nothing to say.
  watch.Delivered(SteadyNowNs() + 60'000'000'000, WallNs() + 60'000'000'000);
  EXPECT_FALSE(watch.Unavailable());
  watch.Delivered(SteadyNowNs(), WallNs());
  server.Stop();
  EXPECT_TRUE(testing::WaitFor([&] { return watch.Unavailable(); }, 5s));
  // A consumer delivering again what it had: still unavailable.
  watch.Delivered(SteadyNowNs(), WallNs());
  EXPECT_TRUE(watch.Unavailable());
  EXPECT_TRUE(watch.Unconfirmed(SteadyNowNs() + 2'000'000'000));
  server.Start();
  EXPECT_TRUE(testing::WaitFor([&] { return Confirmed(watch); }, 15s));
}

// A backlog delivered (messages stored long ago, as consumers on the other nodes of a cluster
// deliver what they hold while the stream elects its leader) is no sign that the stream stores:
// the watch asks meanwhile, and sees it cannot.
TEST(StreamWatchTest, WhileABacklogIsDeliveredTheStreamIsAskedAndAnOutageSeen) {
  FF_REQUIRE_NATS_SERVER();
  OneServer one;
  testing::NatsServer& server = one.server;
  StreamWatch watch(*one.js, "TELEMETRY", "telemetry", 200);
  watch.Start();
  const auto backlog = [&] {
    watch.Delivered(SteadyNowNs(), WallNs() - 60'000'000'000);  // stored a minute ago
  };
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        backlog();
        return Confirmed(watch);
      },
      5s, 20ms));
  server.Stop();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        backlog();
        return watch.Unavailable();
      },
      5s, 20ms));
  server.Start();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        backlog();
        return Confirmed(watch);
      },
      15s, 20ms));
}

TEST(StreamWatchTest, AnR3StreamWithoutAQuorumIsUnavailableUntilItElectsALeader) {
  FF_REQUIRE_NATS_SERVER();
  testing::NatsCluster cluster;
  cluster.UseServer210();  // as production runs a cluster (docs/deploy.md)
  cluster.Start();
  auto conn = Connect(cluster.url());
  nats::JetStream js(*conn);
  nats::StreamOptions o;
  o.replicas = 3;
  js.EnsureStream(o);
  ASSERT_TRUE(cluster.WaitCurrent("TELEMETRY", 30s));
  StreamWatch watch(js, "TELEMETRY", "telemetry", 200);
  watch.Start();
  ASSERT_TRUE(testing::WaitFor([&] { return Confirmed(watch); }, 10s));
  // Two of three nodes gone: whichever is left cannot elect a leader.
  const int leader = cluster.LeaderOf("TELEMETRY");
  ASSERT_GE(leader, 0);
  const int other = (leader + 1) % 3;
  cluster.node(leader).Kill();
  cluster.node(other).Kill();
  EXPECT_TRUE(testing::WaitFor([&] { return watch.Unavailable(); }, 15s));
  cluster.node(leader).Start();
  cluster.node(other).Start();
  EXPECT_TRUE(testing::WaitFor([&] { return Confirmed(watch); }, 60s));
}

}  // namespace
}  // namespace fleetflow
