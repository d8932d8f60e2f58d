#pragma once
/// The vehicle control protocol, shared by fleet-sensor (which obeys) and fleetctl (which
/// asks): NATS request/reply on `vehicle.<id>.cmd.<verb>`.
///
/// | verb   | request payload | effect                                                        |
/// |--------|-----------------|---------------------------------------------------------------|
/// | sleep  | empty           | stop sampling, publish status `off`                           |
/// | wake   | empty           | resume sampling, publish status `on`                          |
/// | rate   | `<sensor> <hz>` | sample `<sensor>` at `<hz>` (0 < hz <= 1000) from now on       |
/// | status | empty           | nothing                                                       |
/// | alarm  | AlarmEvent JSON | keep the vehicle's active alarms, log and count it; sampling   |
/// |        |                 | is unchanged (the engine's `rule` operator publishes these)    |
///
/// A status request on `fleet.cmd.status` reaches every vehicle (NATS cannot publish to a
/// wildcard subject such as `vehicle.*.cmd.status`); each answers on the request's reply subject.
///
/// An alarm is usually a plain publish (no reply subject); with a reply subject it is answered
/// like any other command. Its payload is one JSON object (schemas/alarm.schema.json).
///
/// Every reply is one JSON object, a VehicleStatus: after the command on success
/// (`"ok":true`), or `{"ok":false,"vehicle":...,"error":"..."}` when the command was refused.
/// Commands have four subject tokens, so the engine's `vehicle.<id>.<sensor>` parsing never
/// takes them for samples.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow::control {

inline constexpr std::string_view kCommandToken = "cmd";
inline constexpr std::string_view kSleep = "sleep";
inline constexpr std::string_view kWake = "wake";
inline constexpr std::string_view kRate = "rate";
inline constexpr std::string_view kStatus = "status";
inline constexpr std::string_view kAlarm = "alarm";
/// Subscribed by every vehicle: a status request to the whole fleet.
inline constexpr std::string_view kFleetStatusSubject = "fleet.cmd.status";

/// `vehicle.<vehicle>.cmd.<verb>`; `verb` may be the wildcard `*` (to subscribe).
std::string CommandSubject(std::string_view vehicle, std::string_view verb);
/// The verb of a command subject (`status` for kFleetStatusSubject), or "" when `subject` is
/// not a command subject.
std::string_view CommandVerb(std::string_view subject);

/// Parses the payload of a rate command, "<sensor> <hz>"; returns an error message, or "".
std::string ParseRateArgs(std::string_view payload, std::string& sensor, double& hz);

struct SensorState {
  std::string name;
  double hz = 0;
  bool operator==(const SensorState&) const = default;
};

/// Counters since the process started.
struct Counters {
  uint64_t samples = 0;             ///< samples read from the sensors
  uint64_t published_samples = 0;   ///< samples in messages the server confirmed
  uint64_t published_messages = 0;  ///< messages the server confirmed (samples and status)
  uint64_t dropped_samples = 0;     ///< evicted from the full offline buffer
  uint64_t dropped_messages = 0;
  uint64_t buffered_bytes = 0;    ///< waiting in the offline buffer now (in flight included)
  uint64_t buffer_bytes = 0;      ///< the offline buffer's capacity
  uint64_t reconnects = 0;        ///< NATS reconnections
  uint64_t skipped_ticks = 0;     ///< ticks missed because the process could not run in time
  uint64_t resent_messages = 0;   ///< handed out again: unconfirmed when the link broke, or no
                                  ///< acknowledgement in time (--ack jetstream)
  uint64_t ack_errors = 0;        ///< acknowledgements saying the stream did not store a message
                                  ///< (or no stream took it); such messages are sent again
  uint64_t alarms_raised = 0;     ///< alarms that became active
  uint64_t alarms_cleared = 0;    ///< alarms that ended
  uint64_t alarms_duplicate = 0;  ///< alarm events already received, or older than the rule's
                                  ///< latest (redeliveries): nothing changed
  uint64_t alarms_invalid = 0;    ///< alarm payloads that are not an AlarmEvent (refused)
  bool operator==(const Counters&) const = default;
};

struct VehicleStatus {
  bool ok = true;
  std::string error;  ///< why the command was refused, when !ok
  std::string vehicle;
  bool active = false;  ///< sampling (not asleep)
  std::vector<SensorState> sensors;
  int64_t last_publish_ns = 0;  ///< wall clock of the last confirmed publish; 0 = none yet
  Counters counters;
  std::vector<std::string> active_alarms;  ///< rules with an alarm raised and not cleared, sorted
  bool operator==(const VehicleStatus&) const = default;
};

/// One line of JSON, no trailing newline.
std::string ToJson(const VehicleStatus& status);
/// Parses ToJson's output (unknown keys are ignored, so older and newer firmware interoperate);
/// nullopt when `json` is not such an object.
std::optional<VehicleStatus> ParseStatusJson(std::string_view json);

enum class AlarmSeverity { kInfo, kWarning, kCritical };

/// "info", "warning" or "critical".
std::string_view SeverityName(AlarmSeverity severity);

/// The payload of `vehicle.<id>.cmd.alarm`: an alarm of the engine's `rule` operator was raised
/// or cleared (schemas/alarm.schema.json).
struct AlarmEvent {
  std::string vehicle;
  std::string rule;
  bool raised = true;  ///< "event": "raised" (true) or "cleared" (false)
  AlarmSeverity severity = AlarmSeverity::kWarning;
  int64_t time_ns = 0;          ///< when this event happened (for a raise, raised_ns)
  int64_t raised_ns = 0;        ///< the alarm's raise time: identifies the alarm of `rule`
  std::optional<double> value;  ///< the value that raised or cleared it; JSON null: none
  std::string message;          ///< optional; "" when absent
  bool operator==(const AlarmEvent&) const = default;
};

/// One line of JSON, no trailing newline; `message` only when not empty, `value` null when
/// absent or not finite.
std::string ToJson(const AlarmEvent& alarm);
/// Parses an alarm event. Keys may come in any order and unknown keys are ignored (newer engines
/// may add some); nullopt, with the reason in `why` when given, for anything else than a JSON
/// object with vehicle, rule, event, severity, time_ns and raised_ns of the right types (a
/// non-empty vehicle and rule, event "raised" or "cleared", a known severity, times as integers
/// >= 0, value a number or null, message a string).
std::optional<AlarmEvent> ParseAlarmJson(std::string_view json, std::string* why = nullptr);

/// Appends `s` as a JSON string literal (quotes and escapes included).
void AppendJsonString(std::string& out, std::string_view s);
/// UTC time of `ns` since the epoch, to the millisecond: 2026-11-22T13:17:16.956Z.
std::string FormatUtcTime(int64_t ns);

}  // namespace fleetflow::control
