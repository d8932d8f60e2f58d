#pragma once
/// range_filter: drops the samples whose value lies outside their sensor's [min, max] (a glitch,
/// a unit mix-up: a speed of 900 m/s, a state of charge of 250 %) and counts them by sensor.
/// Samples of sensors without a range, status events, Ticks and partition events pass unchanged.
/// Placed before keyed_last_value, it keeps such samples out of state and out of every window.

#include "registry.hpp"

namespace fleetflow {

void RegisterRangeFilter(Registry& registry);

}  // namespace fleetflow
