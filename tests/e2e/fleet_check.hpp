#pragma once
/// End-to-end checking: the rows a simulated fleet must produce, recomputed from the simulator's
/// signal model and the rules of docs/semantics.md, independently of the engine's code, and the
/// comparison with what a real PostgreSQL holds.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "servers.hpp"
#include "signals.hpp"

namespace fleetflow::testing {

struct ExpectedRow {
  std::optional<double> lat, lon, speed, soc, torque;
};

using ExpectedRows = std::map<std::pair<std::string, int64_t>, ExpectedRow>;

/// Rows of the default column set (lat, lon, speed linear; soc previous; torque linear) for a
/// fleet that published every sample with start_ns <= ts < end_ns, then said off.
ExpectedRows ComputeExpectedRows(const sim::FleetConfig& fleet, int64_t end_ns,
                                 int64_t every_ns = 1'000'000'000,
                                 int64_t max_gap_ns = 2'000'000'000);

struct CheckResult {
  size_t expected = 0, found = 0, unexpected = 0, mismatched = 0, missing = 0;
  std::string first_problems;  // up to 10 lines
  bool ok() const { return found == expected && unexpected == 0 && mismatched == 0; }
  std::string Summary() const;
};

/// Compares vehicle_telemetry with `expected`: every row once, nothing else, values within 1e-9.
CheckResult CheckRows(const PostgresServer& pg, const ExpectedRows& expected);

int64_t NowNs();

}  // namespace fleetflow::testing
