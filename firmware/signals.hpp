#pragma once
/// The simulated vehicle: plausible, deterministic signals as pure functions of
/// (seed, vehicle index, sensor, event time). fleet-sim publishes them; tests recompute them
/// independently of the engine to check the rows it writes.
///
/// Signals, with t in seconds since FleetConfig::start_ns; all smooth (continuous, so linear
/// interpolation between samples is meaningful):
/// - gps: WGS84 position on a closed circular route (radius 500-3000 m, centre within 8 km of
///   Paris 48.8566, 2.3522); the distance along the route is exactly the integral of `speed`.
/// - speed: m/s; a cruise speed of 8-16 m/s plus two sine waves, always >= 1.2 m/s.
/// - soc: state of charge in %, from 60-100 at t = 0, draining 0.2-0.4 % per km driven,
///   floored at 5 (non-increasing for t >= 0).
/// - torque: motor torque in Nm: rolling and aerodynamic load plus inertia times acceleration
///   (negative while decelerating: regenerative braking).
/// - any other sensor name: a scalar around 20-80 (two sine waves) shaped by the name.

#include <cstdint>
#include <string>
#include <vector>

#include "wire.hpp"

namespace fleetflow::sim {

struct SensorRate {
  std::string name;  // gps, speed, soc, torque, or any other token (a generic scalar signal)
  double hz = 10.0;
};

struct FleetConfig {
  uint64_t seed = 1;
  int vehicles = 50;
  std::vector<SensorRate> sensors = {{"gps", 10}, {"speed", 30}, {"soc", 5}, {"torque", 20}};
  int64_t start_ns = 0;         // the fleet's time origin (event time of the first period)
  std::string id_prefix = "v";  // vehicle ids: prefix + zero-padded index, e.g. v00007
};

/// "v00007" for index 7 with the default prefix.
std::string VehicleId(const FleetConfig& fleet, int vehicle);

/// The sampling period of a sensor, in ns (rounded from 1e9 / hz).
int64_t PeriodNs(const SensorRate& sensor);

/// Event time of sample k (k = 0, 1, ...) of `sensor` on `vehicle`:
/// start_ns + phase + k * period, with a deterministic phase in [0, period).
int64_t SampleTime(const FleetConfig& fleet, int vehicle, int sensor, int64_t k);

/// The sample of `sensor` (index into fleet.sensors) on `vehicle` at event time ts_ns, seq set.
/// gps samples carry a position; every other sensor a value.
wire::Point SampleAt(const FleetConfig& fleet, int vehicle, int sensor, int64_t ts_ns,
                     uint32_t seq);

/// Optional on/off behaviour of a vehicle: it alternates driving periods (on, sampling) and
/// parked periods (off, silent), each lasting 0.5-1.5 times its mean, deterministic for
/// (seed, vehicle). At start_ns a vehicle is on with probability mean_on / (mean_on + mean_off),
/// part-way through its first period. While parked the vehicle does not move: its signals
/// continue, once on again, from where they stopped, so a driving sample at ts_ns is
/// SampleAt(..., ts_ns - parked_ns(), ...) with its time set back to ts_ns.
class Trips {
 public:
  Trips(const FleetConfig& fleet, int vehicle, double mean_on_s, double mean_off_s);

  /// Moves to the period containing ts_ns; times must not decrease from call to call.
  void Seek(int64_t ts_ns) {
    while (ts_ns >= until_) Next();
  }
  /// Moves to the next period.
  void Next();

  bool on() const { return on_; }
  /// The current period is [from_ns(), until_ns()).
  int64_t from_ns() const { return from_; }
  int64_t until_ns() const { return until_; }
  /// Time spent parked before from_ns().
  int64_t parked_ns() const { return parked_; }

 private:
  double Unit();  // uniform in [0, 1), advancing rng_
  int64_t Length(bool on);

  uint64_t rng_;
  double mean_on_ns_, mean_off_ns_;
  bool on_ = true;
  int64_t from_ = 0, until_ = 0, parked_ = 0;
};

}  // namespace fleetflow::sim
