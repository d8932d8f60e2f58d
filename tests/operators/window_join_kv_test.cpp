// window_join with sharding jetstream_kv against a real nats-server: shards handed over between
// workers through the records in KV, so that every window of every vehicle is emitted by exactly
// one worker across a stop, a start and a scale-out.
#include <map>

#include "harness.hpp"
#include "jetstream.hpp"
#include "nats_fixture.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'700'000'000'000 * kMs;  // a window boundary
constexpr int kVehicles = 40;
constexpr int kShards = 32;  // two workers: each gets a share, whatever their ids

/// Emissions of (vehicle, window in ms after kBase), counted over every worker.
using Emitted = std::map<std::pair<std::string, int64_t>, int>;

/// One worker's window_join. Every window is 100 ms; samples arrive in event-time order, so a
/// window is complete once a sample after it arrived (allowed lateness 0).
class JoinWorker {
 public:
  JoinWorker(const std::string& url, Emitted& emitted, int member_timeout_ms = 2000)
      : emitted_(emitted),
        h_("window_join",
           R"({"every_ms": 100, "allowed_lateness_ms": 0, "max_gap_ms": 1000,
               "idle_ms": 3600000, "sensors": ["speed"], "sharding": "jetstream_kv",
               "shards": )" +
               std::to_string(kShards) + R"(, "heartbeat_ms": 100, "member_timeout_ms": )" +
               std::to_string(member_timeout_ms) +
               R"(, "correction_horizon_ms": 0, "membership_bucket": "members",
               "progress_bucket": "progress", "url": ")" +
               url + R"("})") {
    h_.clock.now_ns = kBase + 3'600'000 * kMs;  // far ahead: progress follows the samples
  }

  /// Every vehicle's speed sample in the middle of window step (step * 100 ms + 50 ms).
  void Feed(int step) {
    for (int v = 0; v < kVehicles; ++v) {
      SampleBatch b{"v" + std::to_string(v), "speed", {}, {}};
      b.points.push_back(
          wire::Point{kBase + (step * 100 + 50) * kMs, static_cast<uint32_t>(step), double(step)});
      h_.Feed(std::move(b));
    }
  }

  std::vector<int64_t> Tick(bool drain = false) {
    std::vector<int64_t> windows;
    for (const auto& batch : Only<WindowBatch>(h_.TickAt(h_.clock.now_ns, drain))) {
      windows.push_back((batch->window_ns - kBase) / kMs);
      for (const auto& row : batch->rows) ++emitted_[{row.vehicle, windows.back()}];
    }
    return windows;
  }

  uint64_t Counter(const std::string& name) const { return h_.Counter(name); }

 private:
  Emitted& emitted_;
  OperatorHarness h_;
};

class WindowJoinKvTest : public NatsServerTest {
 protected:
  /// The hand-over records in the progress bucket: window (ms after kBase) by shard.
  std::map<int, int64_t> Records() {
    nats::BucketOptions b;
    b.name = "progress";
    auto kv = js_->EnsureBucket(b);
    std::map<int, int64_t> out;
    for (int shard = 0; shard < kShards; ++shard) {
      if (auto e = kv->Get("members.shard." + std::to_string(shard))) {
        out[shard] = (std::stoll(e->value) - kBase) / kMs;
      }
    }
    return out;
  }

  /// Every (vehicle, window) from window `from` to `to` (ms) emitted exactly once, and nothing
  /// else; lists the first differences.
  static std::string Check(const Emitted& emitted, int64_t from, int64_t to) {
    std::string problems;
    int shown = 0;
    for (int v = 0; v < kVehicles; ++v) {
      for (int64_t w = from; w <= to; w += 100) {
        auto it = emitted.find({"v" + std::to_string(v), w});
        const int n = it == emitted.end() ? 0 : it->second;
        if (n != 1 && shown++ < 10) {
          problems += "v" + std::to_string(v) + " @" + std::to_string(w) + ": " +
                      std::to_string(n) + " times\n";
        }
      }
    }
    for (const auto& [key, n] : emitted) {
      if ((key.second < from || key.second > to) && shown++ < 10) {
        problems += key.first + " @" + std::to_string(key.second) + " outside the run\n";
      }
    }
    return problems;
  }

  /// True when a worker in the membership bucket says it is warm (owns shards before the cold).
  bool AnyWarm() {
    nats::BucketOptions b;
    b.name = "members";
    auto kv = js_->EnsureBucket(b);
    auto watcher = kv->WatchAll();
    nats::KvEntry e;
    bool warm = false;
    while (watcher->Next(1000, e) == nats::KvWatcher::Event::kEntry) {
      warm = warm || (!e.deleted && e.value == "warm");
    }
    return warm;
  }
};

TEST_F(WindowJoinKvTest, AStoppingWorkerEmitsOnlyCompleteWindowsAndTheNextGoesOnWhereItStopped) {
  Emitted emitted;
  {
    JoinWorker a(server_.url(), emitted);
    for (int step = 0; step <= 10; ++step) a.Feed(step);  // samples up to 1050 ms
    EXPECT_EQ(a.Tick().back(), 1000);
    // The drain does not close window 1100 (its samples are still to come): it records 1000.
    EXPECT_TRUE(a.Tick(/*drain=*/true).empty());
    EXPECT_EQ(a.Counter("shards_handed_over"), uint64_t{kShards});
  }  // leaves: its records are written first
  const auto records = Records();
  ASSERT_EQ(records.size(), size_t{kShards});
  for (const auto& [shard, window] : records) EXPECT_EQ(window, 1000) << "shard " << shard;

  // The next worker restores the recent samples (from 850 ms on), then reads the rest.
  JoinWorker b(server_.url(), emitted);
  for (int step = 8; step <= 20; ++step) b.Feed(step);
  const auto windows = b.Tick();
  ASSERT_FALSE(windows.empty());
  EXPECT_EQ(b.Counter("shards_taken_over"), uint64_t{kShards});
  EXPECT_EQ(b.Counter("shards_recovered"), 0u);
  EXPECT_TRUE(WaitFor([&] { return Records().empty(); }, 10s));  // claimed: used once
  EXPECT_EQ(Check(emitted, 100, 2000), "");
}

TEST_F(WindowJoinKvTest, ScaleOutThenInEveryWindowIsEmittedByExactlyOneWorker) {
  Emitted emitted;
  auto a = std::make_unique<JoinWorker>(server_.url(), emitted);
  int step = -1;  // the last step fed
  // A alone, until it is warm (it has watched the data for its warm-up).
  ASSERT_TRUE(WaitFor(
      [&] {
        a->Feed(++step);
        a->Tick();
        return AnyWarm();
      },
      30s));
  // B joins: it receives the same samples (every worker sees every sample through the state
  // bucket), owns nothing while it warms up, then takes its share over from A's records.
  JoinWorker b(server_.url(), emitted);
  for (int past = 0; past <= step; ++past) b.Feed(past);  // its restored history
  ASSERT_TRUE(WaitFor(
      [&] {
        ++step;
        a->Feed(step);
        b.Feed(step);
        a->Tick();
        b.Tick();
        // B claims A's records one by one as they appear: wait until it has claimed them all.
        return a->Counter("shards_handed_over") > 0 &&
               b.Counter("shards_taken_over") == a->Counter("shards_handed_over");
      },
      30s))
      << "B took " << b.Counter("shards_taken_over") << " shards over, A handed "
      << a->Counter("shards_handed_over") << " over";
  EXPECT_EQ(b.Counter("shards_taken_over"), a->Counter("shards_handed_over"));
  EXPECT_LT(b.Counter("shards_taken_over"), uint64_t{kShards});  // A keeps its share
  for (int i = 0; i < 5; ++i) {
    ++step;
    a->Feed(step);
    b.Feed(step);
    a->Tick();
    b.Tick();
  }
  // A stops: it records its shards, and B takes them over as soon as A has left.
  const uint64_t handed_before = a->Counter("shards_handed_over");
  a->Tick(/*drain=*/true);
  const uint64_t drained = a->Counter("shards_handed_over") - handed_before;
  EXPECT_EQ(handed_before + drained, uint64_t{kShards});
  const uint64_t b_before = b.Counter("shards_taken_over");
  a.reset();
  ASSERT_TRUE(WaitFor(
      [&] {
        ++step;
        b.Feed(step);
        b.Tick();
        return b.Counter("shards_taken_over") == uint64_t{kShards};
      },
      30s))
      << b.Counter("shards_taken_over");
  EXPECT_EQ(b.Counter("shards_taken_over") - b_before, drained);
  EXPECT_EQ(b.Counter("shards_recovered"), 0u);
  // Every window of every vehicle once, up to the last one B closed.
  EXPECT_EQ(Check(emitted, 100, int64_t{step} * 100), "");
}

}  // namespace
}  // namespace fleetflow::testing
