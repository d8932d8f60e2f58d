// The Prometheus exposition: families, labels, collectors and the process gauges.
#include "metrics.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>

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

TEST(MetricsTest, CollectorsRunAtEveryScrape) {
  Metrics m;
  int runs = 0;
  m.AddCollector([&] { m.GetGauge("scrapes", "Scrapes.").Set(++runs); });
  m.Exposition();
  EXPECT_EQ(Sample(m.Exposition(), "fleetflow_scrapes"), 2);
}

TEST(MetricsTest, ProcessMemoryUptimeAndBuildInfo) {
  Metrics m;
  AddProcessMetrics(m);
  const std::string text = m.Exposition();
  EXPECT_GT(Sample(text, "fleetflow_process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(Sample(text, "fleetflow_process_uptime_seconds"), 0);
  EXPECT_LT(Sample(text, "fleetflow_process_uptime_seconds"), 60);
  EXPECT_EQ(Sample(text, "fleetflow_build_info{version=\"" + std::string(BuildVersion()) + "\"}"),
            1);
  EXPECT_THAT(text, HasSubstr("# TYPE fleetflow_process_resident_memory_bytes gauge"));
}

}  // namespace
}  // namespace fleetflow
