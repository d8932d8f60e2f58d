#pragma once
/// window_aggregate: per vehicle and sensor, tumbling windows [S, S + every_ms) (S a multiple of
/// every_ms since the epoch) over the raw samples: count, min, max, mean, the first and last
/// sample (with their times); for position sensors also the bounding box and the distance
/// travelled. Each sample counts once (a sample delivered again is recognised by its time and
/// sequence number). Windows close on event time with window_join's rules (event_time.hpp): once
/// progress passes S + every_ms + allowed_lateness_ms, one StatsBatch with a row per vehicle that
/// had a sample in the window. A sample arriving later is counted as late and is in no window.
/// See docs/semantics.md, "Statistics per window".

#include <cstdint>

#include "message.hpp"
#include "registry.hpp"

namespace fleetflow {

/// Great-circle distance in metres between two positions (degrees; mean Earth radius).
double DistanceMetres(double lat1, double lon1, double lat2, double lon2);

void RegisterWindowAggregate(Registry& registry);

}  // namespace fleetflow
