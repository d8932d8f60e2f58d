// Log lines as text and JSON, with fields, and the rate limit on repeated messages.
#include "logging.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

namespace fleetflow {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using namespace std::chrono_literals;

/// Points the default logger at a string stream for the life of the test.
class LoggingTest : public ::testing::Test {
 protected:
  void Use(LogFormat format) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("", sink);
    logger->set_formatter(MakeLogFormatter(format));
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { SetupLogging(LogFormat::kText, spdlog::level::info); }

  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    std::istringstream in(out_.str());
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }

  std::ostringstream out_;
};

TEST_F(LoggingTest, JsonLinesCarryTimeLevelMessageAndFields) {
  Use(LogFormat::kJson);
  Log(spdlog::level::warn, "rejected \"input\"\n", {{"node", "in"}, {"total", 6}});
  spdlog::info("plain {}", 1);
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 2u) << out_.str();
  rapidjson::Document d;
  d.Parse(lines[0].c_str());
  ASSERT_FALSE(d.HasParseError()) << lines[0];
  EXPECT_THAT(d["ts"].GetString(),
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"));
  EXPECT_STREQ(d["level"].GetString(), "warning");
  EXPECT_STREQ(d["msg"].GetString(), "rejected \"input\"\n");
  EXPECT_STREQ(d["node"].GetString(), "in");
  EXPECT_EQ(d["total"].GetInt(), 6);
  d.Parse(lines[1].c_str());
  ASSERT_FALSE(d.HasParseError()) << lines[1];
  EXPECT_STREQ(d["msg"].GetString(), "plain 1");
  EXPECT_STREQ(d["level"].GetString(), "info");
}

TEST_F(LoggingTest, TextLinesAppendFieldsAsKeyValue) {
  Use(LogFormat::kText);
  Log(spdlog::level::err, "write failed", {{"table", "t"}, {"error", "no route"}, {"n", 3}});
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("error write failed table=t error=\"no route\" n=3"));
}

TEST_F(LoggingTest, RateLimitLogsABurstThenOnePerIntervalWithTheSuppressedCount) {
  Use(LogFormat::kJson);
  auto now = std::chrono::steady_clock::time_point{};
  RateLimitedLog limited(3, 10s, [&] { return now; });
  int logged = 0;
  for (int i = 0; i < 1000; ++i)
    logged += limited.Log("in/bad", spdlog::level::warn, "bad") ? 1 : 0;
  EXPECT_EQ(logged, 3);
  EXPECT_TRUE(limited.Log("in/other", spdlog::level::warn, "other"));  // keys are independent
  now += 9s;
  EXPECT_FALSE(limited.Log("in/bad", spdlog::level::warn, "bad"));
  now += 1s;
  EXPECT_TRUE(limited.Log("in/bad", spdlog::level::warn, "bad", {{"reason", "x"}}));
  EXPECT_FALSE(limited.Log("in/bad", spdlog::level::warn, "bad"));
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 5u);
  rapidjson::Document d;
  d.Parse(lines[4].c_str());
  ASSERT_FALSE(d.HasParseError()) << lines[4];
  EXPECT_EQ(d["suppressed"].GetInt(), 998);
  EXPECT_STREQ(d["reason"].GetString(), "x");
  d.Parse(lines[2].c_str());
  EXPECT_FALSE(d.HasMember("suppressed"));
}

TEST(LogFormatTest, Parse) {
  EXPECT_EQ(ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(ParseLogFormat("xml"), std::nullopt);
}

}  // namespace
}  // namespace fleetflow
