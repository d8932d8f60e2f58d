#pragma once
/// window_join: every `every_ms` (window times T aligned to multiples of every_ms since the
/// epoch), once the clock passes T + allowed_lateness_ms, emits one row per active vehicle with
/// one slot per configured sensor: the newest sample at or before T and the oldest after T,
/// each only if within max_gap_ms of T. A vehicle is active at T when some sensor of it has a
/// sample in [T - max_gap_ms, T] and it has not said `off` before T. See docs/semantics.md.

#include "registry.hpp"

namespace fleetflow {

void RegisterWindowJoin(Registry& registry);

}  // namespace fleetflow
