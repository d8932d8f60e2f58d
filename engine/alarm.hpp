#pragma once
/// An alarm event as other programs read it (schemas/alarm.schema.json): the body of the
/// messages on alarm.<vehicle>.<rule> and on the vehicle's vehicle.<id>.cmd.alarm, and of the
/// alarms `fleetflow test` compares.

#include <optional>
#include <string>
#include <string_view>

#include "message.hpp"

namespace fleetflow {

/// {"vehicle":..,"rule":..,"event":"raised"|"cleared","severity":..,"time_ns":..,
///  "raised_ns":..,"value":<number>|null,"message":..} (message left out when empty).
std::string AlarmJson(const AlarmEvent& event);

/// Parses AlarmJson's output (unknown keys ignored); nullopt with `error` set when it is not one.
std::optional<AlarmEvent> ParseAlarmJson(std::string_view json, std::string* error = nullptr);

}  // namespace fleetflow
