// window_join on the test kit: the worked examples of docs/semantics.md.
#include <gtest/gtest.h>

#include "fleetflow/testkit/harness.hpp"

namespace fleetflow::testkit {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kBase = 1'700'000'000 * kS;  // a window boundary

/// Samples of `vehicle`'s `sensor` at kBase + each time.
SampleBatch BaseSamples(const std::string& vehicle, const std::string& sensor,
                        std::vector<std::pair<int64_t, double>> points) {
  for (auto& p : points) p.first += kBase;
  return Samples(vehicle, sensor, points);
}

/// Window times (ms after kBase) of the rows in `out`; of `vehicle`'s only, unless it is empty.
std::vector<int64_t> Windows(const std::vector<Message>& out, const std::string& vehicle = "") {
  std::vector<int64_t> ms;
  for (int64_t t : RowTimes(out, vehicle)) ms.push_back((t - kBase) / kMs);
  return ms;
}

// every 1 s, lateness 500 ms, max gap 2 s, sensors speed and soc. idle_ms 1: windows close on the
// clock, as in a live run where samples keep coming (event-time progress is tested below).
constexpr char kJoinConfig[] = R"({"every_ms": 1000, "allowed_lateness_ms": 500,
    "max_gap_ms": 2000, "idle_ms": 1, "sensors": ["speed", "soc"]})";

class WindowJoinTest : public ::testing::Test {
 protected:
  OperatorHarness h{"window_join", kJoinConfig};
  void SetUp() override { h.TickAt(kBase + 600 * kMs); }  // window T=1s opens
};

TEST_F(WindowJoinTest, Example1_BracketingSamplesOfTheWindowTime) {
  h.Feed(BaseSamples("v1", "speed", {{800 * kMs, 10.0}, {1300 * kMs, 20.0}, {1400 * kMs, 30.0}}));
  EXPECT_TRUE(Only<WindowBatch>(h.TickAt(kBase + 1499 * kMs)).empty());  // lateness not over
  const auto b = OnlyOne<WindowBatch>(h.TickAt(kBase + 1500 * kMs));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->window_ns, kBase + kS);
  ASSERT_EQ(b->rows.size(), 1u);
  EXPECT_EQ(b->rows[0].vehicle, "v1");
  const std::span<const Slot> slots = b->Slots(b->rows[0]);
  ASSERT_EQ(slots.size(), 2u);
  ASSERT_TRUE(slots[0].before && slots[0].after);
  EXPECT_EQ(slots[0].before->ts_ns, kBase + 800 * kMs);
  EXPECT_EQ(slots[0].after->ts_ns, kBase + 1300 * kMs);  // the oldest after T, not 1.4 s
  EXPECT_FALSE(slots[1].before || slots[1].after);       // soc: nothing, NULL in the row
}

TEST_F(WindowJoinTest, Example2_SampleExactlyAtTheWindowTimeIsBefore) {
  h.Feed(BaseSamples("v1", "speed", {{1000 * kMs, 7.0}}));
  // One row: speed 7 before T=1s and nothing after it; no soc at all.
  EXPECT_EQ(
      Rows(h.TickAt(kBase + 1500 * kMs)),
      (std::vector<Row>{{kBase + kS, "v1", {7.0, std::nullopt}, {std::nullopt, std::nullopt}}}));
}

TEST_F(WindowJoinTest, Example3_SamplesBeyondMaxGapAreNotUsedAndGiveNoRow) {
  h.Feed(BaseSamples("v1", "speed", {{-1100 * kMs, 5.0}}));  // 2.1 s before T=1s
  h.Feed(BaseSamples("v2", "speed", {{-1000 * kMs, 6.0}}));  // exactly 2 s before: still used
  const auto b = WindowAt(h.TickAt(kBase + 1500 * kMs), kBase + 1000 * kMs);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->rows.size(), 1u);
  EXPECT_EQ(b->rows[0].vehicle, "v2");
}

TEST_F(WindowJoinTest, Example3b_OnlyASampleAfterTheWindowTimeGivesNoRow) {
  h.Feed(BaseSamples("v1", "speed", {{1010 * kMs, 5.0}}));
  // T=1s closes without a row: its batch is empty (the nodes after learn the window closed).
  const auto closed = OnlyOne<WindowBatch>(h.TickAt(kBase + 1500 * kMs));
  ASSERT_NE(closed, nullptr);
  EXPECT_TRUE(closed->rows.empty());
  EXPECT_EQ(closed->every_ns, 1000 * kMs);
  const auto b = OnlyOne<WindowBatch>(h.TickAt(kBase + 2500 * kMs));  // T=2s: before = 1.01 s
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->Slots(b->rows[0])[0].before->value, 5.0);
}

TEST_F(WindowJoinTest, Example4_LateSampleMissesItsWindowAndIsCounted) {
  h.Feed(BaseSamples("v1", "speed", {{500 * kMs, 1.0}}));
  h.TickAt(kBase + 1500 * kMs);                            // T=1s emitted with before = 0.5 s
  h.Feed(BaseSamples("v1", "speed", {{950 * kMs, 2.0}}));  // arrives too late for T=1s
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  const auto b = OnlyOne<WindowBatch>(h.TickAt(kBase + 2500 * kMs));
  ASSERT_NE(b, nullptr);  // but it is still the newest sample before T=2s
  EXPECT_EQ(b->Slots(b->rows[0])[0].before->value, 2.0);
}

TEST_F(WindowJoinTest, Example5_OffEndsTheRowsAfterTheLastSample) {
  h.Feed(BaseSamples("v1", "speed", {{900 * kMs, 1.0}, {2200 * kMs, 2.0}}));
  h.Feed(StatusEvent{"v1", false, kBase + 2300 * kMs});
  std::vector<int64_t> windows;
  for (int64_t t = 1500; t <= 5500; t += 1000) {
    for (int64_t w : Windows(h.TickAt(kBase + t * kMs))) windows.push_back(w);
  }
  EXPECT_EQ(windows, (std::vector<int64_t>{1000, 2000}));  // not 3000, though within max gap
  // Samples after the off time mean the vehicle runs again.
  h.Feed(BaseSamples("v1", "speed", {{5800 * kMs, 3.0}}));
  const auto b = OnlyOne<WindowBatch>(h.TickAt(kBase + 6500 * kMs));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->window_ns, kBase + 6 * kS);
}

TEST_F(WindowJoinTest, Example5b_ATailSampleArrivingAfterOffMovesTheOffTime) {
  h.Feed(BaseSamples("v1", "speed", {{900 * kMs, 1.0}, {2200 * kMs, 2.0}}));
  h.Feed(StatusEvent{"v1", false, kBase + 2200 * kMs});
  h.Feed(BaseSamples("v1", "soc", {{3100 * kMs, 50.0}}));  // sent before off, arrived after it
  std::vector<int64_t> windows;
  for (int64_t t = 1500; t <= 5500; t += 1000) {
    for (int64_t w : Windows(h.TickAt(kBase + t * kMs))) windows.push_back(w);
  }
  EXPECT_EQ(windows, (std::vector<int64_t>{1000, 2000, 3000}));
}

TEST_F(WindowJoinTest, DrainEmitsWindowsUpToNowWithoutWaitingForLateness) {
  h.Feed(BaseSamples("v1", "speed", {{900 * kMs, 1.0}, {1900 * kMs, 2.0}}));
  const auto out = h.TickAt(kBase + 2100 * kMs, /*drain=*/true);
  const auto batches = Only<WindowBatch>(out);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1]->window_ns, kBase + 2 * kS);
  ASSERT_FALSE(Only<Tick>(out).empty());  // the tick is forwarded after the windows
  EXPECT_TRUE(std::holds_alternative<Tick>(*out.back()));
}

TEST_F(WindowJoinTest, SensorsOutsideTheJoinAreIgnoredAndStateIsForgotten) {
  h.Feed(BaseSamples("v1", "torque", {{900 * kMs, 1.0}}));
  EXPECT_EQ(h.Counter("samples_ignored"), 1u);
  h.Feed(BaseSamples("v1", "speed", {{900 * kMs, 1.0}}));
  h.TickAt(kBase + 1500 * kMs);
  EXPECT_EQ(h.Gauge("tracked_vehicles"), 1.0);
  h.TickAt(kBase + 4500 * kMs);  // 0.9 s is more than max gap before T=4s
  EXPECT_EQ(h.Gauge("tracked_vehicles"), 0.0);
}

TEST_F(WindowJoinTest, SamplesOfManyWindowsAheadAreAllKept) {
  // Six intervals per sensor held at once: more than a vehicle has room for at first; both
  // sensors hold some when it needs more.
  for (int from : {1, 4}) {
    for (const char* sensor : {"speed", "soc"}) {
      const double base = sensor == std::string("soc") ? 10.0 : 0.0;
      std::vector<std::pair<int64_t, double>> points;
      for (int i = from; i < from + 3; ++i) points.emplace_back((i * 1000 - 100) * kMs, base + i);
      h.Feed(BaseSamples("v1", sensor, points));
    }
  }
  std::vector<Row> rows;
  for (int64_t t = 1500; t <= 6500; t += 1000) {
    for (Row& r : Rows(h.TickAt(kBase + t * kMs))) rows.push_back(std::move(r));
  }
  std::vector<Row> expected;
  for (int i = 1; i <= 6; ++i) {
    const auto after = [&](double base) {
      return i < 6 ? std::optional<double>(base + i + 1) : std::nullopt;
    };
    expected.push_back({kBase + i * kS, "v1", {i, 10.0 + i}, {after(0), after(10)}});
  }
  EXPECT_EQ(rows, expected);
}

TEST_F(WindowJoinTest, AForgottenVehicleLeavesTheRowsOfTheOthersAsTheyWere) {
  for (const char* v : {"v1", "v2", "v3"}) h.Feed(BaseSamples(v, "speed", {{900 * kMs, 0.0}}));
  h.Feed(BaseSamples("v2", "speed", {{1900 * kMs, 21.0}, {2900 * kMs, 22.0}, {3900 * kMs, 23.0}}));
  h.Feed(BaseSamples("v3", "soc", {{1900 * kMs, 31.0}, {2900 * kMs, 32.0}, {3900 * kMs, 33.0}}));
  for (int64_t t = 1500; t <= 2500; t += 1000) h.TickAt(kBase + t * kMs);
  EXPECT_EQ(h.Gauge("tracked_vehicles"), 2.0);  // v1: its 0.9 s is too old for T=3s
  const auto out = h.TickAt(kBase + 3500 * kMs);
  EXPECT_EQ(Rows(out, "v2"),
            (std::vector<Row>{{kBase + 3 * kS, "v2", {22.0, std::nullopt}, {23.0, std::nullopt}}}));
  EXPECT_EQ(Rows(out, "v3"),
            (std::vector<Row>{{kBase + 3 * kS, "v3", {std::nullopt, 32.0}, {std::nullopt, 33.0}}}));
  EXPECT_TRUE(Rows(out, "v1").empty());
}

TEST(WindowJoinEventTimeTest, ABacklogIsWindowedAsItWasLive) {
  // A worker catching up on a stream: samples of the last 10 s arrive at once, long after their
  // event time. Windows close as event time progresses, none of the samples is late.
  OperatorHarness h("window_join", R"({"sensors": ["speed"]})");
  h.clock.Set(kBase + 100 * kS);
  std::vector<int64_t> windows;
  for (int64_t ms = 0; ms <= 10'000; ms += 100) {
    for (int64_t w : Windows(h.Feed(BaseSamples("v1", "speed", {{ms * kMs, double(ms)}})))) {
      windows.push_back(w);
    }
    if (ms % 500 == 0) {
      for (int64_t w : Windows(h.Feed(Tick{h.clock.NowNs(), false}))) windows.push_back(w);
    }
  }
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  std::vector<int64_t> expected;
  for (int64_t t = 0; t <= 9000; t += 1000) expected.push_back(t);
  EXPECT_EQ(windows, expected);
  // Nothing more arrives: after idle_ms the clock closes the rest.
  h.clock.Advance(3 * kS);
  const auto rest = Only<WindowBatch>(h.Feed(Tick{h.clock.NowNs(), false}));
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front()->window_ns, kBase + 10 * kS);
}

/// What a vehicle sends in the catching-up examples: one speed sample a message, each with the
/// time the stream stored it (ms after kBase). A sample at 1.6 s stored at 4 s, after 3 s in which
/// the stream stored nothing (more than idle_ms 2 s), is late live: the clock closed windows 1 s
/// and 2 s meanwhile.
struct Stored {
  int64_t ts_ms, stream_ms;
};
std::vector<Stored> CatchingUpInput() {
  std::vector<Stored> in;
  for (int64_t ms = 0; ms <= 900; ms += 100) in.push_back({ms, ms + 50});
  in.push_back({1600, 4000});  // late: its window (2 s) closed on the clock at 2.55 s
  for (int64_t ms = 4000; ms <= 5000; ms += 100) in.push_back({ms, ms + 50});
  return in;
}

/// Received at `received_ns`: live, when it was stored; from a backlog, much later.
SampleBatch StoredSample(const Stored& s, int64_t received_ns) {
  SampleBatch b = BaseSamples("v1", "speed", {{s.ts_ms * kMs, double(s.ts_ms)}});
  b.stream_ns = kBase + s.stream_ms * kMs;
  b.received_ns = received_ns;
  return b;
}

constexpr char kCatchUpConfig[] =
    R"({"sensors": ["speed"], "every_ms": 1000, "allowed_lateness_ms": 500, "idle_ms": 2000})";

TEST(WindowJoinEventTimeTest, AWindowClosesOnTheInputThatMovesProgressPastIt) {
  // Live, each sample received 10 ms after its time. Window 1 s closes with the sample that
  // moves progress past 1.5 s, not at the next Tick; the sources' input delay (the last Tick's)
  // holds that back by as much.
  // {input delay, the sample whose arrival closes window 1 s}: with a delay, the first received
  // at least that long after 1.5 s (samples every 100 ms).
  for (const auto& [input_delay_ms, closing_ms] :
       {std::pair<int64_t, int64_t>{0, 1500}, std::pair<int64_t, int64_t>{250, 1800}}) {
    SCOPED_TRACE("input delay " + std::to_string(input_delay_ms) + " ms");
    OperatorHarness h("window_join", kCatchUpConfig);
    const auto receive = [&](int64_t ts_ms) {
      h.clock.Set(kBase + (ts_ms + 10) * kMs);
      SampleBatch b = BaseSamples("v1", "speed", {{ts_ms * kMs, double(ts_ms)}});
      b.received_ns = b.stream_ns = h.clock.NowNs();
      return Only<WindowBatch>(h.Feed(b));
    };
    EXPECT_TRUE(receive(0).empty());
    h.Feed(Tick{h.clock.NowNs(), false, false, false, input_delay_ms * kMs});
    // Window 0 s closes one second earlier.
    for (int64_t ms = 100; ms < closing_ms; ms += 100) {
      const auto closed = receive(ms);
      if (ms == closing_ms - 1000) {
        ASSERT_EQ(closed.size(), 1u);
        EXPECT_EQ(closed.front()->window_ns, kBase);
      } else {
        EXPECT_TRUE(closed.empty()) << ms;
      }
    }
    const auto closed = receive(closing_ms);
    ASSERT_EQ(closed.size(), 1u);
    const WindowBatch& w = *closed.front();
    EXPECT_EQ(w.window_ns, kBase + kS);
    ASSERT_EQ(w.rows.size(), 1u);
    EXPECT_EQ(w.Slots(w.rows[0])[0].before->value, 1000.0);
    EXPECT_EQ(w.Slots(w.rows[0])[0].after->value, 1100.0);
    EXPECT_EQ(w.timing.due_ns, kBase + 1500 * kMs);
    EXPECT_EQ(w.timing.input_ns, kBase + (closing_ms + 10) * kMs);
    EXPECT_EQ(w.timing.closed_ns, h.clock.NowNs());
    EXPECT_EQ(w.timing.emitted_ns, h.clock.NowNs());
    EXPECT_TRUE(w.timing.live);
    // The next Tick has nothing left to close.
    EXPECT_TRUE(
        Only<WindowBatch>(h.Feed(Tick{h.clock.NowNs(), false, false, false, input_delay_ms * kMs}))
            .empty());
  }
}

TEST(WindowJoinEventTimeTest, WhereABurstMayComeTheTickClosesTheWindows) {
  // After an outage the vehicles send what they kept, each sensor's messages one after the
  // other: speed's passes 1.5 s before soc's samples of the same times came. The Tick closes
  // window 1 s, with both, when the input was stored long after its samples (kept) or a source
  // held input back; live input closes it at once. A vehicle that fell behind and catches up
  // (a fleet-sim starved of CPU) sends a stretch of each sensor whose newest sample is fresh
  // but whose oldest was stored late (stored at 2.7 s, samples from 0.9 s): kept too. A Tick
  // between the two sensors' messages closes nothing on kept input.
  for (const bool held_back : {false, true}) {
    for (const int64_t stored_ms : {int64_t{1610}, int64_t{2500}, int64_t{2700}}) {
      SCOPED_TRACE(std::to_string(held_back) + " " + std::to_string(stored_ms));
      OperatorHarness h("window_join", R"({"sensors": ["speed", "soc"], "idle_ms": 2000})");
      const auto feed = [&](const char* sensor, const std::vector<std::pair<int64_t, double>>& s) {
        SampleBatch b = BaseSamples("v1", sensor, s);
        b.received_ns = b.stream_ns = h.clock.NowNs();
        return Only<WindowBatch>(h.Feed(b));
      };
      // Live, each sample is sent as it is taken.
      const bool live = stored_ms == 1610;
      h.clock.Set(kBase + (live ? 910 : stored_ms) * kMs);
      h.Feed(Tick{h.clock.NowNs(), false, held_back});
      std::vector<std::pair<int64_t, double>> samples = {{900 * kMs, 1.0}, {1600 * kMs, 2.0}};
      if (live) {
        feed("speed", {samples.front()});
        feed("soc", {samples.front()});
        samples.erase(samples.begin());
        h.clock.Set(kBase + stored_ms * kMs);
      }
      const bool catching_up = stored_ms == 2700;
      if (catching_up) samples.emplace_back(2650 * kMs, 3.0);
      const bool at_once = !held_back && live;
      EXPECT_EQ(feed("speed", samples).size(), at_once ? 1u : 0u);
      // A Tick before the other sensor's messages came (they follow within the sources'
      // gathering and a Tick's period): kept input does not close the windows yet.
      if (!live) EXPECT_TRUE(Rows(h.TickAt(h.clock.NowNs() + 50 * kMs)).empty());
      feed("soc", samples);
      const auto rows = Rows(h.TickAt(h.clock.NowNs() + 100 * kMs));
      std::vector<Row> want = {{kBase + kS, "v1", {1.0, 1.0}, {2.0, 2.0}}};
      if (catching_up) want.push_back({kBase + 2 * kS, "v1", {2.0, 2.0}, {3.0, 3.0}});
      if (!at_once) EXPECT_EQ(rows, want);
      EXPECT_EQ(h.Counter("late_samples"), 0u);
    }
  }
}

TEST(WindowJoinEventTimeTest, InputThatIsAlwaysKeptStillClosesTheWindows) {
  // A vehicle whose clock runs 2 s behind (or whose batches span more than the allowed
  // lateness): every message holds a sample stored more than the allowed lateness after its
  // time, and the next one comes before the sources' gathering time has passed. Its windows
  // close anyway, at most a second later than on live input.
  OperatorHarness h("window_join", R"({"sensors": ["speed"], "idle_ms": 2000})");
  size_t closed_while_sending = 0;
  for (int64_t ms = 2000; ms <= 8000; ms += 100) {
    h.clock.Set(kBase + ms * kMs);
    SampleBatch b = BaseSamples("v1", "speed", {{(ms - 2000) * kMs, double(ms)}});
    b.received_ns = b.stream_ns = h.clock.NowNs();
    closed_while_sending += Only<WindowBatch>(h.Feed(b)).size();
    closed_while_sending += Only<WindowBatch>(h.TickAt(h.clock.NowNs() + 50 * kMs)).size();
  }
  // Samples up to 6 s: windows up to 5 s close on them (lateness 500 ms), 1 s late at most.
  EXPECT_GE(closed_while_sending, 4u);
  EXPECT_EQ(h.Counter("late_samples"), 0u);
}

TEST(WindowJoinEventTimeTest, ABacklogAfterAnOutageGivesTheRowsOfTheLiveRunLateSamplesIncluded) {
  // Live: the clock follows the stream, a Tick every 100 ms.
  OperatorHarness live("window_join", kCatchUpConfig);
  std::vector<Message> live_out;
  const auto keep = [](std::vector<Message>& all, std::vector<Message> more) {
    all.insert(all.end(), more.begin(), more.end());
  };
  int64_t now_ms = 0;
  for (const Stored& s : CatchingUpInput()) {
    for (; now_ms < s.stream_ms; now_ms += 100) keep(live_out, live.TickAt(kBase + now_ms * kMs));
    live.clock.Set(kBase + s.stream_ms * kMs);
    keep(live_out, live.Feed(StoredSample(s, live.clock.NowNs())));
  }
  keep(live_out, live.TickAt(kBase + 100 * kS));
  EXPECT_EQ(live.Counter("late_samples"), 1u);

  // The same input read 100 s later from the stream, while the source holds input back.
  OperatorHarness backlog("window_join", kCatchUpConfig);
  backlog.clock.Set(kBase + 100 * kS);
  std::vector<Message> backlog_out;
  for (const Stored& s : CatchingUpInput()) {
    keep(backlog_out, backlog.Feed(StoredSample(s, backlog.clock.NowNs())));
    keep(backlog_out, backlog.Feed(Tick{backlog.clock.NowNs(), false, true}));
  }
  keep(backlog_out, backlog.TickAt(kBase + 103 * kS));
  EXPECT_EQ(backlog.Counter("late_samples"), 1u) << "the sample at 1.6 s is late in both";
  EXPECT_EQ(Rows(backlog_out), Rows(live_out));
  EXPECT_EQ(Windows(live_out), (std::vector<int64_t>{0, 1000, 2000, 4000, 5000, 6000, 7000}));
}

TEST(WindowJoinEventTimeTest, ASampleTheSourceStillGathersWhenTheClockReachesItsWindowIsNotLate) {
  // Samples at 0 … 0.9 s, each stored 50 ms after its time, then nothing until a sample from
  // 2.1 s stored at 3.45 s (later than idle_ms: a gap) and samples from 3.5 s on. Read from a
  // backlog, the gap closes the windows up to 3.45 s − 0.5 s: window 3 s is open, and the
  // sample from 2.1 s is in it (its before sample). Live, the source gathers each message for
  // up to its input delay before handing it on: the one stored at 3.45 s comes at 3.6 s, after
  // the Tick at 3.5 s. That Tick closes window 3 s on the clock (without the sample, the sample
  // then late) unless the clock waits for what the source gathers (Tick::input_delay_ns).
  std::vector<Stored> input;
  for (int64_t ms = 0; ms <= 900; ms += 100) input.push_back({ms, ms + 50});
  input.push_back({2100, 3450});
  for (int64_t ms = 3500; ms <= 5000; ms += 100) input.push_back({ms, ms + 50});
  const auto keep = [](std::vector<Message>& all, std::vector<Message> more) {
    all.insert(all.end(), more.begin(), more.end());
  };
  OperatorHarness backlog("window_join", kCatchUpConfig);
  backlog.clock.Set(kBase + 100 * kS);
  std::vector<Message> backlog_out;
  for (const Stored& s : input) {
    keep(backlog_out, backlog.Feed(StoredSample(s, backlog.clock.NowNs())));
    keep(backlog_out, backlog.Feed(Tick{backlog.clock.NowNs(), false, true}));
  }
  keep(backlog_out, backlog.TickAt(kBase + 103 * kS));
  EXPECT_EQ(backlog.Counter("late_samples"), 0u);
  EXPECT_EQ(Windows(backlog_out),
            (std::vector<int64_t>{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000}));

  constexpr int64_t kGatheredMs = 150;  // how much later than stored each sample comes
  for (const int64_t input_delay_ms : {int64_t{250}, int64_t{0}}) {
    OperatorHarness live("window_join", kCatchUpConfig);
    std::vector<Message> live_out;
    int64_t now_ms = 0;
    for (const Stored& s : input) {
      for (; now_ms < s.stream_ms + kGatheredMs; now_ms += 100) {
        live.clock.Set(kBase + now_ms * kMs);
        keep(live_out,
             live.Feed(Tick{live.clock.NowNs(), false, false, false, input_delay_ms * kMs}));
      }
      live.clock.Set(kBase + (s.stream_ms + kGatheredMs) * kMs);
      keep(live_out, live.Feed(StoredSample(s, live.clock.NowNs())));
    }
    keep(live_out, live.TickAt(kBase + 100 * kS));
    if (input_delay_ms > 0) {
      EXPECT_EQ(live.Counter("late_samples"), 0u);
      EXPECT_EQ(Rows(live_out), Rows(backlog_out));
    } else {  // what the input delay is for
      EXPECT_EQ(live.Counter("late_samples"), 1u);
      EXPECT_NE(Windows(live_out), Windows(backlog_out));
    }
  }
}

TEST(WindowJoinEventTimeTest, AGapWhileTheStreamCouldNotBeReadIsNoIdleTime) {
  // The same input, but the stream stored nothing between 0.95 s and 4 s because it had no
  // leader (a cluster electing one): the source is cut off, its Ticks say so, and the sample the
  // vehicle kept meanwhile (1.6 s, stored at 4 s) is in its window, not late. Without cut_off
  // the stored-time gap is taken for idle vehicles, as in the example above.
  for (const bool cut_off : {true, false}) {
    OperatorHarness h("window_join", kCatchUpConfig);
    std::vector<Message> out;
    int64_t now_ms = 0;
    for (const Stored& s : CatchingUpInput()) {
      for (; now_ms < s.stream_ms; now_ms += 100) {
        h.clock.Set(kBase + now_ms * kMs);
        const bool electing = now_ms > 950 && now_ms < 4000;
        const auto more = h.Feed(Tick{h.clock.NowNs(), false, electing, electing && cut_off});
        out.insert(out.end(), more.begin(), more.end());
      }
      h.clock.Set(kBase + s.stream_ms * kMs);
      const auto more = h.Feed(StoredSample(s, h.clock.NowNs()));
      out.insert(out.end(), more.begin(), more.end());
    }
    const auto rest = h.TickAt(kBase + 100 * kS);
    out.insert(out.end(), rest.begin(), rest.end());
    EXPECT_EQ(h.Counter("late_samples"), cut_off ? 0u : 1u) << "cut_off " << cut_off;
    if (cut_off) {  // 3 s too: the sample at 1.6 s is within max_gap_ms before it
      EXPECT_EQ(Windows(out), (std::vector<int64_t>{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000}));
    }
  }
}

TEST(WindowJoinEventTimeTest, WhatWasStoredBeforeTheOutageButDeliveredAfterItDoesNotEndItsGap) {
  // As above, cut off from 0.95 s to 4 s, but at 3.9 s, just before the outage's backlog, the
  // consumer delivers again a message stored before it (its acknowledgement was lost) and one
  // stored just before it that it had not delivered yet: the gap in stored times is still the
  // outage's and the sample kept meanwhile (1.6 s, stored at 4 s) is not late.
  OperatorHarness h("window_join", kCatchUpConfig);
  std::vector<Message> out;
  int64_t now_ms = 0;
  for (const Stored& s : CatchingUpInput()) {
    for (; now_ms < s.stream_ms; now_ms += 100) {
      h.clock.Set(kBase + now_ms * kMs);
      const bool electing = now_ms > 950 && now_ms < 4000;
      auto more = h.Feed(Tick{h.clock.NowNs(), false, electing, electing});
      out.insert(out.end(), more.begin(), more.end());
      if (now_ms == 3900) {
        for (const Stored& before : {Stored{900, 950}, Stored{920, 960}}) {
          more = h.Feed(StoredSample(before, h.clock.NowNs()));
          out.insert(out.end(), more.begin(), more.end());
        }
      }
    }
    h.clock.Set(kBase + s.stream_ms * kMs);
    const auto more = h.Feed(StoredSample(s, h.clock.NowNs()));
    out.insert(out.end(), more.begin(), more.end());
  }
  const auto rest = h.TickAt(kBase + 100 * kS);
  out.insert(out.end(), rest.begin(), rest.end());
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  EXPECT_EQ(Windows(out), (std::vector<int64_t>{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000}));
}

TEST(WindowJoinEventTimeTest, AfterTheStreamCouldNotBeReadWindowsWaitForEveryVehiclesBacklog) {
  // The stream could not be read from 1.5 s to 5.9 s. Once it stores again, each vehicle sends
  // what it kept at once, v1's before v2's: v1's newest samples must not close the windows of
  // v2's still to come. Windows stay where the outage began until idle_ms after it ended.
  OperatorHarness h("window_join", kCatchUpConfig);
  h.clock.Set(kBase + 1100 * kMs);
  h.Feed(BaseSamples("v1", "speed", {{1000 * kMs, 1.0}}));
  h.Feed(BaseSamples("v2", "speed", {{1000 * kMs, 1.0}}));
  for (int64_t ms = 1500; ms < 6000; ms += 100) {
    EXPECT_TRUE(Only<WindowBatch>(h.Feed(Tick{kBase + ms * kMs, false, true, true})).empty());
  }
  std::vector<Message> out;
  const auto keep = [&](std::vector<Message> more) {
    out.insert(out.end(), more.begin(), more.end());
  };
  keep(h.TickAt(kBase + 6500 * kMs));
  for (const char* vehicle : {"v1", "v2"}) {
    std::vector<std::pair<int64_t, double>> kept;
    for (int64_t ms = 1100; ms <= 6400; ms += 100) kept.emplace_back(ms * kMs, double(ms));
    keep(h.Feed(BaseSamples(vehicle, "speed", kept)));
    keep(h.TickAt(h.clock.NowNs() + 100 * kMs));
  }
  EXPECT_TRUE(Windows(out).empty()) << "within idle_ms of the outage's end";
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  keep(h.TickAt(kBase + 8 * kS));
  for (const char* vehicle : {"v1", "v2"}) {
    EXPECT_EQ(Windows(out, vehicle), (std::vector<int64_t>{1000, 2000, 3000, 4000, 5000}));
  }
}

TEST(WindowJoinEventTimeTest, TicksWhileInputIsHeldBackDoNotCloseWindowsOnTheClock) {
  // A source waits for room in the graph (the sink is blocked): Ticks keep coming but carry
  // held_back, so however long it lasts the clock does not close windows the held-back samples
  // belong to; once they enter, they are windowed as live, none late.
  OperatorHarness h("window_join", R"({"sensors": ["speed"], "idle_ms": 2000})");
  h.clock.Set(kBase + 2 * kS);
  h.Feed(BaseSamples("v1", "speed", {{1000 * kMs, 1.0}}));
  for (int i = 1; i <= 30; ++i) {
    EXPECT_TRUE(Only<WindowBatch>(h.Feed(Tick{kBase + (2 + i) * kS, false, true})).empty());
  }
  // They close as the samples enter (or at the next Tick, before the first one).
  std::vector<Message> out =
      h.Feed(BaseSamples("v1", "speed", {{1900 * kMs, 2.0}, {3000 * kMs, 3.0}}));
  for (Message& m : h.Feed(Tick{kBase + 33 * kS, false, true})) out.push_back(std::move(m));
  const auto b = Only<WindowBatch>(out);
  ASSERT_EQ(b.size(), 2u);  // windows 1 s and 2 s: 3 s needs the lateness to pass
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  // A Tick without held_back after idle_ms: the clock closes the rest.
  EXPECT_FALSE(Only<WindowBatch>(h.Feed(Tick{kBase + 36 * kS, false, false})).empty());
}

/// Samples of `vehicle` in `partition` every 100 ms of [from_ms, to_ms] (value = ms).
SampleBatch PartitionSamples(const std::string& vehicle, uint32_t partition, int64_t from_ms,
                             int64_t to_ms, bool restored = false) {
  std::vector<std::pair<int64_t, double>> points;
  for (int64_t t = from_ms; t <= to_ms; t += 100) points.emplace_back(t * kMs, double(t));
  SampleBatch b = BaseSamples(vehicle, "speed", points);
  b.partition = partition;
  b.restored = restored;
  return b;
}

class WindowJoinPartitionTest : public ::testing::Test {
 protected:
  OperatorHarness h{"window_join", kJoinConfig};
};

TEST_F(WindowJoinPartitionTest, ARevokedPartitionRecordsItsLastWindowAndIsForgotten) {
  h.Feed(Assigned(1));
  h.Feed(Assigned(2));
  h.Feed(PartitionSamples("a", 1, 0, 3000));
  h.Feed(PartitionSamples("b", 2, 0, 3000));
  const auto out = h.TickAt(kBase + 2600 * kMs);  // windows 0..2 s close
  EXPECT_EQ(Windows(out, "a"), (std::vector<int64_t>{0, 1000, 2000}));
  const PartitionEvent revoked = Revoked(1);
  EXPECT_EQ(Only<PartitionEvent>(h.Feed(revoked)).size(), 1u);  // passed on
  EXPECT_EQ(revoked.handover->windows(), (EmittedWindows{{"op", kBase + 2000 * kMs}}));
  EXPECT_EQ(h.Gauge("tracked_vehicles"), 1);
  const auto later = h.TickAt(kBase + 3600 * kMs);
  EXPECT_TRUE(Windows(later, "a").empty());  // no longer ours
  EXPECT_EQ(Windows(later, "b"), (std::vector<int64_t>{3000}));
}

TEST_F(WindowJoinPartitionTest, ATakenOverPartitionGoesOnAfterTheRecordWithItsClosedWindows) {
  // A running worker (partition 1) takes partition 4 over, whose previous owner emitted up to
  // 1 s. The restored history (0.5..3.5 s) comes with the event; the windows 2 s and 3 s have
  // closed already and come out at the next Tick, once, and 1 s never.
  h.Feed(Assigned(1));
  h.Feed(PartitionSamples("b", 1, 0, 4000));
  EXPECT_EQ(Windows(h.TickAt(kBase + 3600 * kMs), "b"),
            (std::vector<int64_t>{0, 1000, 2000, 3000}));
  h.Feed(Assigned(4, EmittedWindows{{"op", kBase + 1000 * kMs}}));
  h.Feed(PartitionSamples("a", 4, 500, 3500, /*restored=*/true));
  EXPECT_EQ(Windows(h.TickAt(kBase + 3700 * kMs), "a"), (std::vector<int64_t>{2000, 3000}));
  EXPECT_EQ(h.Counter("late_samples"), 0u);  // restored samples are history, not late
  h.Feed(PartitionSamples("a", 4, 3600, 4500));
  EXPECT_EQ(Windows(h.TickAt(kBase + 5000 * kMs), "a"), (std::vector<int64_t>{4000}));
}

TEST(WindowJoinPartitionProgressTest, APartitionReadBehindTheOthersKeepsItsOwnProgress) {
  // A backlog caught up partition by partition, while samples keep arriving (idle_ms not
  // reached): partition 1 is 20 s ahead of partition 2, whose samples are not late for it.
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 60000, "sensors": ["speed", "soc"]})"};
  h.clock.Set(kBase + 20100 * kMs);
  h.Feed(PartitionSamples("fast", 1, 0, 20000));
  h.Feed(PartitionSamples("slow", 2, 0, 2000));
  h.TickAt(kBase + 20100 * kMs);
  std::vector<Message> out = h.Feed(PartitionSamples("slow", 2, 2100, 5000));  // closes them
  EXPECT_EQ(h.Counter("late_samples"), 0u);
  for (Message& m : h.TickAt(kBase + 20200 * kMs)) out.push_back(std::move(m));
  EXPECT_EQ(Windows(out, "slow"), (std::vector<int64_t>{2000, 3000, 4000}));
}

TEST_F(WindowJoinPartitionTest, WithoutARecordTheWindowsTheRestoredStateComputesExactlyComeAgain) {
  // The previous owner of partition 0 crashed. Its restored state: speed from 2.2 s, soc from
  // 3.4 s: the windows from 4 s on have all of their samples, 3 s would miss soc's.
  h.Feed(Assigned(0));
  h.Feed(PartitionSamples("a", 0, 2200, 5500, /*restored=*/true));
  SampleBatch soc = BaseSamples("a", "soc", {{3400 * kMs, 50.0}, {5400 * kMs, 49.0}});
  soc.restored = true;
  h.Feed(std::move(soc));
  EXPECT_EQ(Windows(h.TickAt(kBase + 5600 * kMs), "a"), (std::vector<int64_t>{4000, 5000}));
}

TEST_F(WindowJoinPartitionTest, ALateSampleNeverChangesAnEmittedWindow) {
  h.Feed(Assigned(0));
  h.Feed(PartitionSamples("a", 0, 0, 1000));
  const auto first = h.TickAt(kBase + 1600 * kMs);
  EXPECT_EQ(Windows(first, "a"), (std::vector<int64_t>{0, 1000}));
  h.Feed(PartitionSamples("a", 0, 950, 950));  // belongs to window 1 s, which is closed
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  EXPECT_TRUE(Windows(h.TickAt(kBase + 1700 * kMs), "a").empty());
}

TEST(WindowJoinCorrectionTest, WithAHorizonALateSampleEmitsTheRecentWindowsItBelongsToAgain) {
  OperatorHarness h{"window_join",
                    R"({"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                        "idle_ms": 1, "sensors": ["speed", "soc"],
                        "correction_horizon_ms": 5000})"};
  h.Feed(PartitionSamples("a", 0, 0, 1000));
  EXPECT_EQ(Windows(h.TickAt(kBase + 1600 * kMs), "a"), (std::vector<int64_t>{0, 1000}));
  // soc at 0.95 s arrives late: the after-sample of window 0 s and the before-sample of 1 s.
  h.Feed(BaseSamples("a", "soc", {{950 * kMs, 80.0}}));
  EXPECT_EQ(h.Counter("late_samples"), 1u);
  const auto out = h.TickAt(kBase + 1700 * kMs);
  EXPECT_EQ(Windows(out, "a"), (std::vector<int64_t>{0, 1000}));
  const auto again = WindowAt(out, kBase + 1000 * kMs);
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->Slots(again->rows[0])[1].before.has_value());
  EXPECT_EQ(again->Slots(again->rows[0])[1].before->value, 80.0);
  EXPECT_EQ(h.Counter("rows_corrected"), 2u);
}

TEST(WindowJoinConfigTest, RejectsDuplicateSensors) {
  // Validation rejects them before the operator is built (the harness validates first).
  EXPECT_NE(BuildError("window_join", R"({"sensors": ["speed", "speed"]})"), "");
}

}  // namespace
}  // namespace fleetflow::testkit
