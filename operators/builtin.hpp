#pragma once

#include "registry.hpp"

namespace fleetflow {

/// Registers every built-in operator: the one list of them (operators/builtin.cpp).
void RegisterBuiltinOperators(Registry& registry);

}  // namespace fleetflow
