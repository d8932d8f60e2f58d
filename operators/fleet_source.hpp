#pragma once
/// fleet_source: the start of the second stage of the rows across workers (docs/semantics.md,
/// "Across vehicles"). It reads the partials fleet_publish stores, shard by shard: the shards of
/// the cells are its partitions, shared by the workers of the pipeline as nats_source shares the
/// vehicles' (a membership, a durable consumer per shard, hand-overs), so that each cell is
/// merged by one worker. A partial is acknowledged once merged; the stream is each shard's
/// changelog: a worker taking a shard over restores cell_merge's snapshot and re-reads what came
/// after its checkpoint.

#include "registry.hpp"

namespace fleetflow {

void RegisterFleetSource(Registry& registry);

}  // namespace fleetflow
