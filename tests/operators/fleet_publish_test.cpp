// fleet_publish against a real nats-server with JetStream: each partition's partials of a window
// go to the stream as one message per shard of the cells (an empty one where none of its cells
// is), a window sent again is stored once, and what could not be stored while the server was
// down is stored, in order, once it is back.
#include "fleet_publish.hpp"

#include <gtest/gtest.h>

#include <map>

#include "fleet_partial.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "nats_fixture.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'700'000'040 * kS;
constexpr uint32_t kShards = 4;

/// One partition's partial rows of the window starting at `start` (one metric: vehicles).
Body Partials(uint32_t partition, int64_t start, const std::vector<std::string>& cells) {
  StatsBatch b;
  b.start_ns = start;
  b.length_ns = 60 * kS;
  b.sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"vehicles"});
  b.partition = partition;
  for (size_t i = 0; i < cells.size(); ++i) {
    SensorStats s;
    s.count = i + 1;
    s.sum = static_cast<double>(i + 1);
    s.min = s.max = 1;
    b.rows.push_back({cells[i], {s}});
  }
  return b;
}

class FleetPublishTest : public NatsServerTest {
 protected:
  std::string Config(const std::string& extra = "") const {
    return R"({"url": ")" + server_.url() + R"(", "shards": 4, "partitions": 8,
        "publish_timeout_ms": 2000)" +
           extra + "}";
  }

  /// Every message of stream FLEET: subject -> decoded partials, in stream order.
  std::vector<std::pair<std::string, fleet::Partial>> Stored() {
    std::vector<std::pair<std::string, fleet::Partial>> out;
    auto reader = js_->ReadStream("FLEET", ">", {1, 0});
    for (uint64_t n = 0; n < reader->total(); ++n) {
      const auto m = reader->Next(5000);
      if (!m) break;
      fleet::Partial p;
      EXPECT_TRUE(
          fleet::Decode(std::string_view(static_cast<const char*>(m->data()), m->size()), p));
      out.emplace_back(std::string(m->subject()), std::move(p));
    }
    return out;
  }
};

TEST_F(FleetPublishTest, APartitionsWindowIsOneMessagePerShardEmptyWhereNoneOfItsCellsIs) {
  OperatorHarness h("fleet_publish", Config());
  const std::vector<std::string> cells = {"u09tv", "u09tw", "u0h2b", "fleet"};
  h.Feed(Partials(3, kStart, cells));
  h.TickAt(kStart + 61 * kS);
  const auto stored = Stored();
  ASSERT_EQ(stored.size(), kShards);
  std::map<std::string, uint64_t> got;  // cell -> its vehicles
  for (uint32_t s = 0; s < kShards; ++s) {
    const auto& [subject, p] = stored[s];
    EXPECT_EQ(subject, "fleet." + std::to_string(s) + ".3");
    EXPECT_EQ(p.node, "op");
    EXPECT_EQ(p.origin, 3u);
    EXPECT_EQ(p.origins, 8u);
    EXPECT_EQ(p.start_ns, kStart);
    EXPECT_EQ(p.length_ns, 60 * kS);
    EXPECT_EQ(p.metrics, std::vector<std::string>{"vehicles"});
    for (const fleet::Row& r : p.rows) {
      EXPECT_EQ(PartitionOf(r.key, kShards), s) << r.key << " in the wrong shard";
      got[r.key] = r.stats.at(0).count;
    }
  }
  EXPECT_EQ(got, (std::map<std::string, uint64_t>{
                     {"u09tv", 1}, {"u09tw", 2}, {"u0h2b", 3}, {"fleet", 4}}));
  EXPECT_EQ(h.Counter("partials_published"), kShards);

  // A window without a cell is every shard's empty message; unpartitioned rows are refused.
  h.Feed(Partials(3, kStart + 60 * kS, {}));
  Body unpartitioned = Partials(0, kStart, cells);
  std::get<StatsBatch>(unpartitioned).partition.reset();
  h.Feed(std::move(unpartitioned));
  const auto after = Stored();
  ASSERT_EQ(after.size(), 2 * kShards);
  for (size_t i = kShards; i < after.size(); ++i) EXPECT_TRUE(after[i].second.rows.empty());
  EXPECT_EQ(h.Counter("partials_refused"), 1u);
}

TEST_F(FleetPublishTest, AWindowSentAgainIsStoredOnce) {
  {
    OperatorHarness first("fleet_publish", Config());
    first.Feed(Partials(5, kStart, {"u09tv"}));
  }
  // The partition's next owner, restored from an older snapshot, sends the window again.
  OperatorHarness next("fleet_publish", Config());
  next.Feed(Partials(5, kStart, {"u09tv"}));
  next.Feed(Partials(5, kStart + 60 * kS, {"u09tv"}));
  EXPECT_EQ(Stored().size(), 2 * kShards) << "the stream stores a message id once";
}

TEST_F(FleetPublishTest, WhatWaitedWhileTheServerWasDownIsStoredInOrderOnceItIsBack) {
  OperatorHarness h("fleet_publish", Config(R"(, "max_pending": 1000)"));
  h.Feed(Partials(1, kStart, {"u09tv"}));
  ASSERT_EQ(Stored().size(), kShards);
  conn_.reset();
  js_.reset();
  server_.Stop();
  // The windows' tokens (StatsBatch::in_flight) are held until their partials are stored.
  std::vector<std::weak_ptr<int>> held;
  for (const int64_t start : {kStart + 60 * kS, kStart + 120 * kS}) {
    Body partials = Partials(1, start, {start == kStart + 60 * kS ? "u09tv" : "u09tw"});
    auto token = std::make_shared<int>(0);
    held.push_back(token);
    std::get<StatsBatch>(partials).in_flight = std::move(token);
    h.Feed(std::move(partials));
  }
  EXPECT_EQ(h.Gauge("partials_pending"), 2.0 * kShards);
  EXPECT_FALSE(held[0].expired() || held[1].expired()) << "let go before they were stored";
  EXPECT_GE(h.Counter("partials_publish_failures"), 1u);
  server_.Start();  // same port, same store
  nats::ConnectOptions o;
  o.url = server_.url();
  conn_ = nats::Connection::Connect(o);
  js_ = std::make_unique<nats::JetStream>(*conn_);
  ASSERT_TRUE(WaitFor(
      [&] {
        h.TickAt(kStart + 200 * kS);
        return h.Gauge("partials_pending") == 0.0;
      },
      20s));
  EXPECT_TRUE(held[0].expired() && held[1].expired()) << "held after they were stored";
  const auto stored = Stored();
  ASSERT_EQ(stored.size(), 3 * kShards);
  for (size_t i = 0; i < stored.size(); ++i) {
    EXPECT_EQ(stored[i].second.start_ns, kStart + static_cast<int64_t>(i / kShards) * 60 * kS)
        << "message " << i << " out of order";
  }
}

}  // namespace
}  // namespace fleetflow::testing
