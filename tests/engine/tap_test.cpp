// Taps: how each kind of message is written as JSON, the request's options, and a TapPoint fed
// from another thread (every n-th message, count, time-out, one tap at a time, cancel).
#include "tap.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <cmath>
#include <future>
#include <limits>
#include <map>
#include <thread>

namespace fleetflow {
namespace {

using namespace std::chrono_literals;

rapidjson::Document Json(const Body& body, size_t max_rows = 20, size_t max_points = 20) {
  rapidjson::Document d;
  const std::string text = TapJson("n1", body, max_rows, max_points);
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

TEST(TapJsonTest, ASampleBatchKeepsItsPointsUpToTheLimitAndSaysHowManyThereWere) {
  SampleBatch b{"v7", "gps", {}, {}, 123, 5};
  for (int i = 0; i < 3; ++i) {
    wire::Point p{1000 + i, static_cast<uint32_t>(i), 0.0, 48.5 + i, 2.25, true};
    b.points.push_back(p);
  }
  const auto d = Json(b, 20, 2);
  EXPECT_STREQ(d["node"].GetString(), "n1");
  EXPECT_STREQ(d["kind"].GetString(), "samples");
  EXPECT_STREQ(d["vehicle"].GetString(), "v7");
  EXPECT_STREQ(d["sensor"].GetString(), "gps");
  EXPECT_EQ(d["partition"].GetUint(), 5u);
  EXPECT_EQ(d["received_ns"].GetInt64(), 123);
  EXPECT_FALSE(d.HasMember("restored"));
  EXPECT_EQ(d["points_total"].GetUint(), 3u);
  ASSERT_EQ(d["points"].Size(), 2u);
  EXPECT_EQ(d["points"][1]["ts_ns"].GetInt64(), 1001);
  EXPECT_EQ(d["points"][1]["seq"].GetUint(), 1u);
  EXPECT_DOUBLE_EQ(d["points"][1]["lat"].GetDouble(), 49.5);
  EXPECT_DOUBLE_EQ(d["points"][1]["lon"].GetDouble(), 2.25);
  EXPECT_FALSE(d["points"][1].HasMember("value"));
}

TEST(TapJsonTest, AWindowNamesItsSensorsAndCutsItsRows) {
  WindowBatch w;
  w.window_ns = 5'000'000'000;
  w.sensors =
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"speed", "soc"});
  for (const char* v : {"a", "b", "c"}) {
    w.AddRow(v, {Slot{wire::Point{4, 1, 12.5}, std::nullopt}, Slot{}});
  }
  const auto d = Json(w, 2);
  EXPECT_STREQ(d["kind"].GetString(), "window");
  EXPECT_EQ(d["window_ns"].GetInt64(), 5'000'000'000);
  EXPECT_EQ(d["rows_total"].GetUint(), 3u);
  ASSERT_EQ(d["rows"].Size(), 2u);
  const auto& row = d["rows"][1];
  EXPECT_STREQ(row["vehicle"].GetString(), "b");
  EXPECT_DOUBLE_EQ(row["slots"]["speed"]["before"]["value"].GetDouble(), 12.5);
  EXPECT_TRUE(row["slots"]["speed"]["after"].IsNull());
  EXPECT_TRUE(row["slots"]["soc"]["before"].IsNull());
}

TEST(TapJsonTest, StatusPartitionTickAndNonFiniteValues) {
  auto d = Json(StatusEvent{"v1", false, 77, 3, {}});
  EXPECT_STREQ(d["kind"].GetString(), "status");
  EXPECT_STREQ(d["status"].GetString(), "off");
  EXPECT_EQ(d["at_ns"].GetInt64(), 77);

  PartitionEvent e;
  e.kind = PartitionEvent::Kind::kRevoked;
  e.partition = 9;
  d = Json(e);
  EXPECT_STREQ(d["event"].GetString(), "revoked");
  EXPECT_EQ(d["partition"].GetUint(), 9u);
  EXPECT_FALSE(d.HasMember("emitted"));
  e.kind = PartitionEvent::Kind::kAssigned;
  e.emitted = EmittedWindows{{"windows", 42}, {"minutes", 40}};
  d = Json(e);
  EXPECT_EQ(d["emitted"]["windows"].GetInt64(), 42);
  EXPECT_EQ(d["emitted"]["minutes"].GetInt64(), 40);

  d = Json(Tick{99, true, false});
  EXPECT_STREQ(d["kind"].GetString(), "tick");
  EXPECT_TRUE(d["drain"].GetBool());

  // JSON has no NaN: written as null, the line stays valid.
  d = Json(SampleBatch{"v", "speed", {wire::Point{1, 0, std::nan("")}}, {}});
  EXPECT_TRUE(d["points"][0]["value"].IsNull());
}

std::optional<TapOptions> Parse(const std::map<std::string, std::string>& params,
                                std::string& error) {
  return ParseTapOptions(
      [&](const std::string& name) -> std::optional<std::string> {
        const auto it = params.find(name);
        if (it == params.end()) return std::nullopt;
        return it->second;
      },
      error);
}

TEST(TapOptionsTest, DefaultsValuesAndClearErrors) {
  std::string error;
  auto o = Parse({}, error);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->count, 10u);
  EXPECT_EQ(o->every, 1u);
  EXPECT_FALSE(o->ticks);
  o = Parse({{"count", "3"}, {"every", "7"}, {"ticks", "1"}, {"timeout_ms", "250"}}, error);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->count, 3u);
  EXPECT_EQ(o->every, 7u);
  EXPECT_TRUE(o->ticks);
  EXPECT_EQ(o->timeout, 250ms);
  for (const auto& [name, value] : std::map<std::string, std::string>{{"count", "0"},
                                                                      {"count", "1001"},
                                                                      {"every", "-1"},
                                                                      {"timeout_ms", "60001"},
                                                                      {"ticks", "yes"}}) {
    error.clear();
    EXPECT_FALSE(Parse({{name, value}}, error)) << name << "=" << value;
    EXPECT_NE(error.find(name), std::string::npos) << error;
  }
  EXPECT_FALSE(Parse({{"count", "5x"}}, error));
  EXPECT_EQ(error, "count must be a whole number in 1..1000, not '5x'");
}

Message Sample(int64_t ts) { return MakeMessage(SampleBatch{"v", "speed", {wire::Point{ts}}, {}}); }

TEST(TapPointTest, TakesEveryNthMessageButNoTicksUntilItHasItsCount) {
  TapPoint tap("n1");
  EXPECT_FALSE(tap.armed());
  TapOptions o;
  o.count = 3;
  o.every = 2;
  o.timeout = 30s;
  std::atomic<bool> done{false};
  std::thread feeder([&] {
    int64_t ts = 0;
    while (!done) {
      if (!tap.armed()) {
        std::this_thread::yield();
        continue;
      }
      tap.Offer(MakeMessage(Tick{ts}));  // not taken, not counted
      tap.Offer(Sample(++ts));
    }
  });
  const TapPoint::Result r = tap.Collect(o);
  done = true;
  feeder.join();
  EXPECT_EQ(r.outcome, TapPoint::Outcome::kCollected);
  ASSERT_EQ(r.lines.size(), 3u);
  std::vector<int64_t> ts;
  for (const auto& line : r.lines) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    ts.push_back(d["points"][0]["ts_ns"].GetInt64());
  }
  EXPECT_EQ(ts[1] - ts[0], 2);
  EXPECT_EQ(ts[2] - ts[1], 2);
  EXPECT_FALSE(tap.armed());  // nothing more is looked at once the tap is complete
}

TEST(TapPointTest, ATimeOutReturnsWhatCameASecondTapIsRefusedAndCancelEndsIt) {
  TapPoint tap("n1");
  TapOptions o;
  o.count = 5;
  o.timeout = 200ms;
  auto first = std::async(std::launch::async, [&] {
    while (!tap.armed()) std::this_thread::yield();
    tap.Offer(Sample(1));
  });
  const auto r = tap.Collect(o);
  first.get();
  EXPECT_EQ(r.outcome, TapPoint::Outcome::kTimedOut);
  EXPECT_EQ(r.lines.size(), 1u);

  o.timeout = 60s;
  auto running = std::async(std::launch::async, [&] { return tap.Collect(o); });
  while (!tap.armed()) std::this_thread::yield();
  TapOptions quick;
  quick.timeout = 1ms;
  EXPECT_EQ(tap.Collect(quick).outcome, TapPoint::Outcome::kBusy);
  tap.Cancel();
  EXPECT_EQ(running.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(running.get().outcome, TapPoint::Outcome::kCancelled);
  EXPECT_EQ(tap.Collect(quick).outcome, TapPoint::Outcome::kCancelled);
}

}  // namespace
}  // namespace fleetflow
