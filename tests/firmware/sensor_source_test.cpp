#include "sensor_source.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "servers.hpp"

namespace fleetflow::firmware {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kStart = 1'700'000'000'000'000'000;

std::string WriteFile(const testing::TempDir& dir, const std::string& text) {
  const std::string path = dir.File("recording.csv");
  std::ofstream(path) << text;
  return path;
}

constexpr char kRecording[] =
    "# a short drive\n"
    "time_ms,sensor,value,lat,lon\n"
    "0,gps,,48.85,2.35\n"
    "0,speed,10\n"
    "100,speed,11.5\n"
    "\n"
    "150,coolant,90\n"
    "200,gps,,48.86,2.36\r\n"
    "200,speed,12\n";

wire::Point Read(SensorSource& s, int sensor, int64_t ms, bool* ok = nullptr) {
  wire::Point p;
  p.seq = 9;
  const bool got = s.Read(sensor, kStart + ms * kMs, p);
  if (ok != nullptr) *ok = got;
  return p;
}

TEST(SimulatedSource, GivesTheFleetSimSignalsOfTheVehicle) {
  SimulatedSource source(7, "truck-1", {"gps", "speed"}, kStart);
  sim::FleetConfig fleet;
  fleet.seed = 7;
  fleet.start_ns = kStart;
  fleet.sensors = {{"gps", 1}, {"speed", 1}};
  const int v = SimulatedVehicleIndex("truck-1");
  EXPECT_EQ(Read(source, 1, 1500), sim::SampleAt(fleet, v, 1, kStart + 1500 * kMs, 9));
  EXPECT_EQ(Read(source, 0, 1500), sim::SampleAt(fleet, v, 0, kStart + 1500 * kMs, 9));
  EXPECT_NE(SimulatedVehicleIndex("truck-1"), SimulatedVehicleIndex("truck-2"));
}

TEST(CsvReplaySource, SamplesAndHoldsTheNewestRow) {
  testing::TempDir dir("ff-csv");
  CsvReplaySource source(WriteFile(dir, kRecording), {"speed", "gps"}, kStart, false);
  bool ok = false;
  EXPECT_EQ(Read(source, 0, 0).value, 10);
  EXPECT_EQ(Read(source, 0, 99).value, 10);
  const wire::Point p = Read(source, 0, 150, &ok);
  EXPECT_TRUE(ok);
  EXPECT_EQ(p.value, 11.5);
  EXPECT_EQ(p.ts_ns, kStart + 150 * kMs);
  EXPECT_EQ(p.seq, 9u);
  const wire::Point gps = Read(source, 1, 250);
  EXPECT_TRUE(gps.has_position);
  EXPECT_EQ(gps.lat, 48.86);
  EXPECT_EQ(gps.lon, 2.36);
  EXPECT_EQ(Read(source, 0, 10'000).value, 12);  // held after the end
}

TEST(CsvReplaySource, NoReadingBeforeTheSensorsFirstRow) {
  testing::TempDir dir("ff-csv");
  CsvReplaySource source(WriteFile(dir, "50,speed,1\n60,gps,,1,2\n"), {"speed", "gps"}, kStart,
                         false);
  bool ok = true;
  Read(source, 0, 10, &ok);
  EXPECT_FALSE(ok);
  Read(source, 0, 50, &ok);
  EXPECT_TRUE(ok);
}

TEST(CsvReplaySource, LoopsOverTheRecording) {
  testing::TempDir dir("ff-csv");
  CsvReplaySource source(WriteFile(dir, kRecording), {"speed"}, kStart, true);
  EXPECT_EQ(Read(source, 0, 150).value, 11.5);
  EXPECT_EQ(Read(source, 0, 250).value, 10);  // loop length 200 ms: 250 is 50 into loop 2
  EXPECT_EQ(Read(source, 0, 350).value, 11.5);
  EXPECT_EQ(Read(source, 0, 10'000).value, 10);  // many loops later, t = 0 mod 200
}

TEST(CsvReplaySource, RejectsBadFilesWithFileAndLine) {
  testing::TempDir dir("ff-csv");
  const auto error = [&](const std::string& text, const std::vector<std::string>& sensors) {
    try {
      CsvReplaySource(WriteFile(dir, text), sensors, kStart, false);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error("0,speed,1\nx,speed,2\n", {"speed"}).find("recording.csv:2: time_ms"),
            std::string::npos);
  EXPECT_NE(error("5,speed,1\n1,speed,2\n", {"speed"}).find(":2: rows must be in time order"),
            std::string::npos);
  EXPECT_NE(error("0,speed,\n", {"speed"}).find(":1: a row needs a value"), std::string::npos);
  EXPECT_NE(error("0,gps,,1\n", {"gps"}).find(":1: lat and lon"), std::string::npos);
  EXPECT_NE(error("0,speed,1\n", {"speed", "soc"}).find("no row for sensor 'soc'"),
            std::string::npos);
  EXPECT_NE(error("0,speed,1\n", {"speed"}).find("no error"), std::string::npos);
  EXPECT_THROW(CsvReplaySource(dir.File("missing.csv"), {"speed"}, kStart, false),
               std::runtime_error);
}

}  // namespace
}  // namespace fleetflow::firmware
