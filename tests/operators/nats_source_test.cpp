// nats_source against a real nats-server: decoding, status, bad input by reason, queue groups.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "fleetflow/testkit/harness.hpp"
#include "jetstream.hpp"
#include "nats_client.hpp"
#include "nats_fixture.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;

class NatsSourceTest : public NatsServerTest {
 protected:
  /// A source on vehicle.>; `extra` adds config fields (a JSON object's members, comma first)
  /// or sets the subject (a key given twice is refused).
  std::unique_ptr<OperatorHarness> Source(const std::string& extra = "") {
    const bool subject = extra.find("\"subject\"") != std::string::npos;
    auto h = std::make_unique<OperatorHarness>("nats_source",
                                               R"({"url": ")" + server_.url() + "\"" +
                                                   (subject ? "" : R"(, "subject": "vehicle.>")") +
                                                   R"(, "max_future_ms": 60000)" + extra + "}");
    h->clock.Set(1'700'000'000'000'000'000);
    return h;
  }

  void Publish(const std::string& subject, const std::vector<wire::Point>& points) {
    const auto bytes = wire::EncodeBatch(points);
    conn_->Publish(subject, bytes.data(), bytes.size());
  }
};

constexpr int64_t kNow = 1'700'000'000'000'000'000;

int64_t RealNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST_F(NatsSourceTest, DecodesSamplesAndStatusAndRejectsBadInputByReason) {
  auto h = Source();
  h->Start();
  const CaptureSink& out = h->output();
  EXPECT_TRUE(h->op().Ready());

  wire::Point gps{kNow - 5, 7, 0, 48.85, 2.35, true};
  Publish("vehicle.v1.gps", {gps, wire::Point{kNow - 4, 8, 0, 48.86, 2.36, true}});
  conn_->Publish("vehicle.v1.status", "off");
  conn_->Publish("vehicle.v1.speed", "not a flatbuffer");                      // bad_identifier
  conn_->Publish("vehicle.v1.speed", "");                                      // empty
  conn_->Publish("vehicle.v1.status", "maybe");                                // bad_status
  Publish("vehicle.v1", {wire::Point{kNow, 1, 1.0}});                          // bad_subject
  Publish("vehicle.v1.speed", {wire::Point{kNow, 1, std::nan("")}});           // non_finite
  Publish("vehicle.v1.speed", {wire::Point{kNow + 3'600'000'000'000, 2, 1}});  // future
  Publish("vehicle.v1.gps", {wire::Point{kNow, 3, 0, 95.0, 2.0, true}});       // bad_position
  Publish("vehicle.v1.gps", {wire::Point{kNow, 5, 42.0}});  // missing_position: a value, no place
  Publish("vehicle.v1.speed", {wire::Point{kNow - 1, 4, 12.5}});
  conn_->Flush(2000);

  ASSERT_TRUE(WaitFor([&] { return h->Counter("messages_in") == 11; }, 10s));
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 3; }, 10s));
  h->Stop();

  const auto batches = Only<SampleBatch>(out.Messages());
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0]->vehicle, "v1");
  EXPECT_EQ(batches[0]->sensor, "gps");
  ASSERT_EQ(batches[0]->points.size(), 2u);
  EXPECT_EQ(batches[0]->points[0], gps);
  EXPECT_EQ(batches[1]->sensor, "speed");
  EXPECT_EQ(batches[1]->points[0].value, 12.5);
  const auto status = Only<StatusEvent>(out.Messages());
  ASSERT_EQ(status.size(), 1u);
  EXPECT_FALSE(status[0]->on);

  for (const char* reason :
       {"bad_identifier", "empty", "bad_status", "bad_subject", "non_finite_value",
        "future_timestamp", "bad_position", "missing_position"}) {
    EXPECT_EQ(h->Counter("input_rejected", {{"reason", reason}}), 1u) << reason;
  }
  EXPECT_EQ(h->Counter("samples_in"), 3u);
}

/// Collects messages of a subscription, thread-safe.
struct Inbox {
  struct Letter {
    std::string subject, reason, samples, payload;
  };
  std::unique_ptr<nats::Subscription> sub;
  std::mutex mu;
  std::vector<Letter> letters;

  Inbox(nats::Connection& conn, const std::string& subject) {
    sub = conn.Subscribe(subject, "", [this](nats::Message&& m) {
      std::lock_guard lock(mu);
      letters.push_back({std::string(m.subject()), m.header("Fleetflow-Reject-Reason"),
                         m.header("Fleetflow-Rejected-Samples"), std::string(m.text())});
    });
    conn.Flush(2000);
  }
  size_t size() {
    std::lock_guard lock(mu);
    return letters.size();
  }
  std::optional<Letter> Find(const std::string& subject) {
    std::lock_guard lock(mu);
    for (const auto& l : letters) {
      if (l.subject == subject) return l;
    }
    return std::nullopt;
  }
};

std::string Bytes(const std::vector<wire::Point>& points) {
  const auto b = wire::EncodeBatch(points);
  return {b.begin(), b.end()};
}

TEST_F(NatsSourceTest, DeadLettersEveryRejectWithItsReasonAndKeepsGoing) {
  auto h = Source(R"(, "dead_letter": true, "max_payload_bytes": 4096, "max_past_ms": 86400000,
                     "sensors": ["speed", "gps"])");
  Inbox dead(*conn_, "deadletter.>");
  h->Start();
  const CaptureSink& out = h->output();

  const std::string mixed = Bytes({wire::Point{kNow - 2, 1, 3.0}, wire::Point{kNow, 2, INFINITY},
                                   wire::Point{kNow - 1, 3, -INFINITY}});
  const std::string old = Bytes({wire::Point{kNow - 2 * 86'400'000'000'000LL, 1, 1.0}});
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"vehicle.v2.speed", "garbage"},                          // bad_identifier
      {"vehicle.v2.speed", ""},                                 // empty
      {"vehicle.v2.speed", std::string(5000, 'x')},             // oversize
      {"vehicle.v2.torque", Bytes({wire::Point{kNow, 1, 1}})},  // unknown_sensor
      {"vehicle.v2.a.b", Bytes({wire::Point{kNow, 1, 1}})},     // bad_subject
      {"vehicle.v2.speed", old},                                // past_timestamp
      {"vehicle.v2.speed", mixed},                              // 2 of 3 samples non-finite
  };
  for (const auto& [subject, payload] : bad) conn_->Publish(subject, payload);
  Publish("vehicle.v2.speed", {wire::Point{kNow - 1, 9, 42.0}});
  conn_->Flush(2000);

  ASSERT_TRUE(WaitFor([&] { return dead.size() == bad.size(); }, 10s)) << dead.size();
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 2; }, 10s)) << out.Size();
  h->Stop();

  const std::vector<std::tuple<std::string, std::string, std::string>> expected = {
      {"deadletter.bad_identifier.vehicle.v2.speed", "bad_identifier", ""},
      {"deadletter.empty.vehicle.v2.speed", "empty", ""},
      {"deadletter.oversize.vehicle.v2.speed", "oversize", ""},
      {"deadletter.unknown_sensor.vehicle.v2.torque", "unknown_sensor", ""},
      {"deadletter.bad_subject.vehicle.v2.a.b", "bad_subject", ""},
      {"deadletter.past_timestamp.vehicle.v2.speed", "past_timestamp", "1"},
      {"deadletter.non_finite_value.vehicle.v2.speed", "non_finite_value", "2"},
  };
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [subject, reason, samples] = expected[i];
    const auto letter = dead.Find(subject);
    ASSERT_TRUE(letter.has_value()) << subject;
    EXPECT_EQ(letter->reason, reason);
    EXPECT_EQ(letter->samples, samples) << subject;
    EXPECT_EQ(letter->payload, bad[i].second) << subject << ": the payload is kept unchanged";
  }
  // The good sample of the mixed batch and the last message went on.
  const auto batches = Only<SampleBatch>(out.Messages());
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0]->points.size(), 1u);
  EXPECT_EQ(batches[0]->points[0].value, 3.0);
  EXPECT_EQ(batches[1]->points[0].value, 42.0);
  EXPECT_EQ(h->Counter("dead_letters"), bad.size());
  EXPECT_EQ(h->Counter("dead_letter_failures"), 0u);
  EXPECT_EQ(h->Counter("input_rejected"), 8u);  // 5 whole messages + 1 + 2 samples
}

TEST_F(NatsSourceTest, JetStreamStoresTheDeadLetterBeforeTerminatingTheOriginal) {
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "dead_letter": true,
                     "fetch_expiry_ms": 100, "ack_wait_ms": 1000)");
  h->Start();
  const CaptureSink& out = h->output();
  conn_->Publish("vehicle.v3.speed", "garbage");
  Publish("vehicle.v3.speed", {wire::Point{kNow - 1, 9, 42.0}});
  conn_->Flush(2000);
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 1; }, 10s));
  Acknowledge(out.Messages());

  nats::JetStream js(*conn_);
  nats::ConsumerOptions reader;
  reader.stream = "DEADLETTER";
  reader.durable = "test-reader";
  reader.filter_subject = "deadletter.>";
  auto consumer = js.PullSubscribe(reader);
  const auto letters = consumer->Fetch(10, 2000);
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0]->subject(), "deadletter.bad_identifier.vehicle.v3.speed");
  EXPECT_EQ(std::string(static_cast<const char*>(letters[0]->data()), letters[0]->size()),
            "garbage");

  // Terminated, not redelivered: after more than ack_wait nothing is pending or received again.
  ASSERT_TRUE(WaitFor(
      [&] {
        return js.ConsumerPending("TELEMETRY", "fleetflow") == std::pair<uint64_t, uint64_t>{0, 0};
      },
      10s));
  const uint64_t seen = h->Counter("messages_in");
  EXPECT_FALSE(WaitFor([&] { return h->Counter("messages_in") > seen; }, 1500ms));
  h->Stop();
  EXPECT_EQ(seen, 2u);
}

TEST_F(NatsSourceTest, JetStreamKeepsABadMessageWhoseDeadLetterCannotBeStored) {
  nats::JetStream js(*conn_);
  js.EnsureStream(nats::StreamOptions{});  // TELEMETRY, but no dead-letter stream
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "dead_letter": true,
                     "create_stream": false, "fetch_expiry_ms": 100)");
  h->Start();
  conn_->Publish("vehicle.v4.speed", "garbage");
  conn_->Flush(2000);
  // Each failed dead letter leaves the message to be delivered again (after 1 s).
  ASSERT_TRUE(WaitFor([&] { return h->Counter("dead_letter_failures") >= 2; }, 10s));
  EXPECT_GE(h->Counter("messages_in"), 2u);
  EXPECT_EQ(js.ConsumerPending("TELEMETRY", "fleetflow").first +
                js.ConsumerPending("TELEMETRY", "fleetflow").second,
            1u);
  h->Stop();
}

TEST_F(NatsSourceTest, JetStreamHoldsBackInputWhileItsConsumerHasUndeliveredMessages) {
  // max_ack_pending 1: the consumer delivers one message and keeps the others until it is
  // acknowledged. Fetches come back empty meanwhile: that must not read as "nothing was sent",
  // or the windows would close on the clock before those samples enter (docs/semantics.md).
  nats::JetStream js(*conn_);
  js.EnsureStream(nats::StreamOptions{});
  for (uint32_t i = 0; i < 3; ++i) Publish("vehicle.v5.speed", {wire::Point{kNow - 10 + i, i, 1}});
  conn_->Flush(2000);
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "create_stream": false,
                     "fetch_expiry_ms": 100, "max_ack_pending": 1)");
  h->Start();
  const CaptureSink& out = h->output();
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 1; }, 10s));
  ASSERT_TRUE(WaitFor([&] { return h->Gauge("consumer_pending") == 2; }, 10s));
  EXPECT_TRUE(h->op().HoldsBackInput());
  // Acknowledged as they come, all three are delivered; then nothing is held back any more.
  size_t acked = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto ms = out.Messages();
        Acknowledge({ms.begin() + static_cast<std::ptrdiff_t>(acked), ms.end()});
        acked = ms.size();
        return acked == 3;
      },
      10s));
  EXPECT_TRUE(WaitFor([&] { return !h->op().HoldsBackInput(); }, 10s));
  h->Stop();

  // Every fetch is counted, an empty one as 0: the three messages came one per fetch.
  const uint64_t fetches = h->metrics.HistogramCount("fetch_batch_messages");
  EXPECT_GE(fetches, 3u);
  const std::string metrics = h->metrics.Exposition();
  const std::string series = "fleetflow_fetch_batch_messages_";
  const std::string labels = R"({node="op",operator="nats_source")";
  EXPECT_NE(metrics.find(series + "sum" + labels + "} 3\n"), std::string::npos) << metrics;
  EXPECT_NE(
      metrics.find(series + "bucket" + labels + R"(,le="1"} )" + std::to_string(fetches) + "\n"),
      std::string::npos)
      << metrics;
}

/// Emits into a graph that stops taking input at the first message until Release(), as a full
/// graph does (its sink waiting for PostgreSQL).
class StallingEmitter final : public Emitter {
 public:
  void Emit(Message m) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return released_; });
    messages_.push_back(std::move(m));
  }
  void Unblock() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  /// The messages taken; acknowledges their samples (they are in state).
  size_t TakeAndAck() {
    std::lock_guard lock(mu_);
    for (; acked_ < messages_.size(); ++acked_) {
      if (const auto* b = std::get_if<SampleBatch>(messages_[acked_].get())) b->ack->Done();
    }
    return messages_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::vector<Message> messages_;
  size_t acked_ = 0;
};

TEST_F(NatsSourceTest, JetStreamAfterItsConnectionCameBackHoldsBackInputUntilLostDeliveriesCame) {
  // What the consumer sent while the connection was down is lost on its way and sent again
  // ack_wait_ms later. A partition that gets nothing after it sees no gap in the deliveries'
  // numbers, so after reconnecting the source holds input back that long (docs/semantics.md):
  // its windows must not close on the clock before the lost samples come.
  nats::JetStream js(*conn_);
  js.EnsureStream(nats::StreamOptions{});
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "create_stream": false,
                     "fetch_expiry_ms": 100, "ack_wait_ms": 10000)");
  h->Start();
  ASSERT_TRUE(WaitFor([&] { return !h->op().HoldsBackInput(); }, 10s));
  server_.Restart();  // same port and store: both connections come back
  const std::vector<wire::Point> points = {wire::Point{kNow - 10, 0, 1}};
  const auto bytes = wire::EncodeBatch(points);
  ASSERT_TRUE(WaitFor(
      [&] {
        try {
          js.Publish("vehicle.v5.speed", bytes.data(), bytes.size(), nats::Headers{}, 1000);
          return true;
        } catch (const std::exception&) {
          return false;  // not reconnected yet
        }
      },
      20s));
  const CaptureSink& out = h->output();
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 1; }, 10s));
  Acknowledge(out.Messages());
  // Everything delivered is acknowledged and nothing is pending, yet ack_wait_ms (10 s) have not
  // passed since the source came back: still held back, then no longer.
  EXPECT_TRUE(h->op().HoldsBackInput());
  EXPECT_TRUE(WaitFor([&] { return !h->op().HoldsBackInput(); }, 20s));
  h->Stop();
}

TEST_F(NatsSourceTest, JetStreamAfterAStalledGraphHoldsBackInputUntilTheBacklogIsIn) {
  // The graph stops taking input for longer than a pull request lives: the requests expire and
  // what is published meanwhile stays at the server. The consumer said "nothing pending" with
  // its last message before the stall; that is stale now. Were it believed, the windows would
  // close on the clock before the backlog enters (the samples late, rows missing).
  nats::JetStream js(*conn_);
  js.EnsureStream(nats::StreamOptions{});
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "create_stream": false,
                     "fetch_expiry_ms": 100)");
  StallingEmitter out;
  h->op().Start(out);
  ASSERT_TRUE(WaitFor([&] { return !h->op().HoldsBackInput(); }, 10s));
  Publish("vehicle.v5.speed", {wire::Point{kNow - 10, 0, 1}});  // the stall begins with it
  conn_->Flush(2000);
  ASSERT_TRUE(WaitFor([&] { return h->Counter("messages_in") == 1; }, 10s));
  // Well past the requests' expiry (100 ms): these wait at the server.
  std::this_thread::sleep_for(500ms);  // the stall's length, not a synchronisation
  constexpr uint32_t kBacklog = 5;
  for (uint32_t i = 1; i <= kBacklog; ++i) {
    Publish("vehicle.v5.speed", {wire::Point{kNow - 10 + i, i, 1}});
  }
  conn_->Flush(2000);
  std::this_thread::sleep_for(500ms);  // the stall's length, not a synchronisation
  out.Unblock();
  // Until the backlog is emitted, the source holds input back (sampled every millisecond).
  bool released_early = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        const bool holds = h->op().HoldsBackInput();
        const size_t taken = out.TakeAndAck();
        released_early = released_early || (!holds && taken < 1 + kBacklog);
        return taken == 1 + kBacklog && !holds;
      },
      10s, 1ms));
  EXPECT_FALSE(released_early) << "input was not held back while the backlog waited";
  h->op().Stop();
}

TEST_F(NatsSourceTest, JetStreamStampsAStatusWithTheTimeTheStreamStoredIt) {
  // A backlog read later (the engine was down): the status' time is when it was published,
  // not when it is read (the harness clock is years away from both).
  nats::JetStream js(*conn_);
  js.EnsureStream(nats::StreamOptions{});
  const int64_t before = RealNowNs();
  // Acknowledged by the stream: it stamped the message before `after` (a core publish and flush
  // return before the stream's own goroutine stores it, microseconds later).
  js.Publish("vehicle.v6.status", "on", 2, nats::Headers{}, 2000);
  const int64_t after = RealNowNs();
  auto h = Source(R"(, "delivery": "jetstream", "subject": "vehicle.*.*", "create_stream": false)");
  h->Start();
  const CaptureSink& out = h->output();
  ASSERT_TRUE(WaitFor([&] { return out.Size() == 1; }, 10s));
  h->Stop();
  const auto status = OnlyOne<StatusEvent>(out.Messages());
  ASSERT_NE(status, nullptr);
  EXPECT_TRUE(status->on);
  EXPECT_GE(status->at_ns, before);
  EXPECT_LE(status->at_ns, after);
}

// One worker per core queue group (docs/scaling.md): core NATS would share each vehicle's
// samples between two; the second source refuses to start, and the first takes every message.
TEST_F(NatsSourceTest, ASecondSourceOfTheQueueGroupRefusesToStartAndTheFirstTakesEveryMessage) {
  auto a = Source();
  auto b = Source();
  a->Start();
  const std::string refused = b->StartError();
  EXPECT_NE(refused.find("queue group 'fleetflow' on vehicle.> is read already by node 'op'"),
            std::string::npos)
      << refused;
  const CaptureSink& out_a = a->output();
  constexpr int kMessages = 400;
  for (int i = 0; i < kMessages; ++i) {
    Publish("vehicle.v" + std::to_string(i % 7) + ".speed", {wire::Point{kNow - i, 1, 1.0}});
  }
  conn_->Flush(2000);
  ASSERT_TRUE(WaitFor([&] { return out_a.Size() == kMessages; }, 10s)) << out_a.Size();
  a->Stop();
  EXPECT_EQ(b->output().Size(), 0u);
}

TEST_F(NatsSourceTest, StartFailsClearlyWhenTheServerIsDown) {
  auto h = Source();
  server_.Stop();
  const std::string what = h->StartError();
  ASSERT_FALSE(what.empty()) << "Start should throw";
  EXPECT_NE(what.find(server_.url()), std::string::npos) << what;
}

}  // namespace
}  // namespace fleetflow::testing
