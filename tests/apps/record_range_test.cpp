// The times people give fleetflow on the command line: RFC 3339 both ways, durations as replay's
// ETA and top's uptime show them, and the bounds of `fleetflow record --stream --from/--to` (a
// stream sequence, a time, or a time ago).
#include <gtest/gtest.h>

#include <limits>

#include "record_replay.hpp"
#include "utc_time.hpp"

namespace fleetflow {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kT = 1'795'000'000 * kSecond;  // 2026-11-18T11:06:40Z

TEST(UtcTime, FormatsMillisecondsInUtcAlsoBeforeTheEpoch) {
  EXPECT_EQ(FormatUtc(kT), "2026-11-18T11:06:40.000Z");
  EXPECT_EQ(FormatUtc(kT + 250'999'999), "2026-11-18T11:06:40.250Z");
  EXPECT_EQ(FormatUtc(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatUtc(-1), "1969-12-31T23:59:59.999Z");
}

TEST(UtcTime, FormatsAnyNumberOfFractionDigitsTruncated) {
  EXPECT_EQ(FormatUtc(kT + 250'999'999, 9), "2026-11-18T11:06:40.250999999Z");
  EXPECT_EQ(FormatUtc(kT + 250'999'999, 6), "2026-11-18T11:06:40.250999Z");
  EXPECT_EQ(FormatUtc(kT + 1, 9), "2026-11-18T11:06:40.000000001Z");
  EXPECT_EQ(FormatUtc(kT + 999'999'999, 0), "2026-11-18T11:06:40Z");
  EXPECT_EQ(FormatUtc(-1, 9), "1969-12-31T23:59:59.999999999Z");
  EXPECT_EQ(ParseRfc3339(FormatUtc(kT + 123'456'789, 9)), kT + 123'456'789);
}

TEST(UtcTime, DurationsInWholeSecondsUpToDays) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(41.6), "42s");
  EXPECT_EQ(FormatDuration(187), "3m07s");
  EXPECT_EQ(FormatDuration(3725), "1h02m05s");
  EXPECT_EQ(FormatDuration(2 * 86400 + 3 * 3600 + 4 * 60 + 5), "2d03h04m");
  EXPECT_EQ(FormatDuration(-1), "?");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::infinity()), "?");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::quiet_NaN()), "?");
}

TEST(UtcTime, ParsesRfc3339WithFractionsAndOffsets) {
  EXPECT_EQ(ParseRfc3339("2026-11-18T11:06:40Z"), kT);
  EXPECT_EQ(ParseRfc3339("2026-11-18t11:06:40z"), kT);
  EXPECT_EQ(ParseRfc3339("2026-11-18 11:06:40"), kT) << "no offset: UTC";
  EXPECT_EQ(ParseRfc3339("2026-11-18T11:06:40.25Z"), kT + 250'000'000);
  EXPECT_EQ(ParseRfc3339("2026-11-18T11:06:40.123456789Z"), kT + 123'456'789);
  EXPECT_EQ(ParseRfc3339("2026-11-18T12:06:40+01:00"), kT);
  EXPECT_EQ(ParseRfc3339("2026-11-18T05:36:40-05:30"), kT);
  EXPECT_EQ(ParseRfc3339(FormatUtc(kT + 7'000'000)), kT + 7'000'000);
  for (const char* bad :
       {"", "2026-11-18", "2026-13-01T00:00:00Z", "2026-11-18T24:00:00Z", "2026-11-18T11:06:40.Z",
        "2026-11-18T11:06:40Zjunk", "2026-11-18T11:06:40+1", "2026-11-18X09:46:40Z", "yesterday"}) {
    EXPECT_FALSE(ParseRfc3339(bad).has_value()) << bad;
  }
}

TEST(RecordRange, BoundsAreSequencesTimesOrTimesAgo) {
  std::string error;
  const auto none = ParseRangeBound("", kT, error);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->sequence, 0u);
  EXPECT_EQ(none->time_ns, 0);

  const auto sequence = ParseRangeBound("1234", kT, error);
  ASSERT_TRUE(sequence.has_value());
  EXPECT_EQ(sequence->sequence, 1234u);
  EXPECT_EQ(sequence->time_ns, 0);

  const auto time = ParseRangeBound("2026-11-18T12:06:40.5+01:00", kT, error);
  ASSERT_TRUE(time.has_value());
  EXPECT_EQ(time->sequence, 0u);
  EXPECT_EQ(time->time_ns, kT + kSecond / 2);

  const std::pair<const char*, int64_t> ago[] = {{"-90s", 90 * kSecond},  {"-15m", 900 * kSecond},
                                                 {"-2h", 7200 * kSecond}, {"-1d", 86400 * kSecond},
                                                 {"-1.5m", 90 * kSecond}, {"-0s", 0}};
  for (const auto& [text, before] : ago) {
    const auto b = ParseRangeBound(text, kT, error);
    ASSERT_TRUE(b.has_value()) << text << ": " << error;
    EXPECT_EQ(b->time_ns, kT - before) << text;
    EXPECT_EQ(b->sequence, 0u) << text;
  }
}

TEST(RecordRange, AnythingElseIsRefusedSayingWhatIsAccepted) {
  for (const char* bad : {"0", "99999999999999999999999", "-5", "-5w", "--5m", "-m", "5m", "-x1s",
                          "12ab", "2026-11-18T11:06", "now"}) {
    std::string error;
    EXPECT_FALSE(ParseRangeBound(bad, kT, error).has_value()) << bad;
    EXPECT_NE(error.find(bad), std::string::npos) << error;
  }
  std::string error;
  ParseRangeBound("yesterday", kT, error);
  EXPECT_NE(error.find("RFC 3339"), std::string::npos) << error;
  EXPECT_NE(error.find("-15m"), std::string::npos) << error;
  ParseRangeBound("0", kT, error);
  EXPECT_NE(error.find("start at 1"), std::string::npos) << error;
}

}  // namespace
}  // namespace fleetflow
