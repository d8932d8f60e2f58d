#pragma once
/// The NATS server's partition mapping (docs/scaling.md, "Partitions come from the NATS
/// server"): the account maps vehicle.<id>.<sensor> to <prefix>.<n>.<id>.<sensor>, n =
/// partition(P, id). A source checks it at start with a probe message that is never stored.

#include <cstdint>
#include <string>
#include <string_view>

#include "nats_client.hpp"

namespace fleetflow {

/// Checks that the server maps the vehicles' subjects into `partitions` partitions under
/// `prefix`; throws std::runtime_error with the configuration lines to add when it does not.
void CheckPartitionMapping(nats::Connection& conn, const std::string& prefix, uint32_t partitions);

/// True for the probe's own subject, unmapped (vehicle.<probe>.<sensor>): not telemetry.
bool IsMappingProbe(std::string_view wire_subject);

}  // namespace fleetflow
