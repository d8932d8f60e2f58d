// replay_source on the in-memory harness: what it emits for a recording, in order, with the
// replay clock's Ticks; bad input counted as nats_source counts it; damage reported.
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.hpp"
#include "recording.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // a whole second
constexpr int64_t kMs = 1'000'000;

struct Replayed {
  Metrics metrics;
  ReplayClock clock;
  CollectingEmitter out;
};

/// Replays `path` on a ReplayClock to its end; returns what was emitted and the metrics.
std::unique_ptr<Replayed> Replay(const std::string& path) {
  auto r = std::make_unique<Replayed>();
  Registry registry;
  RegisterBuiltinOperators(registry);
  const OperatorInfo* info = registry.Find("replay_source");
  Config config;
  const auto errors = ParseOperatorConfig(*info, R"({"file": ")" + path + R"("})", config);
  EXPECT_TRUE(errors.empty());
  std::atomic<bool> ended{false};
  OperatorContext ctx{"replay", "replay_source", config, r->metrics, r->clock};
  ctx.clock_driver = &r->clock;  // as the runtime of `fleetflow replay` hands it
  ctx.input_ended = [&ended] { ended = true; };
  auto op = info->create(ctx);
  op->Start(r->out);
  EXPECT_TRUE(WaitFor([&] { return ended.load(); }, 10s));
  EXPECT_EQ(r->metrics.GaugeSum("replay_finished"), 1);
  op->Stop();
  return r;
}

recording::Record Samples(int64_t recv_ns, const std::string& subject, int64_t ts_ns) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.value = 1.5;
  const auto bytes = wire::EncodeBatch(std::vector<wire::Point>{p});
  return {recv_ns, subject, bytes};
}

std::string Write(const TempDir& dir, const std::vector<recording::Record>& records) {
  const std::string path = dir.File("r.ffrc");
  recording::Writer w;
  EXPECT_TRUE(w.Open(path));
  for (const auto& r : records) w.Append(r);
  EXPECT_TRUE(w.Close());
  return path;
}

TEST(ReplaySource, EmitsWhatNatsSourceWouldWithTicksOnRecordedTime) {
  TempDir dir("ff-replay-source");
  const std::string path =
      Write(dir, {Samples(kT0 + 10 * kMs, "vehicle.v1.speed", kT0),
                  {kT0 + 20 * kMs, "vehicle.v1.status", {'o', 'f', 'f'}},
                  Samples(kT0 + 30 * kMs, "bad subject", kT0),
                  Samples(kT0 + 40 * kMs, "vehicle.v2.speed", kT0 + 3600 * 1000 * kMs),  // future
                  Samples(kT0 + 250 * kMs, "vehicle.v2.soc", kT0 + 200 * kMs)});
  const auto r = Replay(path);
  const auto& ms = r->out.messages;
  ASSERT_EQ(ms.size(), 4u);
  const auto* first = std::get_if<SampleBatch>(ms[0].get());
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->vehicle, "v1");
  EXPECT_EQ(first->received_ns, kT0 + 10 * kMs);
  const auto* off = std::get_if<StatusEvent>(ms[1].get());
  ASSERT_NE(off, nullptr);
  EXPECT_FALSE(off->on);
  EXPECT_EQ(off->at_ns, kT0 + 20 * kMs);
  const auto* tick = std::get_if<Tick>(ms[2].get());  // the 200 ms tick, before the 250 ms record
  ASSERT_NE(tick, nullptr);
  EXPECT_EQ(tick->now_ns, kT0 + 200 * kMs);
  const auto* last = std::get_if<SampleBatch>(ms[3].get());
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->sensor, "soc");
  EXPECT_EQ(r->clock.NowNs(), kT0 + 250 * kMs);
  EXPECT_EQ(r->metrics.CounterSum("messages_in"), 5u);
  EXPECT_EQ(r->metrics.CounterSum("input_rejected"), 2u);
  EXPECT_EQ(r->metrics.CounterSum("replay_records"), 5u);
  EXPECT_EQ(r->metrics.GaugeSum("replay_damaged_offset_bytes"), -1);
}

TEST(ReplaySource, StopsAtATruncatedRecordAndReportsItsOffset) {
  TempDir dir("ff-replay-source");
  const std::string path = Write(
      dir, {Samples(kT0, "vehicle.v1.speed", kT0), Samples(kT0 + 1, "vehicle.v1.speed", kT0)});
  std::vector<uint8_t> first = recording::EncodeHeader();
  recording::EncodeRecord(Samples(kT0, "vehicle.v1.speed", kT0), first);
  std::filesystem::resize_file(path, first.size() + 5);
  const auto r = Replay(path);
  EXPECT_EQ(r->metrics.CounterSum("replay_records"), 1u);
  EXPECT_EQ(r->metrics.GaugeSum("replay_damaged_offset_bytes"), static_cast<double>(first.size()));
}

TEST(ReplaySource, UnknownVersionFailsAtConstruction) {
  TempDir dir("ff-replay-source");
  const std::string path = dir.File("v2.ffrc");
  std::ofstream(path, std::ios::binary) << std::string("FFRC\x02\x00\x00\x00", 8);
  OperatorHarness* h = nullptr;
  try {
    OperatorHarness harness("replay_source", R"({"file": ")" + path + R"("})");
    h = &harness;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("version 2 is not supported"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(h, nullptr);
}

}  // namespace
}  // namespace fleetflow::testing
