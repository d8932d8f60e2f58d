// replay_source on the test kit: what it emits for a recording, in order, with the replay
// clock's Ticks; bad input counted as nats_source counts it; damage reported; several files as
// one stream; partitioned subjects read as the vehicles' own.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "fleetflow/testkit/harness.hpp"
#include "recording.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;
using namespace testkit;
constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // a whole second
constexpr int64_t kMs = 1'000'000;

/// A replay_source on a ReplayClock, as the runtime of `fleetflow replay` runs it.
struct Replayed {
  ReplayClock clock;
  std::atomic<bool> ended{false};
  std::unique_ptr<OperatorHarness> h;
};

/// Replays a replay_source of `config` (JSON) to its end.
std::unique_ptr<Replayed> ReplayConfig(const std::string& config) {
  auto r = std::make_unique<Replayed>();
  HarnessOptions options;
  options.clock = &r->clock;
  options.clock_driver = &r->clock;
  options.input_ended = [ended = &r->ended] { *ended = true; };
  r->h = std::make_unique<OperatorHarness>("replay_source", config, std::move(options));
  r->h->Start();
  EXPECT_TRUE(WaitFor([&] { return r->ended.load(); }, 10s));
  EXPECT_EQ(r->h->Gauge("replay_finished"), 1);
  r->h->Stop();
  return r;
}

/// Replays `path` to its end.
std::unique_ptr<Replayed> Replay(const std::string& path) {
  return ReplayConfig(R"({"file": ")" + path + R"("})");
}

recording::Record SampleRecord(int64_t recv_ns, const std::string& subject, int64_t ts_ns) {
  wire::Point p;
  p.ts_ns = ts_ns;
  p.value = 1.5;
  const auto bytes = wire::EncodeBatch(std::vector<wire::Point>{p});
  return {recv_ns, subject, bytes};
}

std::string Write(const TempDir& dir, const std::vector<recording::Record>& records,
                  const std::string& name = "r.ffrc") {
  const std::string path = dir.File(name);
  recording::Writer w;
  EXPECT_TRUE(w.Open(path));
  for (const auto& r : records) w.Append(r);
  EXPECT_TRUE(w.Close());
  return path;
}

TEST(ReplaySource, EmitsWhatNatsSourceWouldWithTicksOnRecordedTime) {
  TempDir dir("ff-replay-source");
  const std::string path = Write(
      dir, {SampleRecord(kT0 + 10 * kMs, "vehicle.v1.speed", kT0),
            {kT0 + 20 * kMs, "vehicle.v1.status", {'o', 'f', 'f'}},
            SampleRecord(kT0 + 30 * kMs, "bad subject", kT0),
            SampleRecord(kT0 + 40 * kMs, "vehicle.v2.speed", kT0 + 3600 * 1000 * kMs),  // future
            SampleRecord(kT0 + 250 * kMs, "vehicle.v2.soc", kT0 + 200 * kMs)});
  const auto r = Replay(path);
  const auto ms = r->h->output().Messages();
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
  EXPECT_EQ(r->h->Counter("messages_in"), 5u);
  EXPECT_EQ(r->h->Counter("input_rejected"), 2u);
  EXPECT_EQ(r->h->Counter("replay_records"), 5u);
  EXPECT_EQ(r->h->Gauge("replay_damaged_offset_bytes"), -1);
  // In the base unit, Unix seconds (a double holds them to well under a microsecond here).
  EXPECT_NEAR(r->h->Gauge("replay_recorded_time_seconds"),
              static_cast<double>(kT0 + 250 * kMs) / 1e9, 1e-6);
}

TEST(ReplaySource, NextFilesFollowAsOneStreamAndPartitionSubjectsAreTheVehiclesOwn) {
  TempDir dir("ff-replay-source");
  const std::string a =
      Write(dir, {SampleRecord(kT0 + 10 * kMs, "telemetry.3.v1.speed", kT0)}, "a");
  const std::string b = Write(dir,
                              {SampleRecord(kT0 + 20 * kMs, "vehicle.v2.soc", kT0),
                               SampleRecord(kT0 + 30 * kMs, "other.3.v3.soc", kT0)},
                              "b");
  const auto r = ReplayConfig(R"({"file": ")" + a + R"(", "next_files": [")" + b +
                              R"("], "partition_prefix": "telemetry"})");
  const auto ms = r->h->output().Messages();
  ASSERT_EQ(ms.size(), 2u);
  const auto* first = std::get_if<SampleBatch>(ms[0].get());
  const auto* second = std::get_if<SampleBatch>(ms[1].get());
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(first->vehicle, "v1");
  EXPECT_EQ(first->sensor, "speed");
  EXPECT_EQ(second->vehicle, "v2");
  EXPECT_EQ(r->h->Counter("replay_records"), 3u);
  EXPECT_EQ(r->h->Counter("input_rejected"), 1u);  // another prefix: a bad subject
  const double bytes =
      static_cast<double>(std::filesystem::file_size(a) + std::filesystem::file_size(b));
  EXPECT_EQ(r->h->Gauge("replay_file_bytes"), bytes);
  EXPECT_EQ(r->h->Gauge("replay_offset_bytes"), bytes);
  EXPECT_EQ(r->clock.NowNs(), kT0 + 30 * kMs);
}

TEST(ReplaySource, StopsAtATruncatedRecordAndReportsItsOffset) {
  TempDir dir("ff-replay-source");
  const std::string path = Write(dir, {SampleRecord(kT0, "vehicle.v1.speed", kT0),
                                       SampleRecord(kT0 + 1, "vehicle.v1.speed", kT0)});
  std::vector<uint8_t> first = recording::EncodeHeader();
  recording::EncodeRecord(SampleRecord(kT0, "vehicle.v1.speed", kT0), first);
  std::filesystem::resize_file(path, first.size() + 5);
  const auto r = Replay(path);
  EXPECT_EQ(r->h->Counter("replay_records"), 1u);
  EXPECT_EQ(r->h->Gauge("replay_damaged_offset_bytes"), static_cast<double>(first.size()));
}

TEST(ReplaySource, UnknownVersionFailsAtConstruction) {
  TempDir dir("ff-replay-source");
  const std::string path = dir.File("v2.ffrc");
  std::ofstream(path, std::ios::binary) << std::string("FFRC\x02\x00\x00\x00", 8);
  const std::string error = BuildError("replay_source", R"({"file": ")" + path + R"("})");
  EXPECT_NE(error.find("version 2 is not supported"), std::string::npos) << error;
}

}  // namespace
}  // namespace fleetflow::testing
