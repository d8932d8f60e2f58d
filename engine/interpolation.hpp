#pragma once
/// The value of a row's column at its window time, from the samples that bracket it (a window
/// join's Slot): what timescale_sink writes and row_archive archives, computed alike.

#include <cstdint>
#include <optional>

#include "message.hpp"

namespace fleetflow {

/// Which number of a sample a column takes.
enum class ColumnField { kValue, kLat, kLon };

/// How a column's value at the window time is derived from the bracketing samples.
enum class Interpolation {
  kLinear,    ///< between before and after; holds the one present when only one is
  kPrevious,  ///< the sample at or before the window time
};

/// The value of one column at `window_ns` from the samples bracketing it.
///  - kLinear: before and after present -> v0 + (v1 - v0) * (T - t0) / (t1 - t0) (v0 when
///    t1 == t0); only before -> v0; only after -> v1; neither -> nullopt.
///  - kPrevious: before present -> v0, else nullopt.
/// kLat / kLon treat a sample without a position as absent. A non-finite sample value used in
/// the computation (or a non-finite result) gives nullopt.
std::optional<double> InterpolateSlot(const Slot& slot, ColumnField field, Interpolation mode,
                                      int64_t window_ns);

}  // namespace fleetflow
