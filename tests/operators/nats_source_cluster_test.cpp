// nats_source against a three-node nats-server 2.10 cluster: what the source must not believe
// when a consumer's leader is a node that has not caught up with the stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fleet_check.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "servers.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;

constexpr int64_t kNow = 1'700'000'000'000'000'000;

/// A field of a JetStream API answer ("leader", "num_pending", "stream_seq"...): its first
/// occurrence, as text.
std::string JsonField(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return "";
  size_t from = at + key.size() + 3;
  if (json[from] == '"') {
    ++from;
    return json.substr(from, json.find('"', from) - from);
  }
  return json.substr(from, json.find_first_of(",}", from) - from);
}

// A node restarted after kill -9 may lead a consumer while its copy of the stream is still
// behind: then the consumer says nothing is pending and delivers nothing while the stream holds
// what was stored meanwhile (docs/testing.md, "Known flaky tests"). The source must hold input
// back until those messages are in (else the windows close on the clock without them). On a
// three-node nats-server 2.10 cluster: a node that does not lead the stream is killed, 20 000
// messages (50 MB) are stored, the node comes back and is made the consumer's leader at once, then
// the source starts (on the stream leader's node). Whether the new leader's copy is still behind
// then is up to the server (one attempt in three or four here); an attempt where the consumer
// already counts the messages is void and the next one begins, ten at most.
TEST(NatsSourceClusterTest, HoldsBackInputWhileItsConsumersLeaderHasNotCaughtUpWithTheStream) {
  FF_REQUIRE_NATS_SERVER();
  constexpr int kBacklog = 20000;
  constexpr int kAttempts = 10;
  // Messages of 100 samples (about 2.5 kB): the more bytes the restarted node has to catch up
  // with, the longer its copy stays behind.
  std::vector<wire::Point> samples;
  for (uint32_t i = 0; i < 100; ++i) samples.push_back(wire::Point{kNow - 1000 + i, i, 1.0 * i});
  const auto bytes = wire::EncodeBatch(samples);
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    NatsCluster cluster(3);
    cluster.UseServer210();
    cluster.Start();
    int leader = -1;
    std::string info;
    std::string victim_name;
    try {
      nats::ConnectOptions o;
      o.url = cluster.url();
      o.reconnect_wait_ms = 20;
      auto conn = nats::Connection::Connect(o);
      nats::JetStream js(*conn);
      js.EnsureStream(nats::StreamOptions{.replicas = 3});
      leader = cluster.LeaderOf("TELEMETRY");
      if (leader < 0) throw std::runtime_error("the stream has no leader yet");
      const int victim = (leader + 1) % 3;
      victim_name = "n" + std::to_string(victim);
      js.EnsureConsumer({.durable = "fleetflow", .filter_subject = "vehicle.*.*"});
      cluster.node(victim).Kill();
      for (int i = 0; i < kBacklog; ++i) {
        js.Publish("vehicle.v" + std::to_string(i % 50) + ".speed", bytes.data(), bytes.size(),
                   nats::Headers{}, 5000);
      }
      cluster.node(victim).Start();
      // The consumer's leader, "" while it has none (an election under way) or the answer fails.
      const auto consumer_leader = [&] {
        try {
          info = std::string(
              conn->Request("$JS.API.CONSUMER.INFO.TELEMETRY.fleetflow", "", 2000).text());
          return JsonField(info, "leader");
        } catch (const std::exception&) {
          return std::string();
        }
      };
      // Stepped down until the restarted node leads it (each stepdown hands it to another node).
      for (int i = 0; i < 12; ++i) {
        std::string now;
        if (!WaitFor([&] { return !(now = consumer_leader()).empty(); }, 5s)) break;
        if (now == victim_name) break;
        try {
          conn->Request("$JS.API.CONSUMER.LEADER.STEPDOWN.TELEMETRY.fleetflow", "", 2000);
        } catch (const std::exception&) {
          continue;  // asked again: the leader may have moved meanwhile
        }
        WaitFor([&] { return consumer_leader() != now; }, 5s);
      }
    } catch (const std::exception& e) {
      // The cluster was slow to set up (a busy machine): this attempt is void.
      std::printf("attempt %d: void (%s)\n", attempt, e.what());
      continue;
    }
    const bool lagging =
        JsonField(info, "leader") == victim_name && JsonField(info, "num_pending") == "0";
    std::printf("attempt %d: consumer led by %s, num_pending %s of %d stored: %s\n", attempt,
                JsonField(info, "leader").c_str(), JsonField(info, "num_pending").c_str(), kBacklog,
                lagging ? "its copy is behind" : "void");
    if (!lagging) continue;
    // The source starts now, on the stream leader's node (its connection is not interrupted).
    OperatorHarness h("nats_source", R"({"url": ")" + cluster.node(leader).url() +
                                         R"(", "subject": "vehicle.*.*", "max_future_ms": 60000,
                          "delivery": "jetstream", "create_stream": false,
                          "fetch_expiry_ms": 100})");
    h.clock.Set(kNow);
    h.Start();
    const CaptureSink& out = h.output();
    // Until every message is in, input is let go (sampled every 5 ms) only for moments: while
    // the consumer delivers nothing, at most for the fetch's expiry (100 ms) and the time to ask
    // the stream, far from the 2 s after which a join closes windows on the clock.
    size_t acked = 0;
    auto let_go_since = std::chrono::steady_clock::time_point::max();
    auto longest = std::chrono::milliseconds(0);
    EXPECT_TRUE(WaitFor(
        [&] {
          const bool holds = h.op().HoldsBackInput();
          const auto now = std::chrono::steady_clock::now();
          const auto ms = out.Messages();
          Acknowledge({ms.begin() + static_cast<std::ptrdiff_t>(acked), ms.end()});
          acked = ms.size();
          if (holds || acked >= kBacklog) {
            let_go_since = std::chrono::steady_clock::time_point::max();
          } else if (let_go_since == std::chrono::steady_clock::time_point::max()) {
            let_go_since = now;
          } else {
            longest = std::max(
                longest, std::chrono::duration_cast<std::chrono::milliseconds>(now - let_go_since));
          }
          return acked >= kBacklog;
        },
        60s, 5ms))
        << acked << " of " << kBacklog << " received";
    std::printf("input let go for %lld ms at most\n", static_cast<long long>(longest.count()));
    EXPECT_LT(longest.count(), 500) << "input let go while the consumer's leader was behind";
    h.Stop();
    return;
  }
  // Not counted as passed: the server never made the case (each attempt about 1 in 3 here).
  GTEST_SKIP() << "NOT RUN: in " << kAttempts << " attempts the consumer's new leader had always "
               << "caught up with the stream before the source started: run it again";
}

}  // namespace
}  // namespace fleetflow::testing
