// nats_source against a real nats-server: decoding, status, bad input by reason, queue groups.
#include <cmath>
#include <limits>
#include <mutex>

#include "harness.hpp"
#include "nats_client.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

class SafeEmitter final : public Emitter {
 public:
  void Emit(Message m) override {
    std::lock_guard lock(mu);
    messages.push_back(std::move(m));
  }
  size_t size() {
    std::lock_guard lock(mu);
    return messages.size();
  }
  std::mutex mu;
  std::vector<Message> messages;
};

class NatsSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    server_.Start();
    nats::ConnectOptions o;
    o.url = server_.url();
    pub_ = nats::Connection::Connect(o);
  }

  std::unique_ptr<OperatorHarness> Source() {
    auto h = std::make_unique<OperatorHarness>(
        "nats_source",
        R"({"url": ")" + server_.url() + R"(", "subject": "vehicle.>", "max_future_ms": 60000})");
    h->clock.now_ns = 1'700'000'000'000'000'000;
    return h;
  }

  void Publish(const std::string& subject, const std::vector<wire::Point>& points) {
    const auto bytes = wire::EncodeBatch(points);
    pub_->Publish(subject, bytes.data(), bytes.size());
  }

  NatsServer server_;
  std::unique_ptr<nats::Connection> pub_;
};

constexpr int64_t kNow = 1'700'000'000'000'000'000;

TEST_F(NatsSourceTest, DecodesSamplesAndStatusAndRejectsBadInputByReason) {
  auto h = Source();
  SafeEmitter out;
  h->op().Start(out);
  EXPECT_TRUE(h->op().Ready());

  wire::Point gps{kNow - 5, 7, 0, 48.85, 2.35, true};
  Publish("vehicle.v1.gps", {gps, wire::Point{kNow - 4, 8, 0, 48.86, 2.36, true}});
  pub_->Publish("vehicle.v1.status", "off");
  pub_->Publish("vehicle.v1.speed", "not a flatbuffer");                       // bad_identifier
  pub_->Publish("vehicle.v1.speed", "");                                       // empty
  pub_->Publish("vehicle.v1.status", "maybe");                                 // bad_status
  Publish("vehicle.v1", {wire::Point{kNow, 1, 1.0}});                          // bad_subject
  Publish("vehicle.v1.speed", {wire::Point{kNow, 1, std::nan("")}});           // non_finite
  Publish("vehicle.v1.speed", {wire::Point{kNow + 3'600'000'000'000, 2, 1}});  // future
  Publish("vehicle.v1.gps", {wire::Point{kNow, 3, 0, 95.0, 2.0, true}});       // bad_position
  Publish("vehicle.v1.speed", {wire::Point{kNow - 1, 4, 12.5}});
  pub_->Flush(2000);

  ASSERT_TRUE(WaitFor([&] { return h->Counter("messages_in") == 10; }, 10s));
  ASSERT_TRUE(WaitFor([&] { return out.size() == 3; }, 10s));
  h->op().Stop();

  const auto batches = Only<SampleBatch>(out.messages);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0]->vehicle, "v1");
  EXPECT_EQ(batches[0]->sensor, "gps");
  ASSERT_EQ(batches[0]->points.size(), 2u);
  EXPECT_EQ(batches[0]->points[0], gps);
  EXPECT_EQ(batches[1]->sensor, "speed");
  EXPECT_EQ(batches[1]->points[0].value, 12.5);
  const auto status = Only<StatusEvent>(out.messages);
  ASSERT_EQ(status.size(), 1u);
  EXPECT_FALSE(status[0]->on);

  const std::string metrics = h->metrics.Exposition();
  for (const char* reason : {"bad_identifier", "empty", "bad_status", "bad_subject",
                             "non_finite_value", "future_timestamp", "bad_position"}) {
    EXPECT_NE(metrics.find(std::string("reason=\"") + reason + "\"} 1"), std::string::npos)
        << reason << "\n"
        << metrics;
  }
  EXPECT_EQ(h->Counter("samples_in"), 3u);
}

TEST_F(NatsSourceTest, WorkersInOneQueueGroupShareTheMessages) {
  auto a = Source();
  auto b = Source();
  SafeEmitter out_a, out_b;
  a->op().Start(out_a);
  b->op().Start(out_b);
  constexpr int kMessages = 400;
  for (int i = 0; i < kMessages; ++i) {
    Publish("vehicle.v" + std::to_string(i % 7) + ".speed", {wire::Point{kNow - i, 1, 1.0}});
  }
  pub_->Flush(2000);
  ASSERT_TRUE(WaitFor([&] { return out_a.size() + out_b.size() == kMessages; }, 10s))
      << out_a.size() << " + " << out_b.size();
  a->op().Stop();
  b->op().Stop();
  EXPECT_EQ(out_a.size() + out_b.size(), static_cast<size_t>(kMessages));  // none twice
  EXPECT_GT(out_a.size(), 0u);
  EXPECT_GT(out_b.size(), 0u);
}

TEST_F(NatsSourceTest, StartFailsClearlyWhenTheServerIsDown) {
  auto h = Source();
  server_.Stop();
  SafeEmitter out;
  try {
    h->op().Start(out);
    FAIL() << "Start should throw";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(server_.url()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fleetflow::testing
