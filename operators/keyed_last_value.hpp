#pragma once
/// keyed_last_value: keeps, per key `<vehicle>.<sensor>`, the newest samples by event time and
/// passes on the samples it accepted. A sample older than every kept sample of a full key, or
/// one already kept (same ts and seq), is dropped and counted; arrival order never lets an old
/// sample replace a newer one. Acknowledges its input once the samples are in state.

#include "registry.hpp"

namespace fleetflow {

void RegisterKeyedLastValue(Registry& registry);

}  // namespace fleetflow
