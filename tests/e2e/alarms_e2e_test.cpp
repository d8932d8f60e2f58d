// A rule's alarm and command reach a running fleet-sensor: the vehicle's door opens (a sensor the
// test publishes for it), the engine raises the alarm, stores it in the stream ALARMS and the
// table vehicle_alarms, tells the vehicle, and commands its GPS to 20 Hz; the door closes, the
// alarm clears and the GPS goes back to 10 Hz. The rates are measured on the samples the
// fleet-sensor publishes, by their event times.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "alarm_check.hpp"
#include "build_paths.hpp"
#include "control.hpp"
#include "fleet_check.hpp"
#include "nats_client.hpp"
#include "wire.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kS = 1'000'000'000;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// The default pipeline's source, state and join (with the door), a rule on the door.
std::string Pipeline(const TempDir& dir) {
  const std::string path = dir.File("alarms.json");
  std::ofstream(path) << R"({
  "name": "alarms-e2e",
  "nodes": [
    {"id": "telemetry", "type": "nats_source",
     "config": {"url": "${NATS_URL}", "subject": "vehicle.*.*", "queue_group": "fleetflow"}},
    {"id": "last_values", "type": "keyed_last_value", "inputs": ["telemetry"], "config": {"keep": 8}},
    {"id": "windows", "type": "window_join", "inputs": ["last_values"],
     "config": {"every_ms": 1000, "allowed_lateness_ms": 500, "max_gap_ms": 2000,
                "sensors": ["gps", "speed", "door"]}},
    {"id": "alarms", "type": "rule", "inputs": ["windows"],
     "config": {"url": "${NATS_URL}", "table": "vehicle_alarms",
                "columns": [{"name": "door", "sensor": "door", "interpolation": "previous"}],
                "rules": [{"name": "door_open", "when": "door > 0.5", "severity": "critical",
                           "value": "door", "message": "door open while driving",
                           "on_raise": "rate gps 20", "on_clear": "rate gps 10"}]}}
  ]
})";
  return path;
}

/// The GPS samples' event times seen on vehicle.<v>.gps.
class GpsTimes {
 public:
  GpsTimes(nats::Connection& conn, const std::string& vehicle)
      : sub_(conn.Subscribe("vehicle." + vehicle + ".gps", "", [this](nats::Message&& m) {
          std::vector<wire::Point> points;
          if (wire::DecodeBatch(m.data(), m.size(), points) != wire::DecodeError::kNone) return;
          std::lock_guard lock(mu_);
          for (const auto& p : points) times_.push_back(p.ts_ns);
        })) {}
  /// Samples per second with event times in [from, to).
  double Rate(int64_t from, int64_t to) const {
    std::lock_guard lock(mu_);
    const auto n =
        std::count_if(times_.begin(), times_.end(), [&](int64_t t) { return t >= from && t < to; });
    return static_cast<double>(n) * kS / static_cast<double>(to - from);
  }

 private:
  mutable std::mutex mu_;
  std::vector<int64_t> times_;
  std::unique_ptr<nats::Subscription> sub_;
};

TEST(AlarmsE2E, ARulesAlarmAndCommandReachARunningFleetSensorAndChangeItsGpsRate) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  Servers s("fleetflow-alarms-e2e");
  Engine engine(Pipeline(s.dir), s.nats, s.pg, s.dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady()) << engine.process().ReadLog();
  nats::ConnectOptions o;
  o.url = s.nats.url();
  auto conn = nats::Connection::Connect(o);
  GpsTimes gps(*conn, "v1");
  conn->Flush(2000);
  Process sensor({BinaryDir() + "/firmware/fleet-sensor", "--vehicle", "v1", "--sensors",
                  "gps=10,speed=5", "--batch-ms", "100", "--nats-url", s.nats.url()},
                 s.dir.File("sensor.log"));

  // The door: closed for 4 s, open for 8 s, closed again for 6 s, 5 samples a second.
  const auto door = [&](double value, int64_t seconds) {
    const int64_t until = Now() + seconds * kS;
    while (Now() < until) {
      wire::Point p;
      p.ts_ns = Now();
      p.value = value;
      const auto body = wire::EncodeBatch(std::span<const wire::Point>(&p, 1));
      conn->Publish("vehicle.v1.door", body.data(), body.size());
      std::this_thread::sleep_for(200ms);  // the door sensor's own rate, 5 Hz
    }
  };
  door(0, 4);
  const int64_t opened = Now();
  door(1, 8);
  const int64_t closed = Now();
  door(0, 6);
  const int64_t end = Now();

  // Stored once each, with the window times of the door's rows.
  std::vector<AlarmEvent> stored;
  ASSERT_TRUE(WaitFor(
      [&] {
        stored = StoredAlarms(s.nats.url());
        return stored.size() >= 2;
      },
      30s))
      << stored.size() << " events\n"
      << engine.process().ReadLog();
  ASSERT_EQ(stored.size(), 2u);
  const AlarmEvent& raised = stored[0];
  const AlarmEvent& cleared = stored[1];
  EXPECT_TRUE(raised.raised);
  EXPECT_EQ(raised.rule, "door_open");
  EXPECT_EQ(raised.vehicle, "v1");
  EXPECT_NEAR(static_cast<double>(raised.time_ns - opened) / kS, 0.5, 1.0);
  EXPECT_FALSE(cleared.raised);
  EXPECT_EQ(cleared.raised_ns, raised.time_ns);
  EXPECT_NEAR(static_cast<double>(cleared.time_ns - closed) / kS, 0.5, 1.0);
  EXPECT_EQ(s.pg.Psql("SELECT count(*), count(cleared), min(severity), min(value) FROM "
                      "vehicle_alarms"),
            "1|1|critical|1");

  // The GPS rate, on the samples' event times: 10 Hz before, 20 Hz while the alarm is active
  // (from a second after it was raised: the window closes, then the command travels), 10 Hz
  // again once cleared.
  const double before = gps.Rate(opened - 3 * kS, raised.time_ns);
  const double during = gps.Rate(raised.time_ns + 2 * kS, cleared.time_ns);
  const double after = gps.Rate(cleared.time_ns + 2 * kS, end);
  EXPECT_NEAR(before, 10, 1.5);
  EXPECT_NEAR(during, 20, 2.5);
  EXPECT_NEAR(after, 10, 1.5);

  // The vehicle took the alarm (counted, active no more) and obeyed both commands.
  const nats::Message reply = conn->Request("vehicle.v1.cmd.status", "", 5000);
  const auto status = control::ParseStatusJson(reply.text());
  ASSERT_TRUE(status.has_value()) << reply.text();
  EXPECT_EQ(status->counters.alarms_raised, 1u);
  EXPECT_EQ(status->counters.alarms_cleared, 1u);
  EXPECT_TRUE(status->active_alarms.empty());
  const auto hz = std::find_if(status->sensors.begin(), status->sensors.end(),
                               [](const control::SensorState& x) { return x.name == "gps"; });
  ASSERT_NE(hz, status->sensors.end());
  EXPECT_EQ(hz->hz, 10.0);
  EXPECT_EQ(engine.Metric("fleetflow_alarm_vehicle_messages_total"), 4.0);

  sensor.Signal(SIGTERM);
  EXPECT_EQ(sensor.Wait(30s), std::optional<int>(0)) << sensor.ReadLog();
  EXPECT_EQ(engine.process().Stop(SIGTERM, 30s), 0) << engine.process().ReadLog();
  std::printf(
      "e2e alarms: door open %.1f s: alarm raised %.2f s after, cleared %.2f s after it closed; "
      "GPS %.1f Hz before, %.1f Hz during, %.1f Hz after\n",
      static_cast<double>(closed - opened) / kS, static_cast<double>(raised.time_ns - opened) / kS,
      static_cast<double>(cleared.time_ns - closed) / kS, before, during, after);
}

}  // namespace
}  // namespace fleetflow::testing
