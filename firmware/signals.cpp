#include "signals.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <stdexcept>
#include <string_view>

namespace fleetflow::sim {
namespace {

constexpr double kEarthRadiusM = 6371008.8;
constexpr double kParisLat = 48.8566;
constexpr double kParisLon = 2.3522;
constexpr double kDegPerRad = 180.0 / std::numbers::pi;

// Salts separate the independent hash streams of one vehicle.
constexpr uint64_t kSaltMotion = 0x6d6f74696f6e;  // "motion"
constexpr uint64_t kSaltPhase = 0x7068617365;     // "phase"
constexpr uint64_t kSaltTrips = 0x7472697073;     // "trips"

uint64_t Mix(uint64_t x) {  // the splitmix64 finalizer
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t HashName(std::string_view name) {  // FNV-1a
  uint64_t h = 0xCBF29CE484222325ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ULL;
  return h;
}

// splitmix64 keyed by (seed, vehicle, salt): the per-vehicle parameters, drawn in a fixed order.
class Draw {
 public:
  Draw(uint64_t seed, int vehicle, uint64_t salt)
      : state_(Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(vehicle)) ^ salt)) {}
  explicit Draw(uint64_t state) : state_(state) {}
  uint64_t state() const { return state_; }
  uint64_t Bits() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return Mix(state_);
  }
  double Uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(Bits() >> 11) * 0x1.0p-53;
  }

 private:
  uint64_t state_;
};

// amp * sin(omega * t + phase), with its closed-form integral from 0 and its derivative.
struct Wave {
  double amp, omega, phase;

  static Wave Random(Draw& d, double amp_lo, double amp_hi, double period_lo, double period_hi) {
    return {d.Uniform(amp_lo, amp_hi), 2 * std::numbers::pi / d.Uniform(period_lo, period_hi),
            d.Uniform(0, 2 * std::numbers::pi)};
  }
  double At(double t) const { return amp * std::sin(omega * t + phase); }
  double Integral(double t) const {
    return amp / omega * (std::cos(phase) - std::cos(omega * t + phase));
  }
  double Slope(double t) const { return amp * omega * std::cos(omega * t + phase); }
};

// An offset plus two waves: smooth, bounded, cheap, with closed-form integral and derivative.
struct Signal {
  double offset;
  Wave slow, fast;

  double At(double t) const { return offset + slow.At(t) + fast.At(t); }
  double Integral(double t) const { return offset * t + slow.Integral(t) + fast.Integral(t); }
  double Slope(double t) const { return slow.Slope(t) + fast.Slope(t); }
};

// One simulated vehicle: drives around a circle at speed `speed(t)` (m/s, always > 0), so the
// distance travelled is speed's integral and the position follows from it.
struct Vehicle {
  double centre_lat, centre_lon;  // degrees
  double radius_m, heading0, direction;
  Signal speed;
  double soc0, soc_per_m;
  double torque_base, torque_drag, torque_inertia;

  Vehicle(uint64_t seed, int vehicle) {
    Draw d(seed, vehicle, kSaltMotion);
    const double from_paris = 8000.0 * std::sqrt(d.Uniform(0, 1));  // uniform over a disc
    const double bearing = d.Uniform(0, 2 * std::numbers::pi);
    centre_lat = kParisLat + from_paris * std::cos(bearing) / kEarthRadiusM * kDegPerRad;
    centre_lon = kParisLon + from_paris * std::sin(bearing) /
                                 (kEarthRadiusM * std::cos(kParisLat / kDegPerRad)) * kDegPerRad;
    radius_m = d.Uniform(500, 3000);
    heading0 = d.Uniform(0, 2 * std::numbers::pi);
    direction = d.Uniform(0, 1) < 0.5 ? -1.0 : 1.0;
    // Cruise 8-16 m/s; the waves take at most 85% of it, so speed stays >= 1.2 m/s.
    speed.offset = d.Uniform(8, 16);
    speed.slow = Wave::Random(d, 0.3 * speed.offset, 0.6 * speed.offset, 90, 300);
    speed.fast = Wave::Random(d, 0.05 * speed.offset, 0.25 * speed.offset, 15, 45);
    soc0 = d.Uniform(60, 100);
    soc_per_m = d.Uniform(0.2, 0.4) / 1000.0;  // % per metre (0.2-0.4 % per km)
    // Motor torque = (rolling + aerodynamic drag + m * a) * wheel radius / gear ratio.
    const double wheel_per_gear = 0.3 / 9.0;
    const double mass_kg = d.Uniform(1300, 2200);
    torque_base = mass_kg * 9.81 * 0.012 * wheel_per_gear;
    torque_drag = 0.5 * 1.2 * d.Uniform(0.6, 0.8) * wheel_per_gear;
    torque_inertia = mass_kg * wheel_per_gear;
  }

  void Position(double t, double& lat, double& lon) const {
    const double angle = heading0 + direction * speed.Integral(t) / radius_m;
    const double north_m = radius_m * std::sin(angle);
    const double east_m = radius_m * std::cos(angle);
    lat = centre_lat + north_m / kEarthRadiusM * kDegPerRad;
    lon = centre_lon + east_m / (kEarthRadiusM * std::cos(centre_lat / kDegPerRad)) * kDegPerRad;
  }
  double Soc(double t) const {
    return std::clamp(soc0 - soc_per_m * speed.Integral(t), 5.0, 100.0);
  }
  double Torque(double t) const {
    const double v = speed.At(t);
    return torque_base + torque_drag * v * v + torque_inertia * speed.Slope(t);
  }
};

// Any other sensor: a smooth scalar around 20-80 whose shape depends on the sensor's name.
double GenericValue(uint64_t seed, int vehicle, std::string_view name, double t) {
  Draw d(seed, vehicle, HashName(name));
  Signal s;
  s.offset = d.Uniform(20, 80);
  s.slow = Wave::Random(d, 5, 15, 60, 600);
  s.fast = Wave::Random(d, 1, 4, 5, 30);
  return s.At(t);
}

}  // namespace

Trips::Trips(const FleetConfig& fleet, int vehicle, double mean_on_s, double mean_off_s)
    : rng_(Draw(fleet.seed, vehicle, kSaltTrips).Bits()),
      mean_on_ns_(mean_on_s * 1e9),
      mean_off_ns_(mean_off_s * 1e9) {
  if (!(mean_on_s > 0) || !(mean_off_s > 0)) {
    throw std::invalid_argument("trips: mean on and off durations must be positive");
  }
  on_ = Unit() < mean_on_s / (mean_on_s + mean_off_s);
  from_ = fleet.start_ns;
  until_ = from_ + std::max<int64_t>(1, std::llround(static_cast<double>(Length(on_)) * Unit()));
}

double Trips::Unit() {
  Draw d(rng_);
  const double u = d.Uniform(0, 1);
  rng_ = d.state();
  return u;
}

int64_t Trips::Length(bool on) {
  return std::max<int64_t>(1, std::llround((on ? mean_on_ns_ : mean_off_ns_) * (0.5 + Unit())));
}

void Trips::Next() {
  if (!on_) parked_ += until_ - from_;
  on_ = !on_;
  from_ = until_;
  until_ = from_ + Length(on_);
}

std::string VehicleId(const FleetConfig& fleet, int vehicle) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%05d", vehicle);
  return fleet.id_prefix + digits;
}

int64_t PeriodNs(const SensorRate& sensor) {
  if (!(sensor.hz > 0) || !std::isfinite(sensor.hz)) {
    throw std::invalid_argument("sensor " + sensor.name + ": rate must be a positive number of Hz");
  }
  return std::max<int64_t>(1, std::llround(1e9 / sensor.hz));
}

int64_t SampleTime(const FleetConfig& fleet, int vehicle, int sensor, int64_t k) {
  const int64_t period = PeriodNs(fleet.sensors.at(sensor));
  Draw d(fleet.seed, vehicle, kSaltPhase ^ Mix(static_cast<uint64_t>(sensor)));
  const int64_t phase = static_cast<int64_t>(d.Bits() % static_cast<uint64_t>(period));
  return fleet.start_ns + phase + k * period;
}

wire::Point SampleAt(const FleetConfig& fleet, int vehicle, int sensor, int64_t ts_ns,
                     uint32_t seq) {
  const std::string& name = fleet.sensors.at(sensor).name;
  const double t = static_cast<double>(ts_ns - fleet.start_ns) * 1e-9;
  wire::Point p;
  p.ts_ns = ts_ns;
  p.seq = seq;
  if (name != "gps" && name != "speed" && name != "soc" && name != "torque") {
    p.value = GenericValue(fleet.seed, vehicle, name, t);
    return p;
  }
  const Vehicle v(fleet.seed, vehicle);
  if (name == "gps") {
    v.Position(t, p.lat, p.lon);
    p.has_position = true;
  } else if (name == "speed") {
    p.value = v.speed.At(t);
  } else if (name == "soc") {
    p.value = v.Soc(t);
  } else {
    p.value = v.Torque(t);
  }
  return p;
}

}  // namespace fleetflow::sim
