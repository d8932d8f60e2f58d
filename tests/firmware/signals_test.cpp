#include "signals.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace fleetflow::sim {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int kGps = 0, kSpeed = 1, kSoc = 2, kTorque = 3, kOther = 4;

FleetConfig Fleet(uint64_t seed) {
  FleetConfig f;
  f.seed = seed;
  f.start_ns = 1'700'000'000 * kSec;
  f.sensors.push_back({"coolant", 2});  // a generic scalar, index kOther
  return f;
}

int64_t At(const FleetConfig& f, double t_s) { return f.start_ns + std::llround(t_s * 1e9); }

double Value(const FleetConfig& f, int vehicle, int sensor, double t_s) {
  return SampleAt(f, vehicle, sensor, At(f, t_s), 0).value;
}

// Great-circle distance in metres.
double Haversine(const wire::Point& a, const wire::Point& b) {
  constexpr double kRad = std::numbers::pi / 180;
  const double dlat = (b.lat - a.lat) * kRad, dlon = (b.lon - a.lon) * kRad;
  const double h = std::pow(std::sin(dlat / 2), 2) + std::cos(a.lat * kRad) *
                                                         std::cos(b.lat * kRad) *
                                                         std::pow(std::sin(dlon / 2), 2);
  return 2 * 6371008.8 * std::asin(std::sqrt(h));
}

TEST(Signals, VehicleIdIsPrefixAndZeroPaddedIndex) {
  FleetConfig f;
  EXPECT_EQ(VehicleId(f, 7), "v00007");
  EXPECT_EQ(VehicleId(f, 123456), "v123456");
  f.id_prefix = "truck-";
  EXPECT_EQ(VehicleId(f, 0), "truck-00000");
}

TEST(Signals, PeriodIsRoundedFromRate) {
  EXPECT_EQ(PeriodNs({"gps", 10}), 100'000'000);
  EXPECT_EQ(PeriodNs({"speed", 30}), 33'333'333);
  EXPECT_EQ(PeriodNs({"x", 1000}), 1'000'000);
  EXPECT_THROW(PeriodNs({"x", 0}), std::invalid_argument);
  EXPECT_THROW(PeriodNs({"x", -5}), std::invalid_argument);
}

TEST(Signals, SampleTimesArePeriodicWithPhaseInRange) {
  const FleetConfig f = Fleet(1);
  bool some_phase_nonzero = false;
  for (int v = 0; v < 50; ++v) {
    for (int s = 0; s < static_cast<int>(f.sensors.size()); ++s) {
      const int64_t period = PeriodNs(f.sensors[s]);
      const int64_t phase = SampleTime(f, v, s, 0) - f.start_ns;
      ASSERT_GE(phase, 0);
      ASSERT_LT(phase, period);
      some_phase_nonzero |= phase > 0;
      for (int64_t k : {0, 1, 7, 1000}) {
        ASSERT_EQ(SampleTime(f, v, s, k + 1) - SampleTime(f, v, s, k), period);
      }
    }
  }
  EXPECT_TRUE(some_phase_nonzero);
}

TEST(Signals, SameSeedGivesSameSamples) {
  const FleetConfig a = Fleet(42), b = Fleet(42);
  for (int v : {0, 3, 999}) {
    for (int s = 0; s < static_cast<int>(a.sensors.size()); ++s) {
      EXPECT_EQ(SampleTime(a, v, s, 5), SampleTime(b, v, s, 5));
      const int64_t ts = SampleTime(a, v, s, 5);
      EXPECT_EQ(SampleAt(a, v, s, ts, 5), SampleAt(b, v, s, ts, 5));
    }
  }
}

TEST(Signals, DifferentSeedsAndVehiclesDiffer) {
  const FleetConfig a = Fleet(1), b = Fleet(2);
  for (int s = 0; s < static_cast<int>(a.sensors.size()); ++s) {
    const int64_t ts = At(a, 10);
    EXPECT_NE(SampleAt(a, 0, s, ts, 0), SampleAt(b, 0, s, ts, 0)) << a.sensors[s].name;
    EXPECT_NE(SampleAt(a, 0, s, ts, 0), SampleAt(a, 1, s, ts, 0)) << a.sensors[s].name;
  }
  int same_phase = 0;
  for (int v = 0; v < 20; ++v)
    same_phase += SampleTime(a, v, kSpeed, 0) == SampleTime(b, v, kSpeed, 0);
  EXPECT_LT(same_phase, 2);
}

TEST(Signals, SampleCarriesTimeSeqAndKind) {
  const FleetConfig f = Fleet(1);
  const wire::Point gps = SampleAt(f, 3, kGps, At(f, 1.5), 15);
  EXPECT_EQ(gps.ts_ns, At(f, 1.5));
  EXPECT_EQ(gps.seq, 15u);
  EXPECT_TRUE(gps.has_position);
  for (int s : {kSpeed, kSoc, kTorque, kOther}) {
    EXPECT_FALSE(SampleAt(f, 3, s, At(f, 1.5), 0).has_position) << f.sensors[s].name;
  }
}

TEST(Signals, ValuesArePlausible) {
  const FleetConfig f = Fleet(7);
  for (int v = 0; v < 100; ++v) {
    for (double t = 0; t < 3600; t += 37) {
      const wire::Point p = SampleAt(f, v, kGps, At(f, t), 0);
      ASSERT_NEAR(p.lat, 48.8566, 0.11) << "vehicle " << v << " t " << t;  // ~12 km
      ASSERT_NEAR(p.lon, 2.3522, 0.17) << "vehicle " << v << " t " << t;
      const double speed = Value(f, v, kSpeed, t);
      ASSERT_GT(speed, 0.5);
      ASSERT_LT(speed, 30);  // m/s
      const double soc = Value(f, v, kSoc, t);
      ASSERT_GE(soc, 5);
      ASSERT_LE(soc, 100);
      const double torque = Value(f, v, kTorque, t);
      ASSERT_GT(torque, -250);
      ASSERT_LT(torque, 400);  // Nm
      const double other = Value(f, v, kOther, t);
      ASSERT_GT(other, 0);
      ASSERT_LT(other, 100);
    }
  }
}

// The distance between two fixes 1 s apart equals the integral of speed over that second.
TEST(Signals, GpsDisplacementMatchesSpeed) {
  const FleetConfig f = Fleet(3);
  for (int v = 0; v < 20; ++v) {
    for (double t = 0; t < 600; t += 13.7) {
      const double d =
          Haversine(SampleAt(f, v, kGps, At(f, t), 0), SampleAt(f, v, kGps, At(f, t + 1), 0));
      double integral = 0;  // Simpson's rule over 100 steps
      const int n = 100;
      for (int i = 0; i <= n; ++i) {
        const double w = (i == 0 || i == n) ? 1 : (i % 2 ? 4 : 2);
        integral += w * Value(f, v, kSpeed, t + static_cast<double>(i) / n);
      }
      integral /= 3.0 * n;
      ASSERT_NEAR(d, integral, 0.005 * integral + 0.01) << "vehicle " << v << " t " << t;
    }
  }
}

TEST(Signals, SocNeverIncreasesAndDrains) {
  const FleetConfig f = Fleet(5);
  for (int v = 0; v < 20; ++v) {
    double prev = Value(f, v, kSoc, 0);
    EXPECT_GE(prev, 60);
    for (double t = 10; t <= 7200; t += 10) {
      const double soc = Value(f, v, kSoc, t);
      ASSERT_LE(soc, prev) << "vehicle " << v << " t " << t;
      prev = soc;
    }
    EXPECT_LT(prev, Value(f, v, kSoc, 0));
  }
}

// Torque is dominated by inertia: it correlates strongly with acceleration (from speed).
TEST(Signals, TorqueFollowsAcceleration) {
  const FleetConfig f = Fleet(9);
  for (int v = 0; v < 10; ++v) {
    double sa = 0, st = 0, saa = 0, stt = 0, sat = 0;
    int n = 0;
    for (double t = 0; t < 600; t += 2, ++n) {
      const double accel = (Value(f, v, kSpeed, t + 0.01) - Value(f, v, kSpeed, t - 0.01)) / 0.02;
      const double torque = Value(f, v, kTorque, t);
      sa += accel, st += torque, saa += accel * accel, stt += torque * torque,
          sat += accel * torque;
    }
    const double cov = sat - sa * st / n;
    const double corr = cov / std::sqrt((saa - sa * sa / n) * (stt - st * st / n));
    EXPECT_GT(corr, 0.9) << "vehicle " << v;
  }
}

// No jumps: every signal changes by a small amount over 1 ms, so interpolation is meaningful.
TEST(Signals, SignalsAreSmooth) {
  const FleetConfig f = Fleet(11);
  for (int v = 0; v < 10; ++v) {
    for (double t = 0; t < 900; t += 0.9) {
      const wire::Point a = SampleAt(f, v, kGps, At(f, t), 0);
      const wire::Point b = SampleAt(f, v, kGps, At(f, t + 0.001), 0);
      ASSERT_LT(Haversine(a, b), 0.05);
      for (int s : {kSpeed, kSoc, kTorque, kOther}) {
        ASSERT_LT(std::abs(Value(f, v, s, t + 0.001) - Value(f, v, s, t)), 0.01)
            << f.sensors[s].name << " vehicle " << v << " t " << t;
      }
    }
  }
}

TEST(Trips, AlternateWithPlausibleDurationsAndShares) {
  const FleetConfig f = Fleet(13);
  double on_ns = 0, total_ns = 0;
  int starts_on = 0;
  for (int v = 0; v < 200; ++v) {
    Trips t(f, v, 300, 100);
    starts_on += t.on();
    EXPECT_EQ(t.from_ns(), f.start_ns);
    EXPECT_GT(t.until_ns(), f.start_ns);
    int64_t parked = t.on() ? 0 : t.until_ns() - t.from_ns();
    for (int i = 0; i < 50; ++i) {
      const bool was_on = t.on();
      const int64_t end = t.until_ns();
      t.Next();
      ASSERT_NE(t.on(), was_on);
      ASSERT_EQ(t.from_ns(), end);
      const double len_s = static_cast<double>(t.until_ns() - t.from_ns()) / 1e9;
      ASSERT_GE(len_s, t.on() ? 150 : 50);
      ASSERT_LE(len_s, t.on() ? 450 : 150);
      ASSERT_EQ(t.parked_ns(), parked);
      if (!t.on()) parked += t.until_ns() - t.from_ns();
      if (t.on()) on_ns += static_cast<double>(t.until_ns() - t.from_ns());
      total_ns += static_cast<double>(t.until_ns() - t.from_ns());
    }
  }
  EXPECT_NEAR(on_ns / total_ns, 0.75, 0.03);
  EXPECT_NEAR(starts_on / 200.0, 0.75, 0.1);
}

TEST(Trips, AreDeterministicAndSeekable) {
  const FleetConfig f = Fleet(21);
  Trips a(f, 4, 60, 30), b(f, 4, 60, 30), other(f, 5, 60, 30);
  for (int i = 0; i < 10; ++i) a.Next();
  b.Seek(a.from_ns());
  EXPECT_EQ(b.from_ns(), a.from_ns());
  EXPECT_EQ(b.until_ns(), a.until_ns());
  EXPECT_EQ(b.parked_ns(), a.parked_ns());
  other.Seek(a.from_ns());
  EXPECT_NE(other.from_ns(), a.from_ns());
  EXPECT_THROW(Trips(f, 0, 0, 30), std::invalid_argument);
}

}  // namespace
}  // namespace fleetflow::sim
