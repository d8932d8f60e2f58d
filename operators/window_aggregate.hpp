#pragma once
/// window_aggregate: per vehicle and sensor, tumbling windows [S, S + every_ms) (S a multiple of
/// every_ms since the epoch) over the raw samples: count, min, max, mean, the first and last
/// sample (with their times); for position sensors also the bounding box and the distance
/// travelled. Each sample counts once (a sample delivered again is recognised by its time and
/// sequence number). Windows close on event time with window_join's rules (event_time.hpp): once
/// progress passes S + every_ms + allowed_lateness_ms, one StatsBatch with a row per vehicle that
/// had a sample in the window. A sample arriving later is counted as late and is in no window.
/// With backend jetstream_kv, each partition's open windows and progress are a snapshot in a KV
/// bucket (SnapshotStore): a worker taking the partition over restores them and skips the
/// messages up to the snapshot's checkpoint. See docs/semantics.md, "Statistics per window".

#include <cstdint>
#include <memory>

#include "message.hpp"
#include "registry.hpp"
#include "state_store.hpp"

namespace fleetflow {

/// Great-circle distance in metres between two positions (degrees; mean Earth radius).
double DistanceMetres(double lat1, double lon1, double lat2, double lon2);

/// `memory_snapshots`: where nodes of the memory backend keep their partitions' snapshots (the
/// unit tests: workers sharing one store hand partitions over through it); none, as in
/// operators/builtin.cpp: they keep nothing, and a partition taken over starts afresh.
void RegisterWindowAggregate(Registry& registry,
                             std::shared_ptr<SnapshotStore> memory_snapshots = nullptr);

}  // namespace fleetflow
