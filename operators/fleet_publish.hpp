#pragma once
/// fleet_publish: the end of the first stage of the rows across workers (docs/semantics.md,
/// "Across vehicles"). Behind a partitioned source each partition's fleet_aggregate rows of a
/// window are that partition's partials; this sink sends them over JetStream to the worker that
/// merges their cells: per (partition p, window W) one message per shard s of the cells
/// (PartitionOf(cell, shards) == s), an empty one when none of its cells is in s, so that the
/// merging worker knows that p is past W in every shard. Subject <subject_prefix>.<s>.<p> in the
/// stream `stream` (created when missing), payload an FLP1 Partial (schemas/fleet_partial.fbs),
/// header Nats-Msg-Id <node>.<p>.<W start>.<s> (the stream drops a window sent again within its
/// duplicate window; the merge drops what is older than a partition's last window anyway).
///
/// Partials are published in order and each waits for the stream's acknowledgement; what could
/// not be published is held (up to max_pending messages, then the sink blocks the graph) and sent
/// again at the next Tick. A partition revoked waits until its partials are stored: its next
/// owner's come after them in the stream.

#include "registry.hpp"

namespace fleetflow {

void RegisterFleetPublish(Registry& registry);

}  // namespace fleetflow
