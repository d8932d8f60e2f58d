// fleet-sensor keeps its configured rates: over 10 s of event time, every sensor's sample count
// is within 5% of rate x 10 s (long: labelled "slow").
#include <gtest/gtest.h>

#include <csignal>

#include "sensor_fixture.hpp"

namespace fleetflow::testing {
namespace {

constexpr int64_t kSec = 1'000'000'000;

TEST(FleetSensorRates, EachSensorWithinFivePercentOverTenSeconds) {
  FF_REQUIRE_NATS_SERVER();
  TempDir dir("ff-rates");
  NatsServer server;
  server.Start();
  nats::ConnectOptions options;
  options.url = server.url();
  VehicleCollector collector(options, "q1");
  const std::vector<std::pair<std::string, double>> rates = {
      {"gps", 10}, {"speed", 30}, {"soc", 5}, {"torque", 20}};
  Process sensor({FirmwareBin("fleet-sensor"), "--vehicle", "q1", "--nats-url", server.url(),
                  "--sensors", "gps=10,speed=30,soc=5,torque=20", "--batch-ms", "100"},
                 dir.File("sensor.log"));
  ASSERT_TRUE(WaitFor([&] { return collector.Count("soc") >= 1; }, std::chrono::seconds(10)))
      << sensor.ReadLog();
  const int64_t start = collector.Samples("soc").front().ts_ns + kSec / 2;
  const int64_t end = start + 10 * kSec;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& [name, hz] : rates) {
          if (collector.NewestTs(name) < end) return false;
        }
        return true;
      },
      std::chrono::seconds(20)))
      << sensor.ReadLog();
  for (const auto& [name, hz] : rates) {
    const double expected = hz * 10;
    EXPECT_NEAR(static_cast<double>(collector.CountBetween(name, start, end)), expected,
                0.05 * expected)
        << name;
  }
  EXPECT_EQ(sensor.Stop(SIGTERM), 0) << sensor.ReadLog();
  const auto status = FinalStatus(sensor.ReadLog());
  ASSERT_TRUE(status);
  // A tick is skipped only when the sampler runs more than a period late (a loaded machine).
  EXPECT_LE(status->counters.skipped_ticks, status->counters.samples / 100);
}

}  // namespace
}  // namespace fleetflow::testing
