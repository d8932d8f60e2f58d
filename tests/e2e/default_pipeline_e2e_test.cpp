// The whole path with real components: fleet-sim (fixed seed) publishes over a real nats-server,
// fleetflow runs pipelines/default.json, rows land in a real PostgreSQL. The expected rows are
// recomputed here from the simulator's signal model and the rules of docs/semantics.md,
// independently of the engine's code.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <map>
#include <optional>
#include <sstream>

#include "servers.hpp"
#include "signals.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kEveryNs = 1 * kSecond;        // pipelines/default.json
constexpr int64_t kMaxGapNs = 2 * kSecond;       // pipelines/default.json
constexpr int kVehicles = 20;
constexpr int kDurationS = 8;

struct ExpectedRow {
  std::optional<double> lat, lon, speed, soc, torque;
};

struct Slot {
  std::optional<wire::Point> before, after;
};

/// docs/semantics.md, "Which samples a window uses".
Slot SlotAt(const std::vector<wire::Point>& samples, int64_t t) {
  Slot s;
  for (const auto& p : samples) {
    if (p.ts_ns <= t && t - p.ts_ns <= kMaxGapNs && (!s.before || p.ts_ns > s.before->ts_ns)) {
      s.before = p;
    }
    if (p.ts_ns > t && p.ts_ns - t <= kMaxGapNs && (!s.after || p.ts_ns < s.after->ts_ns)) {
      s.after = p;
    }
  }
  return s;
}

/// docs/semantics.md, "Column values".
std::optional<double> Value(const Slot& s, int64_t t, double wire::Point::*field, bool linear) {
  if (s.before && s.after && linear) {
    const double v0 = (*s.before).*field, v1 = (*s.after).*field;
    const double f = double(t - s.before->ts_ns) / double(s.after->ts_ns - s.before->ts_ns);
    return v0 + (v1 - v0) * f;
  }
  if (s.before) return (*s.before).*field;
  if (s.after && linear) return (*s.after).*field;
  return std::nullopt;
}

std::map<std::pair<std::string, int64_t>, ExpectedRow> ExpectedRows(const sim::FleetConfig& fleet,
                                                                    int64_t end_ns) {
  std::map<std::pair<std::string, int64_t>, ExpectedRow> rows;
  for (int v = 0; v < fleet.vehicles; ++v) {
    std::map<std::string, std::vector<wire::Point>> by_sensor;
    int64_t newest = 0;
    for (size_t s = 0; s < fleet.sensors.size(); ++s) {
      for (int64_t k = 0;; ++k) {
        const int64_t ts = sim::SampleTime(fleet, v, static_cast<int>(s), k);
        if (ts >= end_ns) break;
        by_sensor[fleet.sensors[s].name].push_back(
            sim::SampleAt(fleet, v, static_cast<int>(s), ts, static_cast<uint32_t>(k)));
        newest = std::max(newest, ts);
      }
    }
    // The vehicle says off after its last sample: windows up to its newest sample only.
    for (int64_t t = (fleet.start_ns / kEveryNs) * kEveryNs; t <= newest; t += kEveryNs) {
      std::map<std::string, Slot> slots;
      bool active = false;
      for (const auto& [name, samples] : by_sensor) {
        slots[name] = SlotAt(samples, t);
        active = active || slots[name].before.has_value();
      }
      if (!active) continue;
      ExpectedRow r;
      r.lat = Value(slots["gps"], t, &wire::Point::lat, true);
      r.lon = Value(slots["gps"], t, &wire::Point::lon, true);
      r.speed = Value(slots["speed"], t, &wire::Point::value, true);
      r.soc = Value(slots["soc"], t, &wire::Point::value, false);
      r.torque = Value(slots["torque"], t, &wire::Point::value, true);
      rows[{sim::VehicleId(fleet, v), t}] = r;
    }
  }
  return rows;
}

std::optional<double> ParseCell(const std::string& cell) {
  if (cell.empty()) return std::nullopt;
  return std::stod(cell);
}

bool Near(std::optional<double> a, std::optional<double> b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return std::abs(*a - *b) <= 1e-9 * std::max(1.0, std::abs(*b));
}

std::string Show(std::optional<double> v) {
  if (!v) return "NULL";
  std::ostringstream o;
  o.precision(17);
  o << *v;
  return o.str();
}

TEST(DefaultPipelineE2E, EveryExpectedRowOnceWithIndependentlyComputedValues) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  NatsServer nats;
  nats.Start();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-e2e");

  const int metrics_port = FreePort();
  auto env = pg.env();
  env["NATS_URL"] = nats.url();
  Process engine({std::string(FF_BINARY_DIR) + "/apps/fleetflow", "run",
                  std::string(FF_SOURCE_DIR) + "/pipelines/default.json", "--metrics-port",
                  std::to_string(metrics_port), "--metrics-host", "127.0.0.1"},
                 dir.File("engine.log"), env);
  httplib::Client http("127.0.0.1", metrics_port);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto res = http.Get("/readyz");
        return res && res->status == 200;
      },
      30s))
      << engine.ReadLog();

  sim::FleetConfig fleet;
  fleet.seed = 42;
  fleet.vehicles = kVehicles;
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  fleet.start_ns = (now_ns / kSecond + 2) * kSecond + 250'000'000;  // not on a window boundary
  const int64_t end_ns = fleet.start_ns + kDurationS * kSecond;
  const CommandResult sim = RunCommand(
      {std::string(FF_BINARY_DIR) + "/firmware/fleet-sim", "--nats-url", nats.url(),
       "--vehicles", std::to_string(kVehicles), "--seed", "42", "--duration",
       std::to_string(kDurationS), "--start-ns", std::to_string(fleet.start_ns), "--quiet"},
      60s);
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_NE(sim.out.find("\"end_ns\":" + std::to_string(end_ns)), std::string::npos) << sim.out;

  const auto expected = ExpectedRows(fleet, end_ns);
  ASSERT_GT(expected.size(), static_cast<size_t>(kVehicles * (kDurationS - 2)));
  const std::string count_sql = "SELECT count(*) FROM vehicle_telemetry";
  ASSERT_TRUE(WaitFor([&] { return pg.Psql(count_sql) == std::to_string(expected.size()); }, 30s))
      << "rows: " << pg.Psql(count_sql) << ", expected " << expected.size() << "\n"
      << engine.ReadLog();

  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics && metrics->status == 200);
  EXPECT_EQ(engine.Stop(SIGTERM, 30s), 0) << engine.ReadLog();

  // Every row once, nothing else, with the values of the independent computation.
  const std::string rows = pg.Psql(
      "SELECT vehicle_id, (extract(epoch FROM time) * 1000000)::bigint, lat, lon, speed, soc, "
      "torque FROM vehicle_telemetry ORDER BY 1, 2");
  std::istringstream lines(rows);
  std::string line;
  size_t found = 0, mismatched = 0;
  while (std::getline(lines, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, '|')) cells.push_back(cell);
    cells.resize(7);
    const std::pair<std::string, int64_t> key{cells[0], std::stoll(cells[1]) * 1000};
    auto it = expected.find(key);
    ASSERT_NE(it, expected.end()) << "unexpected row " << line;
    ++found;
    const ExpectedRow& e = it->second;
    const std::optional<double> got[] = {ParseCell(cells[2]), ParseCell(cells[3]),
                                         ParseCell(cells[4]), ParseCell(cells[5]),
                                         ParseCell(cells[6])};
    const std::optional<double> want[] = {e.lat, e.lon, e.speed, e.soc, e.torque};
    const char* names[] = {"lat", "lon", "speed", "soc", "torque"};
    for (int c = 0; c < 5; ++c) {
      if (!Near(got[c], want[c])) {
        if (++mismatched <= 10) {
          ADD_FAILURE() << key.first << " @" << key.second << " " << names[c] << ": got "
                        << Show(got[c]) << ", want " << Show(want[c]);
        }
      }
    }
  }
  EXPECT_EQ(found, expected.size());
  EXPECT_EQ(mismatched, 0u);
  // The engine's own counters agree with the database.
  EXPECT_NE(metrics->body.find("fleetflow_sink_rows_written_total"), std::string::npos);
  std::printf("e2e: %d vehicles x %d s: %zu rows expected, %zu found, %zu value mismatches\n",
              kVehicles, kDurationS, expected.size(), found, mismatched);
}

}  // namespace
}  // namespace fleetflow::testing
