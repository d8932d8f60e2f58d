#pragma once
/// The value of a vehicle's key in keyed_last_value's KV bucket (schemas/state.fbs): every
/// series of the vehicle (one per sensor, and its status) in one FLS1 Record, so a vehicle costs
/// one write per flush, not one per sensor. Engine only.

#include <string>
#include <string_view>
#include <vector>

#include "wire.hpp"

namespace fleetflow::state {

struct Series {
  std::string name;                  // sensor token, or "status"
  std::vector<wire::Point> samples;  // as state retains them
};

/// One Record holding `series`.
std::string EncodeRecord(const std::vector<Series>& series);

/// Decodes a Record into `out` (cleared first). False when `value` is not a well-formed FLS1
/// Record; never throws.
bool DecodeRecord(std::string_view value, std::vector<Series>& out);

}  // namespace fleetflow::state
