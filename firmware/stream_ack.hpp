#pragma once
/// JetStream publish acknowledgements as fleet-sensor uses them (`--ack jetstream`): each message
/// is published with a reply subject `<inbox>.<record id>` and a `Nats-Msg-Id` header, and the
/// stream that stores it answers on that subject with a small JSON document (its PubAck):
///
///   {"stream":"TELEMETRY","seq":42}                       stored
///   {"stream":"TELEMETRY","seq":42,"duplicate":true}      stored before (a resend, de-duplicated)
///   {"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}
///
/// Parsed here without a JSON library, so the firmware stays small.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fleetflow::firmware {

struct StreamAck {
  bool stored = false;     ///< the stream has the message (new or a duplicate)
  uint64_t seq = 0;        ///< its stream sequence
  bool duplicate = false;  ///< it was already stored under the same Nats-Msg-Id
  std::string error;       ///< why it was not stored, when !stored
};

/// Parses the stream's answer; a document that is neither an ack nor an error is an error.
StreamAck ParseStreamAck(std::string_view json);

/// The record id of an acknowledgement that came to `<inbox>.<id>`; nullopt for any other
/// subject.
std::optional<uint64_t> AckRecordId(std::string_view subject, std::string_view inbox);

/// The Nats-Msg-Id of record `id`: `<last token of inbox>-<id>`. The inbox's last token is
/// nats.c's random NUID, unique to the process, so the id is unique in the stream's
/// de-duplication window across vehicles and restarts, and the same for every resend.
std::string MessageId(std::string_view inbox, uint64_t id);

}  // namespace fleetflow::firmware
