#pragma once
/// The end-to-end tests' view of alarms: the events a rule node stored in its stream, the events
/// the same rules give on the rows of an independent computation, and the difference.

#include <string>
#include <vector>

#include "fleet_check.hpp"
#include "message.hpp"

namespace fleetflow::testing {

/// Every alarm event in `stream` on the server at `nats_url`, in stream order (none when the
/// stream does not exist). Throws when it cannot be read.
std::vector<AlarmEvent> StoredAlarms(const std::string& nats_url,
                                     const std::string& stream = "ALARMS");

/// The events the rules of rule node `node` in pipeline file `pipeline` raise and clear on
/// `rows` (one per vehicle and window; every window from the first to one after the last, so
/// that each vehicle's rows end), its columns taken from the rows by name (lat, lon, speed, soc,
/// torque, whatever the column's interpolation: the rows' own; derived columns computed as the
/// node does). Throws when the node is not a rule.
std::vector<AlarmEvent> ExpectedAlarms(const std::string& pipeline, const std::string& node,
                                       const ExpectedRows& rows, int64_t every_ns = 1'000'000'000);

/// "" when every alarm of `expected` (vehicle, rule, raised time) was raised once and cleared
/// once at its time in `stored`, and `stored` holds nothing else; else what differs (the first
/// differences, then counts).
std::string CompareAlarms(const std::vector<AlarmEvent>& stored,
                          const std::vector<AlarmEvent>& expected);

}  // namespace fleetflow::testing
