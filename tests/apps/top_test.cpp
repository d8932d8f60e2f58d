// The arithmetic and drawing of `fleetflow top`: endpoints, counter rates across resets, bucket
// deltas and the histogram quantile, the number formats, and a worker's view and the fleet's
// total computed from the engine's own expositions taken two seconds apart.
#include "top.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "metrics.hpp"

namespace fleetflow::top {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(TopTest, Endpoints) {
  std::string error;
  const auto name = [&](std::string_view text) {
    const auto e = ParseEndpoint(text, error);
    return e ? e->host + " " + std::to_string(e->port) : "error: " + error;
  };
  EXPECT_EQ(name("127.0.0.1:9465"), "127.0.0.1 9465");
  EXPECT_EQ(name("http://worker-0.fleetflow:80"), "worker-0.fleetflow 80");
  EXPECT_EQ(name("http://localhost:9464/metrics"), "localhost 9464");
  EXPECT_EQ(name("http://localhost:9464/"), "localhost 9464");
  EXPECT_EQ(name("localhost"), "localhost 9464");
  EXPECT_EQ(name("[::1]:9000"), "::1 9000");
  EXPECT_EQ(name("[::1]"), "::1 9464");
  EXPECT_EQ(ParseEndpoint("[::1]:9000", error)->Name(), "[::1]:9000");
  EXPECT_EQ(ParseEndpoint("h:1", error)->Name(), "h:1");
  EXPECT_THAT(name("https://h:1"), HasSubstr("plain http"));
  for (const char* bad :
       {"h:", "h:0", "h:65536", "h:12a", ":9464", "", "::1", "[::1", "[::1]x", "h:1/other"}) {
    EXPECT_THAT(name(bad), StartsWith("error: ")) << bad;
  }
}

TEST(TopTest, CounterRatesCountFromZeroAfterAReset) {
  EXPECT_DOUBLE_EQ(CounterRate(100, 300, 2), 100);
  EXPECT_DOUBLE_EQ(CounterRate(300, 300, 0.5), 0);
  EXPECT_DOUBLE_EQ(CounterRate(1000, 40, 2), 20);  // restarted: 40 since
  EXPECT_DOUBLE_EQ(CounterRate(0, 7, 0.25), 28);
  EXPECT_TRUE(std::isnan(CounterRate(1, 2, 0)));
}

TEST(TopTest, BucketDeltasAndResets) {
  const Buckets before = {{0.5, 10}, {1, 20}, {kInf, 25}};
  const Buckets now = {{0.5, 10}, {1, 26}, {kInf, 40}};
  EXPECT_THAT(BucketDelta(before, now), ElementsAre(Pair(0.5, 0), Pair(1, 6), Pair(kInf, 15)));
  // The histogram went down: the worker restarted; what it has now came since.
  const Buckets restarted = {{0.5, 1}, {1, 2}, {kInf, 3}};
  EXPECT_EQ(BucketDelta(before, restarted), restarted);
  // No earlier reading: everything is new.
  EXPECT_EQ(BucketDelta({}, now), now);
  // Buckets read a moment apart within one scrape never make the cumulative delta fall.
  EXPECT_THAT(BucketDelta({{1, 5}, {kInf, 5}}, {{1, 9}, {kInf, 8}}),
              ElementsAre(Pair(1, 4), Pair(kInf, 4)));
}

TEST(TopTest, AddBucketsAlignsBounds) {
  EXPECT_THAT(AddBuckets({{1, 2}, {kInf, 3}}, {{0.5, 1}, {1, 4}, {kInf, 4}}),
              ElementsAre(Pair(0.5, 1), Pair(1, 6), Pair(kInf, 7)));
  EXPECT_THAT(AddBuckets({}, {{1, 4}, {kInf, 4}}), ElementsAre(Pair(1, 4), Pair(kInf, 4)));
}

TEST(TopTest, HistogramQuantileAsPrometheusComputesIt) {
  // 100 rows: 20 at or below 0.5 s, 70 more up to 1 s, 10 more up to 2 s.
  const Buckets b = {{0.5, 20}, {1, 90}, {2, 100}, {kInf, 100}};
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.99, b), 1 + 1.0 * (99 - 90) / 10);  // 1.9
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.5, b), 0.5 + 0.5 * (50 - 20) / 70);
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.1, b), 0.5 * 10 / 20);  // the first bucket starts at 0
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.9, b), 1);
  // In the +Inf bucket: the largest finite bound is all that is known.
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.99, {{0.5, 1}, {1, 2}, {kInf, 100}}), 1);
  // Empty buckets below do not pull the quantile down.
  EXPECT_DOUBLE_EQ(HistogramQuantile(0.5, {{0.5, 0}, {1, 0}, {2, 4}, {kInf, 4}}), 1.5);
  EXPECT_TRUE(std::isnan(HistogramQuantile(0.99, {{0.5, 0}, {kInf, 0}})));
  EXPECT_TRUE(std::isnan(HistogramQuantile(0.99, {})));
}

TEST(TopTest, NumbersFitTheColumns) {
  EXPECT_EQ(Human(0), "0");
  EXPECT_EQ(Human(7), "7");
  EXPECT_EQ(Human(0.25), "0.25");
  EXPECT_EQ(Human(12.34), "12.3");
  EXPECT_EQ(Human(950.4), "950");
  EXPECT_EQ(Human(999), "999");
  EXPECT_EQ(Human(1234), "1.23k");
  EXPECT_EQ(Human(45678), "45.7k");
  EXPECT_EQ(Human(789123), "789k");
  EXPECT_EQ(Human(1234567), "1.23M");
  EXPECT_EQ(Human(2.5e9), "2.50G");
  EXPECT_EQ(Human(std::nan("")), "-");
  EXPECT_EQ(Seconds(0.85), "850ms");
  EXPECT_EQ(Seconds(1.2), "1.20s");
  EXPECT_EQ(Seconds(45), "45.0s");
  EXPECT_EQ(Seconds(120), "120s");
}

/// A worker's metrics as the engine exposes them: a jetstream pipeline of four nodes.
struct FakeWorker {
  static constexpr double kStarted = 1.8e9;  // process_start_time_seconds
  Metrics m;
  const fleetflow::Labels src = {{"node", "telemetry"}, {"operator", "nats_source"}};
  const fleetflow::Labels kv = {{"node", "last_values"}, {"operator", "keyed_last_value"}};
  const fleetflow::Labels join = {{"node", "windows"}, {"operator", "window_join"}};
  const fleetflow::Labels sink = {{"node", "database"}, {"operator", "timescale_sink"}};
  Histogram& latency;

  explicit FakeWorker(double partitions)
      : latency(m.GetHistogram("row_latency_seconds", "Latency.", {0.5, 1, 2, 5}, sink)) {
    m.GetGauge("build_info", "Build.", {{"version", "1.2.3"}}).Set(1);
    m.GetStandardMetric("process_start_time_seconds", "Start.").Set(kStarted);
    m.GetStandardMetric("process_resident_memory_bytes", "RSS.").Set(48 * 1024 * 1024);
    m.GetGauge("partitions_owned", "Owned.", src).Set(partitions);
    m.GetGauge("workers", "Workers.", src).Set(2);
    m.GetGauge("consumer_pending", "Lag.", src).Set(1500);
    m.GetGauge("graph_queued_messages", "Queued.").Set(12);
    m.GetGauge("graph_sources_blocked", "Blocked.").Set(0);
    m.GetGauge("sink_pending_rows", "Pending.", sink).Set(250);
    m.GetGauge("sink_blocked", "Blocked.", sink).Set(0);
    for (const auto* l : {&src, &kv, &join, &sink}) m.GetCounter("operator_errors", "E.", *l);
  }
  /// One second of traffic: `messages` in, as many samples, rows for a tenth of them.
  void Traffic(uint64_t messages) {
    m.GetCounter("messages_in", "In.", src).Inc(messages);
    m.GetCounter("samples_in", "Samples.", src).Inc(messages);
    auto rejected = src;
    rejected.emplace_back("reason", "bad_subject");
    m.GetCounter("input_rejected", "Rejected.", rejected).Inc(messages / 100);
    m.GetCounter("samples_accepted", "Accepted.", kv).Inc(messages);
    m.GetCounter("samples_stale", "Stale.", kv).Inc(messages / 50);
    m.GetCounter("kv_writes", "KV.", kv).Inc(messages / 20);
    m.GetCounter("rows_emitted", "Rows.", join).Inc(messages / 10);
    m.GetCounter("sink_rows_written", "Written.", sink).Inc(messages / 10);
    latency.Observe(0.75, messages / 10);
  }
  Scrape Take(std::chrono::steady_clock::time_point at) const {
    Scrape s;
    s.at = at;
    s.unix_s = kStarted + 3725;  // up for 1 h 2 min 5 s
    s.up = true;
    s.ready = true;
    s.samples = prom::ParseText(m.Exposition()).samples;
    return s;
  }
};

std::vector<std::string> Cells(const WorkerView& v, const std::string& node) {
  std::vector<std::string> out;
  for (const NodeRow& n : v.nodes) {
    if (n.node != node) continue;
    for (const auto& c : n.cells) out.push_back(!c ? "absent" : Human(*c));
  }
  return out;
}

TEST(TopTest, AWorkersViewFromTwoScrapes) {
  const auto t0 = std::chrono::steady_clock::now();
  FakeWorker w(8);
  w.Traffic(1000);
  const Scrape first = w.Take(t0);
  w.Traffic(2000);
  w.Traffic(2000);
  const Scrape second = w.Take(t0 + std::chrono::seconds(2));

  const WorkerView once = ComputeView("h:1", nullptr, first);
  EXPECT_FALSE(once.rates);
  const WorkerView v = ComputeView("h:1", &first, second);
  ASSERT_TRUE(v.up);
  EXPECT_TRUE(v.rates);
  EXPECT_EQ(v.version, "1.2.3");
  EXPECT_EQ(v.uptime_s, 3725);
  EXPECT_EQ(v.partitions, 8);
  EXPECT_EQ(v.workers, 2);
  EXPECT_EQ(v.lag, 1500);
  EXPECT_EQ(v.queued, 12);
  EXPECT_EQ(v.errors_per_s, 0);
  ASSERT_EQ(v.nodes.size(), 4u);
  // Sources first, then state, joins, sinks.
  EXPECT_EQ(v.nodes[0].node, "telemetry");
  EXPECT_EQ(v.nodes[0].op, "nats_source");
  EXPECT_EQ(v.nodes[1].node, "last_values");
  EXPECT_EQ(v.nodes[2].node, "windows");
  EXPECT_EQ(v.nodes[3].node, "database");
  // MSGS/s SAMPLES/s REJECT/s ACCEPT/s ROWS/s WRITTEN/s PENDING BLOCKED P99 KV/s: 4000 messages
  // in 2 s.
  EXPECT_THAT(Cells(v, "telemetry"), ElementsAre("2.00k", "2.00k", "20", "absent", "absent",
                                                 "absent", "absent", "absent", "absent", "absent"));
  EXPECT_THAT(Cells(v, "last_values"), ElementsAre("absent", "absent", "40", "2.00k", "absent",
                                                   "absent", "absent", "absent", "absent", "100"));
  EXPECT_THAT(Cells(v, "windows"), ElementsAre("absent", "absent", "absent", "absent", "200",
                                               "absent", "absent", "absent", "absent", "absent"));
  // p99 of 400 rows at 0.75 s (the 0.5..1 bucket): 0.5 + 0.5 * 0.99.
  EXPECT_THAT(Cells(v, "database"), ElementsAre("absent", "absent", "absent", "absent", "absent",
                                                "200", "250", "0", "0.99", "absent"));
  EXPECT_DOUBLE_EQ(*v.nodes[3].cells[8], 0.995);

  // Drawn: the rates, and "..." where the first scrape has none yet.
  const auto lines = RenderFrame({v}, "title", false);
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  EXPECT_THAT(text, HasSubstr("h:1  up  v1.2.3  uptime 1h02m05s  rss 48.0 MiB  ready  workers 2  "
                              "partitions 8  lag 1.50k  queued 12  sources blocked 0\n"));
  EXPECT_THAT(text, HasSubstr("  telemetry   nats_source       2.00k     2.00k       20        -"));
  EXPECT_THAT(text, HasSubstr("995ms"));
  EXPECT_THAT(text, Not(HasSubstr("fleet")));  // one worker: no total
  for (const auto& l : lines) EXPECT_LE(l.size(), 120u) << l;
  const auto first_lines = RenderFrame({once}, "title", false);
  EXPECT_THAT(first_lines[4], AllOf(HasSubstr("telemetry"), HasSubstr("...")));
}

TEST(TopTest, ARestartedWorkerCountsFromZeroAndANewNodeToo) {
  const auto t0 = std::chrono::steady_clock::now();
  FakeWorker before(8);
  for (int i = 0; i < 10; ++i) before.Traffic(1000);
  FakeWorker after(8);  // the process restarted: every counter starts again
  after.Traffic(500);
  const Scrape b = before.Take(t0);
  const WorkerView v = ComputeView("h:1", &b, after.Take(t0 + std::chrono::seconds(1)));
  EXPECT_EQ(Cells(v, "telemetry")[0], "500");
  EXPECT_EQ(Cells(v, "database")[5], "50");
  EXPECT_DOUBLE_EQ(*v.nodes[3].cells[8], 0.995);  // the new histogram, whole

  // A node that was not there at the previous scrape: its counts are the interval's.
  FakeWorker grown(8);
  grown.Traffic(0);
  grown.m.GetCounter("messages_in", "In.", {{"node", "extra"}, {"operator", "nats_source"}})
      .Inc(30);
  const WorkerView g = ComputeView("h:1", &b, grown.Take(t0 + std::chrono::seconds(3)));
  EXPECT_EQ(Cells(g, "extra")[0], "10");
  EXPECT_EQ(Cells(g, "extra")[2], "0") << "a source that rejected nothing yet: 0, not absent";
  // A filter between the source and the state: what it drops counts as rejected.
  grown.m
      .GetCounter("samples_out_of_range", "Out.",
                  {{"node", "ranges"}, {"operator", "range_filter"}, {"sensor", "speed"}})
      .Inc(12);
  const WorkerView f = ComputeView("h:1", &b, grown.Take(t0 + std::chrono::seconds(3)));
  EXPECT_EQ(Cells(f, "ranges")[2], "4");
  ASSERT_EQ(f.nodes.size(), 6u);
  EXPECT_EQ(f.nodes[0].node, "extra");  // sources, by name
  EXPECT_EQ(f.nodes[1].node, "telemetry");
  EXPECT_EQ(f.nodes[2].node, "ranges");  // then the filter, before the state
  EXPECT_EQ(f.nodes[3].node, "last_values");
}

TEST(TopTest, TheFleetSumsTheWorkersThatAnswer) {
  const auto t0 = std::chrono::steady_clock::now();
  FakeWorker a(6), b(10);
  const Scrape a0 = a.Take(t0), b0 = b.Take(t0);
  a.Traffic(1000);
  b.Traffic(3000);
  b.latency.Observe(4, 100);  // late rows of b: the fleet's p99 is in the 2..5 s bucket
  const auto t1 = t0 + std::chrono::seconds(1);
  Scrape down;
  down.at = t1;
  down.error = "no answer (Connection error)";
  const std::vector<WorkerView> views = {ComputeView("a:1", &a0, a.Take(t1)),
                                         ComputeView("b:2", &b0, b.Take(t1)),
                                         ComputeView("c:3", nullptr, down)};
  const auto lines = RenderFrame(views, "title", false);
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  EXPECT_THAT(text, HasSubstr("\nc:3  DOWN  no answer (Connection error)\n"));
  EXPECT_THAT(text, HasSubstr("\nfleet  2 of 3 up  partitions 16  lag 3.00k\n"));
  const std::string total = lines.back();
  EXPECT_THAT(total, StartsWith("  total "));
  // 4000 messages, 40 rejected + 80 stale, 400 rows; sinks: 500 pending, none blocked.
  EXPECT_THAT(total,
              HasSubstr(" 4.00k     4.00k      120    4.00k    400       400     500       0"));
  // 500 rows, 100 of them at 4 s: the 99th percentile 2 + 3 * (495 - 400) / 100 = 4.85 (b's own
  // is 2 + 3 * (396 - 300) / 100 = 4.88).
  EXPECT_THAT(total, HasSubstr(" 4.85s "));
  EXPECT_THAT(text, HasSubstr(" 4.88s "));
  for (const auto& l : lines) EXPECT_LE(l.size(), 120u) << l;

  const auto colored = RenderFrame(views, "title", true);
  EXPECT_THAT(colored[colored.size() - 3], HasSubstr("\x1b[1;31m2 of 3 up\x1b[0m"));
}

/// A rule node's metrics on a FakeWorker, as the rule operator registers them: per rule, its
/// alarms raised and cleared and those active now.
struct FakeRules {
  Metrics& m;
  const fleetflow::Labels node = {{"node", "alarms"}, {"operator", "rule"}};

  FakeRules(Metrics& metrics, std::initializer_list<const char*> rules) : m(metrics) {
    m.GetCounter("rule_rows_evaluated", "Evaluated.", node).Inc(100);
    for (const char* rule : rules) Set(rule, 0, 0, 0);
  }
  fleetflow::Labels Of(const char* rule) const {
    auto l = node;
    l.emplace_back("rule", rule);
    return l;
  }
  /// `raised` and `cleared` more, `active` now.
  void Set(const char* rule, uint64_t raised, uint64_t cleared, double active) {
    m.GetCounter("alarms_raised", "Raised.", Of(rule)).Inc(raised);
    m.GetCounter("alarms_cleared", "Cleared.", Of(rule)).Inc(cleared);
    m.GetGauge("alarms_active", "Active.", Of(rule)).Set(active);
  }
};

std::string Text(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  return text;
}

TEST(TopTest, ActiveAlarmsByRuleUnderTheWorkersTableAndSummedForTheFleet) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto t1 = t0 + std::chrono::seconds(2);
  FakeWorker a(8), b(8);
  FakeRules ra(a.m, {"low_soc", "overspeed", "torque_spike"});
  FakeRules rb(b.m, {"low_soc", "overspeed", "torque_spike"});
  a.Traffic(1000);
  b.Traffic(1000);
  ra.Set("overspeed", 2, 0, 2);
  const Scrape a0 = a.Take(t0), b0 = b.Take(t0);
  // In 2 s: a raises 3 alarms and clears 1 (overspeed 3 and low_soc 1 active), b raises one.
  ra.Set("overspeed", 2, 1, 3);
  ra.Set("low_soc", 1, 0, 1);
  rb.Set("overspeed", 1, 0, 1);
  const WorkerView va = ComputeView("a:1", &a0, a.Take(t1));
  const WorkerView vb = ComputeView("b:2", &b0, b.Take(t1));

  ASSERT_EQ(va.alarms.size(), 3u);  // every rule, by name
  EXPECT_EQ(va.alarms[0].rule, "low_soc");
  EXPECT_EQ(va.alarms[0].active, 1);
  EXPECT_DOUBLE_EQ(va.alarms[0].raised_per_s, 0.5);
  EXPECT_EQ(va.alarms[1].rule, "overspeed");
  EXPECT_EQ(va.alarms[1].active, 3);
  EXPECT_DOUBLE_EQ(va.alarms[1].raised_per_s, 1);
  EXPECT_DOUBLE_EQ(va.alarms[1].cleared_per_s, 0.5);
  EXPECT_EQ(va.alarms[2].rule, "torque_spike");
  EXPECT_EQ(va.alarms[2].active, 0);
  // The rule node ends its branch: after the windows, with the sinks.
  ASSERT_EQ(va.nodes.size(), 5u);
  EXPECT_EQ(va.nodes[2].node, "windows");
  EXPECT_EQ(va.nodes[3].node, "alarms");
  EXPECT_EQ(va.nodes[4].node, "database");

  // One worker: the rules with alarms active, most first, under its table.
  const auto one = RenderFrame({va}, "title", false);
  EXPECT_EQ(one.back(), "  alarms active: overspeed 3, low_soc 1  raised 1.50/s  cleared 0.50/s");
  EXPECT_THAT(one[one.size() - 2], HasSubstr("  database "));
  // Several: each worker's, and the fleet's under the total.
  const auto lines = RenderFrame({va, vb}, "title", false);
  const std::string text = Text(lines);
  EXPECT_THAT(text, HasSubstr("\n  alarms active: overspeed 3, low_soc 1  raised 1.50/s  "
                              "cleared 0.50/s\n\nb:2  up"));
  EXPECT_THAT(text, HasSubstr("\n  alarms active: overspeed 1  raised 0.50/s  cleared 0/s\n\n"
                              "fleet  2 of 2 up"));
  EXPECT_THAT(lines[lines.size() - 2], StartsWith("  total "));
  EXPECT_EQ(lines.back(), "  alarms active: overspeed 4, low_soc 1  raised 2/s  cleared 0.50/s");
  for (const auto& l : lines) EXPECT_LE(l.size(), 120u) << l;
  const auto colored = RenderFrame({va}, "title", true);
  EXPECT_THAT(colored.back(), HasSubstr("\x1b[33moverspeed 3\x1b[0m, \x1b[33mlow_soc 1\x1b[0m"));

  // No alarm active; the first scrape has no rates yet.
  FakeWorker c(8);
  FakeRules rc(c.m, {"low_soc"});
  const WorkerView first = ComputeView("c:3", nullptr, c.Take(t0));
  ASSERT_EQ(first.alarms.size(), 1u);
  EXPECT_TRUE(std::isnan(first.alarms[0].raised_per_s));
  EXPECT_EQ(RenderFrame({first}, "title", false).back(),
            "  alarms active: none  raised ...  cleared ...");
  const auto fleet_first = RenderFrame({first, vb}, "title", false);
  EXPECT_EQ(fleet_first.back(), "  alarms active: overspeed 1  raised ...  cleared ...");

  // A worker restarted: its counters count from 0 again.
  FakeWorker restarted(8);
  FakeRules rr(restarted.m, {"overspeed"});
  rr.Set("overspeed", 1, 0, 1);
  const WorkerView vr = ComputeView("a:1", &a0, restarted.Take(t1));
  ASSERT_EQ(vr.alarms.size(), 1u);
  EXPECT_DOUBLE_EQ(vr.alarms[0].raised_per_s, 0.5);
}

TEST(TopTest, NoAlarmsWithoutARuleNode) {
  const auto t0 = std::chrono::steady_clock::now();
  FakeWorker a(8), b(8);
  const Scrape a0 = a.Take(t0), b0 = b.Take(t0);
  a.Traffic(100);
  const auto t1 = t0 + std::chrono::seconds(1);
  const std::vector<WorkerView> views = {ComputeView("a:1", &a0, a.Take(t1)),
                                         ComputeView("b:2", &b0, b.Take(t1))};
  EXPECT_TRUE(views[0].alarms.empty());
  EXPECT_THAT(Text(RenderFrame(views, "title", false)), Not(HasSubstr("alarms")));
}

}  // namespace
}  // namespace fleetflow::top
