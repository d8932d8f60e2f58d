// keyed_last_value with the jetstream_kv backend against a real nats-server with JetStream.
#include <atomic>
#include <map>
#include <numeric>
#include <thread>

#include "harness.hpp"
#include "jetstream.hpp"
#include "nats_fixture.hpp"
#include "servers.hpp"
#include "state/jetstream_kv_store.hpp"
#include "state/kv_membership.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kBase = 1'700'000'000 * kS;

Body Batch(const std::string& vehicle, const std::string& sensor, std::vector<int64_t> ts,
           std::function<void()> ack = {}) {
  SampleBatch b{vehicle, sensor, {}, ack ? MakeAck(std::move(ack)) : nullptr};
  for (int64_t t : ts)
    b.points.push_back(wire::Point{kBase + t, static_cast<uint32_t>(t), double(t)});
  return b;
}

std::vector<int64_t> Times(const std::vector<wire::Point>& points) {
  std::vector<int64_t> out;
  for (const auto& p : points) out.push_back(p.ts_ns - kBase);
  return out;
}

class KeyedLastValueKvTest : public NatsServerTest {
 protected:
  std::unique_ptr<OperatorHarness> Worker(int flush_ms = 50) {
    return std::make_unique<OperatorHarness>(
        "keyed_last_value", R"({"backend": "jetstream_kv", "url": ")" + server_.url() +
                                R"(", "keep": 3, "flush_ms": )" + std::to_string(flush_ms) + "}");
  }

  std::vector<int64_t> Stored(const std::string& key) {
    auto kv = js_->EnsureBucket({});
    auto e = kv->Get(key);
    if (!e) return {};
    std::vector<wire::Point> points;
    wire::DecodeBatch(e->value.data(), e->value.size(), points);
    return Times(points);
  }

  /// Another writer of the bucket, as far as the stores can tell (it heartbeats in the writers'
  /// bucket): while it lives, the stores watch the bucket and write every sample they get.
  std::unique_ptr<KvMembership> OtherWriter() {
    MembershipOptions o;
    o.connection.url = server_.url();
    o.bucket = "telemetry_writers";
    o.owners_gauge = false;
    return std::make_unique<KvMembership>(std::move(o), other_metrics_, Labels{});
  }

  /// Waits until the worker has found itself the only writer (it stopped watching).
  static bool WaitAlone(OperatorHarness& h) {
    return WaitFor([&] { return h.metrics.GaugeSum("kv_watching") == 0; }, 10s);
  }

  Metrics other_metrics_;

  /// Ticks the worker until `cond` holds (each tick sends due writes).
  bool TickUntil(OperatorHarness& h, const std::function<bool()>& cond) {
    return WaitFor(
        [&] {
          h.TickAt(h.clock.now_ns + 1);
          return cond();
        },
        10s, 60ms);
  }
};

TEST_F(KeyedLastValueKvTest, AcknowledgesOnlyOnceTheSamplesAreInTheBucket) {
  auto h = Worker(/*flush_ms=*/60'000);  // nothing is due before the drain tick
  std::atomic<int> acks{0};
  h->Feed(Batch("v1", "speed", {1, 2}, [&] { ++acks; }));
  h->TickAt(1);
  EXPECT_EQ(acks, 0);
  EXPECT_TRUE(Stored("v1.speed").empty());
  h->TickAt(2, /*drain=*/true);  // a drain writes everything and waits for the answers
  EXPECT_EQ(acks, 1);
  EXPECT_EQ(Stored("v1.speed"), (std::vector<int64_t>{1, 2}));
}

TEST_F(KeyedLastValueKvTest, WritesAreCoalescedPerKey) {
  // Among other writers, a write carries every sample since the previous one: they see each
  // sample through their watch.
  const auto other = OtherWriter();
  auto h = Worker(/*flush_ms=*/60'000);
  std::atomic<int> acks{0};
  for (int64_t t = 1; t <= 100; ++t) h->Feed(Batch("v1", "speed", {t}, [&] { ++acks; }));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(acks, 100);
  EXPECT_EQ(h->Counter("kv_writes"), 1u);  // one write for 100 messages...
  std::vector<int64_t> all(100);
  std::iota(all.begin(), all.end(), 1);
  EXPECT_EQ(Stored("v1.speed"), all);  // ...carrying every sample since the previous write
  h->Feed(Batch("v1", "speed", {101}, [&] { ++acks; }));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(Stored("v1.speed"), (std::vector<int64_t>{98, 99, 100, 101}));  // keep 3, then new
  EXPECT_EQ(h->metrics.GaugeSum("kv_watching"), 1);
}

TEST_F(KeyedLastValueKvTest, TheOnlyWriterWritesWhatStateRetains) {
  // Nobody watches: a write carries only what a restore needs, coalesced as well.
  auto h = Worker(/*flush_ms=*/60'000);
  ASSERT_TRUE(WaitAlone(*h));
  std::atomic<int> acks{0};
  for (int64_t t = 1; t <= 100; ++t) h->Feed(Batch("v1", "speed", {t}, [&] { ++acks; }));
  h->TickAt(1, /*drain=*/true);
  EXPECT_EQ(acks, 100);
  EXPECT_EQ(h->Counter("kv_writes"), 1u);
  EXPECT_EQ(Stored("v1.speed"), (std::vector<int64_t>{98, 99, 100}));  // keep 3
  h->Feed(Batch("v1", "speed", {101}, [&] { ++acks; }));
  h->TickAt(2, /*drain=*/true);
  EXPECT_EQ(Stored("v1.speed"), (std::vector<int64_t>{99, 100, 101}));
  EXPECT_EQ(acks, 101);
}

TEST_F(KeyedLastValueKvTest, TwoWorkersWritingOneKeyNeverLoseTheNewestSample) {
  // Fixed interleavings of two workers on one key: whoever writes last, the bucket ends with the
  // newest samples by event time of both.
  auto a = Worker(/*flush_ms=*/60'000);
  auto b = Worker(/*flush_ms=*/60'000);
  for (int round = 0; round < 20; ++round) {
    const int64_t t = 10 + round * 10;
    a->Feed(Batch("v1", "soc", {t + (round % 2 == 0 ? 5 : 1)}));
    b->Feed(Batch("v1", "soc", {t + (round % 2 == 0 ? 1 : 5)}));
    // b writes first on even rounds, a first on odd ones; the second write conflicts.
    auto& first = round % 2 == 0 ? *b : *a;
    auto& second = round % 2 == 0 ? *a : *b;
    first.TickAt(round * 10 + 1, /*drain=*/true);
    second.TickAt(round * 10 + 2, /*drain=*/true);
    const auto stored = Stored("v1.soc");
    ASSERT_FALSE(stored.empty());
    EXPECT_EQ(stored.back(), t + 5)
        << "round " << round << ": " << ::testing::PrintToString(stored);
  }
  EXPECT_GT(a->Counter("kv_conflicts") + b->Counter("kv_conflicts"), 0u);
}

TEST_F(KeyedLastValueKvTest, ANewWorkerRestoresTheStateAndPassesItOnFirst) {
  {
    auto h = Worker();
    h->Feed(Batch("v1", "speed", {1, 2, 3, 4}));
    h->Feed(Batch("v2", "gps", {7}));
    h->TickAt(1, /*drain=*/true);
  }
  auto h = Worker();
  EXPECT_TRUE(h->op().Ready());
  const auto out = h->TickAt(5);
  std::map<std::string, std::vector<int64_t>> restored;
  for (const auto& b : Only<SampleBatch>(out)) {
    restored[b->vehicle + "." + b->sensor] = Times(b->points);
  }
  EXPECT_EQ(restored["v1.speed"], (std::vector<int64_t>{2, 3, 4}));  // keep = 3
  EXPECT_EQ(restored["v2.gps"], (std::vector<int64_t>{7}));
  ASSERT_FALSE(Only<Tick>(out).empty());
  // Restored samples are state: an older sample is now stale.
  h->Feed(Batch("v1", "speed", {1}));
  EXPECT_EQ(h->Counter("samples_stale"), 1u);
}

TEST_F(KeyedLastValueKvTest, TheLastStatusChangeIsStoredEvenWithoutASampleInBetween) {
  {
    auto h = Worker();
    h->Feed(Batch("v1", "speed", {5}));
    h->Feed(StatusEvent{"v1", false, kBase});
    h->Feed(StatusEvent{"v1", true, kBase});  // on again before any new sample
    h->TickAt(1, /*drain=*/true);
  }
  auto kv = js_->EnsureBucket({});
  const auto e = kv->Get("v1.status");
  ASSERT_TRUE(e.has_value());
  std::vector<wire::Point> points;
  wire::DecodeBatch(e->value.data(), e->value.size(), points);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points.back().value, 1.0);  // on, the last change
  auto h = Worker();
  const auto restored = Only<StatusEvent>(h->TickAt(5));
  ASSERT_EQ(restored.size(), 1u);
  EXPECT_TRUE(restored[0]->on);
}

TEST_F(KeyedLastValueKvTest, TheBucketKeepsTheHistoryByTimeAndANewWorkerRestoresIt) {
  constexpr int64_t kMs = 1'000'000;
  const auto worker = [&] {
    return std::make_unique<OperatorHarness>(
        "keyed_last_value", R"({"backend": "jetstream_kv", "url": ")" + server_.url() +
                                R"(", "keep": 3, "history_ms": 100, "flush_ms": 60000})");
  };
  const auto every_10ms = [](int64_t from_ms, int64_t to_ms) {
    std::vector<int64_t> ts;
    for (int64_t t = from_ms; t <= to_ms; t += 10) ts.push_back(t * kMs);
    return ts;
  };
  {
    const auto other = OtherWriter();  // watched: a write carries every sample since the last
    auto h = worker();
    for (int64_t t : every_10ms(0, 500)) h->Feed(Batch("v1", "speed", {t}));
    h->TickAt(1, /*drain=*/true);
    EXPECT_EQ(Stored("v1.speed"), every_10ms(0, 500));  // everything since the last write
    h->Feed(Batch("v1", "speed", {510 * kMs}));
    h->TickAt(2, /*drain=*/true);
    // What state retains (400..500 ms within 100 ms of the newest, and 390 before them), and
    // the new sample; not merely the newest 3.
    EXPECT_EQ(Stored("v1.speed"), every_10ms(390, 510));
  }
  auto h = worker();
  std::vector<int64_t> restored;
  for (const auto& b : Only<SampleBatch>(h->TickAt(5))) restored = Times(b->points);
  EXPECT_EQ(restored, every_10ms(400, 510));  // within 100 ms of 510, and 400 before them
}

TEST_F(KeyedLastValueKvTest, SamplesStoredByAnotherWorkerArriveThroughTheWatch) {
  auto a = Worker();
  auto b = Worker();
  a->Feed(Batch("v9", "torque", {42}));
  a->TickAt(1, /*drain=*/true);
  std::vector<int64_t> seen;
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto out = b->TickAt(b->clock.now_ns + 1);
        for (const auto& batch : Only<SampleBatch>(out)) {
          if (batch->vehicle == "v9") seen = Times(batch->points);
        }
        return !seen.empty();
      },
      10s));
  EXPECT_EQ(seen, (std::vector<int64_t>{42}));
}

TEST_F(KeyedLastValueKvTest, TheOnlyWriterStopsWatchingAndWatchesAgainWhenAnotherJoins) {
  const auto store = [&](Metrics& metrics) {
    JetStreamKvOptions o;
    o.connection.url = server_.url();
    o.flush_ms = 10;
    o.alone_ms = 200;
    return std::make_unique<JetStreamKvStore>(std::move(o), metrics, Labels{});
  };
  const auto point = [](int64_t t) {
    return wire::Point{kBase + t, static_cast<uint32_t>(t), 1.0};
  };
  Metrics metrics_a;
  auto a = store(metrics_a);
  a->Restore([](const std::string&, std::vector<wire::Point>) {});
  std::map<std::string, std::vector<int64_t>> seen_by_a;
  const auto sync_a = [&] {
    a->Sync(false, [&](const std::string& key, std::vector<wire::Point> samples) {
      for (const auto& p : samples) seen_by_a[key].push_back(p.ts_ns - kBase);
    });
  };
  // Alone: A stops watching (its own writes would only come back to it) and still writes.
  ASSERT_TRUE(WaitFor([&] { return metrics_a.GaugeSum("kv_watching") == 0; }, 10s));
  a->Write(a->Slot("v1.speed"), {point(1)}, {});
  a->Sync(true, [](const std::string&, std::vector<wire::Point>) {});
  EXPECT_EQ(Stored("v1.speed"), (std::vector<int64_t>{1}));
  {
    // Alone, a key that gets samples at every tick is written once per alone_flush_ms (1 s),
    // not once per flush_ms (10 ms); once the input pauses, what waits is written at the next
    // tick.
    const uint64_t before = metrics_a.CounterSum("kv_writes");
    const auto start = std::chrono::steady_clock::now();
    int64_t t = 100;
    while (std::chrono::steady_clock::now() - start < 600ms) {
      a->Write(a->Slot("v1.speed"), {point(++t)}, {});
      sync_a();
      std::this_thread::sleep_for(20ms);  // the tick period of this test's input, not a wait
    }
    EXPECT_LE(metrics_a.CounterSum("kv_writes") - before, 1u);
    ASSERT_TRUE(WaitFor(
        [&] {
          sync_a();  // no new samples: the input paused
          const auto stored = Stored("v1.speed");
          return !stored.empty() && stored.back() == t;
        },
        10s));
  }
  {
    // B joins: A watches again, and sees what B writes (B's write is based on A's: the
    // compare-and-set keeps both samples).
    Metrics metrics_b;
    auto b = store(metrics_b);
    b->Restore([](const std::string&, std::vector<wire::Point>) {});
    ASSERT_TRUE(WaitFor([&] { return metrics_a.GaugeSum("kv_watching") == 1; }, 10s));
    b->Write(b->Slot("v1.speed"), {point(1000)}, {});
    b->Write(b->Slot("v2.soc"), {point(1001)}, {});
    b->Sync(true, [](const std::string&, std::vector<wire::Point>) {});
    ASSERT_TRUE(WaitFor(
        [&] {
          sync_a();
          return seen_by_a.count("v2.soc") > 0 && seen_by_a.count("v1.speed") > 0;
        },
        10s));
    EXPECT_EQ(seen_by_a["v2.soc"], (std::vector<int64_t>{1001}));
    EXPECT_EQ(seen_by_a["v1.speed"].back(), 1000);
    EXPECT_EQ(Stored("v1.speed").back(), 1000);
    // A's next write of the key is based on B's: nothing of B's is lost.
    a->Write(a->Slot("v1.speed"), {point(1002)}, {});
    a->Sync(true, [](const std::string&, std::vector<wire::Point>) {});
    const auto stored = Stored("v1.speed");
    EXPECT_EQ(std::vector<int64_t>(stored.end() - 2, stored.end()),
              (std::vector<int64_t>{1000, 1002}));
    EXPECT_EQ(metrics_b.GaugeSum("kv_watching"), 1);  // A is alive: B keeps watching
  }
  // B left: A is alone again.
  ASSERT_TRUE(WaitFor([&] { return metrics_a.GaugeSum("kv_watching") == 0; }, 10s));
  // A writer that does not heartbeat (an older release) shows itself by a conflict: A watches.
  const auto bytes = wire::EncodeBatch(std::vector<wire::Point>{point(2000)});
  js_->EnsureBucket({})->Put("v1.speed", std::string(bytes.begin(), bytes.end()));
  a->Write(a->Slot("v1.speed"), {point(2001)}, {});
  a->Sync(true, [](const std::string&, std::vector<wire::Point>) {});
  EXPECT_GE(metrics_a.CounterSum("kv_conflicts"), 1u);
  const auto stored = Stored("v1.speed");
  EXPECT_EQ(std::vector<int64_t>(stored.end() - 2, stored.end()),
            (std::vector<int64_t>{2000, 2001}));
  EXPECT_TRUE(WaitFor([&] { return metrics_a.GaugeSum("kv_watching") == 1; }, 10s));
}

TEST(JetStreamKvMergeTest, KeepsTheNewestByEventTimeWithoutDuplicates) {
  auto p = [](int64_t t, uint32_t seq = 0) { return wire::Point{t, seq, 0}; };
  const auto merged = JetStreamKvStore::Merge({p(1), p(5), p(3)}, {p(4), p(5), p(2)}, 3);
  std::vector<int64_t> ts;
  for (const auto& x : merged) ts.push_back(x.ts_ns);
  EXPECT_EQ(ts, (std::vector<int64_t>{3, 4, 5}));
}

}  // namespace
}  // namespace fleetflow::testing
