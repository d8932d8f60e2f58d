// The DuckDB example of docs/archive.md on an archive the archive operator writes: a few vehicles'
// known speed and gps samples around the hour the example asks about, then
// tests/apps/duckdb/example.mjs (the documentation's two queries, DuckDB's Node API from npm) over
// the directory, its answer compared with what was fed: the speed samples of one vehicle in one
// hour, in time order, and per vehicle the gps samples inside a lat/lon box that hour, with the
// first and last times; and the 1 s rows row_archive wrote of one vehicle over five minutes, with
// their values and NULLs.
//
// It needs node and DuckDB's Node API installed by `npm ci` (the ctest fixture
// archive_duckdb_npm_ci); without them it fails, saying so.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fleetflow/testkit/harness.hpp"
#include "layout.hpp"
#include "servers.hpp"
#include "utc_time.hpp"

namespace fleetflow::testkit {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kUs = 1'000;

// What the example asks (the literals of its queries): the hour, the vehicle, the box.
const int64_t kHour = *ParseRfc3339("2026-11-28T10:00:00Z");
constexpr const char* kVehicle = "v00002";
constexpr double kMinLat = 48.85, kMaxLat = 48.87, kMinLon = 2.33, kMaxLon = 2.36;

struct Sample {
  std::string vehicle;
  std::string sensor;
  int64_t ts_ns;
  double value = 0;  // speed
  double lat = 0, lon = 0;
};

/// The samples fed: the hour of the example and its edges (the hours before and after), inside,
/// on and just outside the box; speed of the example's vehicle and of another one.
std::vector<Sample> Samples() {
  std::vector<Sample> s;
  const auto speed = [&](const char* v, int64_t ts, double value) {
    s.push_back({v, "speed", ts, value});
  };
  // Positions of 4 decimals, which the archive writes exactly (position_decimals is at least 4
  // by default), so that the box is tested on the doubles DuckDB reads back.
  const auto gps = [&](const char* v, int64_t ts, double lat, double lon) {
    s.push_back({v, "gps", ts, 0, std::round(lat * 1e4) / 1e4, std::round(lon * 1e4) / 1e4});
  };
  // Speed of v00002: the last microsecond of 09:59, then 10:00 sharp to the hour's last
  // microsecond, then 11:00 sharp (not asked).
  speed(kVehicle, kHour - kUs, 9.5);
  speed(kVehicle, kHour, 12.5);
  for (int i = 1; i <= 40; ++i)
    speed(kVehicle, kHour + i * 85 * kS + i * 250 * kUs, 10 + i * 0.125);
  speed(kVehicle, kHour + 3600 * kS - kUs, 14.75);
  speed(kVehicle, kHour + 3600 * kS, 15.0);
  // Other vehicles' speed in the same hour and folders.
  for (int i = 0; i < 30; ++i) speed("v00001", kHour + i * 100 * kS + 7 * kUs, 8 + i * 0.25);
  speed("v00003", kHour + 1800 * kS, 11.125);

  // v00001 drives through the box during the hour, and was in it at 09:59 too.
  gps("v00001", kHour - 30 * kS, 48.86, 2.34);
  for (int i = 0; i < 50; ++i) {
    gps("v00001", kHour + 600 * kS + i * kS + 100 * kUs * i, 48.845 + i * 0.0005,
        2.335 + i * 0.0001);
  }
  // v00002: on the box's corners (bounds included), inside, and just outside.
  gps(kVehicle, kHour + 5 * kS + 123456 * kUs, kMinLat, kMinLon);
  gps(kVehicle, kHour + 1200 * kS + 500 * kUs, 48.86, 2.35);
  gps(kVehicle, kHour + 2400 * kS, kMaxLat, kMaxLon);
  gps(kVehicle, kHour + 2500 * kS, 48.8499, 2.35);
  gps(kVehicle, kHour + 2600 * kS, 48.86, 2.3601);
  gps(kVehicle, kHour + 3599 * kS + 999999 * kUs, 48.86, 2.34);
  // v00003: near the box, never in it.
  for (int i = 0; i < 20; ++i) gps("v00003", kHour + i * 60 * kS, 48.8701, 2.34 + i * 0.0005);
  // v00004: in the box only at 11:00 sharp (the next hour) and at 09:00.
  gps("v00004", kHour + 3600 * kS, 48.86, 2.35);
  gps("v00004", kHour - 3600 * kS, 48.86, 2.35);
  return s;
}

/// archive::AppendTime's text of a time DuckDB printed (2026-11-28 10:00:00.25+00); nullopt when
/// it is not one in UTC.
std::optional<int64_t> DuckDbTime(std::string text) {
  if (text.size() < 22 || text[10] != ' ' || text.substr(text.size() - 3) != "+00") {
    return std::nullopt;
  }
  text.resize(text.size() - 3);
  text[10] = 'T';
  std::string fraction = text.size() > 19 ? text.substr(20) : "";
  if (fraction.size() > 6) return std::nullopt;
  fraction.resize(6, '0');
  return archive::ParseTime(text.substr(0, 19) + "." + fraction + "Z");
}

std::string NumberText(const rapidjson::Value& v) {
  if (v.IsString()) return v.GetString();
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsNumber()) {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", v.GetDouble());
    return b;
  }
  return "?";
}

TEST(ArchiveDuckDbTest, TheExampleOfTheDocumentationAnswersWithTheSamplesFed) {
  const fs::path script = fs::path(FF_DUCKDB_DIR) / "example.mjs";
  ASSERT_TRUE(fs::exists(script)) << script << " is missing: configure the build again";
  ASSERT_TRUE(fs::exists(fs::path(FF_DUCKDB_DIR) / "node_modules/@duckdb/node-api"))
      << "DuckDB's Node API is not installed in " << FF_DUCKDB_DIR
      << ": the fixture archive_duckdb_npm_ci (npm ci of bench/duckdb/package-lock.json) did not "
         "run or failed; run `ctest -R archive_duckdb` (it runs the fixture), or node and npm "
         "are missing (scripts/deps.sh)";

  const fs::path root =
      fs::temp_directory_path() / ("ff-archive-duckdb-" + std::to_string(::getpid()));
  fs::remove_all(root);
  struct Cleanup {
    fs::path p;
    ~Cleanup() { fs::remove_all(p); }
  } cleanup{root};

  // The archive operator writes them, its defaults (hour folders, cells of 5 characters).
  const std::vector<Sample> samples = Samples();
  {
    OperatorHarness h("archive",
                      R"({"directory": ")" + root.string() + R"(", "stats_subject": ""})");
    h.TickAt(kHour - 2 * 3600 * kS);
    uint32_t seq = 0;
    for (const Sample& s : samples) {
      SampleBatch b;
      b.vehicle = s.vehicle;
      b.sensor = s.sensor;
      wire::Point p{s.ts_ns, ++seq, s.value};
      if (s.sensor == "gps") {
        p.lat = s.lat;
        p.lon = s.lon;
        p.has_position = true;
      }
      b.points.push_back(p);
      h.Feed(std::move(b));
    }
    h.TickAt(kHour + 2 * 3600 * kS, /*drain=*/true);
    ASSERT_EQ(h.Counter("samples_archived"), samples.size());
  }
  ASSERT_TRUE(fs::exists(root / "sensor=speed/day=2026-11-28/hour=10"));
  ASSERT_TRUE(fs::exists(root / "sensor=gps/day=2026-11-28/hour=09"));

  // The 1 s rows, from 09:59:57 to 10:06: v00002's and another vehicle's; each column holds the
  // sample before the window (so the values are the ones given), soc missing every 7th second.
  struct RowFed {
    int64_t ts;
    double lat, lon, speed;
    std::optional<double> soc;
  };
  std::vector<RowFed> fed_rows;
  {
    OperatorHarness h("row_archive",
                      R"({"directory": ")" + root.string() + R"(", "stats_subject": ""})");
    auto sensors = std::make_shared<const std::vector<std::string>>(
        std::vector<std::string>{"gps", "speed", "soc", "torque"});
    for (int64_t k = -3; k < 360; ++k) {
      const int64_t t = kHour + k * kS;
      WindowBatch b;
      b.window_ns = t;
      b.sensors = sensors;
      for (const char* v : {"v00001", kVehicle}) {
        const RowFed r{
            t, 48.86 + static_cast<double>(k + 3) * 1e-5, 2.35,
            10 + static_cast<double>((k + 3) % 50) * 0.5,
            (k + 3) % 7 == 0 ? std::nullopt : std::optional<double>(80 - (k + 3) * 0.01)};
        wire::Point gps{t - 100'000'000, 0, 0};
        gps.lat = r.lat;
        gps.lon = r.lon;
        gps.has_position = true;
        b.AddRow(v, {{gps, std::nullopt},
                     {wire::Point{t - 50'000'000, 0, r.speed}, std::nullopt},
                     r.soc ? Slot{wire::Point{t - 500'000'000, 0, *r.soc}, std::nullopt} : Slot{},
                     {}});
        if (std::string(v) == kVehicle && t >= kHour && t < kHour + 300 * kS) {
          fed_rows.push_back(r);
        }
      }
      h.Feed(std::move(b));
      h.TickAt(t + 500'000'000);
    }
    h.TickAt(kHour + 400 * kS, /*drain=*/true);
    ASSERT_EQ(h.Counter("rows_archived"), 2u * 363);
  }
  ASSERT_EQ(fed_rows.size(), 300u);

  // What the example should answer, from the samples fed.
  std::vector<std::pair<int64_t, double>> speed;
  struct InBox {
    uint64_t samples = 0;
    int64_t first = 0, last = 0;
  };
  std::map<std::string, InBox> in_box;
  for (const Sample& s : samples) {
    if (s.ts_ns < kHour || s.ts_ns >= kHour + 3600 * kS) continue;
    if (s.sensor == "speed" && s.vehicle == kVehicle) speed.emplace_back(s.ts_ns, s.value);
    if (s.sensor == "gps" && s.lat >= kMinLat && s.lat <= kMaxLat && s.lon >= kMinLon &&
        s.lon <= kMaxLon) {
      InBox& b = in_box[s.vehicle];
      b.first = b.samples == 0 ? s.ts_ns : std::min(b.first, s.ts_ns);
      b.last = b.samples == 0 ? s.ts_ns : std::max(b.last, s.ts_ns);
      ++b.samples;
    }
  }
  std::sort(speed.begin(), speed.end());
  ASSERT_EQ(speed.size(), 42u);
  ASSERT_EQ(in_box.size(), 2u) << "v00001 and v00002";

  // The example, as its reader would run it.
  const fs::path log = root.string() + ".log";
  testing::Process node({"node", script.string(), root.string()}, log.string());
  const auto status = node.Wait(std::chrono::seconds(90));
  const std::string output = node.ReadLog();
  fs::remove(log);
  ASSERT_EQ(status, 0) << "node example.mjs: " << output;
  const size_t at = output.find("{\"speed\"");
  ASSERT_NE(at, std::string::npos) << output;
  rapidjson::Document doc;
  doc.Parse(output.substr(at, output.find('\n', at) - at).c_str());
  ASSERT_FALSE(doc.HasParseError()) << output;
  ASSERT_TRUE(doc.HasMember("speed") && doc["speed"].IsArray()) << output;
  ASSERT_TRUE(doc.HasMember("gps_in_box") && doc["gps_in_box"].IsArray()) << output;

  // The speed samples of v00002 that hour, in time order, with their values.
  const auto& rows = doc["speed"];
  ASSERT_EQ(rows.Size(), speed.size()) << output;
  for (rapidjson::SizeType i = 0; i < rows.Size(); ++i) {
    const auto ts = DuckDbTime(rows[i]["ts"].GetString());
    ASSERT_TRUE(ts) << rows[i]["ts"].GetString();
    EXPECT_EQ(*ts, speed[i].first) << "row " << i << ": " << rows[i]["ts"].GetString();
    EXPECT_EQ(std::stod(NumberText(rows[i]["speed"])), speed[i].second) << "row " << i;
  }
  EXPECT_EQ(DuckDbTime(rows[0]["ts"].GetString()), kHour);
  EXPECT_EQ(DuckDbTime(rows[rows.Size() - 1]["ts"].GetString()), kHour + 3600 * kS - kUs);

  // The vehicles in the box that hour: their samples there, first and last.
  const auto& box = doc["gps_in_box"];
  ASSERT_EQ(box.Size(), in_box.size()) << output;
  auto expected = in_box.begin();
  for (rapidjson::SizeType i = 0; i < box.Size(); ++i, ++expected) {
    const auto& r = box[i];
    EXPECT_EQ(std::string(r["vehicle_id"].GetString()), expected->first);
    EXPECT_EQ(NumberText(r["samples"]), std::to_string(expected->second.samples))
        << expected->first;
    EXPECT_EQ(DuckDbTime(r["first_ts"].GetString()), expected->second.first)
        << expected->first << ": " << r["first_ts"].GetString();
    EXPECT_EQ(DuckDbTime(r["last_ts"].GetString()), expected->second.last)
        << expected->first << ": " << r["last_ts"].GetString();
  }
  EXPECT_EQ(in_box[kVehicle].samples, 4u) << "the corners are inside, the points just out not";

  // v00002's rows of the five minutes, in time order, with their values; NULL where soc was.
  ASSERT_TRUE(doc.HasMember("rows") && doc["rows"].IsArray()) << output;
  const auto& got_rows = doc["rows"];
  ASSERT_EQ(got_rows.Size(), fed_rows.size()) << output;
  size_t nulls = 0;
  for (rapidjson::SizeType i = 0; i < got_rows.Size(); ++i) {
    const auto& r = got_rows[i];
    const RowFed& want = fed_rows[i];
    EXPECT_EQ(DuckDbTime(r["ts"].GetString()), want.ts) << "row " << i;
    EXPECT_NEAR(std::stod(NumberText(r["lat"])), want.lat, 1e-9) << "row " << i;
    EXPECT_NEAR(std::stod(NumberText(r["lon"])), want.lon, 1e-9) << "row " << i;
    EXPECT_NEAR(std::stod(NumberText(r["speed"])), want.speed, 1e-9) << "row " << i;
    if (want.soc) {
      EXPECT_NEAR(std::stod(NumberText(r["soc"])), *want.soc, 1e-9) << "row " << i;
    } else {
      EXPECT_TRUE(r["soc"].IsNull()) << "row " << i << ": " << NumberText(r["soc"]);
      ++nulls;
    }
  }
  EXPECT_EQ(nulls, 43u);
}

}  // namespace
}  // namespace fleetflow::testkit
