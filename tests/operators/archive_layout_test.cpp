// The archive's files (operators/archive/layout.hpp): geohashes and their boxes, the folders and
// the paths read back, times, numbers, the summaries and the zstd frames, each with what it
// refuses.
#include <gtest/gtest.h>
#include <zstd.h>

#include <cmath>
#include <random>
#include <string>

#include "layout.hpp"

namespace fleetflow::archive {
namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kHour = 3600 * kS;
constexpr int64_t k20261128 = 1'795'824'000 * kS;  // 2026-11-28T00:00:00Z

std::string Time(int64_t ns) {
  std::string out;
  AppendTime(out, ns);
  return out;
}

std::string Fixed(double v, int decimals) {
  std::string out;
  AppendFixed(out, v, decimals);
  return out;
}

std::string Significant(double v, int digits) {
  std::string out;
  AppendSignificant(out, v, digits);
  return out;
}

TEST(ArchiveLayoutTest, GeohashesOfKnownPlaces) {
  EXPECT_EQ(Geohash(57.64911, 10.40744, 11), "u4pruydqqvj");
  // The Eiffel Tower; u09t is Paris's cell of about 20 km, whose box is exact in binary.
  EXPECT_EQ(Geohash(48.8584, 2.2945, 8), "u09tunqu");
  EXPECT_EQ(Geohash(48.8584, 2.2945, 4), "u09t");
  const auto paris = GeohashBox("u09t");
  ASSERT_TRUE(paris);
  EXPECT_EQ(paris->min_lat, 48.69140625);
  EXPECT_EQ(paris->max_lat, 48.8671875);
  EXPECT_EQ(paris->min_lon, 2.109375);
  EXPECT_EQ(paris->max_lon, 2.4609375);
  // The usual example, decoded: ezs42 is around 42.605 N, 5.603 W.
  const auto ezs42 = GeohashBox("ezs42");
  ASSERT_TRUE(ezs42);
  EXPECT_EQ(ezs42->min_lat, 42.5830078125);
  EXPECT_EQ(ezs42->max_lat, 42.626953125);
  EXPECT_EQ(ezs42->min_lon, -5.625);
  EXPECT_EQ(ezs42->max_lon, -5.5810546875);
  EXPECT_EQ(Geohash(42.605, -5.603, 5), "ezs42");
  // The corners of the world.
  EXPECT_EQ(Geohash(-90, -180, 3), "000");
  EXPECT_EQ(Geohash(90, 180, 3), "zzz");
}

TEST(ArchiveLayoutTest, AGeohashsBoxHoldsThePointAndHasTheSizeOfItsPrecision) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> lat(-90, 90), lon(-180, 180);
  for (int i = 0; i < 2000; ++i) {
    const double la = lat(rng), lo = lon(rng);
    const int precision = 1 + i % 12;
    const std::string hash = Geohash(la, lo, precision);
    ASSERT_EQ(hash.size(), static_cast<size_t>(precision));
    const auto box = GeohashBox(hash);
    ASSERT_TRUE(box) << hash;
    EXPECT_LE(box->min_lat, la) << hash;
    EXPECT_LT(la, box->max_lat) << hash;
    EXPECT_LE(box->min_lon, lo) << hash;
    EXPECT_LT(lo, box->max_lon) << hash;
    // 5 bits a character, longitude first.
    const int bits = 5 * precision;
    EXPECT_EQ(box->max_lon - box->min_lon, std::ldexp(360.0, -(bits + 1) / 2)) << hash;
    EXPECT_EQ(box->max_lat - box->min_lat, std::ldexp(180.0, -bits / 2)) << hash;
    // Its south-west corner is in it; its north-east corner in the next cells.
    EXPECT_EQ(Geohash(box->min_lat, box->min_lon, precision), hash);
    if (box->max_lat < 90) {
      EXPECT_NE(Geohash(box->max_lat, box->min_lon, precision), hash);
    }
    if (box->max_lon < 180) {
      EXPECT_NE(Geohash(box->min_lat, box->max_lon, precision), hash);
    }
    // A longer hash is in the box of its prefix.
    if (precision > 1) {
      const auto parent = GeohashBox(hash.substr(0, hash.size() - 1));
      ASSERT_TRUE(parent);
      EXPECT_TRUE(parent->Intersects(*box));
      EXPECT_LE(parent->min_lat, box->min_lat);
      EXPECT_GE(parent->max_lon, box->max_lon);
    }
  }
}

TEST(ArchiveLayoutTest, WhatIsNotAGeohashHasNoBox) {
  for (const char* bad :
       {"", "u09a", "u09i", "u09l", "u09o", "U09T", "u09t ", "u09-", "u09tunquu09tu" /* 13 */}) {
    EXPECT_FALSE(GeohashBox(bad)) << "'" << bad << "'";
  }
  EXPECT_TRUE(GeohashBox("u09tunquu09t"));  // 12
}

TEST(ArchiveLayoutTest, BoxesIntersectWhenTheyShareAPointEvenOnAnEdge) {
  const Box a{48.0, 49.0, 2.0, 3.0};
  EXPECT_TRUE(a.Intersects(Box{49.0, 50.0, 3.0, 4.0}));  // a corner
  EXPECT_TRUE(a.Intersects(Box{48.5, 48.6, 2.5, 2.6}));  // inside
  EXPECT_TRUE(Box({48.5, 48.6, 2.5, 2.6}).Intersects(a));
  EXPECT_FALSE(a.Intersects(Box{49.0000001, 50.0, 2.0, 3.0}));
  EXPECT_FALSE(a.Intersects(Box{48.0, 49.0, 3.0000001, 4.0}));
}

TEST(ArchiveLayoutTest, AChunksFolderIsReadBackFromItsPath) {
  const int64_t ts = k20261128 + 10 * kHour + 17 * 60 * kS + 123'456'789;
  EXPECT_EQ(ChunkFolder(SensorFolder("gps"), ts, Period::kHour, "u09t"),
            "sensor=gps/day=2026-11-28/hour=10/cell=u09t");
  EXPECT_EQ(ChunkFolder(SensorFolder("soc"), ts, Period::kDay, kNoCell),
            "sensor=soc/day=2026-11-28/cell=none");

  const auto hourly = ParseChunkPath(ChunkFolder(SensorFolder("gps"), ts, Period::kHour, "u09tu") +
                                     "/p0-000001.csv.zst");
  ASSERT_TRUE(hourly);
  EXPECT_EQ(hourly->sensor, "gps");
  EXPECT_EQ(hourly->period_start_ns, k20261128 + 10 * kHour);
  EXPECT_EQ(hourly->period_ns, kHour);
  EXPECT_EQ(hourly->cell, "u09tu");
  EXPECT_EQ(hourly->name, "p0-000001.csv.zst");

  const auto daily =
      ParseChunkPath(ChunkFolder(SensorFolder("soc"), ts, Period::kDay, kNoCell) + "/a.csv.zst");
  ASSERT_TRUE(daily);
  EXPECT_EQ(daily->sensor, "soc");
  EXPECT_EQ(daily->period_start_ns, k20261128);
  EXPECT_EQ(daily->period_ns, 24 * kHour);
  EXPECT_EQ(daily->cell, kNoCell);

  // Every hour of a few days around the epoch and a leap day: the folder of the period's start.
  for (const int64_t day : {int64_t{-2}, int64_t{0}, int64_t{19'782} /* 2024-02-29 */}) {
    for (int h = 0; h < 24; ++h) {
      const int64_t start = day * 24 * kHour + h * kHour;
      for (const int64_t at : {start, start + kHour / 2, start + kHour - 1}) {
        const auto place =
            ParseChunkPath(ChunkFolder(SensorFolder("gps"), at, Period::kHour, "s") + "/c.csv.zst");
        ASSERT_TRUE(place) << at;
        EXPECT_EQ(place->period_start_ns, start)
            << ChunkFolder(SensorFolder("gps"), at, Period::kHour, "s");
        const auto whole_day =
            ParseChunkPath(ChunkFolder(SensorFolder("gps"), at, Period::kDay, "s") + "/c.csv.zst");
        ASSERT_TRUE(whole_day);
        EXPECT_EQ(whole_day->period_start_ns, day * 24 * kHour);
      }
    }
  }
  EXPECT_EQ(ChunkFolder(SensorFolder("gps"), -1, Period::kHour, "s"),
            "sensor=gps/day=1969-12-31/hour=23/cell=s");
  EXPECT_EQ(ChunkFolder(SensorFolder("gps"), 19'782 * 24 * kHour, Period::kDay, "s"),
            "sensor=gps/day=2024-02-29/cell=s");
}

TEST(ArchiveLayoutTest, WhatIsNotAChunksPathIsRefused) {
  for (const char* bad : {
           "sensor=gps/day=2026-11-28/hour=10/cell=u09t/a.csv.zst.tmp",
           "sensor=gps/day=2026-11-28/hour=10/cell=u09t/a.json",
           "sensor=gps/day=2026-11-28/hour=10/cell=u09t/.csv.zst",
           "sensor=gps/day=2026-11-28/hour=10/cell=u09t/",
           "/sensor=gps/day=2026-11-28/hour=10/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/hour=10/a.csv.zst",
           "sensor=gps/day=2026-11-28/hour=10/cell=u09t/x/a.csv.zst",
           "sensor=gps/hour=10/cell=u09t/a.csv.zst",
           "sensor=/day=2026-11-28/cell=u09t/a.csv.zst",
           "sensors=gps/day=2026-11-28/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/hour=24/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/hour=7/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/hour=+7/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/minute=10/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-13-01/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-00-10/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-31/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-02-29/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-1-28/cell=u09t/a.csv.zst",
           "sensor=gps/day=2026-11-28/cell=u09a/a.csv.zst",
           "sensor=gps/day=2026-11-28/cell=/a.csv.zst",
           "sensor=gps/day=2026-11-28/cell=None/a.csv.zst",
           "",
       }) {
    EXPECT_FALSE(ParseChunkPath(bad)) << bad;
  }
  EXPECT_TRUE(ParseChunkPath("sensor=gps/day=2024-02-29/cell=none/a.csv.zst"));
}

TEST(ArchiveLayoutTest, TimesAreWrittenToTheMicrosecondAndReadBack) {
  EXPECT_EQ(Time(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(Time(k20261128 + 10 * kHour + 123'456'789), "2026-11-28T10:00:00.123456Z");
  // Before 1970, down to the microsecond below (as the period's folder).
  EXPECT_EQ(Time(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(Time(-1000), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(Time(-1001), "1969-12-31T23:59:59.999998Z");
  EXPECT_EQ(Time(-86'400 * kS * 366), "1968-12-31T00:00:00.000000Z");
  EXPECT_EQ(Time(int64_t{19'782} * 24 * kHour + 12 * kHour + 34 * 60 * kS + 56 * kS + 789'012'000),
            "2024-02-29T12:34:56.789012Z");
  EXPECT_EQ(ParseTime("2024-02-29T12:34:56.789012Z"),
            int64_t{19'782} * 24 * kHour + 12 * kHour + 34 * 60 * kS + 56 * kS + 789'012'000);
  EXPECT_EQ(ParseTime("1969-12-31T23:59:59.999999Z"), -1000);
  EXPECT_EQ(ParseTime("1900-03-01T00:00:00.000000Z"), int64_t{-25'508} * 24 * kHour);

  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int64_t> us(-2'208'988'800'000'000 /* 1900 */,
                                            4'102'444'800'000'000 /* 2100 */);
  for (int i = 0; i < 20000; ++i) {
    const int64_t ns = us(rng) * 1000;
    const std::string text = Time(ns);
    ASSERT_EQ(text.size(), 27u) << text;
    ASSERT_EQ(ParseTime(text), ns) << text;
  }
}

TEST(ArchiveLayoutTest, OnlyTheTimesAppendTimeWritesAreRead) {
  for (const char* bad : {
           "2026-11-28T10:00:00Z",
           "2026-11-28T10:00:00.123Z",
           "2026-11-28T10:00:00.1234567Z",
           "2026-11-28T10:00:00.123456",
           "2026-11-28T10:00:00.123456+00:00",
           "2026-11-28 10:00:00.123456Z",
           "2026-11-28t10:00:00.123456Z",
           "2026-11-28T24:00:00.000000Z",
           "2026-11-28T10:60:00.000000Z",
           "2026-11-28T10:00:61.000000Z",
           "2026-11-31T10:00:00.000000Z",
           "2026-02-29T10:00:00.000000Z",
           "2026-13-28T10:00:00.000000Z",
           "2026-11-28T10:00:00.12345aZ",
           "2026-11-28T10:00:00.123456Z ",
           "",
       }) {
    EXPECT_FALSE(ParseTime(bad)) << bad;
  }
}

TEST(ArchiveLayoutTest, FixedDecimalsAreRoundedWithoutTrailingZeros) {
  EXPECT_EQ(Fixed(48.8566, 7), "48.8566");
  EXPECT_EQ(Fixed(2.0, 7), "2");
  EXPECT_EQ(Fixed(-12.34, 3), "-12.34");
  EXPECT_EQ(Fixed(1.23456789, 7), "1.2345679");
  EXPECT_EQ(Fixed(1.23456784, 7), "1.2345678");
  EXPECT_EQ(Fixed(-1.23456789, 7), "-1.2345679");
  EXPECT_EQ(Fixed(0.99999999, 7), "1");
  EXPECT_EQ(Fixed(100, 0), "100");
  EXPECT_EQ(Fixed(100.4, 0), "100");
  EXPECT_EQ(Fixed(0, 7), "0");
  EXPECT_EQ(Fixed(-0.0, 7), "0");
  EXPECT_EQ(Fixed(-0.00000001, 7), "0");
  EXPECT_EQ(Fixed(-0.4, 0), "0");
  EXPECT_EQ(Fixed(180, 7), "180");
  EXPECT_EQ(Fixed(-179.99999996, 7), "-180");
  // Too long for a fixed form: still a number that reads back.
  const std::string big = Fixed(1e300, 7);
  EXPECT_EQ(std::stod(big), 1e300) << big;
  // Every position of a generated track reads back within half the last digit.
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> deg(-180, 180);
  for (int i = 0; i < 10000; ++i) {
    const double v = deg(rng);
    const std::string text = Fixed(v, 7);
    EXPECT_LE(std::abs(std::stod(text) - v), 0.5e-7 + 1e-12) << text;
    EXPECT_NE(text.back(), '0') << text;
  }
}

TEST(ArchiveLayoutTest, SignificantDigitsAreTheShortestTextOfTheRoundedValue) {
  EXPECT_EQ(Significant(3.14159, 3), "3.14");
  EXPECT_EQ(Significant(99.96, 3), "100");
  EXPECT_EQ(Significant(1234567, 3), "1230000");
  EXPECT_EQ(Significant(0.1 + 0.2, 15), "0.3");
  EXPECT_EQ(Significant(0.000123456, 2), "0.00012");
  EXPECT_EQ(Significant(-42.5, 6), "-42.5");
  EXPECT_EQ(Significant(80.0, 6), "80");
  EXPECT_EQ(Significant(0, 6), "0");
  EXPECT_EQ(Significant(-0.0, 6), "0");
  EXPECT_EQ(Significant(1e300, 3), "1e+300");
}

Summary FullSummary() {
  Summary s;
  s.sensor = "gps";
  s.positions = true;
  s.first_ns = k20261128 + 10 * kHour + 1000;
  s.last_ns = k20261128 + 11 * kHour - 1000;
  s.box = Box{48.81234567891234, 48.9, 2.2999999999999998, 2.4000000000000004};
  s.samples = 123456;
  s.vehicles = {"car\"1", "car-2", "v\xc3\xa9hicule"};
  s.bytes = 98765;
  s.partition = 7;
  s.first_sequence = 1'000'000'000'001;
  s.last_sequence = 1'000'000'000'999;
  return s;
}

void ExpectSame(const Summary& a, const Summary& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.sensor, b.sensor);
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.first_ns, b.first_ns);
  EXPECT_EQ(a.last_ns, b.last_ns);
  ASSERT_EQ(a.box.has_value(), b.box.has_value());
  if (a.box) {
    EXPECT_EQ(a.box->min_lat, b.box->min_lat);
    EXPECT_EQ(a.box->max_lat, b.box->max_lat);
    EXPECT_EQ(a.box->min_lon, b.box->min_lon);
    EXPECT_EQ(a.box->max_lon, b.box->max_lon);
  }
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.vehicles, b.vehicles);
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_EQ(a.partition, b.partition);
  EXPECT_EQ(a.first_sequence, b.first_sequence);
  EXPECT_EQ(a.last_sequence, b.last_sequence);
}

TEST(ArchiveLayoutTest, ASummaryIsReadBackAsItWasWritten) {
  const Summary positions = FullSummary();
  const std::string json = ToJson(positions);
  EXPECT_EQ(json.back(), '\n');
  EXPECT_NE(json.find(R"("first_ts":"2026-11-28T10:00:00.000001Z")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("columns":"vehicle_id,ts,lat,lon")"), std::string::npos) << json;
  std::string why;
  const auto back = ParseSummary(json, &why);
  ASSERT_TRUE(back) << why << "\n" << json;
  ExpectSame(*back, positions);

  Summary values;
  values.sensor = "soc";
  values.first_ns = -5000;
  values.last_ns = 5000;
  values.samples = 2;
  values.vehicles = {"a", "b"};
  const std::string values_json = ToJson(values);
  EXPECT_EQ(values_json.find("bbox"), std::string::npos) << values_json;
  const auto values_back = ParseSummary(values_json, &why);
  ASSERT_TRUE(values_back) << why;
  ExpectSame(*values_back, values);

  // Every bounding box of positions reads back exactly: a finder compares them with the area.
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> lat(-90, 90), lon(-180, 180);
  for (int i = 0; i < 5000; ++i) {
    Summary s = FullSummary();
    s.box = Box{lat(rng), lat(rng), lon(rng), lon(rng)};
    const auto read = ParseSummary(ToJson(s));
    ASSERT_TRUE(read);
    ASSERT_EQ(read->box->min_lat, s.box->min_lat) << ToJson(s);
    ASSERT_EQ(read->box->max_lat, s.box->max_lat) << ToJson(s);
    ASSERT_EQ(read->box->min_lon, s.box->min_lon) << ToJson(s);
    ASSERT_EQ(read->box->max_lon, s.box->max_lon) << ToJson(s);
  }
}

TEST(ArchiveLayoutTest, WhatIsNotASummaryIsRefusedWithWhy) {
  const std::string good = ToJson(FullSummary());
  const auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  for (const std::string& bad : {
           std::string("{not json"),
           std::string("[1, 2]"),
           std::string(""),
           replaced(R"("version":1)", R"("version":2)"),
           replaced(R"("version":1,)", ""),
           replaced(R"("samples":123456)", R"("samples":-1)"),
           replaced(R"("samples":123456)", R"("samples":"123456")"),
           replaced(R"("first_ts":"2026-11-28T10:00:00.000001Z")",
                    R"("first_ts":"2026-11-28T10:00:00Z")"),
           replaced(R"("columns":"vehicle_id,ts,lat,lon")", R"("columns":"vehicle_id,ts,speed")"),
           replaced(R"("bbox":[)", R"("bbox":[1,)"),
           replaced(R"("vehicles":[)", R"("vehicles":[1,)"),
           replaced(R"("partition":7)", R"("partition":-7)"),
       }) {
    std::string why;
    EXPECT_FALSE(ParseSummary(bad, &why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST(ArchiveLayoutTest, ASummarysPathIsBesideItsChunk) {
  EXPECT_EQ(SummaryPathOf("/a/sensor=gps/day=2026-11-28/cell=u09t/p0-1.csv.zst"),
            "/a/sensor=gps/day=2026-11-28/cell=u09t/p0-1.json");
  EXPECT_EQ(CsvHeader(true), "vehicle_id,ts,lat,lon\n");
  EXPECT_EQ(CsvHeader(false), "vehicle_id,ts,value\n");
}

std::string Text(size_t bytes) {
  std::mt19937 rng(9);
  std::string text(CsvHeader(true));
  while (text.size() < bytes) {
    text += "car" + std::to_string(rng() % 50) + ",";
    AppendTime(text, k20261128 + static_cast<int64_t>(rng() % 3600) * kS);
    text += ",";
    AppendFixed(text, 48.8 + (rng() % 100000) * 1e-6, 7);
    text += ",";
    AppendFixed(text, 2.3 + (rng() % 100000) * 1e-6, 7);
    text += "\n";
  }
  return text;
}

TEST(ArchiveLayoutTest, AFrameIsDecompressedToWhatWasCompressed) {
  for (const size_t size : {size_t{0}, size_t{10}, size_t{3'000'000}}) {
    const std::string text = Text(size);
    const std::string frame = Compress(text, 3);
    if (size > 1000) {
      EXPECT_LT(frame.size(), text.size() / 2);
    }
    std::string why;
    const auto back = Decompress(frame, &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(*back, text);
  }
  // Much more than CSV compresses to: decompressed in steps, whole.
  const std::string same(20'000'000, 'x');
  const auto back = Decompress(Compress(same, 3));
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == same);
}

TEST(ArchiveLayoutTest, AFrameOfAStreamingCompressorOfUnknownSizeIsDecompressedWhole) {
  // What another tool (zstd reading a pipe) writes: the frame does not say its size.
  const std::string text = Text(5'000'000) + std::string(2'000'000, 'x');
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  std::string frame(ZSTD_compressBound(text.size()), '\0');
  ZSTD_inBuffer in{text.data(), text.size(), 0};
  ZSTD_outBuffer out{frame.data(), frame.size(), 0};
  while (in.pos < in.size) {
    ASSERT_FALSE(ZSTD_isError(ZSTD_compressStream2(ctx.get(), &out, &in, ZSTD_e_continue)));
  }
  ZSTD_inBuffer end{nullptr, 0, 0};
  ASSERT_EQ(ZSTD_compressStream2(ctx.get(), &out, &end, ZSTD_e_end), 0u);
  frame.resize(out.pos);
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  std::string why;
  const auto back = Decompress(frame, &why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(back->size(), text.size());
  EXPECT_TRUE(*back == text);

  // Cut short, it is refused.
  EXPECT_FALSE(Decompress(std::string_view(frame).substr(0, frame.size() - 10), &why));
  EXPECT_FALSE(why.empty());
}

TEST(ArchiveLayoutTest, ACorruptFrameIsRefusedWithWhy) {
  const std::string text = Text(200'000);
  const std::string frame = Compress(text, 3);
  std::string why;
  EXPECT_FALSE(Decompress("not zstd at all", &why));
  EXPECT_FALSE(why.empty());
  why.clear();
  EXPECT_FALSE(Decompress(std::string_view(frame).substr(0, frame.size() / 2), &why));
  EXPECT_FALSE(why.empty());
  why.clear();
  EXPECT_FALSE(Decompress(frame + "trailing garbage", &why));
  EXPECT_FALSE(why.empty());
  // Bytes changed inside the blocks: refused, or (without a checksum) other text of the same
  // size, never a crash.
  for (size_t at = 20; at < frame.size(); at += frame.size() / 50) {
    std::string bad = frame;
    bad[at] = static_cast<char>(bad[at] ^ 0x5a);
    const auto back = Decompress(bad, &why);
    if (back) {
      EXPECT_EQ(back->size(), text.size());
    }
  }
  // A frame header claiming a terabyte: refused without trying to make room for it.
  std::string forged;
  forged += std::string("\x28\xb5\x2f\xfd", 4);  // the magic number
  forged += '\xc0';                              // 8 bytes of content size, a window descriptor
  forged += '\x58';                              // a window of 2^(10+11) bytes
  const uint64_t tera = uint64_t{1} << 40;
  for (int i = 0; i < 8; ++i) forged += static_cast<char>((tera >> (8 * i)) & 0xff);
  forged += std::string("\x01\x00\x00", 3);  // a last raw block of 0 bytes
  ASSERT_EQ(ZSTD_getFrameContentSize(forged.data(), forged.size()), tera);
  why.clear();
  EXPECT_FALSE(Decompress(forged, &why));
  EXPECT_FALSE(why.empty());
}

}  // namespace
}  // namespace fleetflow::archive
