// The Prometheus text reader of `fleetflow top`: names, labels and their escapes, values with
// NaN and infinities, timestamps, comments; bad lines reported by number and skipped; and the
// engine's own exposition read back exactly.
#include "prom_text.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "metrics.hpp"

namespace fleetflow::prom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

Sample One(std::string_view line) {
  std::string error;
  const auto s = ParseSampleLine(line, error);
  EXPECT_TRUE(s.has_value()) << line << ": " << error;
  return s.value_or(Sample{});
}

std::string ErrorOf(std::string_view line) {
  std::string error;
  const auto s = ParseSampleLine(line, error);
  EXPECT_FALSE(s.has_value()) << line << " was read as a sample";
  return error;
}

TEST(PromTextTest, NameLabelsValueAndTimestamp) {
  Sample s = One(R"(fleetflow_messages_in_total{node="telemetry",operator="nats_source"} 1234)");
  EXPECT_EQ(s.name, "fleetflow_messages_in_total");
  EXPECT_THAT(s.labels, ElementsAre(Pair("node", "telemetry"), Pair("operator", "nats_source")));
  EXPECT_EQ(s.value, 1234);
  EXPECT_FALSE(s.timestamp_ms.has_value());
  EXPECT_EQ(s.Label("operator"), "nats_source");
  EXPECT_EQ(s.Label("le"), std::nullopt);

  s = One("up 1 1700000000123");
  EXPECT_TRUE(s.labels.empty());
  EXPECT_EQ(s.timestamp_ms, 1700000000123);
  s = One("  job:rate5m:sum {  a = \"1\" , b=\"2\", }\t-3.5e-2   -17  ");
  EXPECT_EQ(s.name, "job:rate5m:sum");
  EXPECT_THAT(s.labels, ElementsAre(Pair("a", "1"), Pair("b", "2")));
  EXPECT_DOUBLE_EQ(s.value, -0.035);
  EXPECT_EQ(s.timestamp_ms, -17);
  s = One("empty{} 0");
  EXPECT_TRUE(s.labels.empty());
}

TEST(PromTextTest, EscapedLabelValues) {
  const Sample s = One(R"(m{path="C:\\dir\\file",quote="say \"hi\"",lines="a\nb",brace="}{,="} 1)");
  EXPECT_THAT(s.labels, ElementsAre(Pair("path", "C:\\dir\\file"), Pair("quote", "say \"hi\""),
                                    Pair("lines", "a\nb"), Pair("brace", "}{,=")));
}

TEST(PromTextTest, SpecialAndSignedValues) {
  EXPECT_TRUE(std::isnan(One("m NaN").value));
  EXPECT_EQ(One("m +Inf").value, std::numeric_limits<double>::infinity());
  EXPECT_EQ(One("m -Inf").value, -std::numeric_limits<double>::infinity());
  EXPECT_EQ(One("m Inf").value, std::numeric_limits<double>::infinity());
  EXPECT_EQ(One("m +12").value, 12);
  EXPECT_EQ(One("m 9007199254740992").value, 9007199254740992.0);
  EXPECT_EQ(One("m 1.5E3").value, 1500);
  EXPECT_EQ(ParseValue("+Inf"), std::numeric_limits<double>::infinity());
  EXPECT_EQ(ParseValue("0.05"), 0.05);
  for (const char* bad : {"", "+", "++1", "+-1", "1x", " 1", "1 ", "0x10", "one"}) {
    EXPECT_EQ(ParseValue(bad), std::nullopt) << '"' << bad << '"';
  }
}

TEST(PromTextTest, BadLinesSayWhatIsWrong) {
  EXPECT_THAT(ErrorOf("m"), HasSubstr("no value after m"));
  EXPECT_THAT(ErrorOf("m{a=\"1\"}"), HasSubstr("no value after m"));
  EXPECT_THAT(ErrorOf("m abc"), HasSubstr("not a number: 'abc'"));
  EXPECT_THAT(ErrorOf("m{a=\"1} 2"), HasSubstr("without its closing quote"));
  EXPECT_THAT(ErrorOf(R"(m{a="\t"} 2)"), HasSubstr("unknown escape \\t"));
  EXPECT_THAT(ErrorOf("m{a=1} 2"), HasSubstr("expected '\"' to open the value of label a"));
  EXPECT_THAT(ErrorOf("m{a=\"1\" b=\"2\"} 2"), HasSubstr("expected ',' or '}'"));
  EXPECT_THAT(ErrorOf("m{a=\"1\",a=\"2\"} 2"), HasSubstr("label a given twice"));
  EXPECT_THAT(ErrorOf("m{1a=\"1\"} 2"), HasSubstr("expected a label name"));
  EXPECT_THAT(ErrorOf("m{a:b=\"1\"} 2"), HasSubstr("expected '='"));
  EXPECT_THAT(ErrorOf("m 1 2.5"), HasSubstr("not a timestamp"));
  EXPECT_THAT(ErrorOf("m 1 2 3"), HasSubstr("unexpected text after the timestamp"));
  EXPECT_THAT(ErrorOf("m{a=\"1\"}2"), HasSubstr("unexpected '2'"));
  EXPECT_THAT(ErrorOf("9m 1"), HasSubstr("expected a metric name"));
  EXPECT_THAT(ErrorOf("m-x 1"), HasSubstr("unexpected '-'"));
}

TEST(PromTextTest, CommentsAndBlankLinesAreSkippedBadLinesReportedTheRestRead) {
  const ParseResult r = ParseText(
      "# HELP a_total A counter.\r\n"
      "# TYPE a_total counter\r\n"
      "a_total 7\r\n"
      "\n"
      "   \t\n"
      "  # indented comment\n"
      "broken{x=\"1\" 3\n"
      "b{x=\"y\"} 2.5\n"
      "c NotANumber\n"
      "d 4");  // no final newline
  ASSERT_EQ(r.samples.size(), 3u);
  EXPECT_EQ(r.samples[0].name, "a_total");
  EXPECT_EQ(r.samples[0].value, 7);
  EXPECT_EQ(r.samples[1].Label("x"), "y");
  EXPECT_EQ(r.samples[2].name, "d");
  EXPECT_EQ(r.samples[2].value, 4);
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_THAT(r.errors[0], HasSubstr("line 7: "));
  EXPECT_THAT(r.errors[1], HasSubstr("line 9: not a number: 'NotANumber'"));
  EXPECT_TRUE(ParseText("").samples.empty());
}

TEST(PromTextTest, ReadsTheEnginesExpositionBackExactly) {
  Metrics m;
  const fleetflow::Labels node = {{"node", "db \"main\"\\1\nx"}, {"operator", "timescale_sink"}};
  m.GetCounter("sink_rows_written", "Rows.", node).Inc(uint64_t{1} << 53);
  m.GetGauge("sink_pending_rows", "Pending.", node).Set(-0.125);
  Histogram& h = m.GetHistogram("row_latency_seconds", "Latency.", {0.5, 1, 2}, node);
  h.Observe(0.25, 3);
  h.Observe(1.5);
  h.Observe(7);
  const ParseResult r = ParseText(m.Exposition());
  EXPECT_TRUE(r.errors.empty()) << r.errors[0];
  std::map<std::string, double> by_name;
  std::vector<std::pair<std::string, double>> buckets;
  for (const Sample& s : r.samples) {
    EXPECT_EQ(s.Label("node"), "db \"main\"\\1\nx") << s.name;
    EXPECT_EQ(s.Label("operator"), "timescale_sink") << s.name;
    if (s.name == "fleetflow_row_latency_seconds_bucket") {
      buckets.emplace_back(s.Label("le").value_or("?"), s.value);
    } else {
      by_name[s.name] = s.value;
    }
  }
  EXPECT_EQ(by_name["fleetflow_sink_rows_written_total"], 9007199254740992.0);
  EXPECT_EQ(by_name["fleetflow_sink_pending_rows"], -0.125);
  EXPECT_EQ(by_name["fleetflow_row_latency_seconds_count"], 5);
  EXPECT_DOUBLE_EQ(by_name["fleetflow_row_latency_seconds_sum"], 0.75 + 1.5 + 7);
  EXPECT_THAT(buckets, ElementsAre(Pair("0.5", 3), Pair("1", 3), Pair("2", 4), Pair("+Inf", 5)));
  EXPECT_EQ(ParseValue(buckets.back().first), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace fleetflow::prom
