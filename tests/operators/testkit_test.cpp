// The operator test kit itself, on operators of its own: the contract it holds operators to,
// metrics by name and labels, the manual clock, sources on their own threads, and the readers of
// emitted messages.
#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

/// Passes every message on `copies` times (0: drops it); counts samples by sensor and keeps the
/// clock's time at the last message in a gauge.
class Echo final : public Operator {
 public:
  explicit Echo(const OperatorContext& ctx)
      : copies_(ctx.config.Integer("copies")),
        metrics_(ctx.metrics),
        labels_(ctx.labels()),
        clock_(ctx.clock) {}

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      Labels labels = labels_;
      labels.emplace_back("sensor", b->sensor);
      metrics_.GetCounter("echo_samples", "Samples seen.", labels).Inc(b->points.size());
    }
    metrics_.GetGauge("echo_now_ns", "The clock at the last message.", labels_)
        .Set(static_cast<double>(clock_.NowNs()));
    for (int64_t i = 0; i < copies_; ++i) out.Emit(in);
  }

 private:
  const int64_t copies_;
  Metrics& metrics_;
  const Labels labels_;
  const Clock& clock_;
};

/// A source that emits `messages` sample batches from a thread of its own once started.
class Burst final : public Operator {
 public:
  explicit Burst(const OperatorContext& ctx) : messages_(ctx.config.Integer("messages")) {}
  ~Burst() override { Stop(); }
  void Start(Emitter& out) override {
    thread_ = std::thread([this, &out] {
      for (int64_t i = 0; i < messages_; ++i) {
        out.Emit(MakeMessage(Samples("v" + std::to_string(i), "speed", {{i, 1.0}})));
      }
    });
  }
  void Stop() override {
    if (thread_.joinable()) thread_.join();
  }

 private:
  const int64_t messages_;
  std::thread thread_;
};

Registry TestOperators() {
  Registry registry;
  OperatorInfo echo;
  echo.name = "echo";
  echo.summary = "Passes messages on copies times.";
  echo.input = PortKind::kSamples;
  echo.output = PortKind::kSamples;
  echo.config.Integer("copies", "How many times each message is passed on.").Default(int64_t{1});
  echo.create = [](const OperatorContext& ctx) { return std::make_unique<Echo>(ctx); };
  registry.Add(std::move(echo));
  OperatorInfo burst;
  burst.name = "burst";
  burst.summary = "Emits sample batches from a thread.";
  burst.output = PortKind::kSamples;
  burst.config.Integer("messages", "How many.").Min(0).Default(int64_t{1});
  burst.create = [](const OperatorContext& ctx) { return std::make_unique<Burst>(ctx); };
  registry.Add(std::move(burst));
  return registry;
}

class TestKitTest : public ::testing::Test {
 protected:
  HarnessOptions Options() const {
    HarnessOptions o;
    o.registry = &registry_;
    return o;
  }
  Registry registry_ = TestOperators();
};

TEST_F(TestKitTest, AnOperatorThatDropsOrRepeatsATickOrPartitionEventBreaksTheContract) {
  OperatorHarness ok("echo", R"({"copies": 1})", Options());
  EXPECT_NO_THROW(ok.TickAt(1));
  EXPECT_NO_THROW(ok.Feed(Assigned(0)));
  OperatorHarness drops("echo", R"({"copies": 0})", Options());
  EXPECT_NO_THROW(drops.Feed(Samples("v1", "speed", {{1, 1.0}})));  // samples may be dropped
  try {
    drops.TickAt(1);
    FAIL() << "a dropped Tick went unnoticed";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("echo node 'op' passed on the Tick it was fed 0 times"),
              std::string::npos)
        << e.what();
  }
  OperatorHarness repeats("echo", R"({"copies": 2})", Options());
  EXPECT_THROW(repeats.Feed(Revoked(1)), std::logic_error);
}

TEST_F(TestKitTest, MetricsByNameAndLabels) {
  HarnessOptions options = Options();
  options.node_id = "e1";
  OperatorHarness h("echo", "{}", options);
  h.Feed(Samples("v1", "speed", {{1, 1.0}, {2, 2.0}}));
  h.Feed(Samples("v1", "soc", {{1, 50.0}}));
  EXPECT_EQ(h.Counter("echo_samples"), 3u);  // every series
  EXPECT_EQ(h.Counter("echo_samples", {{"sensor", "speed"}}), 2u);
  EXPECT_EQ(h.Counter("echo_samples", {{"sensor", "soc"}, {"node", "e1"}}), 1u);
  EXPECT_EQ(h.Counter("echo_samples", {{"node", "op"}}), 0u);        // another node
  EXPECT_EQ(h.Counter("echo_samples", {{"sensor", "torque"}}), 0u);  // no such series
  EXPECT_EQ(h.Counter("no_such_metric"), 0u);
  EXPECT_EQ(h.labels(), (Labels{{"node", "e1"}, {"operator", "echo"}}));
}

TEST_F(TestKitTest, TicksMoveTheManualClockTheOperatorReads) {
  OperatorHarness h("echo", "{}", Options());
  h.TickAt(1500);
  EXPECT_EQ(h.Gauge("echo_now_ns"), 1500.0);
  h.clock.Advance(500);
  h.Feed(StatusEvent{"v1", true, 0, 0, nullptr});
  EXPECT_EQ(h.Gauge("echo_now_ns", {{"operator", "echo"}}), 2000.0);
}

TEST_F(TestKitTest, EverythingEmittedIsKeptInOrder) {
  OperatorHarness h("echo", "{}", Options());
  h.Feed(Samples("v1", "speed", {{1, 1.0}}));
  h.TickAt(2);
  const auto all = h.output().Messages();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<SampleBatch>(*all[0]));
  EXPECT_TRUE(std::holds_alternative<Tick>(*all[1]));
}

TEST_F(TestKitTest, ASourceEmitsIntoTheOutputFromItsOwnThread) {
  OperatorHarness h("burst", R"({"messages": 500})", Options());
  h.Start();
  h.Stop();  // the source's thread has ended: everything it emitted is in
  EXPECT_EQ(h.output().Size(), 500u);
  EXPECT_EQ(Points(h.output().Messages()).size(), 500u);
}

TEST_F(TestKitTest, ConfigIsValidatedAsInAPipelineFile) {
  EXPECT_NE(BuildError("echo", R"({"copis": 1})", Options()).find("did you mean 'copies'"),
            std::string::npos);
  EXPECT_NE(BuildError("nope", "{}", Options()).find("unknown operator 'nope'"), std::string::npos);
  EXPECT_EQ(BuildError("echo", "{}", Options()), "");
  // Without a registry, the built-in operators.
  EXPECT_EQ(BuildError("keyed_last_value", "{}"), "");
}

TEST(TestKitMessagesTest, RowsOfWindowBatches) {
  auto sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed", "soc"});
  WindowBatch first;
  first.window_ns = 10;
  first.sensors = sensors;
  first.AddRow("a", {Slot{wire::Point{9, 0, 1.5}, wire::Point{11, 1, 2.5}}, Slot{}});
  first.AddRow("b", {Slot{}, Slot{std::nullopt, wire::Point{12, 0, 80}}});
  WindowBatch second;
  second.window_ns = 20;
  second.sensors = sensors;
  second.AddRow("a", {Slot{wire::Point{19, 2, 3.0}, std::nullopt}, Slot{}});
  const std::vector<Message> out = {MakeMessage(std::move(first)), MakeMessage(Tick{15}),
                                    MakeMessage(std::move(second))};
  EXPECT_EQ(Rows(out, "a"),
            (std::vector<Row>{{10, "a", {1.5, std::nullopt}, {2.5, std::nullopt}},
                              {20, "a", {3.0, std::nullopt}, {std::nullopt, std::nullopt}}}));
  EXPECT_EQ(RowTimes(out), (std::vector<int64_t>{10, 10, 20}));
  ASSERT_NE(WindowAt(out, 20), nullptr);
  EXPECT_EQ(WindowAt(out, 20)->rows.size(), 1u);
  EXPECT_EQ(WindowAt(out, 15), nullptr);
  EXPECT_EQ(OnlyOne<WindowBatch>(out), nullptr);  // two of them
  EXPECT_NE(OnlyOne<Tick>(out), nullptr);
  std::ostringstream printed;
  printed << Rows(out, "b").front();
  EXPECT_EQ(printed.str(), "{window 10, b, before [null, null], after [null, 80]}");
}

TEST(TestKitMessagesTest, SamplesPointsAndAcknowledgements) {
  const SampleBatch b = Samples("v1", "speed", {{5, 1.0}, {7, 2.0}});
  EXPECT_EQ(b.points[1], (wire::Point{7, 1, 2.0}));  // seq counts from 0
  int acks = 0;
  SampleBatch acked = b;
  acked.ack = MakeAck([&] { ++acks; });
  StatusEvent off{"v1", false, 9, 0, MakeAck([&] { ++acks; })};
  const std::vector<Message> out = {MakeMessage(acked),
                                    MakeMessage(Samples("v2", "soc", {{6, 3.0}})),
                                    MakeMessage(std::move(off))};
  EXPECT_EQ(Times(Points(out)), (std::vector<int64_t>{5, 7, 6}));
  EXPECT_EQ(Values(Points(out, "soc")), (std::vector<double>{3.0}));
  Acknowledge(out);
  EXPECT_EQ(acks, 2);
}

}  // namespace
}  // namespace fleetflow::testkit
