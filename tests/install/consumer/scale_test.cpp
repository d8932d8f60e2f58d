// An operator written outside the fleetflow tree, tested with the installed kit: `scale`
// multiplies every sample's value by its config's factor. The built-in range_filter, reached
// through the installed builtin.hpp, runs in the same kit.
#include <gtest/gtest.h>

#include <memory>
#include <utility>
#include <vector>

#include "builtin.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "operator.hpp"
#include "registry.hpp"

namespace {

using namespace fleetflow;
using namespace fleetflow::testkit;

class Scale final : public Operator {
 public:
  explicit Scale(const OperatorContext& ctx)
      : factor_(ctx.config.Number("factor")),
        scaled_(ctx.metrics.GetCounter("samples_scaled", "Samples scaled.", ctx.labels())) {}

  void Process(const Message& in, Emitter& out) override {
    const auto* batch = std::get_if<SampleBatch>(in.get());
    if (batch == nullptr) {
      out.Emit(in);  // a status, a Tick, a PartitionEvent: as it is
      return;
    }
    SampleBatch scaled = *batch;
    for (auto& p : scaled.points) p.value *= factor_;
    scaled_.Inc(scaled.points.size());
    out.Emit(MakeMessage(std::move(scaled)));
  }

 private:
  const double factor_;
  Counter& scaled_;
};

Registry Operators() {
  Registry registry;
  RegisterBuiltinOperators(registry);
  OperatorInfo scale;
  scale.name = "scale";
  scale.summary = "Multiplies every sample's value by factor.";
  scale.input = PortKind::kSamples;
  scale.output = PortKind::kSamples;
  scale.config.Number("factor", "What each value is multiplied by.").Default(1.0);
  scale.create = [](const OperatorContext& ctx) { return std::make_unique<Scale>(ctx); };
  registry.Add(std::move(scale));
  return registry;
}

TEST(ConsumerTest, AnOperatorOfItsOwnRunsInTheInstalledKit) {
  const Registry registry = Operators();
  HarnessOptions options;
  options.registry = &registry;
  OperatorHarness h("scale", R"({"factor": 2})", options);
  EXPECT_EQ(Values(Points(h.Feed(Samples("v1", "speed", {{1, 1.5}, {2, -3}})))),
            (std::vector<double>{3, -6}));
  EXPECT_EQ(Only<Tick>(h.TickAt(10)).size(), 1u);
  EXPECT_EQ(h.Counter("samples_scaled", {{"node", "op"}}), 2u);
  EXPECT_NE(BuildError("scale", R"({"factor": "two"})", options), "");
}

TEST(ConsumerTest, TheBuiltInOperatorsRunInTheInstalledKit) {
  OperatorHarness h("range_filter", R"({"ranges": [{"sensor": "speed", "min": 0, "max": 90}]})");
  EXPECT_EQ(Values(Points(h.Feed(Samples("v1", "speed", {{1, 12.5}, {2, 900}})))),
            (std::vector<double>{12.5}));
  EXPECT_EQ(h.Counter("samples_out_of_range", {{"sensor", "speed"}}), 1u);
}

}  // namespace
