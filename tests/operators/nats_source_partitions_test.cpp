// nats_source with partitions against a real nats-server that maps the vehicles' subjects into
// partitions: the mapping check, each vehicle in its own partition, the workers sharing the
// partitions, and the hand-over of a partition with its record. The same on a nats-server 2.10
// without the mapping, where the stream partitions its subjects itself (partition_mapping), and
// what a 2.9 server without the mapping says.
#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "fleetflow/testkit/harness.hpp"
#include "nats_fixture.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;

constexpr int64_t kNow = 1'700'000'000'000'000'000;
constexpr uint32_t kPartitions = 4;

/// The messages a source emitted so far (acknowledging the samples among them).
std::vector<Message> Take(const CaptureSink& out) {
  auto ms = out.Messages();
  Acknowledge(ms);
  return ms;
}

std::vector<const PartitionEvent*> Events(const std::vector<Message>& ms, PartitionEvent::Kind k) {
  std::vector<const PartitionEvent*> out;
  for (const auto& m : ms) {
    const auto* e = std::get_if<PartitionEvent>(m.get());
    if (e != nullptr && e->kind == k) out.push_back(e);
  }
  return out;
}

class PartitionedSourceTest : public NatsServerTest {
 protected:
  void SetUp() override {
    server_.MapPartitions(kPartitions);
    NatsServerTest::SetUp();
  }

  std::unique_ptr<OperatorHarness> Source() {
    auto h = std::make_unique<OperatorHarness>(
        "nats_source", R"({"url": ")" + server_.url() +
                           R"(", "delivery": "jetstream", "partitions": 4, "max_future_ms": 60000,
                              "heartbeat_ms": 200, "member_timeout_ms": 4000,
                              "fetch_expiry_ms": 100})");
    h->clock.Set(kNow);
    return h;
  }

  /// One sample of each of `vehicles` vehicles, as a vehicle publishes it.
  void PublishFleet(int vehicles) {
    for (int v = 0; v < vehicles; ++v) {
      const std::vector<wire::Point> sample = {wire::Point{kNow - 1000, 1, double(v)}};
      const auto bytes = wire::EncodeBatch(sample);
      conn_->Publish("vehicle.v" + std::to_string(v) + ".speed", bytes.data(), bytes.size());
    }
    conn_->Flush(2000);
  }

  static std::set<std::string> Vehicles(const std::vector<Message>& ms) {
    std::set<std::string> out;
    for (const auto& m : ms) {
      if (const auto* b = std::get_if<SampleBatch>(m.get())) out.insert(b->vehicle);
    }
    return out;
  }
};

TEST_F(PartitionedSourceTest, AWorkerAloneReadsEveryPartitionAfterItsEventEachVehicleInItsOwn) {
  auto h = Source();
  h->Start();
  CaptureSink& out = h->output();
  ASSERT_TRUE(WaitFor([&] { return h->Gauge("partitions_owned") == 4; }, 10s));
  PublishFleet(40);
  std::vector<Message> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        got = Take(out);
        return Vehicles(got).size() == 40;
      },
      10s));
  std::set<uint32_t> assigned;
  for (const auto& m : got) {
    if (const auto* e = std::get_if<PartitionEvent>(m.get())) {
      EXPECT_EQ(e->kind, PartitionEvent::Kind::kAssigned);
      EXPECT_FALSE(e->emitted.has_value());  // the first worker ever
      assigned.insert(e->partition);
    } else if (const auto* b = std::get_if<SampleBatch>(m.get())) {
      EXPECT_EQ(b->partition, PartitionOf(b->vehicle, kPartitions)) << b->vehicle;
      EXPECT_TRUE(assigned.count(b->partition)) << "a message before its partition's event";
    }
  }
  EXPECT_EQ(assigned.size(), 4u);
  h->Stop();
  EXPECT_EQ(Events(Take(out), PartitionEvent::Kind::kRevoked).size(), 4u);
}

TEST_F(PartitionedSourceTest, TwoWorkersSplitThePartitionsAndTheNewOwnerGoesOnFromTheRecord) {
  // While a partition is given up, its messages are handed back unread: the windows must not
  // close on the clock without them until its kRevoked event is in the graph.
  std::mutex mu;
  std::vector<bool> held_back_at_revoke;
  auto a = Source();
  CaptureSink& out_a = a->output();
  out_a.OnEmit([&mu, &held_back_at_revoke, &op = a->op()](const Message& m) {
    const auto* e = std::get_if<PartitionEvent>(m.get());
    if (e == nullptr || e->kind != PartitionEvent::Kind::kRevoked) return;
    std::lock_guard lock(mu);
    held_back_at_revoke.push_back(op.HoldsBackInput());
  });
  a->Start();
  ASSERT_TRUE(WaitFor([&] { return a->Gauge("partitions_owned") == 4; }, 10s));
  auto b = Source();
  b->Start();
  CaptureSink& out_b = b->output();
  // The first gives two partitions up; its join says which window it emitted last, and the
  // record is written once the event has passed (here: once the test lets go of it).
  std::vector<const PartitionEvent*> revoked;
  std::vector<Message> got_a;
  ASSERT_TRUE(WaitFor(
      [&] {
        got_a = Take(out_a);
        revoked = Events(got_a, PartitionEvent::Kind::kRevoked);
        return revoked.size() == 2;
      },
      10s));
  constexpr int64_t kLastWindow = kNow - 5'000'000'000;
  for (const auto* e : revoked) e->handover->Emitted("windows", kLastWindow);
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(held_back_at_revoke, std::vector<bool>(2, true));
  }
  revoked.clear();
  got_a.clear();
  out_a.Clear();
  ASSERT_TRUE(WaitFor([&] { return b->Gauge("partitions_owned") == 2; }, 10s));
  const auto assigned_b = Events(Take(out_b), PartitionEvent::Kind::kAssigned);
  ASSERT_EQ(assigned_b.size(), 2u);
  for (const auto* e : assigned_b) {
    EXPECT_EQ(e->emitted, (EmittedWindows{{"windows", kLastWindow}}))
        << "partition " << e->partition;
  }
  EXPECT_EQ(b->Counter("partitions_recovered"), 0u);
  EXPECT_EQ(a->Gauge("partitions_owned"), 2);

  // Each vehicle reaches the worker that owns its partition, and only that one.
  out_b.Clear();
  PublishFleet(40);
  std::set<std::string> va, vb;
  ASSERT_TRUE(WaitFor(
      [&] {
        va = Vehicles(Take(out_a));
        vb = Vehicles(Take(out_b));
        return va.size() + vb.size() >= 40;
      },
      10s));
  EXPECT_EQ(va.size() + vb.size(), 40u);
  EXPECT_FALSE(va.empty());
  EXPECT_FALSE(vb.empty());
  for (const auto& v : va) EXPECT_EQ(vb.count(v), 0u) << v << " reached both workers";
  a->Stop();
  b->Stop();
}

class UnmappedServerTest : public NatsServerTest {
 protected:
  /// What a source of `partitions` with `extra` settings says when it cannot start.
  std::string StartError(const std::string& extra = "") {
    OperatorHarness h("nats_source", R"({"url": ")" + server_.url() +
                                         R"(", "delivery": "jetstream", "partitions": 4)" + extra +
                                         "}");
    return h.StartError();
  }
};

// Debian 12's 2.9.10 without the mapping: neither way works, and the error names both.
TEST_F(UnmappedServerTest, WithoutTheServersMappingStartStopsNamingBothWays) {
  if (NatsServer::StreamsPartition()) GTEST_SKIP() << "needs a server older than 2.10";
  for (const std::string extra : {"", R"(, "partition_mapping": "stream")"}) {
    const std::string what = StartError(extra);
    ASSERT_FALSE(what.empty()) << "Start should throw (" << extra << ")";
    EXPECT_NE(what.find("mappings = { \"vehicle.*.*\": "
                        "\"telemetry.{{partition(4,1)}}.{{wildcard(1)}}.{{wildcard(2)}}\" }"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("nats-server 2.10 or later"), std::string::npos) << what;
    // Nothing left behind: no stream that would store the vehicles' subjects unpartitioned.
    EXPECT_FALSE(js_->FindStream("TELEMETRY").has_value());
    EXPECT_FALSE(js_->FindStream(nats::JetStream::kTransformProbeStream).has_value());
  }
  EXPECT_NE(StartError(R"(, "partition_mapping": "account")").find("did not come back"),
            std::string::npos);
}

TEST_F(PartitionedSourceTest, AMappingWithAnotherPartitionCountIsRefused) {
  // Without the account mapping (stage nats-2.10), the stream's transform says it.
  if (NatsServer::StreamsPartition()) Source()->Start();
  OperatorHarness h("nats_source", R"({"url": ")" + server_.url() +
                                       R"(", "delivery": "jetstream", "partitions": 16})");
  const std::string what = h.StartError();
  ASSERT_FALSE(what.empty()) << "Start should throw";
  EXPECT_NE(what.find("partition count"), std::string::npos) << what;
}

/// A nats-server 2.10 without the account mapping, as a managed NATS account is: the source
/// creates the stream with its subject transform.
class TransformingServerTest : public PartitionedSourceTest {
 protected:
  void SetUp() override {
    server_.UseServer210();
    NatsServerTest::SetUp();
  }
};

TEST_F(TransformingServerTest, TheStreamPartitionsItselfEachVehicleInItsOwnNoProbeLeft) {
  auto h = Source();
  h->Start();
  const auto stream = js_->FindStream("TELEMETRY");
  ASSERT_TRUE(stream.has_value());
  EXPECT_EQ(stream->subjects, std::vector<std::string>{"vehicle.*.*"});
  ASSERT_TRUE(stream->transform.has_value());
  EXPECT_EQ(stream->transform->destination,
            "telemetry.{{partition(4,1)}}.{{wildcard(1)}}.{{wildcard(2)}}");
  EXPECT_FALSE(js_->FindStream(nats::JetStream::kTransformProbeStream).has_value());
  ASSERT_TRUE(WaitFor([&] { return h->Gauge("partitions_owned") == 4; }, 10s));
  PublishFleet(40);
  std::vector<Message> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        got = Take(h->output());
        return Vehicles(got).size() == 40;
      },
      10s));
  // The server's partition() in a stream's transform computes what the engine computes.
  for (const auto& m : got) {
    if (const auto* b = std::get_if<SampleBatch>(m.get())) {
      EXPECT_EQ(b->partition, PartitionOf(b->vehicle, kPartitions)) << b->vehicle;
    }
  }
  h->Stop();
}

TEST_F(TransformingServerTest, AStreamThatPartitionsOtherwiseIsRefusedNamingTheDifference) {
  Source()->Start();  // creates TELEMETRY with 4 partitions
  const auto start_error = [&](const std::string& extra) {
    OperatorHarness h("nats_source", R"({"url": ")" + server_.url() +
                                         R"(", "delivery": "jetstream")" + extra + "}");
    return h.StartError();
  };
  EXPECT_NE(start_error(R"(, "partitions": 16)")
                .find("expected vehicle.*.* → telemetry.{{partition(16,1)}}"),
            std::string::npos);
  EXPECT_NE(start_error(R"(, "partitions": 4, "partition_prefix": "tel")")
                .find("partition count and prefix"),
            std::string::npos);
  EXPECT_NE(start_error(R"(, "partitions": 4, "partition_mapping": "account")")
                .find("transforms its subjects itself"),
            std::string::npos);
  // A stream made for the account mapping is not taken for one that transforms.
  nats::StreamOptions account;
  account.name = "ACCOUNT";
  account.subjects = {"telemetry.*.*.*"};
  js_->EnsureStream(account);
  EXPECT_NE(start_error(R"(, "stream": "ACCOUNT", "partitions": 4, "partition_mapping": "stream")")
                .find("exists without a subject transform"),
            std::string::npos);
}

}  // namespace
}  // namespace fleetflow::testing
