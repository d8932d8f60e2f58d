#pragma once
/// Where this build's checkout and build tree are. Only build_paths.cpp is compiled with the
/// paths, so no other object depends on where the checkout is: a fresh clone elsewhere reuses
/// them from the compiler cache.

#include <string>

namespace fleetflow::testing {

/// The checkout (CMake's PROJECT_SOURCE_DIR).
const std::string& SourceDir();
/// The build tree (PROJECT_BINARY_DIR): programs are at BinaryDir() + "/apps/fleetflow" etc.
const std::string& BinaryDir();

}  // namespace fleetflow::testing
