// The Prometheus exposition: families, labels, exact numbers, histograms, collectors and the
// process gauges.
#include "metrics.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <regex>
#include <stdexcept>

namespace fleetflow {
namespace {

using ::testing::HasSubstr;

/// The value of the sample line `name` (with its labels), or -1 when absent.
double Sample(const std::string& exposition, const std::string& name) {
  const std::regex line("(^|\n)" +
                        std::regex_replace(name, std::regex(R"([{}\[\]().*+?^$|\\])"), R"(\$&)") +
                        " ([^\n]+)");
  std::smatch m;
  return std::regex_search(exposition, m, line) ? std::stod(m[2]) : -1;
}

TEST(MetricsTest, CountersAndGaugesWithLabels) {
  Metrics m;
  m.GetCounter("messages_in", "Messages received.", {{"node", "in"}}).Inc(3);
  m.GetCounter("messages_in", "Messages received.", {{"node", "in2"}}).Inc();
  m.GetGauge("queued", "Queued.", {{"node", "a\"b"}}).Set(2.5);
  const std::string text = m.Exposition();
  EXPECT_THAT(text, HasSubstr("# HELP fleetflow_messages_in_total Messages received.\n"
                              "# TYPE fleetflow_messages_in_total counter\n"));
  EXPECT_EQ(Sample(text, "fleetflow_messages_in_total{node=\"in\"}"), 3);
  EXPECT_EQ(Sample(text, "fleetflow_queued{node=\"a\\\"b\"}"), 2.5);
  EXPECT_EQ(m.CounterSum("messages_in"), 4u);
}

TEST(MetricsTest, ARemovedGaugeSeriesLeavesTheExposition) {
  Metrics m;
  m.GetGauge("partition_pending", "Lag.", {{"partition", "1"}}).Set(5);
  m.GetGauge("partition_pending", "Lag.", {{"partition", "2"}}).Set(7);
  m.RemoveGauge("partition_pending", {{"partition", "1"}});
  m.RemoveGauge("partition_pending", {{"partition", "9"}});  // unknown: nothing happens
  m.RemoveGauge("no_such_gauge", {});
  const std::string text = m.Exposition();
  EXPECT_THAT(text, Not(HasSubstr("partition=\"1\"")));
  EXPECT_EQ(Sample(text, "fleetflow_partition_pending{partition=\"2\"}"), 7);
  EXPECT_EQ(m.GaugeSum("partition_pending"), 7);
}

TEST(MetricsTest, WholeExpositionInNameOrder) {
  Metrics m;
  m.GetGauge("b_gauge", "A gauge.", {{"node", "n2"}}).Set(-1);
  m.GetGauge("b_gauge", "A gauge.", {{"node", "n1"}}).Set(0.25);
  m.GetCounter("a_count", "A counter.").Inc(7);
  EXPECT_EQ(m.Exposition(),
            "# HELP fleetflow_a_count_total A counter.\n"
            "# TYPE fleetflow_a_count_total counter\n"
            "fleetflow_a_count_total 7\n"
            "# HELP fleetflow_b_gauge A gauge.\n"
            "# TYPE fleetflow_b_gauge gauge\n"
            "fleetflow_b_gauge{node=\"n1\"} 0.25\n"
            "fleetflow_b_gauge{node=\"n2\"} -1\n");
}

TEST(MetricsTest, NumbersAreNotRounded) {
  Metrics m;
  m.GetGauge("resident_bytes", "Bytes.").Set(1234567);
  m.GetGauge("backlog", "Messages.", {{"node", "in"}}).Set(987654321012);
  m.GetCounter("bytes", "Bytes.").Inc(uint64_t{1} << 40);
  m.GetCounter("big", "Up to 2^53 exactly.").Inc(uint64_t{1} << 53);
  const std::string text = m.Exposition();
  EXPECT_THAT(text, HasSubstr("\nfleetflow_resident_bytes 1234567\n"));
  EXPECT_THAT(text, HasSubstr("\nfleetflow_backlog{node=\"in\"} 987654321012\n"));
  EXPECT_THAT(text, HasSubstr("\nfleetflow_bytes_total 1099511627776\n"));
  EXPECT_THAT(text, HasSubstr("\nfleetflow_big_total 9007199254740992\n"));
  EXPECT_EQ(m.CounterSum("bytes"), uint64_t{1} << 40);
}

TEST(MetricsTest, HistogramBucketsSumAndCount) {
  Metrics m;
  const Labels labels = {{"node", "sink"}, {"operator", "timescale_sink"}};
  Histogram& h = m.GetHistogram("write_seconds", "Write duration.", {0.01, 0.1, 1}, labels);
  EXPECT_EQ(&h, &m.GetHistogram("write_seconds", "Write duration.", {0.01, 0.1, 1}, labels));
  h.Observe(0.005);
  h.Observe(0.1);  // on a bound: counted in it
  h.Observe(0.5);
  h.Observe(2.5, 4);
  m.GetHistogram("write_seconds", "Write duration.", {0.01, 0.1, 1},
                 {{"node", "other"}, {"operator", "timescale_sink"}})
      .Observe(0.05);
  EXPECT_EQ(h.count(), 7u);
  EXPECT_DOUBLE_EQ(h.sum(), 10.605);
  EXPECT_EQ(m.HistogramCount("write_seconds"), 8u);
  EXPECT_EQ(m.HistogramCount("unknown"), 0u);

  const std::string text = m.Exposition();
  const std::string l = "node=\"sink\",operator=\"timescale_sink\"";
  EXPECT_THAT(
      text,
      HasSubstr("# HELP fleetflow_write_seconds Write duration.\n"
                "# TYPE fleetflow_write_seconds histogram\n"
                "fleetflow_write_seconds_count{node=\"other\",operator=\"timescale_sink\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleetflow_write_seconds_count{" + l + "} 7\n" +
                              "fleetflow_write_seconds_sum{" + l + "} 10.605\n" +
                              "fleetflow_write_seconds_bucket{" + l + ",le=\"0.01\"} 1\n" +
                              "fleetflow_write_seconds_bucket{" + l + ",le=\"0.1\"} 2\n" +
                              "fleetflow_write_seconds_bucket{" + l + ",le=\"1\"} 3\n" +
                              "fleetflow_write_seconds_bucket{" + l + ",le=\"+Inf\"} 7\n"));
  // The other label set comes first: families and label sets are ordered.
  EXPECT_LT(text.find("node=\"other\""), text.find("node=\"sink\""));
}

TEST(MetricsTest, HistogramCountsMany) {
  Metrics m;
  Histogram& h = m.GetHistogram("latency_seconds", "Latency.", {1, 10});
  h.Observe(5, 1000);
  h.Observe(-3, 2);  // below every bound: the first bucket
  h.Observe(std::nan(""), 0);
  const std::string text = m.Exposition();
  EXPECT_THAT(text, HasSubstr("fleetflow_latency_seconds_count 1002\n"
                              "fleetflow_latency_seconds_sum 4994\n"
                              "fleetflow_latency_seconds_bucket{le=\"1\"} 2\n"
                              "fleetflow_latency_seconds_bucket{le=\"10\"} 1002\n"
                              "fleetflow_latency_seconds_bucket{le=\"+Inf\"} 1002\n"));
}

TEST(MetricsTest, ANameIsOneKindOfMetric) {
  Metrics m;
  m.GetCounter("things", "Things.");
  EXPECT_THROW(m.GetGauge("things", "Things."), std::logic_error);
  EXPECT_THROW(m.GetHistogram("things", "Things.", {1}), std::logic_error);
  EXPECT_THROW(m.GetHistogram("unsorted", "Bad buckets.", {2, 1}), std::invalid_argument);
  m.GetGauge("still_fine", "Fine.").Set(1);
  EXPECT_THAT(m.Exposition(), HasSubstr("\nfleetflow_still_fine 1\n"));
}

TEST(MetricsTest, CollectorsRunAtEveryScrape) {
  Metrics m;
  int runs = 0;
  m.AddCollector([&] { m.GetGauge("scrapes", "Scrapes.").Set(++runs); });
  m.Exposition();
  EXPECT_EQ(Sample(m.Exposition(), "fleetflow_scrapes"), 2);
}

TEST(MetricsTest, StandardProcessMetricsUnprefixedAndBuildInfo) {
  Metrics m;
  AddProcessMetrics(m);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // Some CPU time to count, and a descriptor more to see.
  volatile double x = 0;
  for (int i = 0; i < 20'000'000; ++i) x = x + i * 0.5;
  const std::string text = m.Exposition();
  EXPECT_GT(Sample(text, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(Sample(text, "process_virtual_memory_bytes"),
            Sample(text, "process_resident_memory_bytes"));
  EXPECT_GT(Sample(text, "process_cpu_seconds_total"), 0);
  // The test process started before this test, and not a day ago.
  EXPECT_LE(Sample(text, "process_start_time_seconds"), now + 1);
  EXPECT_GT(Sample(text, "process_start_time_seconds"), now - 86400);
  EXPECT_GE(Sample(text, "process_open_fds"), 3);  // stdin, stdout, stderr
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(Sample(text, "process_max_fds"), static_cast<double>(limit.rlim_cur));
  EXPECT_EQ(Sample(text, "fleetflow_build_info{version=\"" + std::string(BuildVersion()) + "\"}"),
            1);
  // The standard names and types, without the fleetflow_ prefix, and none of the old ones.
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_resident_memory_bytes gauge"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("fleetflow_process_")));
  // A descriptor opened shows at the next scrape.
  const double fds = Sample(text, "process_open_fds");
  const int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(Sample(m.Exposition(), "process_open_fds"), fds + 1);
  close(fd);
}

TEST(MetricsTest, StandardMetricsKeepTheirNameAndSortAmongTheOthers) {
  Metrics m;
  m.GetGauge("zeta", "Z.").Set(1);
  m.GetStandardMetric("process_things_total", "Things.", true).Set(2.5);
  m.GetStandardMetric("go_like_gauge", "G.").Set(3);
  EXPECT_EQ(&m.GetStandardMetric("go_like_gauge", "G."),
            &m.GetStandardMetric("go_like_gauge", "G."));
  const std::string text = m.Exposition();
  EXPECT_THAT(text, HasSubstr("# TYPE process_things_total counter\nprocess_things_total 2.5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE go_like_gauge gauge\ngo_like_gauge 3\n"));
  EXPECT_LT(text.find("fleetflow_zeta"), text.find("go_like_gauge"));
  EXPECT_LT(text.find("go_like_gauge"), text.find("process_things_total"));
}

}  // namespace
}  // namespace fleetflow
