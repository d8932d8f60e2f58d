#pragma once
/// nats_source: reads vehicle telemetry from NATS. `delivery: "core"` is a core-NATS queue-group
/// subscription: every worker of the pipeline joins the same group and each message goes to
/// one of them (at most once: what arrives while no worker runs is lost). `delivery:
/// "jetstream"` reads durable consumers through a JetStreamReader (partitioning/), one consumer
/// or, with `partitions`, one per partition, driven by the partition coordinator
/// (partitioning/coordinator.hpp, docs/architecture.md); a message is acknowledged once its
/// samples are in state.
/// Subjects and payloads follow the wire contract (schemas/wire.hpp). Undecodable or invalid
/// input is counted by reason and logged (rate-limited), never passed on.

#include "registry.hpp"

namespace fleetflow {

void RegisterNatsSource(Registry& registry);

}  // namespace fleetflow
