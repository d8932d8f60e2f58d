// fleet-sim run as a program against a real nats-server: as fast as possible, at a target
// aggregate rate, and with vehicles switching on and off, checked against the signal model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>

#include "sensor_fixture.hpp"
#include "signals.hpp"

namespace fleetflow::testing {
namespace {

using std::chrono::seconds;
constexpr int64_t kSec = 1'000'000'000;

// A number field of fleet-sim's summary line.
double SummaryField(const std::string& out, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\":([0-9.]+)");
  return std::regex_search(out, m, re) ? std::stod(m[1]) : -1;
}

class FleetSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FF_REQUIRE_NATS_SERVER();
    server_.Start();
    options_.url = server_.url();
    fleet_.seed = 5;
    fleet_.start_ns = (WallNs() / kSec - 3600) * kSec;  // event time may run ahead: start back
  }
  CommandResult Sim(std::vector<std::string> args) {
    args.insert(args.begin(), {FirmwareBin("fleet-sim"), "--nats-url", server_.url(), "--seed", "5",
                               "--start-ns", std::to_string(fleet_.start_ns), "--quiet"});
    return RunCommand(args, seconds(60));
  }

  NatsServer server_;
  nats::ConnectOptions options_;
  sim::FleetConfig fleet_;
};

// Each program's --help ends with an example and names the variable of every option: its own
// prefix, the NATS_* ones for the NATS options. The environment sets an option, the command line
// wins, and a bad value names its variable.
TEST(FirmwareCli, HelpNamesTheEnvironmentAndGivesAnExample) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> helps = {
      {{"fleet-sensor"}, "FLEET_SENSOR_BATCH_MS"},
      {{"fleet-sim"}, "FLEET_SIM_VEHICLES"},
      {{"fleetctl"}, "FLEETCTL_TIMEOUT"},
      {{"fleetctl", "sleep"}, ""},
      {{"fleetctl", "rate"}, ""},
      {{"fleetctl", "status"}, ""}};
  for (const auto& [words, variable] : helps) {
    std::vector<std::string> args = {FirmwareBin(words[0])};
    args.insert(args.end(), words.begin() + 1, words.end());
    args.push_back("--help");
    const CommandResult r = RunCommand(args, seconds(30));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, ::testing::HasSubstr("Example:\n  " + words[0] + " ")) << r.out;
    if (words.size() > 1) {
      EXPECT_THAT(r.out, ::testing::HasSubstr(" " + words[1] + " v0"));
    }
    if (variable.empty()) continue;
    EXPECT_THAT(r.out, ::testing::HasSubstr("(Env:" + variable + ")"));
    EXPECT_THAT(r.out, ::testing::HasSubstr("(Env:NATS_URL)"));
  }
  CommandResult r = RunCommand({FirmwareBin("fleet-sim"), "--duration", "1"}, seconds(30),
                               {{"FLEET_SIM_VEHICLES", "0"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, ::testing::HasSubstr("--vehicles was read from FLEET_SIM_VEHICLES=0"));
  r = RunCommand({FirmwareBin("fleet-sim"), "--vehicles", "5", "--duration", "1"}, seconds(30),
                 {{"FLEET_SIM_VEHICLES", "0"}, {"NATS_URL", "nats://127.0.0.1:1"}});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // the command line won: no usage error, no server
}

TEST_F(FleetSimTest, MaxRateSendsEverySampleFasterThanRealTime) {
  VehicleCollector collector(options_, "*");
  const CommandResult r =
      Sim({"--vehicles", "20", "--duration", "30", "--batch-ms", "1000", "--max-rate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t expected = 0;
  for (int v = 0; v < 20; ++v) {
    for (int s = 0; s < 4; ++s) {
      for (int64_t k = 0; sim::SampleTime(fleet_, v, s, k) < fleet_.start_ns + 30 * kSec; ++k) {
        ++expected;
      }
    }
  }
  EXPECT_EQ(SummaryField(r.out, "samples"), static_cast<double>(expected)) << r.out;
  EXPECT_LT(SummaryField(r.out, "elapsed_s"), 15) << r.out;
  EXPECT_GT(SummaryField(r.out, "samples_per_s"), 0) << r.out;
  ASSERT_TRUE(WaitFor(
      [&] {
        size_t n = 0;
        for (const char* s : {"gps", "speed", "soc", "torque"}) n += collector.Count(s);
        return n == expected;
      },
      seconds(10)));
}

TEST_F(FleetSimTest, TargetRateScalesTheSensorRates) {
  const CommandResult r = Sim({"--vehicles", "10", "--duration", "2", "--target-rate", "20000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(SummaryField(r.out, "samples"), 40'000, 400) << r.out;
  const CommandResult bad = Sim({"--vehicles", "1", "--target-rate", "1000000000"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, ::testing::HasSubstr("use more --vehicles"));
}

TEST_F(FleetSimTest, VehiclesSwitchOnAndOffAndStayPutWhileParked) {
  const double on_s = 5, off_s = 3, duration_s = 60;
  VehicleCollector collector(options_, sim::VehicleId(fleet_, 0));
  const CommandResult r = Sim({"--vehicles", "1", "--rates", "speed=10,gps=2", "--duration", "60",
                               "--on-off", "5,3", "--max-rate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fleet_.sensors = {{"speed", 10}, {"gps", 2}};
  const int64_t end = fleet_.start_ns + static_cast<int64_t>(duration_s) * kSec;

  // Expected statuses: the state at start, then one per switch before the end, then "off".
  sim::Trips trips(fleet_, 0, on_s, off_s);
  std::vector<std::string> statuses = {trips.on() ? "on" : "off"};
  for (; trips.until_ns() < end; trips.Next()) statuses.push_back(trips.on() ? "off" : "on");
  statuses.push_back("off");
  EXPECT_GT(statuses.size(), 10u);
  ASSERT_TRUE(WaitFor([&] { return collector.Statuses().size() == statuses.size(); }, seconds(10)))
      << collector.Statuses().size();
  EXPECT_EQ(collector.Statuses(), statuses);

  for (int s = 0; s < 2; ++s) {
    std::vector<wire::Point> expected;
    sim::Trips t(fleet_, 0, on_s, off_s);
    for (int64_t k = 0, ts; (ts = sim::SampleTime(fleet_, 0, s, k)) < end; ++k) {
      t.Seek(ts);
      if (!t.on()) continue;
      wire::Point p =
          sim::SampleAt(fleet_, 0, s, ts - t.parked_ns(), static_cast<uint32_t>(expected.size()));
      p.ts_ns = ts;
      expected.push_back(p);
    }
    const std::string name = fleet_.sensors[s].name;
    ASSERT_TRUE(WaitFor([&] { return collector.Count(name) >= expected.size(); }, seconds(10)));
    EXPECT_EQ(collector.Samples(name), expected) << name;
  }
}

}  // namespace
}  // namespace fleetflow::testing
