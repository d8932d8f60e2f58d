// The runtime on a tiny graph of test operators: order, drain, backpressure, error isolation.
#include "runtime.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "pipeline.hpp"

namespace fleetflow {
namespace {

/// Polls `cond` until it holds or 30 s pass, every `poll` (0: as often as the thread runs).
template <typename F>
bool Eventually(F cond, std::chrono::milliseconds poll = std::chrono::milliseconds(0)) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    if (poll.count() > 0) {
      std::this_thread::sleep_for(poll);
    } else {
      std::this_thread::yield();
    }
  }
  return true;
}

/// Whether a tap of `node` is armed, found by a quick tap being refused. The quick tap arms the
/// node itself for 1 ms when nobody else has: asked back to back, it would keep taking the node
/// from the tap that waits for it (the mutex goes to the thread that just let it go), so it is
/// asked every 5 ms (seen under load: the other tap never got in within 30 s).
/// A tap that already ended counts as armed: messages still queued before a blocked node may
/// pass the node while it waits and fill the tap (seen under load).
bool TapArmed(Runtime& rt, const std::string& node, const std::future<TapPoint::Result>& tap) {
  TapOptions quick;
  quick.timeout = std::chrono::milliseconds(1);
  return Eventually(
      [&] {
        return tap.wait_for(std::chrono::seconds(0)) == std::future_status::ready ||
               rt.Tap(node, quick).outcome == TapPoint::Outcome::kBusy;
      },
      std::chrono::milliseconds(5));
}

/// Shared between a test and the operators it registers.
struct Probe {
  int to_emit = 0;
  std::atomic<int> emitted{0};
  std::atomic<int> seen{0};
  std::atomic<int> drains{0};
  std::atomic<int> ticks{0};                     // clock Ticks (not the drain) the sink saw
  std::atomic<int64_t> tick_input_delay_ns{-1};  // of the last clock Tick the sink saw
  int64_t source_input_delay_ns = 0;             // what the source says
  std::atomic<bool> last_seen{false};  // the message a stopping source emits (ts -1) went through
  bool stop_waits = false;             // the source's Stop emits one more and waits for it
  std::set<std::thread::id> graph_threads;  // where the sink ran (written by the sink only)
  std::atomic<int> max_seen_gap{0};
  int emit_every_ms = 0;       // the source's pause between messages (an offered rate)
  std::vector<int64_t> order;  // written by the serial sink only
  std::chrono::steady_clock::time_point last_sample;  // when the sink saw the last sample
  std::vector<std::chrono::nanoseconds> tick_lags;    // per clock Tick: since the last sample
  std::vector<std::chrono::steady_clock::time_point> tick_times;  // per clock Tick: when seen
  std::mutex mu;
  std::condition_variable cv;
  bool sink_open = true;
  bool source_ends = false;            // the source says its input ended after the last one
  ClockDriver* driver = nullptr;       // what the source was handed
  std::function<void(Emitter&)> emit;  // set: the source's thread runs this instead
};

SampleBatch SampleAt(int64_t ts) {
  return SampleBatch{"v1", "speed", {wire::Point{ts, 0, 1.0}}, {}};
}

class CountingSource final : public Operator {
 public:
  CountingSource(Probe& p, std::function<void()> input_ended)
      : p_(p), input_ended_(std::move(input_ended)) {}
  void Start(Emitter& out) override {
    out_ = &out;
    thread_ = std::thread([this, &out] {
      if (p_.emit) return p_.emit(out);
      for (int i = 0; i < p_.to_emit && !stop_; ++i) {
        out.Emit(MakeMessage(SampleAt(i + 1)));
        p_.emitted++;
        // The offered rate, not a synchronisation.
        std::this_thread::sleep_for(std::chrono::milliseconds(p_.emit_every_ms));
      }
      if (p_.source_ends) input_ended_();
    });
  }
  int64_t InputDelayNs() const override { return p_.source_input_delay_ns; }
  void Stop() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (p_.stop_waits) {
      // As a partitioned source hands over: its last message must pass every node before it
      // returns, so the graph still runs while the sources stop.
      out_->Emit(MakeMessage(SampleAt(-1)));
      Eventually([this] { return p_.last_seen.load(); });
    }
  }

 private:
  Probe& p_;
  Emitter* out_ = nullptr;
  const std::function<void()> input_ended_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class Forward final : public Operator {
 public:
  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get()); b && b->points[0].ts_ns == 13) {
      throw std::runtime_error("bad input 13");  // caught, counted; the run goes on
    }
    out.Emit(in);
  }
};

class GatedSink final : public Operator {
 public:
  explicit GatedSink(Probe& p) : p_(p) {}
  void Process(const Message& in, Emitter&) override {
    std::unique_lock lock(p_.mu);
    p_.cv.wait(lock, [this] { return p_.sink_open; });
    p_.graph_threads.insert(std::this_thread::get_id());
    if (const auto* b = std::get_if<SampleBatch>(in.get()); b && b->points[0].ts_ns == -1) {
      p_.last_seen = true;
    } else if (b) {
      p_.order.push_back(b->points[0].ts_ns);
      p_.last_sample = std::chrono::steady_clock::now();
      p_.seen++;
      p_.max_seen_gap = std::max<int>(p_.max_seen_gap, p_.emitted - p_.seen);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      if (!t->drain && p_.seen > 0) {
        p_.tick_lags.push_back(std::chrono::steady_clock::now() - p_.last_sample);
      }
      if (!t->drain) p_.tick_input_delay_ns = t->input_delay_ns;
      if (!t->drain) p_.tick_times.push_back(std::chrono::steady_clock::now());
      (t->drain ? p_.drains : p_.ticks)++;
    }
  }

 private:
  Probe& p_;
};

class RuntimeTest : public ::testing::Test {
 protected:
  RuntimeTest() {
    registry_.Add(
        {"src", "", PortKind::kNone, PortKind::kSamples, {}, [this](const OperatorContext& ctx) {
           probe_.driver = ctx.clock_driver;
           return std::make_unique<CountingSource>(probe_, ctx.input_ended);
         }});
    registry_.Add(
        {"fwd", "", PortKind::kSamples, PortKind::kSamples, {}, [](const OperatorContext&) {
           return std::make_unique<Forward>();
         }});
    registry_.Add(
        {"sink", "", PortKind::kSamples, PortKind::kNone, {}, [this](const OperatorContext&) {
           return std::make_unique<GatedSink>(probe_);
         }});
  }

  Pipeline Load() {
    const LoadResult r = ParsePipeline(
        R"({"name": "t", "nodes": [{"id": "s", "type": "src"},
            {"id": "f", "type": "fwd", "inputs": ["s"]},
            {"id": "k", "type": "sink", "inputs": ["f"]}]})",
        "t.json", registry_);
    EXPECT_TRUE(r.ok());
    return *r.pipeline;
  }

  /// Stops `rt` once the sink has seen `n` messages; false when it had not within 30 s.
  bool StopOnceSeen(Runtime& rt, int n) {
    const bool seen = Eventually([&] { return probe_.seen == n; });
    rt.Stop();
    return seen;
  }

  Probe probe_;
  Registry registry_;
  Metrics metrics_;
  WallClock clock_;
};

TEST_F(RuntimeTest, DeliversEverythingInOrderAndDrainsOnStop) {
  probe_.to_emit = 5000;
  Runtime rt(Load(), metrics_, clock_);
  rt.Start();
  EXPECT_TRUE(StopOnceSeen(rt, 4999));
  EXPECT_EQ(probe_.seen, 4999);  // all but the one the forwarder threw on
  EXPECT_EQ(probe_.drains, 1);
  EXPECT_TRUE(std::is_sorted(probe_.order.begin(), probe_.order.end()));
  EXPECT_EQ(metrics_.CounterSum("operator_errors"), 1u);
}

TEST_F(RuntimeTest, ASlowSinkBlocksTheSourceInsteadOfQueueingWithoutBound) {
  probe_.to_emit = 20000;  // enough to fill the queue 200 times; quick under TSan too
  probe_.sink_open = false;
  RuntimeOptions options;
  options.max_queued = 100;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  // The source can get at most the queue capacity (plus the message each node holds) ahead.
  ASSERT_TRUE(Eventually([&] { return metrics_.GaugeSum("graph_sources_blocked") == 1; }));
  EXPECT_LE(probe_.emitted, 110);
  EXPECT_GT(probe_.emitted, 0);
  {
    std::lock_guard lock(probe_.mu);
    probe_.sink_open = true;
  }
  probe_.cv.notify_all();
  EXPECT_TRUE(StopOnceSeen(rt, 19999));
  EXPECT_EQ(probe_.seen, 19999);
  EXPECT_LE(probe_.max_seen_gap, 110);
}

TEST_F(RuntimeTest, InputEndsWhenEverySourceSaysSoAndTheDriverGoesToSourcesOnly) {
  probe_.to_emit = 100;
  {
    Runtime live(Load(), metrics_, clock_);  // a source that never ends, on the wall clock
    live.Start();
    ASSERT_TRUE(Eventually([&] { return probe_.emitted == 100; }));
    EXPECT_FALSE(live.InputEnded());
    EXPECT_EQ(probe_.driver, nullptr);
    live.Stop();
    EXPECT_FALSE(live.InputEnded());
  }
  probe_.source_ends = true;
  ReplayClock replay_clock;
  RuntimeOptions options;
  options.tick_ms = 0;
  options.clock_driver = &replay_clock;
  Runtime replay(Load(), metrics_, replay_clock, options);
  EXPECT_FALSE(replay.InputEnded());
  EXPECT_EQ(probe_.driver, &replay_clock);
  replay.Start();
  replay.WaitInputEnded();  // returns once the source said so, after its last message
  EXPECT_TRUE(replay.InputEnded());
  EXPECT_EQ(probe_.emitted, 200);  // the live run's 100, then the replay's
  replay.Stop();
}

TEST_F(RuntimeTest, TheGraphRunsOnItsOwnThreadTicksWithoutInputAndRunsWhileSourcesStop) {
  probe_.to_emit = 1000;
  probe_.stop_waits = true;
  RuntimeOptions options;
  options.tick_ms = 10;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  ASSERT_TRUE(Eventually([&] { return probe_.seen == 999; }));
  const int ticks = probe_.ticks;
  EXPECT_TRUE(Eventually([&] { return probe_.ticks >= ticks + 3; }));  // no input meanwhile
  rt.Stop();  // the source's Stop waits for its last message to reach the sink
  EXPECT_TRUE(probe_.last_seen);
  EXPECT_EQ(probe_.drains, 1);
  // graph_threads 1: every node ran on the driver, neither the source's thread nor this one.
  std::lock_guard lock(probe_.mu);
  ASSERT_EQ(probe_.graph_threads.size(), 1u);
  EXPECT_NE(*probe_.graph_threads.begin(), std::this_thread::get_id());
}

/// The names of this process' threads (/proc/self/task/*/comm).
std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

TEST_F(RuntimeTest, TheDriverThreadIsNamedForTopAndGdb) {
  probe_.to_emit = 1000;
  Runtime rt(Load(), metrics_, clock_);
  const auto count = [] { return std::ranges::count(ThreadNames(), std::string("ff-driver")); };
  EXPECT_EQ(count(), 0);
  rt.Start();
  EXPECT_EQ(count(), 1);
  EXPECT_TRUE(StopOnceSeen(rt, 999));  // all but the one the forwarder throws on
  EXPECT_EQ(count(), 0);
}

TEST_F(RuntimeTest, TicksCarryTheLongestInputDelayOfTheSources) {
  probe_.source_input_delay_ns = 250'000'000;
  RuntimeOptions options;
  options.tick_ms = 10;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  EXPECT_TRUE(Eventually([&] { return probe_.ticks >= 2; }));
  rt.Stop();
  EXPECT_EQ(probe_.tick_input_delay_ns, 250'000'000);
}

// A source learns the checkpoint keys of the nodes after it (those that keep one: NodeFacts),
// whatever lies between, and not those of nodes after another source only.
TEST_F(RuntimeTest, ASourceIsGivenTheCheckpointKeysOfTheNodesAfterIt) {
  std::map<std::string, std::vector<std::string>> keys;  // by source: its keys of partition 7
  Registry registry;
  OperatorInfo source{
      "src", "", PortKind::kNone, PortKind::kSamples, {}, [&](const OperatorContext& ctx) {
        for (const auto& key : ctx.checkpoint_keys) {
          keys[ctx.node_id].push_back(key(7));
        }
        return std::make_unique<CountingSource>(probe_, ctx.input_ended);
      }};
  registry.Add(source);
  OperatorInfo keeper{
      "keeper",           "", PortKind::kSamples,
      PortKind::kSamples, {}, [](const OperatorContext&) { return std::make_unique<Forward>(); }};
  keeper.facts = [](const Config&) {
    NodeFacts f;
    f.checkpoint_key = [](std::string_view node, uint32_t p) {
      return std::string(node) + "." + std::to_string(p);
    };
    return f;
  };
  registry.Add(keeper);
  registry.Add({"fwd", "", PortKind::kSamples, PortKind::kSamples, {}, [](const OperatorContext&) {
                  return std::make_unique<Forward>();
                }});
  registry.Add(
      {"sink", "", PortKind::kSamples, PortKind::kNone, {}, [this](const OperatorContext&) {
         return std::make_unique<GatedSink>(probe_);
       }});
  const LoadResult r = ParsePipeline(
      R"({"name": "t", "nodes": [{"id": "a", "type": "src"}, {"id": "b", "type": "src"},
          {"id": "f", "type": "fwd", "inputs": ["a"]},
          {"id": "k1", "type": "keeper", "inputs": ["f"]},
          {"id": "k2", "type": "keeper", "inputs": ["a", "b"]},
          {"id": "k3", "type": "keeper", "inputs": ["b"]},
          {"id": "end", "type": "sink", "inputs": ["k1", "k2", "k3"]}]})",
      "t.json", registry);
  ASSERT_TRUE(r.ok()) << r.errors.front().message;
  Runtime rt(*r.pipeline, metrics_, clock_);
  EXPECT_EQ(keys["a"], (std::vector<std::string>{"k1.7", "k2.7"}));
  EXPECT_EQ(keys["b"], (std::vector<std::string>{"k2.7", "k3.7"}));
}

// While input flows, the clock Tick goes with a burst the driver woke for, not on a wake-up of
// its own: the sink sees each Tick right after a sample. Ticked on a timer of their own, Ticks
// would come at any point between two samples (10 ms apart): half of them 5 ms after one.
TEST_F(RuntimeTest, WhileInputFlowsTheTickGoesWithABurst) {
  probe_.to_emit = 150;
  probe_.emit_every_ms = 10;  // 1.5 s of input at 100 messages/s
  RuntimeOptions options;
  options.tick_ms = 100;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  ASSERT_TRUE(Eventually([&] { return probe_.seen == 149; }));  // one throws (ts 13)
  rt.Stop();
  std::lock_guard lock(probe_.mu);
  std::vector<std::chrono::nanoseconds> lags = probe_.tick_lags;
  ASSERT_GE(lags.size(), 10u);  // 1.5 s: 15 to 30 Ticks
  std::sort(lags.begin(), lags.end());
  EXPECT_LT(lags[lags.size() / 2], std::chrono::milliseconds(2))
      << "median time from a sample to the next Tick";
}

// No input for idle_tick_ms: the clock ticks that far apart; input brings tick_ms back at once
// (its first burst takes a Tick along).
TEST_F(RuntimeTest, WithoutInputTheClockSlowsToIdleTickMsAndInputBringsItBack) {
  using Steady = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  std::atomic<bool> resume{false};
  Steady::time_point resumed;
  probe_.emit = [&](Emitter& out) {
    out.Emit(MakeMessage(SampleAt(1)));
    if (!Eventually([&] { return resume.load(); })) return;
    resumed = Steady::now();
    for (int i = 2; i <= 31; ++i) {
      out.Emit(MakeMessage(SampleAt(i)));
      std::this_thread::sleep_for(milliseconds(10));  // the offered rate
    }
  };
  RuntimeOptions options;
  options.tick_ms = 20;
  options.idle_tick_ms = 200;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  // Ticks that came 150 ms or more after the one before.
  const auto slow = [&] {
    std::lock_guard lock(probe_.mu);
    int n = 0;
    for (size_t i = 1; i < probe_.tick_times.size(); ++i) {
      n += probe_.tick_times[i] - probe_.tick_times[i - 1] >= milliseconds(150);
    }
    return n;
  };
  ASSERT_TRUE(Eventually([&] { return probe_.seen == 1 && slow() >= 3; }))
      << "no input: " << slow() << " Ticks 150 ms or more after the one before";
  size_t before_resume = 0;
  {
    std::lock_guard lock(probe_.mu);
    before_resume = probe_.tick_times.size();
  }
  resume = true;
  ASSERT_TRUE(Eventually([&] { return probe_.seen == 30; }));  // one throws (ts 13)
  rt.Stop();
  std::lock_guard lock(probe_.mu);
  ASSERT_GT(probe_.tick_times.size(), before_resume + 5);
  EXPECT_LT(probe_.tick_times[before_resume] - resumed, milliseconds(100))
      << "the first burst after the quiet took a Tick along";
  for (size_t i = before_resume + 1; i + 1 < probe_.tick_times.size(); ++i) {
    EXPECT_LT(probe_.tick_times[i] - probe_.tick_times[i - 1], milliseconds(100))
        << "Tick " << i << " while input flows";
  }
}

// What a source emits in a Burst waits for the burst's end before the graph is woken (one wake-up
// for a batch, not one per piece the graph could grab while the source is still at it), unless a
// packet is full or the graph is: a long burst flows while it is handed on, and a burst larger
// than the graph's room does not wait for room it holds back itself.
TEST_F(RuntimeTest, ABurstWakesTheGraphOnceAtItsEndOrWhenAPacketOrTheGraphIsFull) {
  RuntimeOptions options;
  options.tick_ms = 0;  // a clock Tick would take in what waits
  options.max_queued = 1000;
  std::atomic<int> seen_in_burst{-1};
  probe_.emit = [&](Emitter& out) {
    {
      const Emitter::Burst burst(out);
      for (int i = 1; i <= 100; ++i) {
        out.Emit(MakeMessage(SampleAt(i)));
        // The offered rate, not a synchronisation: without the Burst the graph takes these in
        // while they come.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      seen_in_burst = probe_.seen.load();
    }
    // The next burst starts with nothing waiting, so its 256 messages make one packet.
    Eventually([&] { return probe_.seen == 99; });
    // A full packet (256) wakes the graph inside a burst: this waits for it, and would wait in
    // vain if the packet waited for the burst's end.
    const Emitter::Burst burst(out);
    for (int i = 101; i <= 356; ++i) out.Emit(MakeMessage(SampleAt(i)));
    Eventually([&] { return probe_.seen == 355; });
    probe_.emitted = 356;
  };
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  ASSERT_TRUE(Eventually([&] { return probe_.emitted == 356; }));
  EXPECT_EQ(seen_in_burst, 0);
  EXPECT_EQ(probe_.seen, 355);  // all but the one the forwarder threw on (13)
  rt.Stop();
  EXPECT_TRUE(std::is_sorted(probe_.order.begin(), probe_.order.end()));
}

TEST_F(RuntimeTest, ABurstLargerThanTheGraphsRoomDoesNotWaitForItself) {
  RuntimeOptions options;
  options.tick_ms = 0;
  options.max_queued = 100;
  probe_.emit = [&](Emitter& out) {
    const Emitter::Burst burst(out);  // fewer than a packet at a time fit in the graph
    for (int i = 1; i <= 5000; ++i) {
      out.Emit(MakeMessage(SampleAt(i)));
      probe_.emitted = i;
    }
  };
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  ASSERT_TRUE(StopOnceSeen(rt, 4999));
  EXPECT_EQ(probe_.emitted, 5000);
  EXPECT_LE(probe_.max_seen_gap, 110);
}

TEST_F(RuntimeTest, MoreGraphThreadsDeliverTheSameInOrder) {
  probe_.to_emit = 5000;
  RuntimeOptions options;
  options.graph_threads = 2;
  Runtime rt(Load(), metrics_, clock_, options);
  rt.Start();
  EXPECT_TRUE(StopOnceSeen(rt, 4999));
  EXPECT_EQ(probe_.drains, 1);
  EXPECT_TRUE(std::is_sorted(probe_.order.begin(), probe_.order.end()));
}

TEST_F(RuntimeTest, ATapTakesEveryNthMessageLeavingANodeAndStopEndsIt) {
  probe_.to_emit = 50000;
  probe_.sink_open = false;  // the source waits for room until the tap is armed
  RuntimeOptions options;
  options.max_queued = 100;
  Runtime rt(Load(), metrics_, clock_, options);
  EXPECT_THROW(rt.Tap("k", {}), std::invalid_argument);  // a sink emits nothing
  try {
    rt.Tap("nope", {});
    ADD_FAILURE() << "no such node";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "no node 'nope' in the pipeline (nodes: s, f, k)");
  }
  rt.Start();
  ASSERT_TRUE(Eventually([&] { return metrics_.GaugeSum("graph_sources_blocked") == 1; }));

  TapOptions o;
  o.count = 4;
  o.every = 3;
  o.timeout = std::chrono::seconds(30);
  // Taps until it is not refused: the probe below may hold the node for a moment.
  const auto tap = [&rt](const std::string& node, const TapOptions& options) {
    TapPoint::Result r;
    do r = rt.Tap(node, options);
    while (r.outcome == TapPoint::Outcome::kBusy);
    return r;
  };
  auto tapped = std::async(std::launch::async, [&] { return tap("f", o); });
  const bool armed = TapArmed(rt, "f", tapped);
  {
    std::lock_guard lock(probe_.mu);
    probe_.sink_open = true;
  }
  probe_.cv.notify_all();
  ASSERT_TRUE(armed);
  const TapPoint::Result r = tapped.get();
  EXPECT_EQ(r.outcome, TapPoint::Outcome::kCollected);
  ASSERT_EQ(r.lines.size(), 4u);
  int64_t previous = 0;
  for (const std::string& line : r.lines) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    ASSERT_FALSE(d.HasParseError()) << line;
    EXPECT_STREQ(d["node"].GetString(), "f");
    EXPECT_STREQ(d["kind"].GetString(), "samples") << "no ticks unless asked for";
    const int64_t ts = d["points"][0]["ts_ns"].GetInt64();
    // Every third message f emits; f drops 13 (bad input), which the tap may start before.
    const int64_t dropped = previous < 13 && 13 < ts ? 1 : 0;
    if (previous != 0) {
      EXPECT_EQ(ts - previous - dropped, 3) << line;
    }
    previous = ts;
  }

  // A tap of a quiet node waits for its time-out, unless the pipeline stops.
  ASSERT_TRUE(Eventually([&] { return probe_.seen == 49999; }));
  o.timeout = std::chrono::seconds(60);
  auto waiting = std::async(std::launch::async, [&] { return tap("s", o); });
  ASSERT_TRUE(TapArmed(rt, "s", waiting));
  rt.Stop();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(waiting.get().outcome, TapPoint::Outcome::kCancelled);
}

}  // namespace
}  // namespace fleetflow
