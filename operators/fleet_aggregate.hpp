#pragma once
/// fleet_aggregate: across vehicles. From the rows of one window of a window_aggregate (a row per
/// vehicle), one row per spatial cell (the geohash of the vehicle's last position in the window)
/// or for the whole fleet: how many vehicles were active and moving, the mean and the largest of
/// their speeds, their state of charge. Its rows are statistics rows whose "sensors" are the
/// metrics below, each over the vehicles of the cell (docs/semantics.md, "Across vehicles"):
///   vehicles   1 per vehicle with a row            count: vehicles active
///   moving     1 per vehicle moving, 0 standing    sum: vehicles moving; mean: their share
///   speed      the vehicle's mean speed            mean, min, max over the vehicles
///   speed_max  the vehicle's largest speed         max: the fastest vehicle
///   soc        the vehicle's last state of charge  mean, min, max over the vehicles
/// One window's rows reach it as one batch only behind an unpartitioned source (each partition
/// emits its own): behind a partitioned one, validate refuses it (the stage that merges the
/// partitions' rows across workers is being built: each partition's rows come out as its
/// partial, with the partition, and a partition's window without a vehicle as an empty one).

#include <string>

#include "registry.hpp"

namespace fleetflow {

/// The geohash of a position (degrees) with `precision` characters (1 to 12): the base-32
/// interleaving of longitude and latitude bits, as PostGIS's ST_GeoHash.
std::string Geohash(double lat, double lon, int precision);

void RegisterFleetAggregate(Registry& registry);

}  // namespace fleetflow
