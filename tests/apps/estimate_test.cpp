// `fleetflow estimate`: the arithmetic on a small figures file (numbers worked out by hand below),
// bad inputs (exit 2 and a message), the figures named in the output, --format json, the figures
// compiled in, and the subcommand's help.
#include "estimate.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace fleetflow {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFigures = R"({"version": 1, "figures": [
  {"name": "db.vehicle_telemetry.bytes_per_row", "value": 100, "unit": "bytes/row",
   "bench": "test-storage", "date": "2026-01-02", "commit": "abc1234"},
  {"name": "db.vehicle_stats_1m.bytes_per_row", "value": 400, "unit": "bytes/row",
   "bench": "test-storage", "date": "2026-01-02", "commit": "abc1234"},
  {"name": "db.vehicle_stats_1h.bytes_per_row", "value": 500, "unit": "bytes/row",
   "bench": "test-storage", "date": "2026-01-02", "commit": "abc1234"},
  {"name": "db.fleet_cells_1m.bytes_per_row", "value": 150, "unit": "bytes/row",
   "bench": "test-storage", "date": "2026-01-02", "commit": "abc1234"},
  {"name": "archive.gps.bytes_per_sample", "value": 8, "unit": "bytes/sample",
   "bench": "test-archive", "date": "2026-01-03", "commit": ""},
  {"name": "archive.speed.bytes_per_sample", "value": 4, "unit": "bytes/sample",
   "bench": "test-archive", "date": "2026-01-03", "commit": ""},
  {"name": "archive.summary_bytes_per_chunk", "value": 1000, "unit": "bytes/chunk",
   "bench": "test-archive", "date": "2026-01-03", "commit": ""},
  {"name": "archive.rows.bytes_per_row", "value": 10, "unit": "bytes/row",
   "bench": "test-archive", "date": "2026-01-03", "commit": ""},
  {"name": "archive.rows.summary_bytes_per_chunk", "value": 500, "unit": "bytes/chunk",
   "bench": "test-archive", "date": "2026-01-03", "commit": ""}]})";

class EstimateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ff-estimate-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    figures_ = (dir_ / "figures.json").string();
    std::ofstream(figures_) << kFigures;
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// 10 vehicles always on, gps 10 Hz and speed 20 Hz, both archived for a year, the 1 s rows
  /// too; 1 cell, 2 partitions, an hourly flush.
  EstimateArgs Small() const {
    EstimateArgs a;
    a.figures = figures_;
    a.vehicles = 10;
    a.rate = "gps=10,speed=20";
    a.archive = "gps,speed";
    a.archive_retention = "1y";
    a.row_archive = "1y";
    a.hot_retention = "7d";
    a.minute_retention = "2w";
    a.hour_retention = "30d";
    a.cell_retention = "90d";
    a.cells = 1;
    a.partitions = 2;
    a.flush_ms = 3'600'000;
    return a;
  }

  int Run(const EstimateArgs& a) {
    out_.str("");
    err_.str("");
    return Estimate(a, out_, err_);
  }

  rapidjson::Document Json(EstimateArgs a) {
    a.format = "json";
    EXPECT_EQ(Run(a), 0) << err_.str();
    rapidjson::Document d;
    d.Parse(out_.str().c_str());
    EXPECT_FALSE(d.HasParseError()) << out_.str();
    return d;
  }

  /// The tier named `name` of a JSON answer.
  static const rapidjson::Value& TierOf(const rapidjson::Document& d, const std::string& name) {
    for (const auto& t : d["tiers"].GetArray()) {
      if (name == t["tier"].GetString()) return t;
    }
    ADD_FAILURE() << "no tier " << name;
    return d["tiers"][0];
  }

  fs::path dir_;
  std::string figures_;
  std::ostringstream out_, err_;
};

TEST_F(EstimateTest, ArithmeticOfEachTierOnASmallFiguresFile) {
  const rapidjson::Document d = Json(Small());
  ASSERT_TRUE(d.IsObject());
  // 1 s rows: 86 400 a vehicle-day x 100 B = 8 640 000; x 10 vehicles; 7 days.
  const auto& s = TierOf(d, "1 s rows");
  EXPECT_EQ(std::string(s["table"].GetString()), "vehicle_telemetry");
  EXPECT_DOUBLE_EQ(s["rows_per_vehicle_day"].GetDouble(), 86'400);
  EXPECT_DOUBLE_EQ(s["bytes_per_vehicle_day"].GetDouble(), 8'640'000);
  EXPECT_DOUBLE_EQ(s["bytes_per_day"].GetDouble(), 86'400'000);
  EXPECT_EQ(s["kept_days"].GetInt64(), 7);
  EXPECT_DOUBLE_EQ(s["bytes_total"].GetDouble(), 604'800'000);
  // 1 min: 1 440 x 400 = 576 000; 2 weeks = 14 days.
  const auto& m = TierOf(d, "1 min rows");
  EXPECT_DOUBLE_EQ(m["bytes_per_vehicle_day"].GetDouble(), 576'000);
  EXPECT_EQ(m["kept_days"].GetInt64(), 14);
  EXPECT_DOUBLE_EQ(m["bytes_total"].GetDouble(), 80'640'000);
  // 1 h: 24 x 500 = 12 000; 30 days.
  const auto& h = TierOf(d, "1 h rows");
  EXPECT_DOUBLE_EQ(h["bytes_per_day"].GetDouble(), 120'000);
  EXPECT_DOUBLE_EQ(h["bytes_total"].GetDouble(), 3'600'000);
  // Cells: 1 440 rows a cell-day x 150 = 216 000, one cell, 90 days.
  const auto& c = TierOf(d, "fleet per cell, 1 min");
  EXPECT_DOUBLE_EQ(c["bytes_per_cell_day"].GetDouble(), 216'000);
  EXPECT_DOUBLE_EQ(c["bytes_total"].GetDouble(), 19'440'000);
  // Archive: gps 864 000 samples x 8 + speed 1 728 000 x 4 = 13 824 000 a vehicle-day; the
  // summaries: 2 partitions x 24 flushes x 2 sensors x 1 cell = 96 chunks x 1 000 B; 1y = 365.
  const auto& a = TierOf(d, "archive");
  EXPECT_DOUBLE_EQ(a["samples_per_vehicle_day"].GetDouble(), 2'592'000);
  EXPECT_DOUBLE_EQ(a["bytes_per_vehicle_day"].GetDouble(), 13'824'000);
  EXPECT_DOUBLE_EQ(a["summary_bytes_per_day"].GetDouble(), 96'000);
  EXPECT_DOUBLE_EQ(a["bytes_per_day"].GetDouble(), 138'336'000);
  EXPECT_EQ(a["kept_days"].GetInt64(), 365);
  EXPECT_DOUBLE_EQ(a["bytes_total"].GetDouble(), 50'492'640'000);
  EXPECT_DOUBLE_EQ(d["archive"]["chunks_per_day"].GetDouble(), 96);
  EXPECT_DOUBLE_EQ(d["archive"]["samples_per_s"].GetDouble(), 300);
  EXPECT_DOUBLE_EQ(d["archive"]["bytes_per_s"].GetDouble(), 138'336'000.0 / 86'400);
  // Database: 10 + 10/60 + 10/3600 + 1/60 rows/s; the four tables' bytes a day / 86 400.
  EXPECT_DOUBLE_EQ(d["database"]["rows_per_s"].GetDouble(),
                   10.0 + 10.0 * 1440 / 86'400 + 10.0 * 24 / 86'400 + 1440.0 / 86'400);
  EXPECT_DOUBLE_EQ(d["database"]["bytes_per_day"].GetDouble(), 92'496'000);
  EXPECT_DOUBLE_EQ(d["database"]["bytes_per_s"].GetDouble(), 92'496'000.0 / 86'400);
  EXPECT_DOUBLE_EQ(d["database"]["bytes_total"].GetDouble(), 708'480'000);
  // Archived rows: 86 400 a vehicle-day x 10 B = 864 000, x 10 vehicles; the summaries: 2
  // partitions x 24 hours x 1 cell = 48 chunks x 500 B; a year.
  const auto& r = TierOf(d, "archived 1 s rows");
  EXPECT_EQ(std::string(r["store"].GetString()), "row_archive");
  EXPECT_DOUBLE_EQ(r["rows_per_vehicle_day"].GetDouble(), 86'400);
  EXPECT_DOUBLE_EQ(r["bytes_per_vehicle_day"].GetDouble(), 864'000);
  EXPECT_DOUBLE_EQ(r["summary_bytes_per_day"].GetDouble(), 24'000);
  EXPECT_DOUBLE_EQ(r["bytes_per_day"].GetDouble(), 8'664'000);
  EXPECT_EQ(r["kept_days"].GetInt64(), 365);
  EXPECT_DOUBLE_EQ(r["bytes_total"].GetDouble(), 3'162'360'000);
  EXPECT_DOUBLE_EQ(d["row_archive"]["rows_per_s"].GetDouble(), 10);
  EXPECT_DOUBLE_EQ(d["row_archive"]["chunks_per_day"].GetDouble(), 48);
  EXPECT_DOUBLE_EQ(d["row_archive"]["bytes_per_s"].GetDouble(), 8'664'000.0 / 86'400);
  EXPECT_DOUBLE_EQ(d["total"]["bytes_per_day"].GetDouble(), 230'832'000 + 8'664'000);
  EXPECT_DOUBLE_EQ(d["total"]["bytes_total"].GetDouble(), 51'201'120'000 + 3'162'360'000);
}

TEST_F(EstimateTest, DrivingHoursRetentionsAndWhatIsArchived) {
  EstimateArgs a = Small();
  a.hours_per_day = 12;
  a.archive = "speed";
  a.archive_retention = "7y";  // 7 x 365.25 = 2556.75: 2557 days, as the archive's docs say
  a.hot_retention = "0d";      // not kept
  const rapidjson::Document d = Json(a);
  EXPECT_DOUBLE_EQ(TierOf(d, "1 s rows")["bytes_per_vehicle_day"].GetDouble(), 4'320'000);
  EXPECT_DOUBLE_EQ(TierOf(d, "1 s rows")["bytes_total"].GetDouble(), 0);
  EXPECT_DOUBLE_EQ(TierOf(d, "1 h rows")["bytes_per_vehicle_day"].GetDouble(), 6'000);
  const auto& arch = TierOf(d, "archive");
  EXPECT_EQ(arch["kept_days"].GetInt64(), 2557);
  EXPECT_DOUBLE_EQ(arch["bytes_per_vehicle_day"].GetDouble(), 20.0 * 3600 * 12 * 4);
  // 2 partitions x 24 flushes x 1 sensor x 1 cell.
  EXPECT_DOUBLE_EQ(arch["summary_bytes_per_day"].GetDouble(), 48'000);
  EXPECT_DOUBLE_EQ(d["database"]["rows_per_s"].GetDouble(),
                   5.0 + 5.0 / 60 + 5.0 / 3600 + 1440.0 / 86'400);

  EXPECT_DOUBLE_EQ(TierOf(d, "archived 1 s rows")["bytes_per_vehicle_day"].GetDouble(),
                   10.0 * 3600 * 12);

  a.archive = "none";
  a.row_archive = "none";
  const rapidjson::Document none = Json(a);
  EXPECT_DOUBLE_EQ(TierOf(none, "archive")["bytes_per_day"].GetDouble(), 0);
  EXPECT_DOUBLE_EQ(none["archive"]["chunks_per_day"].GetDouble(), 0);
  EXPECT_FALSE(none.HasMember("row_archive"));
  for (const auto& t : none["tiers"].GetArray()) {
    EXPECT_NE(std::string(t["tier"].GetString()), "archived 1 s rows");
  }
}

TEST_F(EstimateTest, CellsPerFlushFollowTheOccupancyOfTheCells) {
  EstimateArgs a = Small();
  a.vehicles = 1000;
  a.cells = 100;
  a.partitions = 10;  // 100 vehicles a partition among 100 cells: 100 (1 - 0.99^100) cells
  const rapidjson::Document d = Json(a);
  const double cells = 100 * (1 - std::pow(0.99, 100));
  EXPECT_DOUBLE_EQ(d["archive"]["cells_per_partition_flush"].GetDouble(), cells);
  EXPECT_DOUBLE_EQ(d["archive"]["chunks_per_day"].GetDouble(), 10 * 24 * 2 * cells);
}

TEST_F(EstimateTest, NamesEveryFigureItUsedWithItsBenchmarkAndDate) {
  ASSERT_EQ(Run(Small()), 0) << err_.str();
  const std::string text = out_.str();
  EXPECT_NE(text.find("archive.gps.bytes_per_sample 8 bytes/sample (test-archive, 2026-01-03)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("db.vehicle_telemetry.bytes_per_row 100 bytes/row (test-storage, "
                      "2026-01-02, abc1234)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("archive.summary_bytes_per_chunk"), std::string::npos);
  EXPECT_NE(text.find(figures_), std::string::npos) << "the figures' file is named";
  // The table: the 1 s rows' 8.64 MB a vehicle-day, 605 MB kept; the archive's 50.5 GB.
  EXPECT_NE(text.find("8.64 MB"), std::string::npos) << text;
  EXPECT_NE(text.find("605 MB"), std::string::npos) << text;
  EXPECT_NE(text.find("50.5 GB"), std::string::npos) << text;
  EXPECT_NE(text.find("96 chunks/day"), std::string::npos) << text;

  EstimateArgs a = Small();
  a.archive = "speed";
  a.format = "json";
  ASSERT_EQ(Run(a), 0);
  EXPECT_EQ(out_.str().find("archive.gps.bytes_per_sample"), std::string::npos)
      << "a figure not used is not named";
}

TEST_F(EstimateTest, BadInputsExitTwoWithAMessage) {
  const auto bad = [&](EstimateArgs a, const std::string& says) {
    EXPECT_EQ(Run(a), 2) << says;
    EXPECT_NE(err_.str().find(says), std::string::npos) << err_.str();
    EXPECT_TRUE(out_.str().empty());
  };
  EstimateArgs a = Small();
  a.rate = "gps=10,lidar=5";
  bad(a, "unknown sensor 'lidar' in --rate");
  a = Small();
  a.archive = "gps,soc";  // soc: not in this figures file
  bad(a, "unknown sensor 'soc' in --archive");
  a = Small();
  a.rate = "gps=10";
  bad(a, "sensor 'speed' is archived but has no --rate");
  a = Small();
  a.rate = "gps=-1,speed=20";
  bad(a, "not negative");
  a = Small();
  a.rate = "gps";
  bad(a, "give sensor=Hz");
  a = Small();
  a.vehicles = -5;
  bad(a, "--vehicles cannot be negative");
  a = Small();
  a.cells = -1;
  bad(a, "--cells cannot be negative");
  for (const std::string d : {"7", "7x", "d", "1.5y", "7 d", ""}) {
    a = Small();
    a.hot_retention = d;
    bad(a, "--hot-retention '" + d + "': a duration is a whole number of days, weeks or years");
  }
  a = Small();
  a.archive_retention = "-7y";
  bad(a, "--archive-retention '-7y': a retention cannot be negative");
  for (double hours : {0.0, -1.0, 25.0}) {
    a = Small();
    a.hours_per_day = hours;
    bad(a, "--hours-per-day");
  }
  a = Small();
  a.figures = (dir_ / "missing.json").string();
  bad(a, "cannot read --figures");
  std::ofstream(dir_ / "broken.json") << R"({"figures": 3})";
  a.figures = (dir_ / "broken.json").string();
  bad(a, "is not a figures file");
  std::ofstream(dir_ / "short.json")
      << R"({"figures": [{"name": "archive.gps.bytes_per_sample", "value": 8}]})";
  a = Small();
  a.figures = (dir_ / "short.json").string();
  a.rate = "gps=10";
  a.archive = "gps";
  bad(a, "lack db.vehicle_telemetry.bytes_per_row");
}

TEST_F(EstimateTest, TheFiguresCompiledInServeTheDefaults) {
  EstimateArgs a;  // the defaults: 1 000 vehicles, the four sensors, all archived
  ASSERT_EQ(Run(a), 0) << err_.str();
  const std::string text = out_.str();
  EXPECT_NE(text.find("docs/bench/storage_figures.json, compiled in"), std::string::npos);
  EXPECT_NE(text.find("(ff-bench-storage, "), std::string::npos) << text;
  EXPECT_NE(text.find("(ff-bench-archive, "), std::string::npos) << text;
  for (const char* s : {"gps", "speed", "soc", "torque"}) {
    EXPECT_NE(text.find(std::string("archive.") + s + ".bytes_per_sample"), std::string::npos);
  }
  a.format = "json";
  ASSERT_EQ(Run(a), 0);
  rapidjson::Document d;
  d.Parse(out_.str().c_str());
  ASSERT_FALSE(d.HasParseError());
  EXPECT_EQ(d["inputs"]["vehicles"].GetInt64(), 1000);
  EXPECT_GT(d["total"]["bytes_total"].GetDouble(), 0);
}

TEST_F(EstimateTest, TheSubcommandParsesItsOptionsAndShowsAnExample) {
  CLI::App app("test");
  EstimateArgs a;
  CLI::App* cmd = AddEstimateCommand(app, a);
  const std::string help = cmd->help();
  EXPECT_NE(help.find("Example"), std::string::npos) << help;
  EXPECT_NE(help.find("fleetflow estimate --vehicles 100000"), std::string::npos) << help;
  EXPECT_NE(help.find("gps=10,speed=30,soc=5,torque=20"), std::string::npos) << "defaults shown";
  app.parse("estimate --vehicles 5 --hours-per-day 10 --format json", false);
  EXPECT_EQ(a.vehicles, 5);
  EXPECT_EQ(a.hours_per_day, 10);
  EXPECT_EQ(a.format, "json");
  CLI::App other("test");
  EstimateArgs b;
  AddEstimateCommand(other, b);
  EXPECT_THROW(other.parse("estimate --format xml", false), CLI::ValidationError);
}

}  // namespace
}  // namespace fleetflow
